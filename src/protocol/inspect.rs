//! The lock-inspection program of virtlockd-rs, served on the admin socket beside
//! libvirt's admin program and used by `virtlockctl`. Program number 0x564c4b49
//! ("VLKI"), version 1: libvirt's programs are left untouched, and a libvirt
//! daemon answers it with "Cannot find program". The listing procedures take
//! no arguments (filters are applied by the client). Pure: encoding and
//! decoding.

use bytes::{Bytes, BytesMut};

use super::xdr::{XdrError, XdrReader, XdrWrite};

pub const PROGRAM: u32 = 0x564c_4b49;
pub const VERSION: u32 = 1;

const STRING_MAX: usize = 4_194_304;
/// Arrays in replies: leases, clients, owners of one lease.
const LIST_MAX: usize = 4_000_000;

pub mod procedure {
    /// Every held lease with its owners: `lease leases<>`.
    pub const LIST_LOCKS: i32 = 1;
    /// Every connection of both servers: `client clients<>`.
    pub const LIST_CLIENTS: i32 = 2;
    /// Daemon summary: `status`.
    pub const STATUS: i32 = 3;
    /// Release the lease of an unknown owner (one a crash restore could not
    /// account for) on a file: `string path`, void reply.
    pub const RELEASE_UNKNOWN: i32 = 4;
}

/// The argument of [`procedure::RELEASE_UNKNOWN`].
pub fn release_unknown_args(path: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_xdr_string(path);
    out.freeze()
}

/// Decodes the argument of [`procedure::RELEASE_UNKNOWN`].
pub fn decode_release_unknown(bytes: &[u8]) -> Result<Vec<u8>, XdrError> {
    let mut r = XdrReader::new(bytes);
    get_bytes(&mut r)
}

/// What an owner told us at REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerDetails {
    pub name: Vec<u8>,
    pub uuid: [u8; 16],
    /// libvirt's domain id.
    pub id: u32,
}

/// An owner of a lease (or the registered owner of a connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerView {
    pub pid: i32,
    /// `None` when only the pid is known (a lease adopted from libvirt's state).
    pub details: Option<OwnerDetails>,
}

/// Whether the lease still protects anything. Every status travels with a
/// reason and a time (empty and 0 for a held lease), so that a client meeting a
/// status it does not know can still show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    Held,
    /// The filesystem dropped the lock (see lease revalidation); the entry stays
    /// until its owners release it.
    Lost {
        reason: String,
        /// Seconds since the epoch.
        since: i64,
    },
    /// A value this client does not know (a newer daemon).
    Other {
        code: u32,
        reason: String,
        since: i64,
    },
}

impl LeaseStatus {
    fn encode(&self, out: &mut BytesMut) {
        let (code, reason, since) = match self {
            LeaseStatus::Held => (0, "", 0),
            LeaseStatus::Lost { reason, since } => (1, reason.as_str(), *since),
            LeaseStatus::Other {
                code,
                reason,
                since,
            } => (*code, reason.as_str(), *since),
        };
        out.put_xdr_u32(code);
        out.put_xdr_string(reason.as_bytes());
        out.put_xdr_u64(since as u64);
    }

    fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        let code = r.u32()?;
        let reason = String::from_utf8_lossy(&get_bytes(r)?).into_owned();
        let since = r.i64()?;
        Ok(match code {
            0 => LeaseStatus::Held,
            1 => LeaseStatus::Lost { reason, since },
            code => LeaseStatus::Other {
                code,
                reason,
                since,
            },
        })
    }

    /// `held`, `lost`, or `status-N` for a status this build does not know.
    pub fn name(&self) -> String {
        match self {
            LeaseStatus::Held => "held".into(),
            LeaseStatus::Lost { .. } => "lost".into(),
            LeaseStatus::Other { code, .. } => format!("status-{code}"),
        }
    }

    /// Why the lease is not held, and since when (None for a held lease).
    pub fn detail(&self) -> Option<(&str, i64)> {
        match self {
            LeaseStatus::Held => None,
            LeaseStatus::Lost { reason, since } | LeaseStatus::Other { reason, since, .. } => {
                Some((reason, *since))
            }
        }
    }
}

