//! A hung filesystem stalls only the lockspace on it. A FUSE mount whose server
//! never answers (we open /dev/fuse, mount, and never reply to INIT) makes every
//! open() and statfs() under it block, exactly like a dead NFS server. Clients
//! of other lockspaces must keep getting answers meanwhile. Needs root and
//! /dev/fuse; says SKIPPED otherwise.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use virtlockd::client::{owner, ClientError};
use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;
use virtlockd::protocol::RemoteError;

use crate::support::wait::within;
use crate::support::{bytes, holding, wait_logged, Daemon, Holder};

/// A FUSE mount nobody serves. Dropping it aborts the connection (every blocked
/// call fails with ENOTCONN) and detaches the mount.
struct HungMount {
    dir: PathBuf,
    fuse: Option<OwnedFd>,
}

impl HungMount {
    fn new(dir: &Path) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root to mount".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let fuse = open("/dev/fuse", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| format!("/dev/fuse: {e}"))?;
        let opts = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            fuse.as_raw_fd()
        );
        mount(
            Some("virtlockd-test-hung"),
            dir,
            Some("fuse"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| format!("mount fuse: {e}"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            fuse: Some(fuse),
        })
    }
}

impl HungMount {
    /// [`HungMount::new`], or `None` after the skip note for `test`.
    fn or_skip(test: &str, dir: &Path) -> Option<Self> {
        Self::new(dir)
            .map_err(|why| crate::support::skip(test, &why))
            .ok()
    }

    /// The server dies: blocked and future calls fail with ENOTCONN.
    fn abort(&mut self) {
        drop(self.fuse.take());
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        self.abort();
        let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
    }
}

/// How many of the daemon's threads wait on a FUSE mount (before the
/// mount's INIT is answered, in `fuse_get_req`; after it, for the answer).
fn threads_waiting_on_fuse(d: &Daemon) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", d.pid())) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("wchan")).ok())
        .filter(|w| w.starts_with("fuse_") || w == "request_wait_answer")
        .count()
}

/// Waits until `n` of the daemon's threads are stuck on the hung mount.
async fn wait_stuck(d: &Daemon, n: usize) {
    let stuck = within(Duration::from_secs(10), || threads_waiting_on_fuse(d) >= n).await;
    assert!(stuck, "not {n} threads stuck on the mount:\n{}", d.log());
}

/// A direct-lease ACQUIRE under the hung mount: it keeps the default
/// lockspace's thread stuck in open().
struct StuckCall(tokio::task::JoinHandle<Result<(), virtlockd::client::ClientError>>);

impl StuckCall {
    async fn start(d: &Daemon, mnt: &HungMount) -> Self {
        let mut stuck = d.client().await;
        stuck.register(&owner("vm2", 2, 4_000_002)).await.unwrap();
        let disk = bytes(&mnt.dir.join("disk.img"));
        Self(tokio::spawn(
            async move { stuck.acquire(b"", &disk, 0).await },
        ))
    }

    /// Kills the mount's server: the stuck call must then fail, not hang.
    async fn fails_when_the_mount_dies(self, mut mnt: HungMount) {
        mnt.abort();
        let r = tokio::time::timeout(Duration::from_secs(10), self.0)
            .await
            .expect("stuck acquire never answered")
            .unwrap();
        assert!(r.is_err());
    }
}

/// Closes the VM's connection and waits until it is fenced (SIGTERM);
/// returns how long that took.
async fn close_and_wait_fenced(d: &Daemon, vm: &mut Holder) -> Duration {
    let closed = Instant::now();
    vm.close_connection().await;
    assert_eq!(
        vm.wait_signal(Duration::from_secs(15)).await,
        Some(libc::SIGTERM),
        "{}",
        d.log()
    );
    closed.elapsed()
}

/// The error a call that failed on the dead mount must get: a system error
/// (38) of the lockspace domain (51).
#[track_caller]
fn system_error(r: Result<(), ClientError>) -> RemoteError {
    let e = r.unwrap_err();
    let e = e.remote().expect("error reply").clone();
    assert_eq!((e.code, e.domain), (38, 51), "{e:?}");
    e
}

#[tokio::test]
async fn hung_mount_stalls_only_its_own_lockspace() {
    let d = Daemon::start();
    let base = d.base();
    let test = "hung_mount_stalls_only_its_own_lockspace";
    let Some(mut mnt) = HungMount::or_skip(test, &base.join("hung")) else {
        return;
    };
    let vm = owner("vm", 1, 4_000_001);

    // A direct disk lock on the hung mount (default lockspace) ...
    let mut stuck_direct = d.client().await;
    stuck_direct.register(&vm).await.unwrap();
    let disk = bytes(&mnt.dir.join("disk.img"));
    let direct = tokio::spawn(async move {
        let r = stuck_direct.acquire(b"", &disk, 0).await;
        (r, stuck_direct)
    });
    // ... and a new lockspace directory on it.
    let mut stuck_create = d.client().await;
    let hung_ls = bytes(&mnt.dir.join("ls"));
    let create = tokio::spawn(async move { stuck_create.create_lockspace(&hung_ls).await });
    wait_stuck(&d, 2).await;
    assert!(
        !direct.is_finished() && !create.is_finished(),
        "the mount should hang"
    );

    // Everyone else is served promptly.
    let ls = base.join("local");
    let mut c = d.client().await;
    c.create_lockspace(&bytes(&ls)).await.unwrap();
    c.register(&owner("other", 2, 4_000_002)).await.unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let name = format!("r{i}");
        let t = Instant::now();
        c.acquire(&bytes(&ls), name.as_bytes(), ACQUIRE_AUTOCREATE)
            .await
            .unwrap();
        c.release(&bytes(&ls), name.as_bytes()).await.unwrap();
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < crate::support::UNSTALLED,
        "worst round trip {worst:?}"
    );
    assert!(!direct.is_finished(), "still hung");

    // The server dies: the stuck calls fail with the filesystem's error and the
    // default lockspace serves again.
    mnt.abort();
    let (r, mut stuck_direct) = tokio::time::timeout(Duration::from_secs(10), direct)
        .await
        .expect("direct acquire still hung after abort")
        .unwrap();
    let e = system_error(r);
    assert!(
        e.message.contains("Transport endpoint is not connected"),
        "{e:?}"
    );
    let r = tokio::time::timeout(Duration::from_secs(10), create)
        .await
        .expect("create still hung after abort")
        .unwrap();
    let e = system_error(r);
    assert!(e.message.starts_with("Unable to create lockspace"), "{e:?}");

    let local_disk = base.join("disk.img");
    std::fs::write(&local_disk, b"").unwrap();
    stuck_direct
        .acquire(b"", &bytes(&local_disk), 0)
        .await
        .unwrap();
    assert_eq!(d.kernel_locks_on(&local_disk), ["POSIX WRITE 0-0"]);
}

