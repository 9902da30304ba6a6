//! What the daemon acknowledged, and the checks that it still holds after a
//! crash: each lease acknowledged and not released is held in the kernel
//! (an OFD lock through one of the daemon's fds), listed with its owners,
//! and busy to a second owner; each lease released is free.

use std::collections::{BTreeMap, BTreeSet};

use virtlockd::client::{Client, ClientError};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use super::rig::{bounded, Answer, CrashHost};

/// A resource as a client names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Res {
    /// The lockspace directory; `None`: the default lockspace (full paths).
    pub lockspace: Option<&'static str>,
    pub name: String,
    pub flags: u32,
}

impl Res {
    pub fn in_dir(dir: &'static str, name: impl Into<String>, flags: u32) -> Self {
        Self {
            lockspace: Some(dir),
            name: name.into(),
            flags,
        }
    }

    pub fn direct(path: impl Into<String>, flags: u32) -> Self {
        Self {
            lockspace: None,
            name: path.into(),
            flags,
        }
    }

    pub fn shared(&self) -> bool {
        self.flags & ACQUIRE_SHARED != 0
    }

    pub fn autocreate(&self) -> bool {
        self.flags & ACQUIRE_AUTOCREATE != 0
    }

    /// The lease file, inside the container.
    pub fn path(&self) -> String {
        match self.lockspace {
            Some(dir) => format!("{dir}/{}", self.name),
            None => self.name.clone(),
        }
    }

    pub fn ls(&self) -> &[u8] {
        self.lockspace.unwrap_or("").as_bytes()
    }

    pub async fn acquire(&self, c: &mut Client) -> Result<(), ClientError> {
        let what = format!("ACQUIRE {self}");
        bounded(
            &what,
            c.acquire(self.ls(), self.name.as_bytes(), self.flags),
        )
        .await
    }

    /// ACQUIRE as a second owner would try it: exclusive.
    pub async fn acquire_exclusive(&self, c: &mut Client) -> Result<(), ClientError> {
        let what = format!("exclusive ACQUIRE {self}");
        let flags = self.flags & ACQUIRE_AUTOCREATE;
        bounded(&what, c.acquire(self.ls(), self.name.as_bytes(), flags)).await
    }

    pub async fn release(&self, c: &mut Client) -> Result<(), ClientError> {
        let what = format!("RELEASE {self}");
        bounded(&what, c.release(self.ls(), self.name.as_bytes())).await
    }
}

impl std::fmt::Display for Res {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.shared() { "shared" } else { "exclusive" };
        let auto = if self.autocreate() {
            ", autocreate"
        } else {
            ""
        };
        write!(f, "{} ({mode}{auto})", self.path())
    }
}

/// Resources -> the owners the daemon acknowledged as holding them (empty:
/// acknowledged as released, or never taken).
pub type Ledger = BTreeMap<Res, BTreeSet<u32>>;

/// Checks `ledger` against the daemon `pid`: the listing is exactly the
/// ledger's held leases (plus `also_listed`, checked by the caller), the
/// kernel holds exactly their files through the daemon's fds (plus one lock
/// for each of `also_listed`), a second
/// owner (`checker`) finds each held one busy and takes and releases each
/// free one.
pub async fn verify(
    ch: &CrashHost,
    pid: u32,
    checker: &mut Client,
    ledger: &Ledger,
    also_listed: &[(Option<String>, String)],
    when: &str,
) {
    let held: Vec<(&Res, &BTreeSet<u32>)> = ledger.iter().filter(|(_, o)| !o.is_empty()).collect();

    // The listing.
    let mut listed = ch.listed();
    for key in also_listed {
        listed.remove(key);
    }
    let expected: BTreeMap<(Option<String>, String), (Vec<u64>, String)> = held
        .iter()
        .map(|(r, owners)| {
            (
                (r.lockspace.map(str::to_owned), r.name.clone()),
                (
                    owners.iter().map(|&o| u64::from(o)).collect(),
                    "held".to_owned(),
                ),
            )
        })
        .collect();
    if listed != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|(k, v)| listed.get(*k) != Some(v))
            .collect();
        let extra: Vec<_> = listed
            .iter()
            .filter(|(k, v)| expected.get(*k) != Some(v))
            .collect();
        panic!(
            "{when}: `virtlockctl locks` differs from what was acknowledged:\n\
             expected but not listed so: {missing:?}\nlisted but not expected: {extra:?}\n\
             journal:\n{}",
            ch.journal("-o cat")
        );
    }

    // The kernel: an OFD lock of the right mode through one of the daemon's
    // fds on each held file, and no other lock of the daemon's.
    let fd_locks = ch.fd_locks(pid);
    let kernel = ch.kernel_locks();
    let dev = ch.lockspace_dev();
    let mut want_inodes = Vec::new();
    for (r, _) in &held {
        let inode = ch.inode(&r.path());
        want_inodes.push(inode);
        let mode = if r.shared() { "READ" } else { "WRITE" };
        assert!(
            fd_locks
                .iter()
                .any(|l| l.inode == inode && l.dev == dev && l.class == "OFDLCK" && l.mode == mode),
            "{when}: {r} is acknowledged but daemon {pid} holds no OFD {mode} lock on it: {fd_locks:?}"
        );
        assert!(
            kernel
                .iter()
                .any(|l| l.inode == inode && l.class == "OFDLCK" && l.pid == -1),
            "{when}: {r}: no OFDLCK in /proc/locks: {kernel:?}"
        );
    }
    want_inodes.sort_unstable();
    let mut locked = ch.locked_inodes(pid);
    // The caller's own leases (`also_listed`) hold a lock each, maybe on a
    // file no longer at its path: only their number is checked here.
    let mut others = 0;
    locked.retain(|i| {
        let ours = want_inodes.binary_search(i).is_ok();
        others += usize::from(!ours);
        ours
    });
    assert_eq!(
        (locked, others),
        (want_inodes, also_listed.len()),
        "{when}: the daemon's locks are not the acknowledged leases"
    );

    // A second owner.
    for (r, owners) in ledger {
        if owners.is_empty() {
            match Answer::of(r.acquire(checker).await) {
                Answer::Done => {}
                other => panic!("{when}: {r} was released, yet a second owner gets {other:?}"),
            }
            match Answer::of(r.release(checker).await) {
                Answer::Done => {}
                other => panic!("{when}: {r}: the second owner's release: {other:?}"),
            }
        } else {
            match Answer::of(r.acquire_exclusive(checker).await) {
                Answer::Busy => {}
                other => panic!(
                    "{when}: {r} is held by {owners:?}, yet a second owner's ACQUIRE gets {other:?}"
                ),
            }
        }
    }
}

/// Nothing held any more: no lease listed, no lock on any file of the
/// lockspaces' filesystem, no AUTOCREATE file left.
pub fn assert_nothing_left(ch: &CrashHost, when: &str) {
    let listed = ch.listed();
    assert!(listed.is_empty(), "{when}: leases still listed: {listed:?}");
    let kernel = ch.kernel_locks();
    assert!(kernel.is_empty(), "{when}: locks left: {kernel:?}");
    let files = ch.autocreated_files();
    assert!(files.is_empty(), "{when}: AUTOCREATE files left: {files:?}");
}
