//! The JSON layout of libvirt's restart state, as serde types used both ways: the
//! writer fills them, the reader derives them from the document.
//!
//! Field order is libvirt's key order (serde_json's map sorts keys, so structs keep
//! it). Fields that libvirt reads leniently or optionally use the deserializers of
//! [`super::fields`], which keep libvirt's number rules and this module's error texts.

use serde::de::IgnoredAny;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::fields;

/// The document as written (libvirt 9.0's layout). The reader accepts older layouts
/// too: see [`DocumentIn`].
#[derive(Serialize)]
pub(super) struct Document {
    pub daemon: Daemon,
    #[serde(rename = "defaultLockspace")]
    pub default_lockspace: Lockspace,
    pub lockspaces: Vec<Lockspace>,
    pub magic: String,
}

/// The document as read. The daemon part stays raw here: libvirt picks `"daemon"`
/// over the legacy `"server"`, checks the server count and names before it reads a
/// server, and takes a daemon without `"servers"` as the one server itself; the
/// reader follows those steps (`read::read_daemon`) so that the first fault reported
/// is libvirt's.
///
/// Fields are declared in libvirt's order of checks: when several keys are missing,
/// the first declared is reported.
#[derive(Deserialize)]
pub(super) struct DocumentIn {
    #[serde(deserialize_with = "fields::string")]
    pub magic: String,
    #[serde(rename = "defaultLockspace", deserialize_with = "fields::object")]
    pub default_lockspace: LockspaceIn,
    #[serde(deserialize_with = "fields::objects")]
    pub lockspaces: Vec<LockspaceIn>,
    #[serde(default, deserialize_with = "fields::present")]
    pub daemon: Option<Value>,
    /// The layout of virtlockd before the admin server existed.
    #[serde(default, deserialize_with = "fields::present")]
    pub server: Option<Value>,
}

#[derive(Serialize)]
pub(super) struct Daemon {
    pub servers: Servers,
}

/// libvirt writes the servers keyed by name in sorted order: admin first.
#[derive(Serialize)]
pub(super) struct Servers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<Server<AdminPrivate>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtlockd: Option<Server<LockPrivate>>,
}

/// `virNetServer`'s state; `P` is the private data of its clients.
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
pub(super) struct Server<P> {
    #[serde(deserialize_with = "fields::uint")]
    pub min_workers: u32,
    #[serde(deserialize_with = "fields::uint")]
    pub max_workers: u32,
    #[serde(deserialize_with = "fields::uint")]
    pub priority_workers: u32,
    #[serde(deserialize_with = "fields::uint")]
    pub max_clients: u32,
    #[serde(
        default,
        deserialize_with = "fields::opt_uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_anonymous_clients: Option<u32>,
    #[serde(rename = "keepaliveInterval", deserialize_with = "fields::uint")]
    pub keepalive_interval: u32,
    #[serde(rename = "keepaliveCount", deserialize_with = "fields::uint")]
    pub keepalive_count: u32,
    /// libvirt only warns when this is missing or malformed, and starts from 1.
    #[serde(
        default,
        deserialize_with = "fields::lenient_ulong",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_client_id: Option<u64>,
    #[serde(deserialize_with = "fields::objects")]
    pub services: Vec<Service>,
    #[serde(deserialize_with = "fields::objects")]
    pub clients: Vec<Client<P>>,
}

/// `virNetServerService`: one listening socket each in what we write.
#[derive(Serialize, Deserialize)]
pub(super) struct Service {
    #[serde(deserialize_with = "fields::int")]
    pub auth: i32,
    #[serde(deserialize_with = "fields::boolean")]
    pub readonly: bool,
    #[serde(deserialize_with = "fields::uint")]
    pub nrequests_client_max: u32,
    #[serde(deserialize_with = "fields::objects")]
    pub socks: Vec<Sock>,
}

/// `virNetSocket`.
#[derive(Serialize, Deserialize)]
pub(super) struct Sock {
    #[serde(deserialize_with = "fields::int")]
    pub fd: i32,
    #[serde(deserialize_with = "fields::int")]
    pub errfd: i32,
    #[serde(deserialize_with = "fields::int")]
    pub pid: i32,
    #[serde(rename = "isClient", deserialize_with = "fields::boolean")]
    pub is_client: bool,
    /// Absent in files from before libvirt 1.3; libvirt also falls back to the
    /// default (`!isClient`) when it is malformed.
    #[serde(
        rename = "unlinkUNIX",
        default,
        deserialize_with = "fields::lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub unlink_unix: Option<bool>,
}