/// One held lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The lockspace directory; `None` for the default lockspace (direct leases,
    /// whose name is the disk path itself).
    pub lockspace: Option<Vec<u8>>,
    pub name: Vec<u8>,
    /// The file holding the fcntl lock.
    pub path: Vec<u8>,
    pub shared: bool,
    pub autocreate: bool,
    /// Seconds since the epoch (0 = unknown).
    pub acquired_at: i64,
    pub status: LeaseStatus,
    /// One entry per acquisition, as the lock table keeps them.
    pub owners: Vec<OwnerView>,
}

/// One connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    /// `virtlockd` or `admin`.
    pub server: String,
    pub id: u64,
    /// Peer pid from SO_PEERCRED (-1 if unknown).
    pub pid: i32,
    pub uid: u32,
    /// Connect time, seconds since the epoch.
    pub connected_at: i64,
    pub owner: Option<OwnerView>,
    pub restricted: bool,
    /// Leases held by the registered owner (all lockspaces).
    pub leases: u32,
}

/// Daemon summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// This build's version (Cargo package version).
    pub version: String,
    /// The libvirt version reported to virt-admin.
    pub libvirt_version: u64,
    pub pid: u32,
    /// Seconds since the epoch; kept across live upgrades.
    pub started_at: i64,
    /// The daemon's clock when it answered.
    pub now: i64,
    pub upgrades: u64,
    pub lock_clients: u32,
    pub admin_clients: u32,
    pub lockspaces: u32,
    pub leases: u64,
    /// Crash-safe mode; `None` from a daemon older than it, whose reply ends
    /// before these fields.
    pub crash_safety: Option<CrashSafetyView>,
}

/// Whether leases survive a crash of the daemon (`crate::crash::Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashSafetyView {
    /// `off`, `inactive` or `active` (a newer daemon may send another word).
    pub mode: String,
    /// Why an asked-for mode does not run; empty otherwise.
    pub reason: String,
    /// Open file descriptions kept in the service manager's store.
    pub parked: u64,
    /// Bytes of the journal in use.
    pub journal_bytes: u64,
    /// Generation of the store.
    pub generation: u64,
    /// Crashes this daemon recovered from.
    pub recoveries: u64,
}

impl CrashSafetyView {
    fn encode(&self, out: &mut BytesMut) {
        out.put_xdr_string(self.mode.as_bytes());
        out.put_xdr_string(self.reason.as_bytes());
        out.put_xdr_u64(self.parked);
        out.put_xdr_u64(self.journal_bytes);
        out.put_xdr_u64(self.generation);
        out.put_xdr_u64(self.recoveries);
    }

    fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            mode: String::from_utf8_lossy(&get_bytes(r)?).into_owned(),
            reason: String::from_utf8_lossy(&get_bytes(r)?).into_owned(),
            parked: r.u64()?,
            journal_bytes: r.u64()?,
            generation: r.u64()?,
            recoveries: r.u64()?,
        })
    }
}

fn put_bool(out: &mut BytesMut, v: bool) {
    out.put_xdr_u32(u32::from(v));
}

fn get_bool(r: &mut XdrReader<'_>) -> Result<bool, XdrError> {
    Ok(r.u32()? != 0)
}

fn get_bytes(r: &mut XdrReader<'_>) -> Result<Vec<u8>, XdrError> {
    Ok(r.string(STRING_MAX)?.to_vec())
}

fn get_len(r: &mut XdrReader<'_>) -> Result<usize, XdrError> {
    let n = r.u32()? as usize;
    if n > LIST_MAX {
        return Err(XdrError::TooLong {
            len: n,
            max: LIST_MAX,
        });
    }
    Ok(n)
}

impl OwnerView {
    fn encode(&self, out: &mut BytesMut) {
        out.put_xdr_i32(self.pid);
        match &self.details {
            None => out.put_xdr_u32(0),
            Some(d) => {
                out.put_xdr_u32(1);
                out.put_xdr_string(&d.name);
                out.put_xdr_opaque_fixed(&d.uuid);
                out.put_xdr_u32(d.id);
            }
        }
    }

    fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        let pid = r.i32()?;
        let details = if r.optional()? {
            let name = get_bytes(r)?;
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(r.opaque_fixed(16)?);
            Some(OwnerDetails {
                name,
                uuid,
                id: r.u32()?,
            })
        } else {
            None
        };
        Ok(Self { pid, details })
    }
}

impl LeaseView {
    fn encode(&self, out: &mut BytesMut) {
        out.put_xdr_opt_string(self.lockspace.as_deref());
        out.put_xdr_string(&self.name);
        out.put_xdr_string(&self.path);
        put_bool(out, self.shared);
        put_bool(out, self.autocreate);
        out.put_xdr_u64(self.acquired_at as u64);
        self.status.encode(out);
        out.put_xdr_u32(self.owners.len() as u32);
        for o in &self.owners {
            o.encode(out);
        }
    }

    fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        let lockspace = if r.optional()? {
            Some(get_bytes(r)?)
        } else {
            None
        };
        let name = get_bytes(r)?;
        let path = get_bytes(r)?;
        let shared = get_bool(r)?;
        let autocreate = get_bool(r)?;
        let acquired_at = r.i64()?;
        let status = LeaseStatus::decode(r)?;
        let n = get_len(r)?;
        let owners = (0..n)
            .map(|_| OwnerView::decode(r))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            lockspace,
            name,
            path,
            shared,
            autocreate,
            acquired_at,
            status,
            owners,
        })
    }
}

impl ClientView {
    fn encode(&self, out: &mut BytesMut) {
        out.put_xdr_string(self.server.as_bytes());
        out.put_xdr_u64(self.id);
        out.put_xdr_i32(self.pid);
        out.put_xdr_u32(self.uid);
        out.put_xdr_u64(self.connected_at as u64);
        match &self.owner {
            None => out.put_xdr_u32(0),
            Some(o) => {
                out.put_xdr_u32(1);
                o.encode(out);
            }
        }
        put_bool(out, self.restricted);
        out.put_xdr_u32(self.leases);
    }

    fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            server: String::from_utf8_lossy(r.string(STRING_MAX)?).into_owned(),
            id: r.u64()?,
            pid: r.i32()?,
            uid: r.u32()?,
            connected_at: r.i64()?,
            owner: if r.optional()? {
                Some(OwnerView::decode(r)?)
            } else {
                None
            },
            restricted: get_bool(r)?,
            leases: r.u32()?,
        })
    }
}

impl StatusView {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_xdr_string(self.version.as_bytes());
        out.put_xdr_u64(self.libvirt_version);
        out.put_xdr_u32(self.pid);
        out.put_xdr_u64(self.started_at as u64);
        out.put_xdr_u64(self.now as u64);
        out.put_xdr_u64(self.upgrades);
        out.put_xdr_u32(self.lock_clients);
        out.put_xdr_u32(self.admin_clients);
        out.put_xdr_u32(self.lockspaces);
        out.put_xdr_u64(self.leases);
        if let Some(crash) = &self.crash_safety {
            crash.encode(&mut out);
        }
        out.freeze()
    }

    /// Decodes a reply; one that ends after `leases` (an older daemon's) has
    /// no crash-safety fields, one that ends inside them is an error.
    pub fn decode(payload: &[u8]) -> Result<Self, XdrError> {
        let r = &mut XdrReader::new(payload);
        Ok(Self {
            version: String::from_utf8_lossy(r.string(STRING_MAX)?).into_owned(),
            libvirt_version: r.u64()?,
            pid: r.u32()?,
            started_at: r.i64()?,
            now: r.i64()?,
            upgrades: r.u64()?,
            lock_clients: r.u32()?,
            admin_clients: r.u32()?,
            lockspaces: r.u32()?,
            leases: r.u64()?,
            crash_safety: if r.remaining() == 0 {
                None
            } else {
                Some(CrashSafetyView::decode(r)?)
            },
        })
    }
}

