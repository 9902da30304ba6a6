//! A copy-on-write clone of this host booted with real systemd as PID 1 under
//! `systemd-nspawn` (recipe: the systemd-container spec).
//!
//! The clone is an overlay whose lower layer is `/` (optionally under prepared
//! layers, see [`Container::boot_on`]), so every file of the host is visible and
//! nothing written inside reaches the host. Unit files, binaries and packages
//! are installed inside; the host's own files (its `/usr/sbin/virtlockd`
//! included) stay untouched. Dropping a [`Container`] powers it off, unmounts
//! the overlay and removes every trace, also when the test panicked.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Default bound of a command run inside the container.
pub const EXEC_PATIENCE: Duration = Duration::from_secs(60);
/// Bound of each boot stage (PID 1 appears, its bus appears, the boot finishes).
const BOOT_PATIENCE: Duration = Duration::from_secs(30);
/// Bound of a clean poweroff before PID 1 is killed.
const POWEROFF_PATIENCE: Duration = Duration::from_secs(15);
/// Bound of every wait after a SIGKILL.
const KILL_PATIENCE: Duration = Duration::from_secs(5);

/// Units of the host image that must not start in a clone sharing the host's
/// network (libvirtd would create its default network on the host) or that
/// only cost time.
const MASKED_UNITS: &[&str] = &[
    "libvirtd.service",
    "libvirtd.socket",
    "libvirtd-ro.socket",
    "libvirtd-admin.socket",
    "libvirtd-tcp.socket",
    "libvirtd-tls.socket",
    "postgresql.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
];

/// Where systemd-nspawn keeps per-machine state on the host; a SIGKILLed
/// nspawn leaves its entries behind.
const NSPAWN_RUN: &str = "/run/systemd/nspawn";

/// Makes machine names unique within this test process.
static NEXT_MACHINE: AtomicU32 = AtomicU32::new(0);

pub struct Container {
    name: String,
    dir: PathBuf,
    root: PathBuf,
    overlay_mounted: bool,
    /// (st_dev, st_ino) of the overlay root: names nspawn's lock file.
    root_identity: Option<(u64, u64)>,
    nspawn: Option<Child>,
    init: Option<u32>,
    /// The cgroups created for this container alone (see [`own_cgroups`]).
    cgroups: Vec<PathBuf>,
}

impl Container {
    /// Boots a clone of this host. `Err` is the reason the test cannot run
    /// here (not root, no systemd-nspawn, no overlay, the boot failed).
    pub fn boot(name: &str) -> Result<Self, String> {
        Self::boot_on(name, &[])
    }

    /// Like [`Container::boot`], with `layers` (upper dirs of earlier
    /// containers, topmost first) stacked over `/`.
    pub fn boot_on(name: &str, layers: &[&Path]) -> Result<Self, String> {
        Self::boot_in(&std::env::temp_dir(), name, layers)
    }

    /// Boots with the clone's directories (upper, work, mount point) under `parent`.
    fn boot_in(parent: &Path, name: &str, layers: &[&Path]) -> Result<Self, String> {
        prerequisites()?;
        let name = machine_name(name);
        let dir = parent.join(format!("vltest-ct-{name}"));
        let mut container = Self {
            name,
            root: dir.join("root"),
            dir,
            overlay_mounted: false,
            root_identity: None,
            nspawn: None,
            init: None,
            cgroups: Vec::new(),
        };
        container.prepare_root(layers)?;
        container.start_nspawn()?;
        container.wait_booted()?;
        Ok(container)
    }

