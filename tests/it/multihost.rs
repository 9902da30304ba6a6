//! Two "hosts" sharing one lockspace directory: two daemons with their own
//! runtime directories, whose fcntl leases on the same files are arbitrated by
//! the kernel exactly as a cluster filesystem's lock manager (NFS, CephFS, GFS2)
//! arbitrates them between hypervisors. Each host must respect the other's
//! leases, in both lease modes libvirt uses, and with libvirt's own virtlockd
//! as one of the two hosts (the mixed fleet of a rolling migration).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use crate::support::namespaced::{prerequisites, Impl, Namespaced};
use crate::support::{assert_err, bytes, Daemon};

/// VIR_ERR_RESOURCE_BUSY in VIR_FROM_LOCKSPACE.
const BUSY: (i32, i32) = (87, 51);

/// One host's lock daemon: ours on its own runtime dir, or libvirt's in its
/// own mount namespace.
enum Host {
    Ours(Daemon),
    Libvirt(Namespaced),
}

impl Host {
    async fn start(which: Impl) -> Self {
        match which {
            Impl::Ours => Host::Ours(Daemon::start()),
            Impl::Libvirt => {
                let mut ns = Namespaced::start(Impl::Libvirt);
                // Waits until it answers; the probe connection is not needed.
                drop(
                    ns.wait_serving(Impl::Libvirt, "libvirt's virtlockd start")
                        .await,
                );
                Host::Libvirt(ns)
            }
        }
    }

    fn socket(&self) -> PathBuf {
        match self {
            Host::Ours(d) => d.socket(),
            Host::Libvirt(ns) => ns.socket(),
        }
    }

    fn log(&self) -> String {
        match self {
            Host::Ours(d) => d.log(),
            Host::Libvirt(ns) => ns.log(),
        }
    }

    /// A registered connection for a fake owner pid (nobody is ever fenced,
    /// and nothing is released behind the test's back on disconnect).
    async fn client(&self, owner_pid: u32) -> Client {
        let mut c = Client::connect(self.socket()).await.expect("connect");
        c.register(&owner("vm", owner_pid - 4_000_000, owner_pid))
            .await
            .unwrap_or_else(|e| panic!("register: {e}; log:\n{}", self.log()));
        c
    }

    /// Kernel locks this host's daemon holds on `path`.
    fn locks_on(&self, path: &Path) -> Vec<String> {
        match self {
            Host::Ours(d) => d.kernel_locks_on(path),
            Host::Libvirt(ns) => ns.locks_on(path),
        }
    }

    /// What a host crash does to its daemon: SIGKILL, so only the kernel
    /// cleans up (it drops every POSIX lock of the process).
    fn crash(&mut self) {
        match self {
            Host::Ours(d) => assert_eq!(d.stop_with(Signal::SIGKILL), None),
            Host::Libvirt(ns) => ns.kill(),
        }
    }
}

/// The shared storage: a file lockspace (lease files named like libvirt's
/// SHA-256 names) and a disk image for direct leases.
struct Shared {
    _dir: tempfile::TempDir,
    ls: PathBuf,
    disk: PathBuf,
}

impl Shared {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("shared dir");
        let ls = dir.path().join("lockd/files");
        let disk = dir.path().join("images/shared.img");
        std::fs::create_dir_all(disk.parent().expect("images dir")).expect("images dir");
        std::fs::write(&disk, vec![0u8; 4096]).expect("disk image");
        Self {
            _dir: dir,
            ls,
            disk,
        }
    }

    fn lsb(&self) -> Vec<u8> {
        bytes(&self.ls)
    }
}

fn busy_text(name: &str) -> String {
    format!("resource busy: Lockspace resource '{name}' is locked")
}

