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

    /// Inodes of the files in the lockspace's filesystem on which the daemon
    /// `pid` (in the container) holds a lock, POSIX or OFD, read from the
    /// `lock:` lines of its `/proc/PID/fdinfo/*` in the container. (OFD locks,
    /// which crash-safe mode takes, show pid -1 in /proc/locks: only the fd
    /// that holds one tells whose it is. The daemon's pid file lock, on /run,
    /// is not among them.)
    pub fn locked_inodes(&self, pid: u32) -> Vec<u64> {
        let dev = self.lockspace_dev();
        let mut inodes: Vec<u64> = self
            .fd_locks(pid)
            .into_iter()
            .filter(|l| l.dev == dev)
            .map(|l| l.inode)
            .collect();
        inodes.sort_unstable();
        inodes
    }

    /// How many open fds of `pid` are on the lockspace file with this inode.
    pub fn fds_on(&self, pid: u32, inode: u64) -> usize {
        let dev = self.lockspace_dev();
        let dir = self.c.path(&format!("/proc/{pid}/fd"));
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        entries
            .flatten()
            // metadata() follows the fd's link to the open file itself.
            .filter_map(|e| std::fs::metadata(e.path()).ok())
            .filter(|m| {
                use std::os::unix::fs::MetadataExt;
                m.dev() == dev && m.ino() == inode
            })
            .count()
    }

    /// Every lock held through an open fd of `pid` (its fdinfo `lock:` lines).
    pub fn fd_locks(&self, pid: u32) -> Vec<KernelLock> {
        let dir = self.c.path(&format!("/proc/{pid}/fdinfo"));
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        entries
            .flatten()
            // An fd closed since the listing has no fdinfo any more.
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .flat_map(|info| {
                info.lines()
                    .filter_map(|l| l.strip_prefix("lock:"))
                    .filter_map(KernelLock::parse)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every lock on a file in the lockspace's filesystem, whoever holds it,
    /// from the container's /proc/locks (the kernel's view, which also sees
    /// a lock whose fd only systemd's fd store still holds).
    ///
    /// /proc/locks is no snapshot: each read() of it walks the kernel's lock
    /// list anew from an index, so a lock taken or dropped anywhere on the
    /// machine between two reads (other containers' daemons are busy) shifts
    /// later entries out of view. Three whole reads are merged: an entry can
    /// be missed by a read, never invented.
    pub fn kernel_locks(&self) -> Vec<KernelLock> {
        let dev = self.lockspace_dev();
        let path = self.c.path("/proc/locks");
        let mut all: Vec<KernelLock> = Vec::new();
        for _ in 0..3 {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for l in text.lines().filter_map(KernelLock::parse) {
                if l.dev == dev && !all.contains(&l) {
                    all.push(l);
                }
            }
        }
        all
    }

    /// The device of the lockspaces' filesystem (every lease file of the
    /// tests is on it).
    pub fn lockspace_dev(&self) -> u64 {
        std::fs::metadata(self.c.path(LOCKSPACE))
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            .expect("lockspace dir")
    }

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

    /// Inode of a file in the container.
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

/// One lock as the kernel lists it (/proc/locks, or an fdinfo `lock:` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLock {
    /// `POSIX`, `OFDLCK`, `FLOCK`, ...
    pub class: String,
    /// `READ` or `WRITE`.
    pub mode: String,
    /// The holder's pid in the reader's namespace; -1 for an OFD lock.
    pub pid: i64,
    pub dev: u64,
    pub inode: u64,
}

impl KernelLock {
    /// Parses `1: OFDLCK ADVISORY  WRITE -1 00:28:10019360 0 0` (a waiter's
    /// `1: -> POSIX ...` line is not a lock held, and gives `None`).
    pub fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) == Some(&"->") {
            return None;
        }
        let mut id = f.get(5)?.split(':');
        let major = u32::from_str_radix(id.next()?, 16).ok()?;
        let minor = u32::from_str_radix(id.next()?, 16).ok()?;
        let inode = id.next()?.parse().ok()?;
        Some(Self {
            class: (*f.get(1)?).to_owned(),
            mode: (*f.get(3)?).to_owned(),
            pid: f.get(4)?.parse().ok()?,
            dev: libc::makedev(major, minor),
            inode,
        })
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
