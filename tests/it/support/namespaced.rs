//! A daemon (ours or libvirt's) in a private mount namespace with its own tmpfs
//! on /run, on libvirt's default paths: for hand-over and differential tests
//! against Debian's real virtlockd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use virtlockd::client::{owner, Client, ClientError};

use super::daemon::describe;
use super::process::quiet_success;
use super::skip::skip;

pub const LIBVIRT: &str = "/usr/sbin/virtlockd";
const OURS: &str = env!("CARGO_BIN_EXE_virtlockd");
/// Bound of every wait in these tests.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Runs in the new mount namespace: a private /run, then the daemon itself
/// (`exec`, so the spawned pid is the daemon's).
const SCRIPT: &str = "mount -t tmpfs -o mode=0755 lockd-run /run && \
                      mkdir -p /run/libvirt /run/lock && exec \"$0\" -f \"$1\"";

/// The arguments of `unshare` for a private copy of the mount namespace;
/// the command to run follows.
pub const PRIVATE_MOUNTS: [&str; 4] = ["--mount", "--propagation", "private", "--"];

/// Fake owner pids (never a real process): 4_000_001.. for the leases, above for probes.
static NEXT_PROBE_PID: AtomicU32 = AtomicU32::new(4_000_100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Libvirt,
    Ours,
}

impl Impl {
    pub fn binary(self) -> PathBuf {
        match self {
            Impl::Libvirt => LIBVIRT.into(),
            Impl::Ours => OURS.into(),
        }
    }
}

/// Whether this test can run here; prints `SKIPPED <test>: <reason>` if not.
pub fn prerequisites(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("needs root".to_owned())
    } else if !Path::new(LIBVIRT).exists() {
        Some(format!("{LIBVIRT} not installed (package libvirt-daemon)"))
    } else if !quiet_success(Command::new("setsid").arg("true")) {
        Some("setsid not available".to_owned())
    } else if !quiet_success(Command::new("unshare").args(PRIVATE_MOUNTS).args([
        "sh",
        "-c",
        "mount -t tmpfs -o mode=0755 probe /run",
    ])) {
        Some("cannot unshare a mount namespace with a tmpfs on /run".to_owned())
    } else {
        None
    };
    match reason {
        Some(r) => {
            skip(test, &r);
            false
        }
        None => true,
    }
}

/// A daemon in a private mount namespace with its own tmpfs on /run, started
/// through the symlink `<dir>/bin/virtlockd` without --runtime-dir, so that both
/// implementations use libvirt's paths. Killed (SIGKILL, by pid) when dropped;
/// its namespace goes with it.
pub struct Namespaced {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Namespaced {
    pub fn start(first: Impl) -> Self {
        Self::start_entered(first, &[])
    }

    /// Starts it through `enter`, a command that execs the rest (e.g.
    /// `nsenter -t PID -m --`: a private /run inside another mount namespace).
    pub fn start_entered(first: Impl, enter: &[&std::ffi::OsStr]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("bin")).expect("bin dir");
        let link = dir.path().join("bin/virtlockd");
        std::os::unix::fs::symlink(first.binary(), &link).expect("symlink");
        let conf = dir.path().join("virtlockd.conf");
        // libvirt's syntax, read by both implementations.
        std::fs::write(
            &conf,
            format!(
                "log_level = 3\nlog_filters = \"2:virtlockd 1:locking\"\nlog_outputs = \"1:file:{}\"\n",
                dir.path().join("daemon.log").display()
            ),
        )
        .expect("config");
        let out = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let child = Command::new("setsid")
            .args(enter)
            .arg("unshare")
            .args(PRIVATE_MOUNTS)
            .args(["sh", "-c", SCRIPT])
            .arg(&link)
            .arg(&conf)
            .env_remove("LIBVIRT_LOG_OUTPUTS")
            .env_remove("LIBVIRT_LOG_FILTERS")
            .env_remove("LIBVIRT_DEBUG")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn setsid unshare");
        Self { child, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path inside the daemon's namespace, seen from outside.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid()))
    }

    pub fn socket(&self) -> PathBuf {
        self.inside("/run/libvirt/virtlockd-sock")
    }

    pub fn state_files(&self) -> [PathBuf; 2] {
        [
            self.inside("/run/virtlockd-restart-exec.json"),
            self.inside("/run/virtlockd-restart-exec.msgpack"),
        ]
    }

    /// Both implementations' logs (one file, one config) plus stderr.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- daemon.log\n{}\n--- stderr\n{}",
            read("daemon.log"),
            read("stderr.log")
        )
    }

    /// Re-points the symlink (new link, renamed over the old one).
    pub fn repoint(&self, to: Impl) {
        let link = self.dir.path().join("bin/virtlockd");
        let tmp = self.dir.path().join("bin/virtlockd.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(to.binary(), &tmp).expect("new symlink");
        std::fs::rename(&tmp, &link).expect("rename symlink");
    }

    pub fn sigusr1(&self) {
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGUSR1).expect("SIGUSR1");
    }

    /// Panics (with the logs) if the daemon has exited.
    pub fn assert_alive(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("daemon exited ({status}) {what}; logs:\n{}", self.log());
        }
    }

    /// Waits until the process runs `expected`'s binary, then until a fresh,
    /// registered connection is answered; returns that connection. Only connects
    /// once the exec has happened: libvirt's old image would die of a connection
    /// that is not yet registered when it serialises its clients.
    pub async fn wait_serving(&mut self, expected: Impl, what: &str) -> Client {
        let want = std::fs::canonicalize(expected.binary()).expect("canonical binary");
        let exe = PathBuf::from(format!("/proc/{}/exe", self.pid()));
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.assert_alive(what);
            if std::fs::read_link(&exe).is_ok_and(|p| p == want)
                && std::os::unix::net::UnixStream::connect(self.socket()).is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not running {expected:?} with a socket after {PATIENCE:?}; logs:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let socket = self.socket();
        let answered = tokio::time::timeout(PATIENCE, async move {
            let mut c = Client::connect(socket).await?;
            let pid = NEXT_PROBE_PID.fetch_add(1, Ordering::Relaxed);
            c.register(&owner("probe", pid - 4_000_000, pid)).await?;
            Ok::<_, ClientError>(c)
        })
        .await;
        match answered {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!("{what}: probe failed: {e}; logs:\n{}", self.log()),
            Err(_) => panic!(
                "{what}: no answer within {PATIENCE:?}; logs:\n{}",
                self.log()
            ),
        }
    }

    /// Sorted `/proc/locks` entries of the daemon.
    pub fn kernel_locks(&self) -> Vec<String> {
        let mut v: Vec<String> = virtlockd::proclocks::of_pid(self.pid())
            .expect("/proc/locks")
            .iter()
            .map(|l| format!("{} inode {}", describe(l), l.inode))
            .collect();
        v.sort();
        v
    }

    pub fn locks_on(&self, path: &Path) -> Vec<String> {
        virtlockd::proclocks::of_pid_on(self.pid(), path)
            .map(|v| v.iter().map(describe).collect())
            .unwrap_or_default()
    }
}

impl Namespaced {
    /// SIGKILL and reap. By pid: Child::kill signals exactly the process we
    /// spawned, and its namespace goes with it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Namespaced {
    fn drop(&mut self) {
        self.kill();
    }
}
