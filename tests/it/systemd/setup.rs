//! A container running systemd with virtlockd's units installed (ours from
//! `contrib/systemd/`, or Debian's from `libvirt-daemon-system`) and our daemon
//! binary as `/usr/sbin/virtlockd`, plus the probes the tests share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtlockd::client::{owner, Client};

use super::container::Container;

/// Our daemon binary, installed in the container in place of libvirt's.
pub const OUR_DAEMON: &str = env!("CARGO_BIN_EXE_virtlockd");
/// Where every unit file (ours and Debian's) expects the daemon.
pub const DAEMON_PATH: &str = "/usr/sbin/virtlockd";
pub const LOCK_SOCKET: &str = "/run/libvirt/virtlockd-sock";
pub const ADMIN_SOCKET: &str = "/run/libvirt/virtlockd-admin-sock";
/// Lockspaces and lease files of the tests, inside the container.
pub const LOCKSPACE: &str = "/srv/vltest/lockspace";
/// Bound of every wait on the daemon or on systemd.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Which unit files run the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// `contrib/systemd/`: Type=notify, ExecReload, RemoveOnStop.
    Ours,
    /// Debian's `libvirt-daemon-system` 9.0, unchanged: Type=simple.
    Debian,
}

/// A booted container with the units of one kind enabled, the sockets
/// listening and no daemon running yet.
pub struct Host {
    pub c: Container,
    pub units: Units,
}

impl Host {
    /// Boots and installs, or reports why the test cannot run here and
    /// returns `None`.
    pub fn boot_or_skip(test: &str, units: Units) -> Option<Self> {
        let started = Instant::now();
        let booted = match units {
            Units::Ours => Container::boot(test),
            Units::Debian => super::container::debian_libvirt_layer()
                .and_then(|l| Container::boot_on(test, &[&l])),
        };
        let c = match booted {
            Ok(c) => c,
            Err(reason) => {
                crate::support::skip(test, &reason);
                return None;
            }
        };
        let host = Self { c, units };
        host.install();
        eprintln!(
            "{test}: container booted and units installed in {:?}",
            started.elapsed()
        );
        Some(host)
    }

    fn install(&self) {
        self.c.copy_in(Path::new(OUR_DAEMON), DAEMON_PATH);
        if self.units == Units::Ours {
            let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
            for unit in [
                "virtlockd.socket",
                "virtlockd-admin.socket",
                "virtlockd.service",
            ] {
                self.c
                    .copy_in(&contrib.join(unit), &format!("/etc/systemd/system/{unit}"));
            }
            self.c.exec_ok(
                "systemctl daemon-reload && \
                 systemctl enable --now virtlockd.socket virtlockd-admin.socket",
            );
        }
        self.c.exec_ok(&format!("mkdir -p {LOCKSPACE}"));
        // Both kinds: the sockets listen (Debian's are enabled by the package
        // and started at boot), and nothing runs until a client connects.
        let sockets = self.c.exec_ok(
            "systemctl is-active virtlockd.socket virtlockd-admin.socket; \
             systemctl is-active virtlockd.service || true",
        );
        assert_eq!(sockets, "active\nactive\ninactive\n", "{:?}", self.units);
    }

    /// The lock socket as the host reaches it.
    pub fn socket(&self) -> PathBuf {
        self.c.path(LOCK_SOCKET)
    }

