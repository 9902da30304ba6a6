//! A private "host" for libvirtd, QEMU and our lock daemon: new mount and pid
//! namespaces whose PID 1 is bash (it reaps QEMU after libvirt kills it), tmpfs on
//! /run and libvirt's state directories, /etc/libvirt bind-mounted from a temp dir.
//! Commands run inside through `nsenter`; everything dies with the namespace when
//! the sandbox is dropped (SIGKILL to `unshare`, whose `--kill-child` takes PID 1).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::quiet_success;

/// Where the guests' disk lives (inside the sandbox).
pub const DISK: &str = "/var/lib/libvirt/images/shared.img";
/// `file_lockspace_dir` of the indirect mode (inside the sandbox).
pub const FILES: &str = "/var/lib/libvirt/lockd/files";
const SOCKET: &str = "/run/libvirt/virtlockd-sock";
const OURS: &str = env!("CARGO_BIN_EXE_virtlockd");
/// Bound of every wait.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// Bound of every command run inside (passed to `timeout`).
const COMMAND_LIMIT: &str = "60";

/// Programs and files the sandbox needs, with the package that ships them.
const NEEDS: &[(&str, &str)] = &[
    ("/usr/sbin/libvirtd", "libvirt-daemon"),
    (
        "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so",
        "libvirt-daemon",
    ),
    (
        "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so",
        "libvirt-daemon-driver-qemu",
    ),
    ("/usr/bin/virsh", "libvirt-clients"),
    ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ("/usr/bin/nsenter", "util-linux"),
    ("/usr/bin/unshare", "util-linux"),
    ("/usr/bin/ss", "iproute2"),
];

/// The two ways libvirt's lockd plugin names a disk's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A lock on byte 0 of the disk image itself.
    Direct,
    /// A lock on `FILES/<sha256 of the disk path>` (`file_lockspace_dir`).
    Indirect,
}

impl Mode {
    /// The resource name libvirt asks for (and that error texts quote).
    pub fn resource(self) -> String {
        match self {
            Mode::Direct => DISK.to_owned(),
            Mode::Indirect => virtlockd::names::lease_name(DISK.as_bytes()),
        }
    }

    /// The leased file, inside the sandbox.
    pub fn lease_file(self) -> String {
        match self {
            Mode::Direct => DISK.to_owned(),
            Mode::Indirect => format!("{FILES}/{}", self.resource()),
        }
    }

    fn lockd_conf(self) -> String {
        match self {
            Mode::Direct => "auto_disk_leases = 1\n".to_owned(),
            Mode::Indirect => format!("auto_disk_leases = 1\nfile_lockspace_dir = \"{FILES}\"\n"),
        }
    }
}

/// Why the sandbox cannot run here, if it cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".to_owned());
    }
    if let Some((file, package)) = NEEDS.iter().find(|(f, _)| !Path::new(f).exists()) {
        return Some(format!("{file} missing (package {package})"));
    }
    let probe = quiet_success(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--pid", "--fork"])
            .args(["--kill-child", "--mount-proc", "--"])
            .args(["sh", "-c", "mount -t tmpfs probe /run"]),
    );
    if !probe {
        return Some("cannot unshare mount and pid namespaces with a tmpfs on /run".to_owned());
    }
    None
}

/// PID 1 of the namespace: mounts, then waits (bash reaps re-parented children
/// while it waits for `sleep`). `$1` is the sandbox's temp dir.
const PID1: &str = r#"set -e
mount -t tmpfs -o mode=0755 e2e-run /run
mkdir -p /run/libvirt /run/lock
for d in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
  mount -t tmpfs -o mode=0755 e2e "$d"
done
mount --bind "$1/etc" /etc/libvirt
if [ -e "$1/passwd" ]; then
  mount --bind "$1/passwd" /etc/passwd
  mount --bind "$1/group" /etc/group
fi
mkdir -p /var/lib/libvirt/images /var/log/libvirt/qemu
truncate -s 16M /var/lib/libvirt/images/shared.img
echo ready
while :; do sleep 1; done
"#;

