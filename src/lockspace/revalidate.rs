//! Revalidation of leases on network filesystems. A distributed filesystem can
//! drop our fcntl locks behind our back (our client evicted, the host cut off from
//! the lock manager) and let another host take them; libvirt's daemon never
//! notices. Re-asserting each lock on the fd that already holds it finds out:
//!
//! * success: we hold a lock on our fd's file. Our lock may have vanished and the
//!   path been unlinked and recreated in between (another host's AUTOCREATE
//!   release and re-create, an NFS silly-rename): F_SETLK then succeeds on the
//!   orphaned inode while the file everybody else locks is another one. So the
//!   path is `stat`ed and must still name our fd's file (device and inode);
//!   otherwise the lease is lost ([`LossCause::Replaced`]). A lock that vanished
//!   while the file stayed is simply held again; that window cannot be seen;
//! * EAGAIN/EACCES: someone else holds it now: lost at once ([`LossCause::Taken`]);
//! * any other error (ENOTCONN from a dead FUSE client, ESTALE, EIO, ENOLCK,
//!   ...): the filesystem does not answer for our lock. A lost lease fences its
//!   VM, and a single EIO or ENOLCK is what an NFS server failover or lock
//!   recovery looks like while the lock itself survives, so this counts as lost
//!   only when [`FAILED_CHECKS_FOR_LOSS`] checks in a row fail; a check that
//!   succeeds in between starts the count again.
//!
//! The check never drops a lock: F_SETLK with the mode we hold, on the fd we hold
//! it with, only replaces our lock by the same one. It never opens a second fd on
//! a held file (closing that fd would drop all our locks on the file).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use tracing::warn;

use super::lease::{is_conflict, Lease, LockMode, Storage};
use super::{LockSpace, OwnerPid};

/// Consecutive failing checks (errors other than a conflict) that make a lease
/// lost. Two: one check-interval of grace for a transient error, no more.
pub const FAILED_CHECKS_FOR_LOSS: u32 = 2;

/// Whether a resource still has its kernel lock, as far as we can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    Held,
    /// The lock is gone. The entry stays (owners may still RELEASE it) but
    /// protects nothing; its file is never unlinked by us. Boxed: rare, and
    /// every held lease would otherwise carry its size.
    Lost(Box<Lost>),
}

/// Why and since when a lease is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub cause: LossCause,
    pub since: SystemTime,
}

impl LeaseStatus {
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost(_))
    }

    pub fn lost(cause: LossCause, since: SystemTime) -> Self {
        Self::Lost(Box::new(Lost { cause, since }))
    }

    /// A lease a live-upgrade state marks as not held (`lockHeld: false`), with
    /// the reason and time (seconds since the epoch) the state kept, if any
    /// (libvirt's state keeps neither).
    pub fn restored_lost(reason: Option<String>, since: i64) -> Self {
        Self::lost(
            reason.map_or(LossCause::BeforeUpgrade, |r| LossCause::Earlier(r.into())),
            match since {
                1.. => UNIX_EPOCH + Duration::from_secs(since as u64),
                _ => SystemTime::now(),
            },
        )
    }
}

/// Why a lease was found lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LossCause {
    #[error("another host or process holds the lock now")]
    Taken,
    #[error("the lease file was replaced or removed")]
    Replaced,
    #[error("the filesystem fails the lease file: {0}")]
    Failed(Errno),
    /// Lost before a live upgrade whose state did not say why (libvirt's).
    #[error("already lost before a live upgrade")]
    BeforeUpgrade,
    /// Lost before a live upgrade, for the reason given then.
    #[error("{0}")]
    Earlier(Arc<str>),
}

/// A lease found lost by [`LockSpace::revalidate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub name: Vec<u8>,
    pub path: PathBuf,
    /// Owner pids, one entry per acquisition (as in the resource).
    pub owners: Vec<OwnerPid>,
    pub cause: LossCause,
}