/// `virNetServerClient`; `P` is the server's private data.
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
pub(super) struct Client<P> {
    /// Absent in old files: the server's next id is given out.
    #[serde(
        default,
        deserialize_with = "fields::opt_ulong",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<u64>,
    #[serde(deserialize_with = "fields::int")]
    pub auth: i32,
    #[serde(
        default,
        deserialize_with = "fields::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_pending: Option<bool>,
    #[serde(deserialize_with = "fields::boolean")]
    pub readonly: bool,
    #[serde(deserialize_with = "fields::uint")]
    pub nrequests_max: u32,
    /// 0 when absent (older libvirt), and then not written either.
    #[serde(
        default,
        deserialize_with = "fields::long",
        skip_serializing_if = "is_zero"
    )]
    pub conn_time: i64,
    #[serde(deserialize_with = "fields::object")]
    pub sock: Sock,
    #[serde(rename = "privateData")]
    pub private_data: P,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// `virLockDaemonClient`'s private data: all five keys are required.
#[derive(Serialize, Deserialize)]
pub(super) struct LockOwner {
    #[serde(deserialize_with = "fields::boolean")]
    pub restricted: bool,
    #[serde(rename = "ownerPid", deserialize_with = "fields::uint")]
    pub owner_pid: u32,
    #[serde(rename = "ownerId", deserialize_with = "fields::uint")]
    pub owner_id: u32,
    #[serde(rename = "ownerName", deserialize_with = "fields::string")]
    pub owner_name: String,
    #[serde(
        rename = "ownerUUID",
        serialize_with = "fields::write_uuid",
        deserialize_with = "fields::uuid"
    )]
    pub owner_uuid: [u8; 16],
}

/// The lock client's private data: [`LockOwner`]'s keys in an object (a non-object
/// is refused with the path of `privateData`, as any other misplaced value).
#[derive(Serialize)]
#[serde(transparent)]
pub(super) struct LockPrivate(pub LockOwner);

impl<'de> Deserialize<'de> for LockPrivate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fields::object(d).map(Self)
    }
}

/// The admin server's private data: written `{}`, and on reading anything will do
/// as long as the key is there (its hook ignores it).
pub(super) struct AdminPrivate;

impl Serialize for AdminPrivate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for AdminPrivate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Self)
    }
}

/// `virLockSpace` as written: the default lockspace has no directory.
#[derive(Serialize)]
pub(super) struct Lockspace {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    pub resources: Vec<Resource>,
}

/// `virLockSpace` as read. Both keys stay raw until the reader knows which lockspace
/// it reads: a stray directory in the default lockspace is ignored, as in libvirt,
/// and a directory lockspace's directory is checked before its resources.
#[derive(Deserialize)]
pub(super) struct LockspaceIn {
    #[serde(default, deserialize_with = "fields::present")]
    pub directory: Option<Value>,
    #[serde(default, deserialize_with = "fields::present")]
    pub resources: Option<Value>,
}

/// A lockspace's `"resources"`, read once the directory is known to be right.
#[derive(Deserialize)]
#[serde(transparent)]
pub(super) struct Resources(#[serde(deserialize_with = "fields::objects")] pub Vec<Resource>);

/// `virLockSpaceResource`.
#[derive(Serialize, Deserialize)]
pub(super) struct Resource {
    #[serde(deserialize_with = "fields::string")]
    pub name: String,
    #[serde(deserialize_with = "fields::string")]
    pub path: String,
    #[serde(deserialize_with = "fields::int")]
    pub fd: i32,
    #[serde(rename = "lockHeld", deserialize_with = "fields::boolean")]
    pub lock_held: bool,
    #[serde(deserialize_with = "fields::uint")]
    pub flags: u32,
    /// Pids, written unsigned as libvirt reads them and read back as `pid_t`.
    #[serde(
        serialize_with = "fields::write_pids",
        deserialize_with = "fields::pids"
    )]
    pub owners: Vec<i32>,
}