/// Runs every cross-host scenario with `a` and `b` as the two hosts.
async fn two_hosts(a: Impl, b: Impl) {
    let shared = Shared::new();
    let mut host_a = Host::start(a).await;
    let host_b = Host::start(b).await;
    let (lsb, disk) = (shared.lsb(), bytes(&shared.disk));
    let lease = "87a71e8ee5d913c7cef02c8444dbf07c1ce2b5f83241e438381112896d364d05";
    let lease_file = shared.ls.join(lease);

    // Each host's libvirtd sends CREATE_LOCKSPACE for the same directory.
    let mut ca = host_a.client(4_000_001).await;
    let mut cb = host_b.client(4_000_002).await;
    ca.create_lockspace(&lsb).await.expect("create on A");
    cb.create_lockspace(&lsb)
        .await
        .expect("create on B (exists)");

    // File lockspace: A's lease makes B busy with libvirt's text, and B's
    // failed attempt must not disturb A's lock or A's lease file.
    ca.acquire(&lsb, lease.as_bytes(), ACQUIRE_AUTOCREATE)
        .await
        .expect("A acquires");
    assert_eq!(host_a.locks_on(&lease_file), ["POSIX WRITE 0-0"]);
    assert_err(
        cb.acquire(&lsb, lease.as_bytes(), ACQUIRE_AUTOCREATE).await,
        BUSY.0,
        BUSY.1,
        &busy_text(lease),
    );
    assert_eq!(host_a.locks_on(&lease_file), ["POSIX WRITE 0-0"]);

    // A's release (which unlinks the AUTOCREATE file) lets B in at once.
    ca.release(&lsb, lease.as_bytes())
        .await
        .expect("A releases");
    cb.acquire(&lsb, lease.as_bytes(), ACQUIRE_AUTOCREATE)
        .await
        .expect("B acquires after A released");
    assert_eq!(host_b.locks_on(&lease_file), ["POSIX WRITE 0-0"]);
    assert!(host_a.locks_on(&lease_file).is_empty());
    assert_err(
        ca.acquire(&lsb, lease.as_bytes(), ACQUIRE_AUTOCREATE).await,
        BUSY.0,
        BUSY.1,
        &busy_text(lease),
    );
    cb.release(&lsb, lease.as_bytes())
        .await
        .expect("B releases");
    assert!(
        !lease_file.exists(),
        "the last holder removes the lease file"
    );

    // Shared leases (<shareable/> disks) coexist across hosts; an exclusive
    // one is refused while any host shares it.
    let flags = ACQUIRE_AUTOCREATE | ACQUIRE_SHARED;
    ca.acquire(&lsb, b"ro", flags).await.expect("A shares");
    cb.acquire(&lsb, b"ro", flags).await.expect("B shares too");
    assert_eq!(host_a.locks_on(&shared.ls.join("ro")), ["POSIX READ 0-0"]);
    assert_eq!(host_b.locks_on(&shared.ls.join("ro")), ["POSIX READ 0-0"]);
    let mut cb2 = host_b.client(4_000_003).await;
    assert_err(
        cb2.acquire(&lsb, b"ro", ACQUIRE_AUTOCREATE).await,
        BUSY.0,
        BUSY.1,
        &busy_text("ro"),
    );
    cb.release(&lsb, b"ro").await.expect("B unshares");
    ca.release(&lsb, b"ro").await.expect("A unshares");

    // Direct leases on the disk image itself (no file_lockspace_dir).
    ca.acquire(b"", &disk, 0).await.expect("A locks the disk");
    let disk_text = busy_text(&shared.disk.display().to_string());
    assert_err(cb.acquire(b"", &disk, 0).await, BUSY.0, BUSY.1, &disk_text);
    ca.release(b"", &disk).await.expect("A unlocks the disk");
    cb.acquire(b"", &disk, 0)
        .await
        .expect("B locks the disk after A");
    assert_err(ca.acquire(b"", &disk, 0).await, BUSY.0, BUSY.1, &disk_text);
    cb.release(b"", &disk).await.expect("B unlocks the disk");

    // A host that dies holding leases frees them for the other host: the
    // lease file stays (nobody unlinked it) and B takes it over.
    ca.acquire(&lsb, lease.as_bytes(), ACQUIRE_AUTOCREATE)
        .await
        .expect("A acquires again");
    ca.acquire(b"", &disk, 0)
        .await
        .expect("A locks the disk again");
    assert_err(
        cb.acquire(&lsb, lease.as_bytes(), ACQUIRE_AUTOCREATE).await,
        BUSY.0,
        BUSY.1,
        &busy_text(lease),
    );
    host_a.crash();
    cb.acquire(&lsb, lease.as_bytes(), ACQUIRE_AUTOCREATE)
        .await
        .expect("B acquires what the dead host held");
    cb.acquire(b"", &disk, 0)
        .await
        .expect("B locks the disk the dead host held");
    assert_eq!(host_b.locks_on(&lease_file), ["POSIX WRITE 0-0"]);
    assert_eq!(host_b.locks_on(&shared.disk), ["POSIX WRITE 0-0"]);
    cb.release(&lsb, lease.as_bytes())
        .await
        .expect("B releases");
    cb.release(b"", &disk).await.expect("B unlocks");
    // Bounded: the scenario above needs well under a second of calls.
    tokio::time::timeout(Duration::from_secs(5), cb.ping())
        .await
        .expect("B still answers")
        .expect("ping");
}

#[tokio::test]
async fn two_of_our_daemons_share_a_lockspace() {
    two_hosts(Impl::Ours, Impl::Ours).await;
}

#[tokio::test]
async fn libvirt_host_and_our_host_respect_each_other() {
    if !prerequisites("libvirt_host_and_our_host_respect_each_other") {
        return;
    }
    two_hosts(Impl::Libvirt, Impl::Ours).await;
}

#[tokio::test]
async fn our_host_and_libvirt_host_respect_each_other() {
    if !prerequisites("our_host_and_libvirt_host_respect_each_other") {
        return;
    }
    two_hosts(Impl::Ours, Impl::Libvirt).await;
}