/// A reply that could not be sent: more entries, or more bytes, than a client
/// accepts. The call fails with this rather than sending a frame that the
/// client would have to drop with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "reply too large: {entries} entries in {bytes} bytes, over the limit of {LIST_MAX} entries \
     or {MAX_PAYLOAD} bytes in one message"
)]
pub struct TooLarge {
    pub entries: usize,
    pub bytes: usize,
}

/// The largest payload of one message (`VIR_NET_MESSAGE_MAX` less the header).
pub const MAX_PAYLOAD: usize = super::codec::MAX_MESSAGE - super::header::HEADER_LEN;

/// `payload` (encoding `entries` list entries) if a client can receive it.
fn fits(payload: Bytes, entries: usize) -> Result<Bytes, TooLarge> {
    if entries > LIST_MAX || payload.len() > MAX_PAYLOAD {
        return Err(TooLarge {
            entries,
            bytes: payload.len(),
        });
    }
    Ok(payload)
}

/// LIST_LOCKS' reply; fails rather than build one no client could read.
pub fn leases_reply(leases: &[LeaseView]) -> Result<Bytes, TooLarge> {
    fits(encode_leases(leases), leases.len())
}

/// LIST_CLIENTS' reply; fails rather than build one no client could read.
pub fn clients_reply(clients: &[ClientView]) -> Result<Bytes, TooLarge> {
    fits(encode_clients(clients), clients.len())
}

pub fn encode_leases(leases: &[LeaseView]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_xdr_u32(leases.len() as u32);
    for l in leases {
        l.encode(&mut out);
    }
    out.freeze()
}

pub fn decode_leases(payload: &[u8]) -> Result<Vec<LeaseView>, XdrError> {
    let r = &mut XdrReader::new(payload);
    let n = get_len(r)?;
    (0..n).map(|_| LeaseView::decode(r)).collect()
}

pub fn encode_clients(clients: &[ClientView]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_xdr_u32(clients.len() as u32);
    for c in clients {
        c.encode(&mut out);
    }
    out.freeze()
}

