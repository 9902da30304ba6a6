//! What the journal records: the latest state of each thing that must survive
//! a crash, keyed so that a later record of the same thing replaces an
//! earlier one. Replaying the journal is folding its records into one map;
//! the map is the same model a live upgrade carries ([`crate::state`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::state::{bytes, ClientState, OwnerState, ResourceState};

/// The server of a client or of settings: 0 the lock server, 1 the admin one.
pub type ServerId = u8;
pub const LOCK: ServerId = 0;
pub const ADMIN: ServerId = 1;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A resource of a lockspace (`lockspace` empty: the default one) as it
    /// is now; `None` once freed. The state's `fd` is meaningless here: the
    /// lease's fd is the one parked under `tag`.
    Resource {
        #[serde(with = "bytes")]
        lockspace: Vec<u8>,
        #[serde(with = "bytes")]
        name: Vec<u8>,
        held: Option<(u64, ResourceState)>,
    },
    /// A directory lockspace exists.
    Lockspace {
        #[serde(with = "bytes")]
        directory: Vec<u8>,
    },
    /// What an owner holding leases in a lockspace registered.
    Owner {
        #[serde(with = "bytes")]
        lockspace: Vec<u8>,
        owner: OwnerState,
    },
    /// A client as it is now (session included); `None` once gone. Its
    /// socket is the fd parked under [`client_tag`]`(server, id)`.
    Client {
        server: ServerId,
        id: u64,
        client: Option<ClientState>,
    },
    /// An owner being fenced; `None` once done.
    Fence { pid: i32, label: Option<String> },
    /// A server's limits as the admin API or a reload left them.
    Server {
        server: ServerId,
        max_clients: u64,
        max_unauth_clients: u64,
        prio_workers: u32,
    },
    /// The idle timeout in effect (seconds, 0 = none).
    Timeout(u32),
    /// Daemon facts kept for status: start time, live upgrades, and restarts
    /// after a crash recovered from.
    Daemon {
        started_at: i64,
        upgrades: u64,
        recoveries: u64,
    },
}

/// What a record is about: a later record with the same key replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Resource(Vec<u8>, Vec<u8>),
    Lockspace(Vec<u8>),
    Owner(Vec<u8>, u32),
    Client(ServerId, u64),
    Fence(i32),
    Server(ServerId),
    Timeout,
    Daemon,
}

impl Entry {
    pub fn key(&self) -> Key {
        match self {
            Self::Resource {
                lockspace, name, ..
            } => Key::Resource(lockspace.clone(), name.clone()),
            Self::Lockspace { directory } => Key::Lockspace(directory.clone()),
            Self::Owner { lockspace, owner } => Key::Owner(lockspace.clone(), owner.pid),
            Self::Client { server, id, .. } => Key::Client(*server, *id),
            Self::Fence { pid, .. } => Key::Fence(*pid),
            Self::Server { server, .. } => Key::Server(*server),
            Self::Timeout(_) => Key::Timeout,
            Self::Daemon { .. } => Key::Daemon,
        }
    }

    /// Whether this record ends its key (the thing is gone).
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Self::Resource { held: None, .. }
                | Self::Client { client: None, .. }
                | Self::Fence { label: None, .. }
        )
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), rmp_serde::encode::Error> {
        out.clear();
        rmp_serde::encode::write(out, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// Tags name parked fds. Lease tags count up from 1 below this bit; a client
/// socket's tag is this bit, its server and its id.
const CLIENT_BIT: u64 = 1 << 63;
const ADMIN_BIT: u64 = 1 << 62;

pub fn client_tag(server: ServerId, id: u64) -> u64 {
    CLIENT_BIT | if server == ADMIN { ADMIN_BIT } else { 0 } | (id & (ADMIN_BIT - 1))
}

/// The (server, id) a client tag names; `None` for a lease tag.
pub fn client_of(tag: u64) -> Option<(ServerId, u64)> {
    (tag & CLIENT_BIT != 0).then(|| {
        let server = if tag & ADMIN_BIT != 0 { ADMIN } else { LOCK };
        (server, tag & (ADMIN_BIT - 1))
    })
}

/// The journal replayed: the latest record of every key still alive.
#[derive(Debug, Default)]
pub struct Folded {
    pub live: HashMap<Key, Entry>,
    /// Records that could not be decoded (a bug or a foreign writer).
    pub undecodable: usize,
}

impl Folded {
    pub fn apply(&mut self, entry: Entry) {
        let key = entry.key();
        if entry.is_removal() {
            self.live.remove(&key);
        } else {
            self.live.insert(key, entry);
        }
    }

    pub fn replay<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut f = Self::default();
        for r in records {
            match Entry::decode(r) {
                Ok(e) => f.apply(e),
                Err(_) => f.undecodable += 1,
            }
        }
        f
    }

    /// Every lease tag a live resource names.
    pub fn lease_tags(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.values().filter_map(|e| match e {
            Entry::Resource {
                held: Some((tag, _)),
                ..
            } => Some(*tag),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, tag: u64) -> Entry {
        Entry::Resource {
            lockspace: b"/ls".to_vec(),
            name: name.as_bytes().to_vec(),
            held: Some((
                tag,
                ResourceState {
                    name: name.as_bytes().to_vec(),
                    path: format!("/ls/{name}").into_bytes(),
                    fd: -1,
                    lock_held: true,
                    flags: 0,
                    owners: vec![42],
                    acquired_at: 1,
                    lost_reason: None,
                    lost_since: 0,
                    file_id: Some((1, 2)),
                    ofd: true,
                    tag: 0,
                },
            )),
        }
    }

    #[test]
    fn later_records_replace_earlier_ones_and_removals_end_them() {
        let mut recs = Vec::new();
        for e in [
            resource("a", 1),
            resource("b", 2),
            Entry::Resource {
                lockspace: b"/ls".to_vec(),
                name: b"a".to_vec(),
                held: None,
            },
            resource("b", 3),
            Entry::Fence {
                pid: 9,
                label: Some("vm".into()),
            },
            Entry::Fence {
                pid: 9,
                label: None,
            },
        ] {
            let mut out = Vec::new();
            e.encode(&mut out).unwrap();
            recs.push(out);
        }
        recs.push(b"\xc1 not msgpack".to_vec());
        let f = Folded::replay(recs.iter().map(Vec::as_slice));
        assert_eq!(f.undecodable, 1);
        assert_eq!(f.live.len(), 1);
        assert_eq!(f.lease_tags().collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn client_tags_name_server_and_id_and_never_a_lease() {
        let t = client_tag(ADMIN, 77);
        assert_eq!(client_of(t), Some((ADMIN, 77)));
        assert_eq!(client_of(client_tag(LOCK, 5)), Some((LOCK, 5)));
        assert_eq!(client_of(12345), None);
    }
}
