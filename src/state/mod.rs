//! What survives a live upgrade (re-exec on SIGUSR1): listeners, clients with
//! their sessions and partly received requests, lockspaces with their resources.
//! File descriptors are referred to by number: they stay open across execve.
//!
//! Two encodings of the same [`Snapshot`]:
//! * ours (MessagePack via rmp-serde, versioned, lossless), read first;
//! * libvirt's JSON (spec §8.3), written too so that libvirt's virtlockd can adopt
//!   our state (rollback), and read when libvirt's daemon execs us (migration).

pub(crate) mod bytes;
pub mod encoded;
pub mod libvirt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Identifies our snapshot files.
pub const FORMAT: &str = "virtlockd-rs";
/// Bumped on every change to the types below. Fields are only ever appended,
/// each with `#[serde(default)]`, so this build still reads the snapshots of
/// builds back to [`MIN_VERSION`] (a positional MessagePack array that ends
/// early leaves the new fields at their defaults), while an older build
/// refuses a newer snapshot and adopts the libvirt JSON written beside it.
///
/// Version 4 changed no field: byte strings are written as MessagePack `bin`
/// instead of arrays of integers (see `bytes`), and read either way.
/// Version 5 added the crash-safe store (`Snapshot::crash`) and the lock kind
/// of each resource (`ResourceState::ofd`). Version 6 added the fds the new
/// image closes once it runs (`Snapshot::stale_fds`).
pub const VERSION: u32 = 6;
/// The oldest snapshot version this build restores.
pub const MIN_VERSION: u32 = 1;

/// Name of the lock server (libvirt's `virtlockd`).
pub const LOCK_SERVER: &str = "virtlockd";
/// Name of the admin server.
pub const ADMIN_SERVER: &str = "admin";

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot read state file: {0}")]
    Io(#[from] std::io::Error),
    #[error("state file is not {FORMAT} version {MIN_VERSION} to {VERSION}: {0}")]
    Format(String),
    #[error("invalid state: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] when written by this build.
    pub version: u32,
    /// Pid of the process that wrote it: only that same process (after execve)
    /// may adopt it.
    pub magic: u32,
    pub servers: Vec<ServerState>,
    /// The default lockspace (`directory == None`) first, then directory ones.
    pub lockspaces: Vec<LockspaceState>,
    /// Live upgrades this process has done so far (for status output).
    pub upgrades: u64,
    /// When the daemon first started (seconds since the epoch), kept for uptime.
    pub started_at: i64,
    /// Lease owners whose fencing was under way: fenced again after the exec.
    #[serde(default)]
    pub fencing: Vec<FenceState>,
    /// Ties this snapshot to the libvirt JSON written beside it in the same
    /// upgrade (libvirt's reader ignores unknown keys), so a snapshot whose JSON
    /// twin was consumed by libvirt's daemon is never adopted later.
    #[serde(default)]
    pub token: u64,
    /// The idle timeout in effect (seconds, 0 = none), which the admin API may
    /// have changed since `-t` (ours only; `None` in older snapshots and in
    /// libvirt's JSON: the new image's `-t` then stands).
    #[serde(default)]
    pub timeout: Option<u32>,
    /// The crash-safe store this image kept (version 5): the next image
    /// carries on with it. `None` outside crash-safe mode.
    #[serde(default)]
    pub crash: Option<CrashStoreState>,
    /// fds of the previous image that only the new one may close (version 6):
    /// its event loop's epoll instance, whose closing costs ~0.75 us per
    /// socket registered in it and would otherwise be paid inside the
    /// execve, while every client waits. Only written when our own binary is
    /// exec'd again (another build may not know to close them).
    #[serde(default)]
    pub stale_fds: Vec<i32>,
}