pub fn decode_clients(payload: &[u8]) -> Result<Vec<ClientView>, XdrError> {
    let r = &mut XdrReader::new(payload);
    let n = get_len(r)?;
    (0..n).map(|_| ClientView::decode(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: i32) -> OwnerView {
        OwnerView {
            pid,
            details: Some(OwnerDetails {
                name: b"vm1".to_vec(),
                uuid: [7; 16],
                id: 3,
            }),
        }
    }

    #[test]
    fn replies_over_one_message_are_refused_not_sent() {
        let big = vec![b'a'; STRING_MAX];
        let lease = LeaseView {
            lockspace: None,
            name: big.clone(),
            path: big,
            shared: false,
            autocreate: false,
            acquired_at: 0,
            status: LeaseStatus::Held,
            owners: vec![owner(12)],
        };
        // Three leases of two 4 MiB strings fit in one message; four do not.
        let three = vec![lease.clone(), lease.clone(), lease];
        let ok = leases_reply(&three).expect("fits");
        assert_eq!(decode_leases(&ok).unwrap().len(), 3);
        let mut four = three;
        four.push(four[0].clone());
        let e = leases_reply(&four).unwrap_err();
        assert_eq!(e.entries, 4);
        assert!(e.bytes > MAX_PAYLOAD, "{e:?}");
        assert!(
            e.to_string().starts_with("reply too large: 4 entries in "),
            "{e}"
        );
        // A frame of that size is one the codec refuses on the client side.
        assert!(e.bytes + super::super::header::HEADER_LEN > super::super::codec::MAX_MESSAGE);
    }

    #[test]
    fn leases_round_trip() {
        let leases = vec![
            LeaseView {
                lockspace: None,
                name: b"/var/lib/disk.img".to_vec(),
                path: b"/var/lib/disk.img".to_vec(),
                shared: false,
                autocreate: false,
                acquired_at: 1_700_000_000,
                status: LeaseStatus::Held,
                owners: vec![owner(12)],
            },
            LeaseView {
                lockspace: Some(b"/var/lib/libvirt/lockd/files".to_vec()),
                name: b"ab".to_vec(),
                path: b"/var/lib/libvirt/lockd/files/ab".to_vec(),
                shared: true,
                autocreate: true,
                acquired_at: 0,
                status: LeaseStatus::Lost {
                    reason: "the filesystem fails the lease file: ENOTCONN".into(),
                    since: 1_700_000_100,
                },
                owners: vec![
                    owner(12),
                    OwnerView {
                        pid: 13,
                        details: None,
                    },
                ],
            },
            LeaseView {
                lockspace: Some(b"/ls".to_vec()),
                name: b"future".to_vec(),
                path: b"/ls/future".to_vec(),
                shared: false,
                autocreate: false,
                acquired_at: 5,
                status: LeaseStatus::Other {
                    code: 9,
                    reason: "a status of a newer daemon".into(),
                    since: 6,
                },
                owners: vec![],
            },
        ];
        assert_eq!(decode_leases(&encode_leases(&leases)).unwrap(), leases);
    }

    #[test]
    fn clients_and_status_round_trip() {
        let clients = vec![ClientView {
            server: "virtlockd".into(),
            id: 4,
            pid: 99,
            uid: 0,
            connected_at: 5,
            owner: Some(owner(99)),
            restricted: true,
            leases: 2,
        }];
        assert_eq!(decode_clients(&encode_clients(&clients)).unwrap(), clients);
        let s = status(None);
        assert_eq!(StatusView::decode(&s.encode()).unwrap(), s);
    }

    fn status(crash_safety: Option<CrashSafetyView>) -> StatusView {
        StatusView {
            version: "0.1.0".into(),
            libvirt_version: 9_000_000,
            pid: 1,
            started_at: 2,
            now: 3,
            upgrades: 4,
            lock_clients: 5,
            admin_clients: 6,
            lockspaces: 7,
            leases: 8,
            crash_safety,
        }
    }

    fn crash(mode: &str, reason: &str) -> CrashSafetyView {
        CrashSafetyView {
            mode: mode.into(),
            reason: reason.into(),
            parked: 12,
            journal_bytes: 3_174,
            generation: 2,
            recoveries: u64::MAX,
        }
    }

    #[test]
    fn status_with_crash_safety_round_trips() {
        for view in [
            crash("active", ""),
            crash("off", ""),
            crash("inactive", "no service manager file-descriptor store"),
            crash("a-newer-mode", "\u{e9}"),
        ] {
            let s = status(Some(view));
            let bytes = s.encode();
            assert_eq!(StatusView::decode(&bytes).unwrap(), s);
            assert_eq!(StatusView::decode(&bytes).unwrap().encode(), bytes);
        }
    }

    #[test]
    fn crash_safety_fields_follow_the_older_fields() {
        let old = status(None).encode();
        let new = status(Some(crash("inactive", "why"))).encode();
        // The older reply is a prefix: an older virtlockctl, which stops after
        // `leases`, reads a newer reply as before.
        assert_eq!(&new[..old.len()], &old[..]);
        // mode, reason (each a length word and padded bytes), then four u64.
        let tail = &new[old.len()..];
        assert_eq!(tail.len(), (4 + 8) + (4 + 4) + 4 * 8);
        assert_eq!(&tail[..12], b"\0\0\0\x08inactive");
        assert_eq!(&tail[12..16], b"\0\0\0\x03");
        assert_eq!(&tail[16..20], b"why\0");
        assert_eq!(&tail[20..28], &12u64.to_be_bytes());
        assert_eq!(&tail[28..36], &3_174u64.to_be_bytes());
        assert_eq!(&tail[36..44], &2u64.to_be_bytes());
        assert_eq!(&tail[44..], &u64::MAX.to_be_bytes());
        // A reply cut anywhere inside the new fields is an error, not a
        // status without them.
        for cut in old.len() + 1..new.len() {
            assert!(StatusView::decode(&new[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocation() {
        assert!(decode_leases(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
