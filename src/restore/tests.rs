//! Recovery from a crash-safe store built here with real kernel objects (a
//! memfd journal, a parking socket pair, OFD locks on files, socket pairs as
//! client connections): what a dead daemon leaves, without systemd.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::OFlag;

use super::crash::{recover, Defaults, Stored, UNKNOWN_OWNER};
use crate::crash::entry::{client_tag, Entry, LOCK};
use crate::crash::journal::Journal;
use crate::crash::memory::BusyTable;
use crate::crash::park::Park;
use crate::lockspace::lease::{self, LockMode};
use crate::state::{ClientState, OwnerState, ResourceState, SessionState};

/// An fd of `path` with an OFD write lock.
fn locked(path: &std::path::Path) -> OwnedFd {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_CREAT,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    lease::ofd_lock(fd.as_fd(), LockMode::Exclusive).unwrap();
    fd
}

/// Whether another open file description can take the write lock now.
fn free(path: &std::path::Path) -> bool {
    let fd = nix::fcntl::open(path, OFlag::O_RDWR, nix::sys::stat::Mode::empty()).unwrap();
    lease::ofd_lock(fd.as_fd(), LockMode::Exclusive).is_ok()
}

fn resource(name: &str, path: &std::path::Path, owner: i32) -> ResourceState {
    ResourceState {
        name: name.as_bytes().to_vec(),
        path: path.to_str().unwrap().as_bytes().to_vec(),
        fd: -1,
        lock_held: true,
        flags: 0,
        owners: vec![owner],
        acquired_at: 1_700_000_000,
        lost_reason: None,
        lost_since: 0,
        file_id: None,
        ofd: true,
        tag: 0,
    }
}

fn client(id: u64, owner: u32) -> ClientState {
    ClientState {
        id,
        fd: -1,
        conn_time: 1_700_000_000,
        session: Some(SessionState {
            restricted: true,
            owner: Some(OwnerState {
                uuid: [7; 16],
                name: b"vm".to_vec(),
                id: 1,
                pid: owner,
            }),
        }),
        pending: Vec::new(),
        peer_pid: Some(owner as i32),
        peer_ids: Some((0, 0)),
    }
}

fn write(journal: &mut Journal, e: &Entry) {
    let mut out = Vec::new();
    e.encode(&mut out).unwrap();
    journal.append(&out).unwrap();
}

fn dup(fd: impl AsFd) -> OwnedFd {
    fd.as_fd().try_clone_to_owned().unwrap()
}

/// What a daemon leaves when it dies: the store's fds, named as in
/// `LISTEN_FDNAMES`, and the peers of its client connections.
struct Dead {
    stored: Vec<(String, OwnedFd)>,
    dir: tempfile::TempDir,
    /// Peer ends: journaled idle (1), journaled busy (2), closed (3).
    peers: Vec<UnixStream>,
}

fn dead_daemon(corrupt_journal: bool) -> Dead {
    let dir = tempfile::tempdir().unwrap();
    let ls = dir.path().to_str().unwrap().as_bytes().to_vec();
    let mut journal = Journal::create(3, 1 << 20).unwrap();
    let mut park = Park::create().unwrap();
    let busy = BusyTable::create().unwrap();

    // Leases: held (journaled and parked), released or never acknowledged
    // (parked only, still locked), and lost (journaled, never parked).
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let fa = locked(&a);
    let fb = locked(&b);
    park.park(&[(1, fa.as_fd()), (2, fb.as_fd())]).unwrap();
    let mut ra = resource("a", &a, 42);
    ra.tag = 1;
    write(
        &mut journal,
        &Entry::Lockspace {
            directory: ls.clone(),
        },
    );
    write(
        &mut journal,
        &Entry::Resource {
            lockspace: ls.clone(),
            name: b"a".to_vec(),
            held: Some((1, ra)),
        },
    );
    write(
        &mut journal,
        &Entry::Resource {
            lockspace: ls.clone(),
            name: b"c".to_vec(),
            held: Some((3, resource("c", &dir.path().join("c"), 42))),
        },
    );
    write(
        &mut journal,
        &Entry::Daemon {
            started_at: 1_699_999_999,
            upgrades: 2,
            recoveries: 4,
        },
    );
    // Clients: 1 idle, 2 busy, 3 closed (parked, no longer journaled).
    let mut peers = Vec::new();
    for id in 1..=3u64 {
        let (ours, theirs) = UnixStream::pair().unwrap();
        park.park_one(client_tag(LOCK, id), ours.as_fd()).unwrap();
        peers.push(theirs);
        write(
            &mut journal,
            &Entry::Client {
                server: LOCK,
                id,
                client: Some(client(id, 42)),
            },
        );
    }
    write(
        &mut journal,
        &Entry::Client {
            server: LOCK,
            id: 3,
            client: None,
        },
    );
    busy.set(5, client_tag(LOCK, 2));
    if corrupt_journal {
        // Past the header: the first record's bytes.
        let j = dup(journal.fd());
        nix::sys::uio::pwrite(&j, &[0xff; 64], 4096 + 8).unwrap();
    }
    let stored = vec![
        ("vlrs-journal-3".to_owned(), dup(journal.fd())),
        ("vlrs-parktx-3".to_owned(), dup(park.tx())),
        ("vlrs-parkrx-3".to_owned(), dup(park.rx())),
        ("vlrs-busy-1".to_owned(), dup(busy.fd())),
    ];
    // The daemon's own references end with it.
    drop((fa, fb, journal, park, busy));
    Dead { stored, dir, peers }
}