/// One sandbox, for one lease mode.
pub struct Sandbox {
    unshare: Child,
    pid1: u32,
    pub dir: tempfile::TempDir,
    pub mode: Mode,
}

impl Sandbox {
    /// Creates the namespaces and the configuration; starts nothing else.
    pub fn new(mode: Mode) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        write_configs(dir.path(), mode);
        for d in ["/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt"] {
            // Empty mount points; the sandbox mounts its tmpfs over them.
            std::fs::create_dir_all(d).expect("mount point");
        }
        std::fs::create_dir_all("/etc/libvirt").expect("mount point /etc/libvirt");
        let out = std::fs::File::create(dir.path().join("pid1.log")).expect("pid1.log");
        let unshare = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--pid", "--fork"])
            .args([
                "--kill-child",
                "--mount-proc",
                "--",
                "bash",
                "-c",
                PID1,
                "bash",
            ])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn unshare");
        let mut sb = Self {
            unshare,
            pid1: 0,
            dir,
            mode,
        };
        sb.wait_for("the namespace's PID 1", || {
            std::fs::read_to_string(sb.dir.path().join("pid1.log")).is_ok_and(|s| s == "ready\n")
        });
        sb.pid1 = children(sb.unshare.id()).first().copied().expect("PID 1");
        sb
    }

    /// A path inside the sandbox, seen from the test.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid1))
    }

    /// Runs a command inside and waits for it (bounded by `timeout`).
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-m", "-p", "--"])
            .args(["timeout", COMMAND_LIMIT])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// Starts a daemon inside, in the background, its output in `<dir>/<log>`.
    fn spawn(&self, log: &str, args: &[&str]) {
        let log = self.dir.path().join(log);
        let script = "log=$1; shift; exec \"$@\" </dev/null >>\"$log\" 2>&1 &";
        let mut cmd = vec!["setsid", "bash", "-c", script, "bash"];
        let log = log.to_str().expect("utf-8 temp dir");
        cmd.push(log);
        cmd.extend_from_slice(args);
        let out = self.run(&cmd);
        assert!(out.status.success(), "spawn {args:?}: {out:?}");
    }

    /// Host pids of the sandbox's processes named `comm`.
    pub fn pids(&self, comm: &str) -> Vec<u32> {
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.pid1)).ok();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let same_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() == ns;
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if same_ns && name.trim_end() == comm && !is_zombie(pid) {
                found.push(pid);
            }
        }
        found
    }

    /// Starts our daemon; returns its host pid once its socket accepts.
    pub fn start_lock_daemon(&self) -> u32 {
        assert!(
            self.pids("virtlockd").is_empty(),
            "a lock daemon runs already"
        );
        self.spawn(
            "virtlockd.out",
            &[OURS, "-f", "/etc/libvirt/virtlockd.conf"],
        );
        let socket = self.inside(SOCKET);
        self.wait_for("the lock daemon's socket", || {
            self.pids("virtlockd").len() == 1 && UnixStream::connect(&socket).is_ok()
        });
        self.lock_daemon()
    }

    /// Host pid of the (only) lock daemon.
    pub fn lock_daemon(&self) -> u32 {
        let pids = self.pids("virtlockd");
        assert_eq!(pids.len(), 1, "lock daemons: {pids:?}\n{}", self.logs());
        pids[0]
    }

    pub fn start_libvirtd(&self) {
        self.spawn(
            "libvirtd.out",
            &["libvirtd", "-f", "/etc/libvirt/libvirtd.conf"],
        );
        self.wait_for("libvirtd answering virsh", || {
            self.virsh(&["version"]).status.success()
        });
    }

    /// Stops libvirtd (SIGTERM, by pid) and waits until it is gone.
    pub fn stop_libvirtd(&self) {
        let pids = self.pids("libvirtd");
        assert_eq!(pids.len(), 1, "libvirtd: {pids:?}");
        self.signal(pids[0], nix::sys::signal::Signal::SIGTERM);
        self.wait_for("libvirtd to exit", || self.pids("libvirtd").is_empty());
    }

    pub fn signal(&self, pid: u32, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("kill");
    }

    /// Defines guests `e2e-a` and `e2e-b`, both on the shared disk.
    pub fn define_guests(&self) {
        for name in ["e2e-a", "e2e-b"] {
            let xml = self.dir.path().join(format!("{name}.xml"));
            std::fs::write(&xml, crate::support::guest::tcg_guest_xml(name, DISK))
                .expect("domain xml");
            let out = self.virsh(&["define", xml.to_str().expect("utf-8")]);
            assert!(out.status.success(), "define {name}: {out:?}");
        }
    }

    pub fn virsh(&self, args: &[&str]) -> Output {
        let mut cmd = vec!["virsh", "-q", "-c", "qemu:///system"];
        cmd.extend_from_slice(args);
        self.run(&cmd)
    }

    /// Runs virsh and asserts success.
    #[track_caller]
    pub fn virsh_ok(&self, args: &[&str]) {
        let out = self.virsh(args);
        assert!(
            out.status.success(),
            "virsh {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }

    /// Runs virsh, asserts failure and returns its stderr.
    #[track_caller]
    pub fn virsh_err(&self, args: &[&str]) -> String {
        let out = self.virsh(args);
        assert!(
            !out.status.success(),
            "virsh {args:?} succeeded, expected a failure\n{}",
            self.logs()
        );
        String::from_utf8_lossy(&out.stderr).trim_end().to_owned()
    }

    /// Whether the lock daemon's socket accepts connections.
    pub fn socket_accepts(&self) -> bool {
        UnixStream::connect(self.inside(SOCKET)).is_ok()
    }

    /// Polls `cond` every 50 ms; panics with the logs after [`PATIENCE`].
    #[track_caller]
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !cond() {
            if Instant::now() > deadline {
                panic!(
                    "{:?}: timed out waiting for {what}\n{}",
                    self.mode,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tails of every log: libvirtd, our daemon, QEMU, PID 1.
    pub fn logs(&self) -> String {
        let mut files: Vec<PathBuf> = ["libvirtd.log", "libvirtd.out", "virtlockd.log"]
            .iter()
            .chain(&["virtlockd.out", "pid1.log"])
            .map(|f| self.dir.path().join(f))
            .collect();
        if let Ok(dir) = std::fs::read_dir(self.inside("/var/log/libvirt/qemu")) {
            files.extend(dir.flatten().map(|e| e.path()));
        }
        let mut text = String::new();
        for f in files {
            let content = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            text.push_str(&format!("----- {}\n{tail}\n", f.display()));
        }
        text
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // SIGKILL to unshare by pid: --kill-child then kills PID 1, and with it
        // every process of the namespace (daemons, QEMU).
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn write_configs(dir: &Path, mode: Mode) {
    let etc = dir.join("etc");
    std::fs::create_dir(&etc).expect("etc");
    let log = |name: &str| dir.join(name).display().to_string();
    let files = [
        ("qemu.conf", crate::support::guest::QEMU_CONF.to_owned()),
        ("qemu-lockd.conf", mode.lockd_conf()),
        (
            "libvirtd.conf",
            format!(
                "listen_tls = 0\nlisten_tcp = 0\nauth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n\
                 log_outputs = \"3:file:{}\"\n",
                log("libvirtd.log")
            ),
        ),
        (
            "virtlockd.conf",
            format!(
                "log_level = 2\nlog_outputs = \"2:file:{}\"\n",
                log("virtlockd.log")
            ),
        ),
    ];
    for (name, text) in files {
        std::fs::write(etc.join(name), text).expect("config file");
    }
    // Debian's QEMU driver resolves `libvirt-qemu` before it reads qemu.conf.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if !passwd.lines().any(|l| l.starts_with("libvirt-qemu:")) {
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let user = "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n";
        std::fs::write(dir.join("passwd"), passwd + user).expect("passwd");
        std::fs::write(dir.join("group"), group + "libvirt-qemu:x:64055:\n").expect("group");
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