#[tokio::test]
async fn live_upgrade_blocked_by_a_hung_mount_is_abandoned_and_nothing_is_lost() {
    let d = Daemon::start();
    let base = d.base();
    let test = "live_upgrade_blocked_by_a_hung_mount_is_abandoned_and_nothing_is_lost";
    let Some(mnt) = HungMount::or_skip(test, &base.join("hung")) else {
        return;
    };
    let ls = base.join("local");
    let mut c = holding(&d, &ls, b"r").await;
    // The default lockspace is stuck in open() on the dead mount.
    let stuck = StuckCall::start(&d, &mnt).await;
    wait_stuck(&d, 1).await;

    d.signal(Signal::SIGUSR1);
    // Only the log tells an abandoned upgrade from one not yet done.
    wait_logged(
        &d,
        "live upgrade failed",
        1,
        "upgrade neither done nor abandoned",
    )
    .await;
    // Everyone is served again, the lease is intact.
    c.ping().await.unwrap();
    assert_eq!(d.kernel_locks_on(&ls.join("r")), ["POSIX WRITE 0-0"]);
    d.client().await.ping().await.unwrap();
    stuck.fails_when_the_mount_dies(mnt).await;
}

#[tokio::test]
async fn owner_is_fenced_even_when_a_hung_lockspace_cannot_answer_its_release() {
    let d = Daemon::start();
    let test = "owner_is_fenced_even_when_a_hung_lockspace_cannot_answer_its_release";
    let Some(mnt) = HungMount::or_skip(test, &d.base().join("hung")) else {
        return;
    };
    // A VM holding a lease on healthy storage, through its own connection.
    let ls = d.base().join("local");
    let mut vm = Holder::start(&d, &ls, "vmdisk", &[]).await;
    // Meanwhile the default lockspace is stuck in open() on the dead mount.
    let stuck = StuckCall::start(&d, &mnt).await;
    wait_stuck(&d, 1).await;

    // The VM's connection closes: its healthy lease is freed at once, and the
    // lockspace that cannot answer does not keep the owner from being fenced.
    let fenced = close_and_wait_fenced(&d, &mut vm).await;
    assert!(fenced < Duration::from_secs(8), "fenced after {fenced:?}");
    assert!(d.kernel_locks_on(&ls.join("vmdisk")).is_empty());
    assert!(!ls.join("vmdisk").exists());
    assert!(
        d.log().contains("did not answer the release"),
        "{}",
        d.log()
    );

    stuck.fails_when_the_mount_dies(mnt).await;
}

/// A release the closing connection stopped waiting for (its lockspace was
/// stuck on a hung mount) still runs once the lockspace can answer: the
/// owner was fenced meanwhile, and its lease must not stay locked for good.
#[tokio::test]
async fn a_release_given_up_on_runs_when_the_hung_lockspace_recovers() {
    let d = Daemon::start();
    let test = "a_release_given_up_on_runs_when_the_hung_lockspace_recovers";
    let Some(mnt) = HungMount::or_skip(test, &d.base().join("hung")) else {
        return;
    };
    // A VM holding a direct lease (default lockspace) on healthy storage.
    let disk = d.base().join("vm-direct.img");
    let mut vm = Holder::start(&d, Path::new(""), &disk.to_string_lossy(), &[]).await;
    assert_eq!(d.kernel_locks_on(&disk).len(), 1);
    // Then the default lockspace's thread gets stuck in open() on the mount.
    let stuck = StuckCall::start(&d, &mnt).await;
    wait_stuck(&d, 1).await;

    // The VM's connection closes: its release waits behind the stuck call,
    // the connection gives up on it and fences the owner.
    close_and_wait_fenced(&d, &mut vm).await;
    assert_eq!(
        d.kernel_locks_on(&disk).len(),
        1,
        "released before the lockspace could"
    );

    // The mount dies, the stuck call fails, and the queued release runs.
    stuck.fails_when_the_mount_dies(mnt).await;
    let released = within(Duration::from_secs(10), || {
        d.kernel_locks_on(&disk).is_empty()
    })
    .await;
    assert!(released, "the lease stayed locked:\n{}", d.log());
}