impl LockSpace {
    /// Checks every held lease whose file is on network storage; marks the lost
    /// ones and returns them (each loss is reported once). Blocking syscalls:
    /// run it where a hung mount stalls nothing but this lockspace.
    pub fn revalidate(&mut self) -> Vec<Loss> {
        let mut losses = Vec::new();
        let dir = self.dir.as_deref();
        for (name, res) in self.resources.iter_mut() {
            if res.status.is_lost() {
                continue;
            }
            let on_network = match res.checked {
                Some(b) => b,
                None => {
                    // An fstatfs that fails (dead mount) is no local filesystem.
                    let b = !matches!(res.lease.storage(), Ok(Storage::Local));
                    res.checked = Some(b);
                    b
                }
            };
            if !on_network {
                continue;
            }
            let mode = if res.shared() {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            };
            let path = super::path_in(dir, name);
            let cause = match check(&res.lease, &path, mode) {
                Ok(()) => {
                    res.failures = 0;
                    continue;
                }
                Err(LossCause::Failed(errno))
                    if u32::from(res.failures) + 1 < FAILED_CHECKS_FOR_LOSS =>
                {
                    res.failures += 1;
                    warn!(
                        resource = %crate::names::lossy_utf8(name),
                        path = %path.display(),
                        error = %errno,
                        "lease check failed; lost if the next check fails too"
                    );
                    continue;
                }
                Err(cause) => cause,
            };
            res.status = LeaseStatus::lost(cause.clone(), SystemTime::now());
            losses.push(Loss {
                name: name.to_vec(),
                path,
                owners: res.owners.to_vec(),
                cause,
            });
        }
        for loss in &losses {
            self.journal_or_log(&loss.name);
        }
        losses
    }

    /// Resources found lost and not yet released.
    pub fn lost(&self) -> impl Iterator<Item = (&[u8], &super::Resource)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.status.is_lost())
            .map(|(n, r)| (&**n, r))
    }
}

/// Re-asserts the lock, then makes sure the path still names the locked file.
fn check(lease: &Lease, path: &Path, mode: LockMode) -> Result<(), LossCause> {
    reassert(lease, mode)?;
    match lease.is_at(path) {
        Ok(true) => Ok(()),
        Ok(false) | Err(Errno::ENOENT | Errno::ENOTDIR) => Err(LossCause::Replaced),
        Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(LossCause::Failed(e)),
    }
}