fn defaults() -> Defaults {
    Defaults {
        max_clients: 1024,
        admin_max_clients: 5000,
    }
}

#[test]
fn a_dead_daemons_leases_clients_and_history_come_back() {
    let dead = dead_daemon(false);
    let (a, b) = (dead.dir.path().join("a"), dead.dir.path().join("b"));
    assert!(!free(&a) && !free(&b), "parked locks outlive their process");
    let rec = recover(Stored::sort(dead.stored), &defaults());
    assert_eq!(
        (rec.retire.as_slice(), rec.retire_busy.as_slice()),
        (&[3][..], &[1][..])
    );
    assert_eq!((rec.next_generation, rec.recoveries), (4, 5));
    let s = &rec.snapshot;
    assert_eq!((s.started_at, s.upgrades), (1_699_999_999, 2));

    // Lease a: held, by the same open file description, now our fd.
    let dirs: Vec<_> = s.lockspaces.iter().map(|l| l.directory.is_some()).collect();
    assert_eq!(dirs, [false, true], "default lockspace first");
    let held = &s.lockspaces[1].resources;
    assert_eq!(
        held.len(),
        1,
        "c had no fd: not accounted for, so not listed as held"
    );
    assert_eq!(
        (held[0].name.as_slice(), held[0].tag, held[0].lock_held),
        (&b"a"[..], 1, true)
    );
    assert!(!free(&a));
    // Lease b: not journaled, so never acknowledged (or released): unlocked.
    assert!(free(&b));

    // Clients 1 and 2 come back (2 shut down: its request was in flight);
    // client 3 had closed: its peer sees the end at once.
    let ids: Vec<u64> = s.servers[0].clients.iter().map(|c| c.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2]);
    assert_eq!(s.servers[0].next_client_id, 3);
    let mut peers = dead.peers;
    let mut byte = [0u8; 1];
    peers[1]
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert_eq!(peers[1].read(&mut byte).unwrap(), 0, "busy client: EOF");
    peers[2]
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert_eq!(peers[2].read(&mut byte).unwrap(), 0, "closed client: EOF");
    peers[0].set_nonblocking(true).unwrap();
    assert!(
        peers[0].read(&mut byte).is_err(),
        "idle client: still connected"
    );
    for c in &s.servers[0].clients {
        // SAFETY: the recovery handed these fds to the snapshot; we own them now.
        drop(unsafe { OwnedFd::from_raw_fd(c.fd) });
    }
    for r in s.lockspaces.iter().flat_map(|l| &l.resources) {
        // SAFETY: as above.
        drop(unsafe { OwnedFd::from_raw_fd(r.fd) });
    }
    assert!(free(&a), "the restored fd was the last reference");
}

#[test]
fn an_unreadable_journal_drops_no_lease() {
    let dead = dead_daemon(true);
    let (a, b) = (dead.dir.path().join("a"), dead.dir.path().join("b"));
    let rec = recover(Stored::sort(dead.stored), &defaults());
    let s = &rec.snapshot;
    assert!(!free(&a) && !free(&b), "both kept");
    let default = &s.lockspaces[0];
    assert!(default.directory.is_none());
    let mut paths: Vec<String> = default
        .resources
        .iter()
        .map(|r| {
            assert_eq!(
                (r.owners.as_slice(), r.lock_held),
                (&[UNKNOWN_OWNER][..], true)
            );
            String::from_utf8_lossy(&r.path).into_owned()
        })
        .collect();
    paths.sort();
    assert_eq!(paths, [a.display().to_string(), b.display().to_string()]);
    // The clients cannot be told apart from the journal: all three are kept.
    assert_eq!(s.servers[0].clients.len(), 3);
    for fd in s
        .servers
        .iter()
        .flat_map(|s| s.clients.iter().map(|c| c.fd))
        .chain(default.resources.iter().map(|r| r.fd))
    {
        assert!(fd.as_raw_fd() >= 0);
        // SAFETY: handed to the snapshot; we own them now.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}