    /// Properties of a unit (`systemctl show -p ...`).
    pub fn show(&self, unit: &str, props: &[&str]) -> HashMap<String, String> {
        let out = self
            .c
            .exec_ok(&format!("systemctl show {unit} -p {}", props.join(",")));
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// `ActiveState/SubState` of virtlockd.service.
    pub fn state(&self) -> String {
        let p = self.show("virtlockd.service", &["ActiveState", "SubState"]);
        format!("{}/{}", p["ActiveState"], p["SubState"])
    }

    /// virtlockd.service's main pid, as the container sees it (0: none).
    pub fn main_pid(&self) -> u32 {
        self.show("virtlockd.service", &["MainPID"])["MainPID"]
            .parse()
            .expect("MainPID is a number")
    }

    /// A new connection registered for the fake owner `owner_pid` (never a
    /// process in the container: nobody is fenced for it).
    pub async fn client(&self, owner_pid: u32) -> Client {
        let mut c = tokio::time::timeout(PATIENCE, Client::connect(self.socket()))
            .await
            .expect("connect timed out")
            .expect("connect");
        tokio::time::timeout(
            PATIENCE,
            c.register(&owner("vm", owner_pid - 4_000_000, owner_pid)),
        )
        .await
        .expect("REGISTER unanswered")
        .unwrap_or_else(|e| panic!("register: {e}; journal:\n{}", self.journal("")));
        c
    }

    /// `virtlockctl ARGS --json` against the daemon's admin socket, from the
    /// host (connecting through the admin socket activates the daemon).
    pub fn ctl(&self, args: &[&str]) -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_virtlockctl"))
            .arg("--socket")
            .arg(self.c.path(ADMIN_SOCKET))
            .args(args)
            .arg("--json")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run virtlockctl");
        assert!(
            out.status.success(),
            "virtlockctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("virtlockctl JSON")
    }

    /// Inodes of the files in the lockspace's filesystem on which `pid` (in
    /// the container) holds a POSIX lock, from the container's /proc/locks.
    /// (The daemon's pid file lock, on /run, is not among them.)
    pub fn locked_inodes(&self, pid: u32) -> Vec<u64> {
        let dev = std::fs::metadata(self.c.path(LOCKSPACE))
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            .expect("lockspace dir");
        let locks = self.c.exec_ok("cat /proc/locks");
        let mut inodes: Vec<u64> = locks
            .lines()
            .filter_map(|l| {
                // "1: POSIX  ADVISORY  WRITE 66 00:28:10019360 0 0"
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.get(1) != Some(&"POSIX") || f.get(4) != Some(&pid.to_string().as_str()) {
                    return None;
                }
                let mut id = f.get(5)?.split(':');
                let major = u32::from_str_radix(id.next()?, 16).ok()?;
                let minor = u32::from_str_radix(id.next()?, 16).ok()?;
                let inode = id.next()?.parse().ok()?;
                (libc::makedev(major, minor) == dev).then_some(inode)
            })
            .collect();
        inodes.sort_unstable();
        inodes
    }

    /// Inode of a file in the container.
    /// The inodes of these lease files in the lockspace, sorted as
    /// [`Host::locked_inodes`] gives them.
    pub fn lease_inodes(&self, names: &[String]) -> Vec<u64> {
        let mut inodes: Vec<u64> = names
            .iter()
            .map(|n| self.inode(&format!("{LOCKSPACE}/{n}")))
            .collect();
        inodes.sort_unstable();
        inodes
    }

    pub fn inode(&self, inside: &str) -> u64 {
        std::fs::metadata(self.c.path(inside))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or_else(|e| panic!("{inside}: {e}"))
    }

    /// This boot's journal of virtlockd.service; `args` adds journalctl options.
    pub fn journal(&self, args: &str) -> String {
        let out = self.c.exec(&format!(
            "journalctl -b -u virtlockd.service --no-pager {args}"
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `what` holds, or panics with `why` and the journal.
    #[track_caller]
    pub fn wait_for(&self, why: &str, mut what: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !what() {
            assert!(
                Instant::now() < deadline,
                "{why}: not within {PATIENCE:?}; journal:\n{}",
                self.journal("")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A lease name as libvirt's lockd plugin makes them (a hex SHA-256).
pub fn lease_name(tag: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(tag.as_bytes()))
}

pub fn busy_text(name: &str) -> String {
    format!("resource busy: Lockspace resource '{name}' is locked")
}