/// Takes the lock we hold once more, on the same fd and in the same mode.
fn reassert(lease: &Lease, mode: LockMode) -> Result<(), LossCause> {
    match lease.lock(mode) {
        Ok(()) => Ok(()),
        // Interrupted: nothing learned; the next check asks again.
        Err(Errno::EINTR) => Ok(()),
        Err(e) if is_conflict(e) => Err(LossCause::Taken),
        Err(e) => Err(LossCause::Failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use nix::fcntl::{fcntl, FcntlArg};

    use super::*;
    use crate::lockspace::create_directory;
    use crate::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

    fn space() -> (tempfile::TempDir, PathBuf, LockSpace) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ls");
        create_directory(dir.as_os_str().as_bytes()).unwrap();
        let ls = LockSpace::directory(dir.as_os_str().as_bytes().to_vec());
        (tmp, dir, ls)
    }

    /// Treats every lease of `ls` as one on network storage (the test files are
    /// on a local filesystem, which revalidation otherwise skips).
    fn as_if_on_network(ls: &mut LockSpace) {
        for r in ls.resources.values_mut() {
            r.checked = Some(true);
        }
    }

    /// What another host taking the lock looks like to us: our POSIX lock is
    /// dropped (behind our back) and an OFD lock, which conflicts with ours even
    /// inside this process, takes byte 0.
    fn taken_by_another_host(ls: &LockSpace, name: &[u8]) -> std::fs::File {
        drop_our_lock(ls, name);
        let other = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(ls.path_of(name))
            .unwrap();
        lock_as_another_host(&other);
        other
    }

    /// Byte 0 of a lease file, as leases lock it.
    fn byte_zero(l_type: libc::c_int) -> libc::flock {
        libc::flock {
            l_type: l_type as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 1,
            l_pid: 0,
        }
    }

    /// An OFD write lock on byte 0 of `file`: it conflicts with our POSIX
    /// locks even inside this process, as another host's lock would.
    fn lock_as_another_host(file: &std::fs::File) {
        fcntl(file, FcntlArg::F_OFD_SETLK(&byte_zero(libc::F_WRLCK))).expect("OFD lock");
    }

    #[test]
    fn leases_on_local_storage_are_not_checked() {
        let (_t, dir, mut ls) = space();
        ls.acquire(b"a", 1, ACQUIRE_AUTOCREATE).unwrap();
        let _other = taken_by_another_host(&ls, b"a");
        assert!(ls.revalidate().is_empty());
        assert_eq!(ls.resources[&b"a"[..]].checked, Some(false));
        assert!(dir.join("a").exists());
    }

    #[test]
    fn held_leases_stay_held_and_keep_their_lock() {
        let (_t, dir, mut ls) = space();
        ls.acquire(b"x", 1, ACQUIRE_AUTOCREATE).unwrap();
        ls.acquire(b"s", 1, ACQUIRE_AUTOCREATE | ACQUIRE_SHARED)
            .unwrap();
        as_if_on_network(&mut ls);
        for _ in 0..3 {
            assert_eq!(ls.revalidate(), Vec::new());
        }
        let modes = |n: &str| {
            crate::proclocks::of_pid_on(std::process::id(), &dir.join(n))
                .unwrap()
                .into_iter()
                .map(|l| l.mode)
                .collect::<Vec<_>>()
        };
        // Exclusive stays exclusive, shared is not upgraded.
        assert_eq!(modes("x"), ["WRITE"]);
        assert_eq!(modes("s"), ["READ"]);
        assert_eq!(ls.lost().count(), 0);
    }

    #[test]
    fn a_lease_taken_elsewhere_is_lost_once_and_its_file_survives_release() {
        let (_t, dir, mut ls) = space();
        ls.acquire(b"a", 7, ACQUIRE_AUTOCREATE).unwrap();
        ls.acquire(b"b", 8, ACQUIRE_AUTOCREATE).unwrap();
        as_if_on_network(&mut ls);
        let _other = taken_by_another_host(&ls, b"a");
        let losses = ls.revalidate();
        assert_eq!(
            losses,
            vec![Loss {
                name: b"a".to_vec(),
                path: dir.join("a"),
                owners: vec![7],
                cause: LossCause::Taken,
            }]
        );
        // Reported once; the other lease is untouched.
        assert!(ls.revalidate().is_empty());
        assert_eq!(ls.lost().map(|(n, _)| n).collect::<Vec<_>>(), [b"a"]);
        // Nobody else in this daemon gets the name while it is lost.
        assert!(matches!(
            ls.acquire(b"a", 9, ACQUIRE_AUTOCREATE),
            Err(crate::lockspace::LockError::Busy(_))
        ));
        // The owner's release succeeds and leaves the other host's file alone.
        ls.release(b"a", 7).unwrap();
        assert!(dir.join("a").exists());
        ls.release(b"b", 8).unwrap();
        assert!(!dir.join("b").exists());
    }

    #[test]
    fn a_lock_that_vanished_unnoticed_is_taken_again() {
        // Nothing can tell this from a lease that was never gone: revalidation
        // re-takes it, which is all it can do.
        let (_t, dir, mut ls) = space();
        ls.acquire(b"a", 1, ACQUIRE_AUTOCREATE).unwrap();
        as_if_on_network(&mut ls);
        drop(taken_by_another_host(&ls, b"a"));
        assert!(ls.revalidate().is_empty());
        let mine = crate::proclocks::of_pid_on(std::process::id(), &dir.join("a")).unwrap();
        assert_eq!(mine.len(), 1, "{mine:?}");
    }

    /// Drops our POSIX lock on `name` behind our back, as a filesystem that
    /// lost it would.
    fn drop_our_lock(ls: &LockSpace, name: &[u8]) {
        let fd = ls.resources[name].lease.fd().expect("open lease");
        fcntl(fd, FcntlArg::F_SETLK(&byte_zero(libc::F_UNLCK))).expect("unlock");
    }

    #[test]
    fn a_lease_file_replaced_under_a_vanished_lock_is_lost() {
        // Our lock vanished, the file was unlinked and recreated, and another
        // host locks the new one: re-asserting on our fd succeeds (on the
        // orphaned inode), so only the path tells.
        let (_t, dir, mut ls) = space();
        ls.acquire(b"a", 5, ACQUIRE_AUTOCREATE).unwrap();
        as_if_on_network(&mut ls);
        assert!(ls.revalidate().is_empty());
        drop_our_lock(&ls, b"a");
        std::fs::remove_file(dir.join("a")).unwrap();
        let other = std::fs::File::create_new(dir.join("a")).unwrap();
        lock_as_another_host(&other);
        let losses = ls.revalidate();
        assert_eq!(
            losses.into_iter().map(|l| l.cause).collect::<Vec<_>>(),
            [LossCause::Replaced]
        );
        assert_eq!(
            LossCause::Replaced.to_string(),
            "the lease file was replaced or removed"
        );
        // Released as lost: the other host's new file stays.
        ls.release(b"a", 5).unwrap();
        assert!(dir.join("a").exists());
    }

    #[test]
    fn a_lease_file_removed_under_a_vanished_lock_is_lost() {
        let (_t, dir, mut ls) = space();
        ls.acquire(b"a", 5, ACQUIRE_AUTOCREATE).unwrap();
        as_if_on_network(&mut ls);
        drop_our_lock(&ls, b"a");
        std::fs::remove_file(dir.join("a")).unwrap();
        assert_eq!(
            ls.revalidate()
                .into_iter()
                .map(|l| l.cause)
                .collect::<Vec<_>>(),
            [LossCause::Replaced]
        );
    }

    /// Swaps the lease fd of `name` for a read-only fd of its file, on which a
    /// write lock fails the way a dead mount does: with an error that is not a
    /// conflict. Returns the held lease, to be put back with [`swap_lease`].
    fn failing_lease(ls: &mut LockSpace, dir: &Path, name: &str) -> Lease {
        let ro = nix::fcntl::open(
            &dir.join(name),
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(ro);
        swap_lease(ls, name, Lease::adopt_unidentified(raw).unwrap())
    }

    fn swap_lease(ls: &mut LockSpace, name: &str, lease: Lease) -> Lease {
        let res = ls.resources.get_mut(name.as_bytes()).unwrap();
        res.checked = Some(true);
        std::mem::replace(&mut res.lease, lease)
    }

    fn causes(ls: &mut LockSpace) -> Vec<LossCause> {
        ls.revalidate().into_iter().map(|l| l.cause).collect()
    }

    #[test]
    fn a_failing_filesystem_is_a_loss_with_its_errno_after_two_checks_in_a_row() {
        let (_t, dir, mut ls) = space();
        ls.acquire(b"a", 3, ACQUIRE_AUTOCREATE).unwrap();
        // The held lease is parked, not dropped: closing it would drop the lock
        // the test file still has.
        let held = failing_lease(&mut ls, &dir, "a");
        assert_eq!(causes(&mut ls), [], "one failing check is not a loss");
        assert_eq!(causes(&mut ls), [LossCause::Failed(Errno::EBADF)]);
        assert!(ls.lost().count() == 1);
        std::mem::forget(held);
    }

    #[test]
    fn a_check_that_succeeds_restarts_the_failure_count() {
        let (_t, dir, mut ls) = space();
        ls.acquire(b"a", 3, ACQUIRE_AUTOCREATE).unwrap();
        let held = failing_lease(&mut ls, &dir, "a");
        assert_eq!(causes(&mut ls), []);
        // The filesystem answers again (an NFS failover is over).
        let failing = swap_lease(&mut ls, "a", held);
        assert_eq!(causes(&mut ls), []);
        let held = swap_lease(&mut ls, "a", failing);
        assert_eq!(causes(&mut ls), [], "the count started again");
        assert_eq!(causes(&mut ls), [LossCause::Failed(Errno::EBADF)]);
        std::mem::forget(held);
    }

    #[test]
    fn lost_leases_stay_lost_across_a_live_upgrade_state() {
        let (_t, dir, mut ls) = space();
        ls.acquire(b"a", 7, ACQUIRE_AUTOCREATE).unwrap();
        ls.acquire(b"b", 7, ACQUIRE_AUTOCREATE).unwrap();
        as_if_on_network(&mut ls);
        let _other = taken_by_another_host(&ls, b"a");
        assert_eq!(ls.revalidate().len(), 1);
        let lost_at = match &ls.resources[&b"a"[..]].status {
            LeaseStatus::Lost(l) => l.since,
            LeaseStatus::Held => panic!("not lost"),
        };
        // Found lost a while ago: the restore must keep that time, not "now".
        std::thread::sleep(Duration::from_millis(1100));
        // Through the snapshot's encoding, as a live upgrade carries it.
        let bytes = rmp_serde::to_vec(&ls.state()).unwrap();
        let state: crate::state::LockspaceState = rmp_serde::from_slice(&bytes).unwrap();
        let held: Vec<_> = {
            let mut v: Vec<_> = state
                .resources
                .iter()
                .map(|r| (r.name.clone(), r.lock_held))
                .collect();
            v.sort();
            v
        };
        assert_eq!(held, [(b"a".to_vec(), false), (b"b".to_vec(), true)]);
        // The restored table adopts the same fds: the old one must not close them.
        std::mem::forget(ls);
        let mut back = LockSpace::restore(state);
        let lost: Vec<_> = back
            .lost()
            .map(|(n, r)| (n.to_vec(), r.status.clone()))
            .collect();
        // The real cause and time, not "lost before a live upgrade".
        let since = lost_at
            .duration_since(UNIX_EPOCH)
            .map(|d| UNIX_EPOCH + Duration::from_secs(d.as_secs()))
            .unwrap();
        assert_eq!(
            lost,
            [(
                b"a".to_vec(),
                LeaseStatus::lost(
                    LossCause::Earlier(LossCause::Taken.to_string().into()),
                    since,
                )
            )]
        );
        let view = crate::lockspace::inspect::leases(&back);
        let a = view.iter().find(|l| l.name == b"a").unwrap();
        assert_eq!(
            a.status,
            crate::protocol::inspect::LeaseStatus::Lost {
                reason: "another host or process holds the lock now".into(),
                since: since.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64,
            }
        );
        back.release(b"a", 7).unwrap();
        assert!(dir.join("a").exists());
        back.release(b"b", 7).unwrap();
        assert!(!dir.join("b").exists());
    }
}