    fn prepare_root(&mut self, layers: &[&Path]) -> Result<(), String> {
        for sub in ["up", "wk", "root"] {
            std::fs::create_dir_all(self.dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        }
        let mut lower: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
        lower.push("/".to_owned());
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.dir.join("up").display(),
            self.dir.join("wk").display()
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount an overlay clone of /: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.overlay_mounted = true;
        let meta = std::fs::metadata(&self.root).map_err(|e| format!("overlay root: {e}"))?;
        self.root_identity = Some((meta.dev(), meta.ino()));
        // The host image's policy-rc.d (exit 101) would stop package scripts
        // from starting, restarting or reloading any service inside.
        let policy = self.root.join("usr/sbin/policy-rc.d");
        if policy.symlink_metadata().is_ok() {
            std::fs::remove_file(&policy).map_err(|e| format!("cannot remove policy-rc.d: {e}"))?;
        }
        let units = self.root.join("etc/systemd/system");
        std::fs::create_dir_all(&units).map_err(|e| format!("{}: {e}", units.display()))?;
        for unit in MASKED_UNITS {
            let link = units.join(unit);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/dev/null", &link)
                .map_err(|e| format!("cannot mask {unit}: {e}"))?;
        }
        Ok(())
    }

    fn start_nspawn(&mut self) -> Result<(), String> {
        let console = std::fs::File::create(self.dir.join("console.log"))
            .map_err(|e| format!("console log: {e}"))?;
        let console_err = console
            .try_clone()
            .map_err(|e| format!("console log: {e}"))?;
        self.cgroups = own_cgroups(&self.name);
        let cgroups: Vec<String> = self
            .cgroups
            .iter()
            .map(|g| g.display().to_string())
            .collect();
        // nspawn moves itself into its cgroups first, then execs (same pid).
        let child = Command::new("sh")
            .arg("-c")
            .arg(
                "for g in $VLTEST_CGROUPS; do echo $$ >\"$g/cgroup.procs\" || exit 97; done; \
                 unset VLTEST_CGROUPS; exec systemd-nspawn \"$@\"",
            )
            .arg("sh")
            .env("VLTEST_CGROUPS", cgroups.join(" "))
            .arg("-D")
            .arg(&self.root)
            .args(["-M", &self.name])
            .args(["--register=no", "--keep-unit", "--boot", "--"])
            .arg("systemd.firstboot=off")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .spawn()
            .map_err(|e| format!("cannot run systemd-nspawn: {e}"))?;
        self.nspawn = Some(child);
        Ok(())
    }

    fn wait_booted(&mut self) -> Result<(), String> {
        let init = self.find_init()?;
        self.init = Some(init);
        let bus = self.root().join("run/systemd/private");
        let deadline = Instant::now() + BOOT_PATIENCE;
        while !is_socket(&bus) {
            if Instant::now() > deadline {
                return Err(self.boot_failure("systemd's private bus did not appear"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = self.exec_within("systemctl is-system-running --wait", BOOT_PATIENCE);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if state != "running" && state != "degraded" {
            return Err(self.boot_failure(&format!("the boot ended in state `{state}`")));
        }
        Ok(())
    }

    /// PID 1 of the container as the host sees it: a child of systemd-nspawn
    /// named systemd, or one level further down.
    fn find_init(&mut self) -> Result<u32, String> {
        let nspawn_pid = self.nspawn.as_ref().map(Child::id).ok_or("no nspawn")?;
        let deadline = Instant::now() + BOOT_PATIENCE;
        loop {
            for parent in std::iter::once(nspawn_pid).chain(children_of(nspawn_pid)) {
                if let Some(init) = children_of(parent)
                    .into_iter()
                    .find(|&c| comm_of(c).as_deref() == Some("systemd"))
                {
                    return Ok(init);
                }
            }
            let exited = self
                .nspawn
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(self.boot_failure(&format!("systemd-nspawn exited ({status})")));
            }
            if Instant::now() > deadline {
                return Err(self.boot_failure("the container's systemd did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn boot_failure(&self, what: &str) -> String {
        let console = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "cannot boot systemd in a container: {what}; console:\n{}",
            tail.join("\n")
        )
    }

    /// The container's PID 1, as the host sees it.
    pub fn init_pid(&self) -> u32 {
        self.init.expect("a booted container has a PID 1")
    }

    /// The container's root as the host can reach it (`/proc/PID1/root`).
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.init_pid()))
    }

    /// The host path of `inside` (an absolute path in the container).
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// The machine name (also the container's hostname).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The overlay's upper dir: everything written inside so far.
    pub fn upper_dir(&self) -> PathBuf {
        self.dir.join("up")
    }

    /// Runs `shell` with `sh -c` in every namespace of the container, bounded
    /// by [`EXEC_PATIENCE`].
    pub fn exec(&self, shell: &str) -> Output {
        self.exec_within(shell, EXEC_PATIENCE)
    }

    /// Like [`Container::exec`], bounded by `limit`; on timeout the command is
    /// killed and the status is 124 (as with `timeout`).
    pub fn exec_within(&self, shell: &str, limit: Duration) -> Output {
        let spawned = Command::new("nsenter")
            .args(["-t", &self.init_pid().to_string(), "-a", "sh", "-c", shell])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                return Output {
                    status: ExitStatus::from_raw(127 << 8),
                    stdout: Vec::new(),
                    stderr: format!("cannot run nsenter: {e}").into_bytes(),
                }
            }
        };
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let deadline = Instant::now() + limit;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    timed_out = true;
                    let _ = child.kill();
                    let _ = child.wait();
                    break ExitStatus::from_raw(124 << 8);
                }
            }
        };
        // A command that left a background process holding a pipe would keep
        // its reader waiting: what was read by then is all there is.
        let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
            rx.recv_timeout(KILL_PATIENCE).unwrap_or_default()
        };
        let stdout = collect(stdout);
        let mut stderr = collect(stderr);
        if timed_out {
            stderr.extend_from_slice(format!("\n(timed out after {limit:?})").as_bytes());
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Runs `shell` inside and returns its stdout; panics with both outputs
    /// if it fails.
    #[track_caller]
    pub fn exec_ok(&self, shell: &str) -> String {
        let out = self.exec(shell);
        assert!(
            out.status.success(),
            "in container {}: `{shell}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Copies a host file to `inside` (parents created, mode kept). A new
    /// file replaces any old one (new inode), as a package upgrade does.
    #[track_caller]
    pub fn copy_in(&self, host: &Path, inside: &str) {
        let target = self.path(inside);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        let staging = target.with_file_name(format!(
            ".{}.new",
            target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        // Through `cp` (see support::copy_executable: no write fd in this
        // process that a concurrently forked child could inherit), then a
        // rename over the target.
        crate::support::copy_executable(host, &staging);
        std::fs::rename(&staging, &target)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", target.display()));
    }

    fn nspawn_exited(&mut self, limit: Duration) -> bool {
        let Some(child) = self.nspawn.as_mut() else {
            return true;
        };
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => return false,
            }
        }
    }

    /// Whether `init` is still the PID 1 of this container (a child of our
    /// nspawn, or one level below), so that a kill never hits a reused pid.
    fn init_still_ours(&self, init: u32) -> bool {
        let Some(nspawn) = self.nspawn.as_ref().map(Child::id) else {
            return false;
        };
        match parent_of(init) {
            Some(p) if p == nspawn => true,
            Some(p) => parent_of(p) == Some(nspawn),
            None => false,
        }
    }

    fn power_off(&mut self) {
        let Some(init) = self.init else {
            return;
        };
        if self.nspawn_exited(Duration::ZERO) {
            return;
        }
        let _ = self.exec_within("systemctl poweroff", Duration::from_secs(10));
        if self.nspawn_exited(POWEROFF_PATIENCE) {
            return;
        }
        // Killing the container's PID 1 ends its whole pid namespace.
        if self.init_still_ours(init) {
            let _ = kill(Pid::from_raw(init as i32), Signal::SIGKILL);
        }
        if self.nspawn_exited(KILL_PATIENCE) {
            return;
        }
        if let Some(child) = self.nspawn.as_mut() {
            let _ = child.kill();
        }
        self.nspawn_exited(KILL_PATIENCE);
    }

    fn unmount(&mut self) {
        if !self.overlay_mounted {
            return;
        }
        for _ in 0..20 {
            let ok = Command::new("umount")
                .arg(&self.root)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                self.overlay_mounted = false;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Still busy: detach it so that nothing stays visible on the host.
        let lazy = Command::new("umount")
            .arg("-l")
            .arg(&self.root)
            .status()
            .is_ok_and(|s| s.success());
        self.overlay_mounted = !lazy;
    }

    /// Removes this container's cgroups, deepest first (only empty cgroups
    /// can go, and only with rmdir).
    fn remove_cgroups(&self) {
        fn remove_tree(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove_tree(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        for g in &self.cgroups {
            remove_tree(g);
        }
    }

    fn remove_nspawn_leftovers(&self) {
        let run = Path::new(NSPAWN_RUN);
        let _ = std::fs::remove_dir_all(run.join("propagate").join(&self.name));
        let _ = std::fs::remove_dir_all(run.join("unix-export").join(&self.name));
        if let Some((dev, ino)) = self.root_identity {
            let _ = std::fs::remove_file(run.join("locks").join(format!("inode-{dev}:{ino}")));
        }
    }

    /// Powers the container off and removes it, keeping its upper dir at
    /// `keep` (on the same filesystem) as a layer for later containers.
    fn into_layer(mut self, keep: &Path) -> Result<(), String> {
        self.power_off();
        self.unmount();
        if self.overlay_mounted {
            return Err("the overlay could not be unmounted".to_owned());
        }
        // This boot's journal would show up in every container on the layer.
        let _ = std::fs::remove_dir_all(self.upper_dir().join("var/log/journal"));
        std::fs::rename(self.upper_dir(), keep)
            .map_err(|e| format!("cannot keep the layer at {}: {e}", keep.display()))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.power_off();
        self.unmount();
        self.remove_nspawn_leftovers();
        self.remove_cgroups();
        if !self.overlay_mounted {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Why a container cannot boot here, if it cannot.
fn prerequisites() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (overlay mount, systemd-nspawn)".to_owned());
    }
    for tool in ["systemd-nspawn", "nsenter", "mount"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let package = match tool {
                "systemd-nspawn" => "systemd-container",
                _ => "util-linux",
            };
            return Err(format!("{tool} not installed (package {package})"));
        }
    }
    if !Path::new("/lib/systemd/systemd").exists() {
        return Err("no /lib/systemd/systemd to boot (package systemd)".to_owned());
    }
    Ok(())
}

/// A cgroup of its own in the cgroup2 hierarchy and in systemd's v1 named
/// hierarchy (where mounted), below this process's, for a container about to
/// start. Without it, nspawn --keep-unit puts every container in the same
/// `payload` cgroup below ours, so containers running side by side share
/// `/system.slice/virtlockd.service`: each one's systemd then sees the other
/// containers' daemons in its unit (as pid 0: `systemctl kill` and `status`
/// fail with EIO). Best effort: without these cgroups a lone container still
/// works.
fn own_cgroups(name: &str) -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let Ok(membership) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let mut created = Vec::new();
    for line in mountinfo.lines() {
        // "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(mount_point), mut fs) =
            (left.split_whitespace().nth(4), right.split_whitespace())
        else {
            continue;
        };
        let (fstype, options) = (fs.next(), fs.nth(1).unwrap_or(""));
        // The line of /proc/self/cgroup for this hierarchy: "0::/path" or
        // "9:name=systemd:/path".
        let key = match fstype {
            Some("cgroup2") => "",
            Some("cgroup") if options.split(',').any(|o| o == "name=systemd") => "name=systemd",
            _ => continue,
        };
        let Some(ours) = membership.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            (controllers == key).then(|| path.trim_start_matches('/').to_owned())
        }) else {
            continue;
        };
        let dir = Path::new(mount_point)
            .join(ours)
            .join(format!("vltest-{name}"));
        if std::fs::create_dir(&dir).is_ok() {
            created.push(dir);
        }
    }
    created
}

/// A valid, unique machine name (hostname rules: letters, digits, '-'; at
/// most 64 characters) derived from the test's `name`.
fn machine_name(name: &str) -> String {
    let n = NEXT_MACHINE.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("-{}-{n}", std::process::id());
    let stem: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(64 - suffix.len() - 2)
        .collect();
    format!("vl{stem}{suffix}")
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn comm_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The parent of `pid` from /proc/PID/stat (field 4, after the parenthesised
/// command name, which may itself contain spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// Child pids of `pid` (all its threads' children).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Reads `pipe` to its end on a thread; the result arrives on the channel.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Layers prepared in this test process, by key.
static LAYERS: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

/// The upper dir of a container on which `prepare` ran (e.g. installed a
/// package), prepared once per test process and shared by every test that
/// asks for the same `key`: stack it with [`Container::boot_on`]. `Err` is the
/// reason the test cannot run here (the container cannot boot, or `prepare`
/// could not do its part, e.g. the package archive is unreachable).
pub fn prepared_layer(
    key: &str,
    prepare: impl FnOnce(&Container) -> Result<(), String>,
) -> Result<PathBuf, String> {
    prerequisites()?;
    let mut layers = LAYERS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, path)) = layers.iter().find(|(k, _)| k == key) {
        return Ok(path.clone());
    }
    let home = layers_home();
    if layers.is_empty() {
        remove_stale_layer_homes();
        mount_layers_home(&home)?;
        // SAFETY: registers a plain function without captured state.
        unsafe { libc::atexit(remove_layers_at_exit) };
    }
    let container = Container::boot_in(&home, &format!("layer-{key}"), &[])?;
    prepare(&container)?;
    let keep = home.join(key);
    container.into_layer(&keep)?;
    layers.push((key.to_owned(), keep.clone()));
    Ok(keep)
}

/// Where this process keeps its prepared layers.
fn layers_home() -> PathBuf {
    std::env::temp_dir().join(format!("vltest-layers-{}", std::process::id()))
}

/// A tmpfs of its own for the layers: overlayfs refuses a lower layer inside
/// another lower layer ("overlapping lowerdir path", ELOOP), and `/` is
/// always the bottom layer here; a layer on another filesystem does not
/// overlap it.
fn mount_layers_home(home: &Path) -> Result<(), String> {
    std::fs::create_dir_all(home).map_err(|e| format!("{}: {e}", home.display()))?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0700", "vltest-layers"])
        .arg(home)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let _ = std::fs::remove_dir(home);
        Err(format!(
            "cannot mount a tmpfs for prepared layers: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn remove_layers_home(home: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir(home);
}

/// Static data cannot be dropped: the test process removes its layers when
/// it exits (the test harness returns from main through exit()).
extern "C" fn remove_layers_at_exit() {
    remove_layers_home(&layers_home());
}

/// Layers of earlier test processes that were killed before they could
/// remove them.
fn remove_stale_layer_homes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("vltest-layers-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_layers_home(&entry.path());
        }
    }
}

/// Debian's `libvirt-daemon-system` installed on a clone of this host, once
/// per test process (6-30 s of apt and dpkg): the layer every container with Debian's
/// units (and the package tests' libvirt host) boots on.
pub fn debian_libvirt_layer() -> Result<PathBuf, String> {
    prepared_layer("libvirt-daemon-system", |c| {
        let started = Instant::now();
        let install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                       --no-install-recommends -o DPkg::Lock::Timeout=120 \
                       -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                       libvirt-daemon-system";
        let mut out = c.exec_within(install, Duration::from_secs(240));
        if !out.status.success() {
            // The host's package lists may be missing or stale.
            c.exec_within("apt-get update -q", Duration::from_secs(240));
            out = c.exec_within(install, Duration::from_secs(240));
        }
        if !out.status.success() {
            return Err(format!(
                "cannot install libvirt-daemon-system in the container: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        c.exec_ok("apt-get clean");
        eprintln!(
            "libvirt-daemon-system installed in a container in {:?}",
            started.elapsed()
        );
        Ok(())
    })
}