/// The fds of the crash-safe store (see `crate::crash`), by number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashStoreState {
    pub journal: i32,
    pub park_tx: i32,
    pub park_rx: i32,
    pub busy: i32,
    pub generation: u64,
    /// fds in the parking socket's queue.
    pub parked: u64,
    /// Restarts after a crash this daemon recovered from.
    pub recoveries: u64,
    /// The next lease tag.
    pub next_tag: u64,
    /// The generation the busy table is stored under.
    pub busy_generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceState {
    pub pid: i32,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    /// [`LOCK_SERVER`] or [`ADMIN_SERVER`].
    pub name: String,
    pub max_clients: u64,
    pub next_client_id: u64,
    pub listeners: Vec<ListenerState>,
    pub clients: Vec<ClientState>,
    /// `nclients_unauth_max` as the admin API left it (ours only; `None` in
    /// older snapshots and libvirt's JSON: then it follows `max_clients`).
    #[serde(default)]
    pub max_unauth_clients: Option<u64>,
    /// `prioWorkers` as the admin API left it (ours only; `None`: 0).
    #[serde(default)]
    pub prio_workers: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerState {
    pub fd: i32,
    /// Remove the socket path on clean shutdown (bound by us, not by systemd).
    /// The path itself is read back with getsockname().
    pub unlink: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    pub id: u64,
    pub fd: i32,
    /// Connect time, seconds since the epoch (0 = unknown).
    pub conn_time: i64,
    /// Lock-server session; `None` for admin clients.
    pub session: Option<SessionState>,
    /// Bytes of a request read but not yet complete (ours only; libvirt drops them).
    #[serde(with = "bytes")]
    pub pending: Vec<u8>,
    /// Peer pid from SO_PEERCRED at accept (ours only; libvirt reads it again from
    /// the socket, which is what the restore does first too).
    #[serde(default)]
    pub peer_pid: Option<i32>,
    /// Peer uid and gid from SO_PEERCRED at accept (ours only, version 3):
    /// with the pid they spare the restore a getsockopt per client.
    #[serde(default)]
    pub peer_ids: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SessionState {
    pub restricted: bool,
    /// `None` until the client registered (libvirt: ownerId 0).
    pub owner: Option<OwnerState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerState {
    pub uuid: [u8; 16],
    #[serde(with = "bytes")]
    pub name: Vec<u8>,
    pub id: u32,
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockspaceState {
    /// `None` for the default lockspace; else the key exactly as clients name it.
    #[serde(with = "bytes::option")]
    pub directory: Option<Vec<u8>>,
    pub resources: Vec<ResourceState>,
    /// What the owners holding leases here registered (ours only; version 2).
    #[serde(default)]
    pub owners: Vec<OwnerState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceState {
    #[serde(with = "bytes")]
    pub name: Vec<u8>,
    #[serde(with = "bytes")]
    pub path: Vec<u8>,
    pub fd: i32,
    pub lock_held: bool,
    /// 1 = shared, 2 = autocreate.
    pub flags: u32,
    /// Owner pids, one entry per acquisition.
    pub owners: Vec<i32>,
    /// Seconds since the epoch (0 = unknown, e.g. adopted from libvirt).
    pub acquired_at: i64,
    /// Why a lost lease (`lock_held == false`) was lost, as then reported
    /// (`None`: not lost, or unknown, e.g. adopted from libvirt). Trailing and
    /// defaulted (version 3): snapshots written before it still decode.
    #[serde(default)]
    pub lost_reason: Option<String>,
    /// When it was found lost, seconds since the epoch (0 = unknown).
    #[serde(default)]
    pub lost_since: i64,
    /// The lease file's (device, inode), as the old image knew it: the new one
    /// trusts it instead of an fstat per lease (the fd is the same open file).
    /// `None` for libvirt's state and older snapshots (version 3).
    #[serde(default)]
    pub file_id: Option<(u64, u64)>,
    /// An OFD lock (crash-safe mode), else a POSIX one (version 5; libvirt's
    /// state and older snapshots: POSIX).
    #[serde(default)]
    pub ofd: bool,
    /// The lease's name in the crash-safe store (version 5; 0 = not parked).
    #[serde(default)]
    pub tag: u64,
}

impl Snapshot {
    /// Encodes as compact MessagePack (fields by position: smallest and fastest,
    /// and a live upgrade waits for it). See [`VERSION`] for how the types
    /// evolve; an image that cannot read a snapshot falls back to the libvirt
    /// JSON written beside it, which keeps every lock and client.
    pub fn to_msgpack(&self) -> Result<Vec<u8>, StateError> {
        rmp_serde::to_vec(self).map_err(|e| StateError::Format(e.to_string()))
    }

    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, StateError> {
        let s: Snapshot =
            rmp_serde::from_slice(bytes).map_err(|e| StateError::Format(e.to_string()))?;
        if s.format != FORMAT || !(MIN_VERSION..=VERSION).contains(&s.version) {
            return Err(StateError::Format(format!(
                "{} version {}",
                s.format, s.version
            )));
        }
        Ok(s)
    }

    /// Every fd the snapshot refers to (listeners, clients, leases).
    pub fn fds(&self) -> Vec<i32> {
        let mut fds = Vec::new();
        for s in &self.servers {
            fds.extend(s.listeners.iter().map(|l| l.fd));
            fds.extend(s.clients.iter().map(|c| c.fd));
        }
        for ls in &self.lockspaces {
            fds.extend(ls.resources.iter().map(|r| r.fd));
        }
        if let Some(c) = &self.crash {
            fds.extend([c.journal, c.park_tx, c.park_rx, c.busy]);
        }
        fds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            magic: 4242,
            servers: vec![
                ServerState {
                    name: LOCK_SERVER.into(),
                    max_clients: 1024,
                    next_client_id: 4,
                    listeners: vec![ListenerState {
                        fd: 3,
                        unlink: true,
                    }],
                    clients: vec![ClientState {
                        id: 2,
                        fd: 7,
                        conn_time: 1_700_000_000,
                        session: Some(SessionState {
                            restricted: true,
                            owner: Some(OwnerState {
                                uuid: [0x11; 16],
                                name: b"vm1".to_vec(),
                                id: 1,
                                pid: 12345,
                            }),
                        }),
                        pending: vec![0, 0, 0, 0x1c],
                        peer_pid: None,
                        peer_ids: None,
                    }],
                    max_unauth_clients: Some(3),
                    prio_workers: Some(2),
                },
                ServerState {
                    name: ADMIN_SERVER.into(),
                    max_clients: 5000,
                    next_client_id: 1,
                    listeners: vec![ListenerState {
                        fd: 4,
                        unlink: true,
                    }],
                    clients: vec![],
                    max_unauth_clients: None,
                    prio_workers: None,
                },
            ],
            lockspaces: vec![
                LockspaceState {
                    directory: None,
                    owners: Vec::new(),
                    resources: vec![],
                },
                LockspaceState {
                    directory: Some(b"/var/lib/libvirt/lockd/files".to_vec()),
                    resources: vec![ResourceState {
                        name: b"ab".to_vec(),
                        path: b"/var/lib/libvirt/lockd/files/ab".to_vec(),
                        fd: 8,
                        lock_held: true,
                        flags: 2,
                        owners: vec![12345],
                        acquired_at: 1_700_000_001,
                        lost_reason: None,
                        lost_since: 0,
                        file_id: None,
                        ofd: false,
                        tag: 0,
                    }],
                    owners: vec![OwnerState {
                        uuid: [0x11; 16],
                        name: b"vm1".to_vec(),
                        id: 1,
                        pid: 12345,
                    }],
                },
            ],
            upgrades: 3,
            started_at: 1_699_999_999,
            fencing: vec![FenceState {
                pid: 777,
                label: "vm9".into(),
            }],
            token: 99,
            timeout: Some(30),
            crash: None,
            stale_fds: Vec::new(),
        }
    }

    #[test]
    fn msgpack_round_trip() {
        let s = sample();
        let bytes = s.to_msgpack().unwrap();
        assert_eq!(Snapshot::from_msgpack(&bytes).unwrap(), s);
        assert_eq!(s.fds(), vec![3, 7, 4, 8]);
    }

    #[test]
    fn older_versions_are_read_with_defaults_for_appended_fields() {
        let mut s = sample();
        s.version = MIN_VERSION;
        assert_eq!(Snapshot::from_msgpack(&s.to_msgpack().unwrap()).unwrap(), s);

        // The rule VERSION relies on: a struct that gained a trailing
        // defaulted field reads the shorter array of the older build.
        #[derive(Serialize)]
        struct Before {
            a: u32,
            b: Vec<i32>,
        }
        #[derive(Deserialize, Debug, PartialEq)]
        struct After {
            a: u32,
            b: Vec<i32>,
            #[serde(default)]
            c: Vec<i64>,
        }
        let old = rmp_serde::to_vec(&vec![Before { a: 7, b: vec![1] }]).unwrap();
        let new: Vec<After> = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(
            new,
            vec![After {
                a: 7,
                b: vec![1],
                c: vec![]
            }]
        );
    }

    #[test]
    fn byte_strings_are_written_as_bin() {
        let s = sample();
        let bytes = s.to_msgpack().unwrap();
        // The resource path as one bin 8 (0xc4, length, bytes).
        let path = b"/var/lib/libvirt/lockd/files/ab";
        let mut bin = vec![0xc4, path.len() as u8];
        bin.extend_from_slice(path);
        assert!(bytes.windows(bin.len()).any(|w| w == bin.as_slice()));
    }

    #[test]
    fn a_version_3_snapshot_still_restores() {
        // Written by the build before version 4 from `sample()` as it was then
        // (byte strings as arrays of integers).
        let v3 = include_bytes!("fixtures/snapshot-v3.msgpack");
        let mut expected = sample();
        expected.version = 3;
        assert_eq!(Snapshot::from_msgpack(v3).unwrap(), expected);
    }

    #[test]
    fn foreign_or_corrupt_snapshots_are_refused() {
        let mut s = sample();
        s.version = VERSION + 1;
        assert!(Snapshot::from_msgpack(&s.to_msgpack().unwrap()).is_err());
        s.version = MIN_VERSION - 1;
        assert!(Snapshot::from_msgpack(&s.to_msgpack().unwrap()).is_err());
        assert!(Snapshot::from_msgpack(b"{}").is_err());
    }

    #[test]
    fn resources_of_snapshots_without_loss_details_still_decode() {
        // A resource as snapshots of this version wrote it before the loss
        // details were added: the same fields by position, minus the last two.
        #[derive(Serialize)]
        struct Before {
            name: Vec<u8>,
            path: Vec<u8>,
            fd: i32,
            lock_held: bool,
            flags: u32,
            owners: Vec<i32>,
            acquired_at: i64,
        }
        let bytes = rmp_serde::to_vec(&vec![Before {
            name: b"r".to_vec(),
            path: b"/ls/r".to_vec(),
            fd: 9,
            lock_held: false,
            flags: 2,
            owners: vec![7],
            acquired_at: 5,
        }])
        .unwrap();
        let back: Vec<ResourceState> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            back,
            [ResourceState {
                name: b"r".to_vec(),
                path: b"/ls/r".to_vec(),
                fd: 9,
                lock_held: false,
                flags: 2,
                owners: vec![7],
                acquired_at: 5,
                lost_reason: None,
                lost_since: 0,
                file_id: None,
                ofd: false,
                tag: 0,
            }]
        );
    }
}
