//! Daemons to measure: ours on a private runtime directory, and Debian's
//! `/usr/sbin/virtlockd` (libvirt's) in a private mount namespace with its own
//! tmpfs on /run, since it has no option to move its socket. Both are killed
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// libvirt's daemon as Debian installs it.
pub const LIBVIRT: &str = "/usr/sbin/virtlockd";

/// How long a daemon may take to accept its first connection.
const START_PATIENCE: Duration = Duration::from_secs(10);

pub struct Spawned {
    child: Child,
    pub socket: PathBuf,
    _runtime: Option<tempfile::TempDir>,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our daemon `bin`, with its sockets in a new temporary directory.
pub fn ours(bin: &Path) -> std::io::Result<Spawned> {
    let runtime = tempfile::Builder::new().prefix("vl-bench").tempdir()?;
    let child = Command::new(bin)
        .arg("--runtime-dir")
        .arg(runtime.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let socket = runtime.path().join("virtlockd-sock");
    wait_accepting(Spawned {
        child,
        socket,
        _runtime: Some(runtime),
    })
}

/// libvirt's daemon, if it is installed and we may make a mount namespace
/// (root); otherwise why not.
pub fn libvirt() -> Result<Spawned, String> {
    if !Path::new(LIBVIRT).exists() {
        return Err(format!("{LIBVIRT} not installed (package libvirt-daemon)"));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root for a private /run".to_owned());
    }
    // unshare and sh exec in place, so the child's pid is the daemon's.
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o mode=0755 vl-bench-run /run && mkdir -p /run/libvirt && exec \"$0\"",
        )
        .arg(LIBVIRT)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    let socket = PathBuf::from(format!(
        "/proc/{}/root/run/libvirt/virtlockd-sock",
        child.id()
    ));
    wait_accepting(Spawned {
        child,
        socket,
        _runtime: None,
    })
    .map_err(|e| e.to_string())
}

fn wait_accepting(mut d: Spawned) -> std::io::Result<Spawned> {
    let deadline = Instant::now() + START_PATIENCE;
    while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
        if let Some(status) = d.child.try_wait()? {
            return Err(std::io::Error::other(format!("daemon exited: {status}")));
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other("daemon did not start accepting"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(d)
}
