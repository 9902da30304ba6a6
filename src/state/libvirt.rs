//! libvirt's restart-state JSON (`virtlockd-restart-exec.json`, spec §8.3): read when
//! libvirt's virtlockd execs us (migration), written so that libvirt's virtlockd can
//! adopt our state (rollback).
//!
//! Reading follows libvirt's own post-exec reader (9.0 to 11.x): lenient where it is
//! (legacy layouts, optional keys, `-1` for unsigned numbers, liberal UUID text,
//! unknown keys), strict where it is (required keys, JSON types, integers only).
//! Writing produces exactly the layout libvirt 9.0 writes, key order included.
//!
//! What libvirt's schema cannot carry: partly received requests
//! ([`ClientState::pending`]), [`Snapshot::upgrades`], [`Snapshot::started_at`],
//! [`Snapshot::fencing`], [`Snapshot::token`], [`ResourceState::acquired_at`] and
//! the loss details of a lost lease ([`ResourceState::lost_reason`],
//! [`ResourceState::lost_since`]; it stays `lockHeld: false`) are dropped on write and zero/empty on read (the token is added beside the
//! schema by the hand-over code, which also reads it back itself).
//! Names, paths and owner names are JSON strings: bytes that are not UTF-8 are
//! written with U+FFFD replacement characters (libvirt could not use them anyway).

use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    ClientState, ListenerState, LockspaceState, OwnerState, ResourceState, ServerState,
    SessionState, Snapshot, StateError, ADMIN_SERVER, FORMAT, LOCK_SERVER, VERSION,
};

/// Parses libvirt's restart JSON (any schema variant libvirt 9.0/11.x reads) into a
/// [`Snapshot`] (`format` = [`FORMAT`], `version` = [`VERSION`], `magic` = the parsed
/// decimal pid, `upgrades` = 0, `started_at` = 0, no `fencing`, `token` = 0).
///
/// Servers come out lock server first, then admin (whatever the document order);
/// lockspaces come out default first, then the `"lockspaces"` array in order
/// (duplicate directories are kept: libvirt keeps the first and silently drops
/// the others, together with their locks' bookkeeping).
pub fn from_json(text: &str) -> Result<Snapshot, StateError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
    let doc = doc
        .as_object()
        .ok_or_else(|| invalid("the document must be a JSON object"))?;

    // Same order of checks as virLockDaemonPostExecRestart / NewPostExecRestart.
    let magic = read_magic(doc)?;

    let mut lockspaces = vec![read_lockspace(
        field(doc, "", "defaultLockspace")?,
        "defaultLockspace",
        true,
    )?];
    let array = get(doc, "", "lockspaces", "an array", Value::as_array)?;
    for (i, ls) in array.iter().enumerate() {
        lockspaces.push(read_lockspace(ls, &format!("lockspaces[{i}]"), false)?);
    }

    let servers = read_daemon(doc)?;

    Ok(Snapshot {
        format: FORMAT.into(),
        version: VERSION,
        magic,
        servers,
        lockspaces,
        upgrades: 0,
        started_at: 0,
        fencing: Vec::new(),
        token: 0,
        timeout: None,
    })
}

/// Writes exactly the schema libvirt 9.0's reader accepts (spec §8.3), from a
/// [`Snapshot`], pretty-printed with 2-space indentation like libvirt.
///
/// Differences from what libvirt itself would write, all accepted by its reader:
/// * an unregistered lock client (libvirt fails the whole re-exec on it) gets
///   `ownerPid` 0, `ownerId` 0, `ownerName` `""` and the all-zero `ownerUUID`;
///   a lock client without a session is written the same way, unrestricted;
/// * every listener gets its own service;
/// * `max_clients` above `u32::MAX` is written as `u32::MAX` (libvirt reads an
///   unsigned int there);
/// * a negative owner pid is written as its `u32` value (libvirt writes the
///   64-bit two's complement; its reader truncates both to the same pid).
///
/// Servers other than [`LOCK_SERVER`] and [`ADMIN_SERVER`], a server named twice
/// or two default lockspaces are refused, as libvirt could not read them back.
/// A missing server is simply not written; a missing default lockspace is
/// written empty (libvirt requires the key).
pub fn to_json(s: &Snapshot) -> Result<String, StateError> {
    let mut servers = ServersOut {
        admin: None,
        virtlockd: None,
    };
    for server in &s.servers {
        let lock = match server.name.as_str() {
            LOCK_SERVER => true,
            ADMIN_SERVER => false,
            other => {
                return Err(invalid(format!(
                    "server '{other}' cannot be written: libvirt only knows \
                     '{LOCK_SERVER}' and '{ADMIN_SERVER}'"
                )))
            }
        };
        let slot = if lock {
            &mut servers.virtlockd
        } else {
            &mut servers.admin
        };
        if slot.is_some() {
            return Err(invalid(format!("server '{}' appears twice", server.name)));
        }
        *slot = Some(write_server(server, lock));
    }

    let mut default_lockspace = None;
    let mut lockspaces = Vec::new();
    for ls in &s.lockspaces {
        match &ls.directory {
            None if default_lockspace.is_some() => {
                return Err(invalid("more than one default lockspace"));
            }
            None => default_lockspace = Some(write_lockspace(ls)),
            Some(_) => lockspaces.push(write_lockspace(ls)),
        }
    }

    let doc = DocOut {
        daemon: DaemonOut { servers },
        default_lockspace: default_lockspace.unwrap_or(LockspaceOut {
            directory: None,
            resources: Vec::new(),
        }),
        lockspaces,
        magic: s.magic.to_string(),
    };
    // Compact: libvirt's reader ignores whitespace, and a live upgrade waits for
    // this text (megabytes with thousands of leases).
    serde_json::to_string(&doc).map_err(|e| invalid(format!("cannot encode JSON: {e}")))
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

type Obj = Map<String, Value>;

fn invalid(msg: impl Into<String>) -> StateError {
    StateError::Invalid(msg.into())
}

/// `at` is the location of `obj` in the document ("" for the top level), so
/// that every error names the offending key.
fn place(at: &str, key: &str) -> String {
    if at.is_empty() {
        format!("\"{key}\"")
    } else {
        format!("\"{key}\" in {at}")
    }
}

fn field<'a>(obj: &'a Obj, at: &str, key: &str) -> Result<&'a Value, StateError> {
    obj.get(key)
        .ok_or_else(|| invalid(format!("missing {}", place(at, key))))
}

/// A short rendering of a value for error messages (documents can be megabytes).
fn shown(v: &Value) -> String {
    match v {
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
        other => {
            let mut text = other.to_string();
            if text.len() > 40 {
                let mut end = 40;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push_str("...");
            }
            text
        }
    }
}

fn wrong(at: &str, key: &str, want: &str, v: &Value) -> StateError {
    invalid(format!(
        "{} must be {want}, not {}",
        place(at, key),
        shown(v)
    ))
}

/// A required key converted with `conv`; missing and ill-typed are both errors,
/// as in libvirt (its getters fail on any type mismatch).
fn get<'a, T>(
    obj: &'a Obj,
    at: &str,
    key: &str,
    want: &str,
    conv: impl Fn(&'a Value) -> Option<T>,
) -> Result<T, StateError> {
    let v = field(obj, at, key)?;
    conv(v).ok_or_else(|| wrong(at, key, want, v))
}

/// An optional key: absent is `None`, present but ill-typed is an error (libvirt
/// checks presence with `virJSONValueObjectHasKey` first, so `null` is ill-typed).
fn get_opt<'a, T>(
    obj: &'a Obj,
    at: &str,
    key: &str,
    want: &str,
    conv: impl Fn(&'a Value) -> Option<T>,
) -> Result<Option<T>, StateError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => conv(v).map(Some).ok_or_else(|| wrong(at, key, want, v)),
    }
}

fn as_obj<'a>(v: &'a Value, at: &str) -> Result<&'a Obj, StateError> {
    v.as_object()
        .ok_or_else(|| invalid(format!("{at} must be an object, not {}", shown(v))))
}

// libvirt stores JSON numbers as text and converts them with strtol-style
// routines on use: integers only (a fraction or exponent leaves unparsed
// characters), and the unsigned variants accept a minus sign and wrap. serde_json
// parses anything with a fraction, an exponent or beyond 64 bits as f64, which
// `as_i64`/`as_u64` refuse, so those are rejected here too.

/// `virJSONValueGetNumberInt`: a signed 32-bit integer.
fn int_of(v: &Value) -> Option<i32> {
    v.as_i64().and_then(|i| i32::try_from(i).ok())
}

/// `virJSONValueGetNumberUint`: 0..=u32::MAX, or -u32::MAX..=-1 wrapped (so -1
/// is u32::MAX, which is how `keepaliveInterval` -1 reads back).
fn uint_of(v: &Value) -> Option<u32> {
    if let Some(u) = v.as_u64() {
        return u32::try_from(u).ok();
    }
    // Negative here: the truncating cast is the two's complement wrap.
    v.as_i64()
        .filter(|&i| i >= -i64::from(u32::MAX))
        .map(|i| i as u32)
}

/// `virJSONValueGetNumberLong`: a signed 64-bit integer.
fn long_of(v: &Value) -> Option<i64> {
    v.as_i64()
}

/// `virJSONValueGetNumberUlong`: any u64, negative numbers wrapped.
fn ulong_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_i64().map(|i| i as u64))
}

fn read_magic(doc: &Obj) -> Result<u32, StateError> {
    let magic = get(doc, "", "magic", "a string", Value::as_str)?;
    // libvirt compares the string with its own pid printed as "%lld", so only the
    // canonical decimal form can ever match: no sign, no leading zero, no blanks.
    let canonical = !magic.is_empty()
        && magic.bytes().all(|b| b.is_ascii_digit())
        && (magic == "0" || !magic.starts_with('0'));
    match magic.parse::<u32>() {
        Ok(pid) if canonical => Ok(pid),
        _ => Err(invalid(format!(
            "\"magic\" must be a process id in decimal, not {}",
            shown(&Value::String(magic.into()))
        ))),
    }
}

/// `virLockDaemonNewPostExecRestart` + `virNetDaemonNewPostExecRestart`: the
/// servers, lock server first.
fn read_daemon(doc: &Obj) -> Result<Vec<ServerState>, StateError> {
    // "daemon" wins when both are present, as in libvirt; "server" is the layout
    // of virtlockd before the admin server existed.
    let (daemon, at) = match doc.get("daemon") {
        Some(d) => (d, "daemon"),
        None => match doc.get("server") {
            Some(s) => (s, "server"),
            None => return Err(invalid("missing \"daemon\" (or legacy \"server\")")),
        },
    };
    let obj = as_obj(daemon, at)?;

    let mut servers = Vec::new();
    match obj.get("servers") {
        // No "servers": the object itself is the one server, named like the first
        // default name libvirt's virtlockd passes ("virtlockd").
        None => servers.push(read_server(LOCK_SERVER, obj, at)?),
        Some(Value::Array(list)) => {
            if list.len() > 1 {
                return Err(invalid(format!(
                    "Server count {} greater than default name count 1",
                    list.len()
                )));
            }
            for v in list {
                let at = format!("{at}.servers[0]");
                servers.push(read_server(LOCK_SERVER, as_obj(v, &at)?, &at)?);
            }
        }
        Some(Value::Object(map)) => {
            for (name, v) in map {
                if name != LOCK_SERVER && name != ADMIN_SERVER {
                    return Err(invalid(format!(
                        "Unexpected server name '{name}' during restart"
                    )));
                }
                let at = format!("{at}.servers.{name}");
                servers.push(read_server(name, as_obj(v, &at)?, &at)?);
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "\"servers\" in {at} must be an object or an array, not {}",
                shown(other)
            )))
        }
    }
    // A stable order independent of the document's (object keys are unordered).
    servers.sort_by_key(|s| s.name != LOCK_SERVER);
    Ok(servers)
}

/// `virNetServerNewPostExecRestart`.
fn read_server(name: &str, obj: &Obj, at: &str) -> Result<ServerState, StateError> {
    const UINT: &str = "an unsigned 32-bit integer";
    // Validated only: we run no worker pool and no server-side keepalive.
    for key in ["min_workers", "max_workers", "priority_workers"] {
        get(obj, at, key, UINT, uint_of)?;
    }
    let max_clients = get(obj, at, "max_clients", UINT, uint_of)?;
    if let Some(anon) = get_opt(obj, at, "max_anonymous_clients", UINT, uint_of)? {
        if max_clients < anon {
            return Err(invalid(
                "The overall maximum number of clients must not be less than the number \
                 of clients waiting for authentication",
            ));
        }
    }
    for key in ["keepaliveInterval", "keepaliveCount"] {
        get(obj, at, key, UINT, uint_of)?;
    }
    // libvirt only warns when this is missing or malformed, and starts from 1.
    let mut next_client_id = obj.get("next_client_id").and_then(ulong_of).unwrap_or(1);

    let mut listeners = Vec::new();
    let services = get(obj, at, "services", "an array", Value::as_array)?;
    for (i, service) in services.iter().enumerate() {
        let at = format!("{at}.services[{i}]");
        let service = as_obj(service, &at)?;
        get(service, &at, "auth", "a 32-bit integer", int_of)?;
        get(service, &at, "readonly", "true or false", Value::as_bool)?;
        get(service, &at, "nrequests_client_max", UINT, uint_of)?;
        let socks = get(service, &at, "socks", "an array", Value::as_array)?;
        for (j, sock) in socks.iter().enumerate() {
            let sock = read_sock(sock, &format!("{at}.socks[{j}]"))?;
            listeners.push(ListenerState {
                fd: sock.fd,
                unlink: sock.unlink,
            });
        }
    }

    let mut clients = Vec::new();
    let list = get(obj, at, "clients", "an array", Value::as_array)?;
    for (i, client) in list.iter().enumerate() {
        let at = format!("{at}.clients[{i}]");
        clients.push(read_client(name, client, &at, &mut next_client_id)?);
    }

    Ok(ServerState {
        name: name.into(),
        max_clients: u64::from(max_clients),
        next_client_id,
        listeners,
        clients,
        max_unauth_clients: None,
        prio_workers: None,
    })
}

struct Sock {
    fd: i32,
    unlink: bool,
}

/// `virNetSocketNewPostExecRestart`.
fn read_sock(v: &Value, at: &str) -> Result<Sock, StateError> {
    const INT: &str = "a 32-bit integer";
    let obj = as_obj(v, at)?;
    let fd = get(obj, at, "fd", INT, int_of)?;
    get(obj, at, "pid", INT, int_of)?;
    get(obj, at, "errfd", INT, int_of)?;
    let is_client = get(obj, at, "isClient", "true or false", Value::as_bool)?;
    // Absent in files from before libvirt 1.3; libvirt also falls back to the
    // default when it is malformed.
    let unlink = obj
        .get("unlinkUNIX")
        .and_then(Value::as_bool)
        .unwrap_or(!is_client);
    Ok(Sock { fd, unlink })
}

/// `virNetServerClientNewPostExecRestart` plus the server's private-data hook.
fn read_client(
    server: &str,
    v: &Value,
    at: &str,
    next_client_id: &mut u64,
) -> Result<ClientState, StateError> {
    let obj = as_obj(v, at)?;
    let auth = get(obj, at, "auth", "a 32-bit integer", int_of)?;
    // Only auth 0 ("none") implies an authenticated client; without the key the
    // client is pending exactly when its method needs a handshake.
    let auth_pending = get_opt(obj, at, "auth_pending", "true or false", Value::as_bool)?;
    if auth_pending == Some(true) && auth == 0 {
        return Err(invalid(
            "Invalid auth_pending and auth combination in JSON state document",
        ));
    }
    if auth_pending.unwrap_or(auth != 0) {
        // libvirt accepts this (for SASL/polkit services, which virtlockd never
        // has); we have no authentication step, so adopting the client would
        // silently authenticate it.
        return Err(invalid(format!(
            "{at} is still waiting for authentication (auth {auth}), which is not supported"
        )));
    }
    get(obj, at, "readonly", "true or false", Value::as_bool)?;
    get(
        obj,
        at,
        "nrequests_max",
        "an unsigned 32-bit integer",
        uint_of,
    )?;
    let sock = field(obj, at, "sock")?;
    let id = match get_opt(obj, at, "id", "an unsigned 64-bit integer", ulong_of)? {
        Some(id) => id,
        None => {
            let id = *next_client_id;
            *next_client_id = next_client_id.wrapping_add(1);
            id
        }
    };
    let conn_time = get_opt(obj, at, "conn_time", "a 64-bit integer", long_of)?.unwrap_or(0);
    let fd = read_sock(sock, &format!("{at}.sock"))?.fd;
    let private = field(obj, at, "privateData")?;
    let session = if server == LOCK_SERVER {
        Some(read_lock_client(private, &format!("{at}.privateData"))?)
    } else {
        // The admin server's hook ignores its (empty) private data.
        None
    };
    Ok(ClientState {
        id,
        fd,
        conn_time,
        session,
        pending: Vec::new(),
        peer_pid: None,
        peer_ids: None,
    })
}

/// `virLockDaemonClientNewPostExecRestart`: all five keys are required.
fn read_lock_client(v: &Value, at: &str) -> Result<SessionState, StateError> {
    const UINT: &str = "an unsigned 32-bit integer";
    let obj = as_obj(v, at)?;
    let restricted = get(obj, at, "restricted", "true or false", Value::as_bool)?;
    let pid = get(obj, at, "ownerPid", UINT, uint_of)?;
    let id = get(obj, at, "ownerId", UINT, uint_of)?;
    let name = get(obj, at, "ownerName", "a string", Value::as_str)?;
    let uuid = get(obj, at, "ownerUUID", "a UUID string", |v| {
        v.as_str().and_then(parse_uuid)
    })?;
    // ownerId 0 is how libvirt marks a connection that never registered (REGISTER
    // refuses id 0), whatever the other fields say.
    let owner = (id != 0).then(|| OwnerState {
        uuid,
        name: name.as_bytes().to_vec(),
        id,
        pid,
    });
    Ok(SessionState { restricted, owner })
}

/// C's `isspace` in the C locale (includes vertical tab, unlike Rust's ASCII
/// whitespace).
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// `virUUIDParse`: 32 hex digits (either case), with '-' or ' ' allowed before
/// any pair and blanks around, so the canonical 36-character form and the bare
/// 32-digit form both parse.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    fn nibble(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut pos = bytes.iter().take_while(|&&b| is_c_space(b)).count();
    let mut uuid = [0u8; 16];
    for byte in &mut uuid {
        while matches!(bytes.get(pos), Some(b'-' | b' ')) {
            pos += 1;
        }
        let hi = nibble(*bytes.get(pos)?)?;
        let lo = nibble(*bytes.get(pos + 1)?)?;
        *byte = (hi << 4) | lo;
        pos += 2;
    }
    let rest = bytes.get(pos..).unwrap_or_default();
    rest.iter().all(|&b| is_c_space(b)).then_some(uuid)
}

/// `virLockSpaceNewPostExecRestart`.
fn read_lockspace(v: &Value, at: &str, default: bool) -> Result<LockspaceState, StateError> {
    let obj = as_obj(v, at)?;
    let directory = if default {
        // libvirt never writes one here; the default lockspace has no directory
        // by definition, so a stray key is ignored.
        None
    } else {
        // libvirt would silently drop a directory lockspace without a usable
        // key (and lose track of its leases); refusing is safer.
        let dir = get(obj, at, "directory", "a string", Value::as_str)?;
        Some(dir.as_bytes().to_vec())
    };

    let list = get(obj, at, "resources", "an array", Value::as_array)?;
    let mut resources: Vec<ResourceState> = Vec::with_capacity(list.len());
    for (i, res) in list.iter().enumerate() {
        let at = format!("{at}.resources[{i}]");
        let res = read_resource(res, &at)?;
        // libvirt keys resources by name in a hash table and fails on a duplicate.
        if resources.iter().any(|r| r.name == res.name) {
            return Err(invalid(format!(
                "{at}: resource '{}' appears twice in the lockspace",
                String::from_utf8_lossy(&res.name)
            )));
        }
        resources.push(res);
    }
    Ok(LockspaceState {
        directory,
        owners: Vec::new(),
        resources,
    })
}

fn read_resource(v: &Value, at: &str) -> Result<ResourceState, StateError> {
    let obj = as_obj(v, at)?;
    let name = get(obj, at, "name", "a string", Value::as_str)?;
    let path = get(obj, at, "path", "a string", Value::as_str)?;
    let fd = get(obj, at, "fd", "a 32-bit integer", int_of)?;
    let lock_held = get(obj, at, "lockHeld", "true or false", Value::as_bool)?;
    let flags = get(obj, at, "flags", "an unsigned 32-bit integer", uint_of)?;
    let list = get(obj, at, "owners", "an array", Value::as_array)?;
    let mut owners = Vec::with_capacity(list.len());
    for (i, owner) in list.iter().enumerate() {
        let owner = ulong_of(owner).ok_or_else(|| {
            invalid(format!(
                "owner {i} in {at} must be an unsigned integer, not {}",
                shown(owner)
            ))
        })?;
        // libvirt's `(pid_t)owner`: keep the low 32 bits, so both 4294967295 (our
        // writer) and 18446744073709551615 (libvirt's) read back as -1.
        owners.push(owner as i32);
    }
    Ok(ResourceState {
        name: name.as_bytes().to_vec(),
        path: path.as_bytes().to_vec(),
        fd,
        lock_held,
        flags,
        owners,
        acquired_at: 0,
        lost_reason: None,
        lost_since: 0,
        file_id: None,
    })
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

// serde_json's Map sorts keys (no preserve_order feature), so the layout is made
// of structs whose field order is libvirt's key order.

#[derive(Serialize)]
struct DocOut {
    daemon: DaemonOut,
    #[serde(rename = "defaultLockspace")]
    default_lockspace: LockspaceOut,
    lockspaces: Vec<LockspaceOut>,
    magic: String,
}

#[derive(Serialize)]
struct DaemonOut {
    servers: ServersOut,
}

/// libvirt writes the servers keyed by name in sorted order: admin first.
#[derive(Serialize)]
struct ServersOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<ServerOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtlockd: Option<ServerOut>,
}

#[derive(Serialize)]
struct ServerOut {
    min_workers: u32,
    max_workers: u32,
    priority_workers: u32,
    max_clients: u32,
    max_anonymous_clients: u32,
    #[serde(rename = "keepaliveInterval")]
    keepalive_interval: u32,
    #[serde(rename = "keepaliveCount")]
    keepalive_count: u32,
    next_client_id: u64,
    services: Vec<ServiceOut>,
    clients: Vec<ClientOut>,
}

#[derive(Serialize)]
struct ServiceOut {
    auth: i32,
    readonly: bool,
    nrequests_client_max: u32,
    socks: Vec<SockOut>,
}

#[derive(Serialize)]
struct SockOut {
    fd: i32,
    errfd: i32,
    pid: i32,
    #[serde(rename = "isClient")]
    is_client: bool,
    #[serde(rename = "unlinkUNIX")]
    unlink_unix: bool,
}

#[derive(Serialize)]
struct ClientOut {
    id: u64,
    auth: i32,
    auth_pending: bool,
    readonly: bool,
    nrequests_max: u32,
    #[serde(skip_serializing_if = "is_zero")]
    conn_time: i64,
    sock: SockOut,
    #[serde(rename = "privateData")]
    private_data: PrivateOut,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Serialize)]
#[serde(untagged)]
enum PrivateOut {
    Lock(LockClientOut),
    /// The admin server's private data: `{}`.
    Admin(Empty),
}

/// Serializes as `{}` (a unit struct would be `null`).
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct LockClientOut {
    restricted: bool,
    #[serde(rename = "ownerPid")]
    owner_pid: u32,
    #[serde(rename = "ownerId")]
    owner_id: u32,
    #[serde(rename = "ownerName")]
    owner_name: String,
    #[serde(rename = "ownerUUID")]
    owner_uuid: String,
}

#[derive(Serialize)]
struct LockspaceOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    directory: Option<String>,
    resources: Vec<ResourceOut>,
}

#[derive(Serialize)]
struct ResourceOut {
    name: String,
    path: String,
    fd: i32,
    #[serde(rename = "lockHeld")]
    lock_held: bool,
    flags: u32,
    owners: Vec<u32>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_server(server: &ServerState, lock: bool) -> ServerOut {
    let max_clients = u32::try_from(server.max_clients).unwrap_or(u32::MAX);
    ServerOut {
        min_workers: 0,
        max_workers: 0,
        priority_workers: 0,
        max_clients,
        max_anonymous_clients: max_clients,
        // libvirt's virtlockd disables server-side keepalive with -1.
        keepalive_interval: u32::MAX,
        keepalive_count: 0,
        next_client_id: server.next_client_id,
        services: server
            .listeners
            .iter()
            .map(|l| ServiceOut {
                auth: 0,
                readonly: false,
                nrequests_client_max: 1,
                socks: vec![SockOut {
                    fd: l.fd,
                    errfd: -1,
                    pid: 0,
                    is_client: false,
                    unlink_unix: l.unlink,
                }],
            })
            .collect(),
        clients: server
            .clients
            .iter()
            .map(|c| write_client(c, lock))
            .collect(),
    }
}

fn write_client(client: &ClientState, lock: bool) -> ClientOut {
    let private_data = if lock {
        let session = client.session.clone().unwrap_or_default();
        // Placeholders for an unregistered client: libvirt's reader requires all
        // five keys, and ownerId 0 marks the client unregistered again.
        let (owner_pid, owner_id, owner_name, uuid) = match &session.owner {
            Some(o) => (o.pid, o.id, text(&o.name), o.uuid),
            None => (0, 0, String::new(), [0; 16]),
        };
        PrivateOut::Lock(LockClientOut {
            restricted: session.restricted,
            owner_pid,
            owner_id,
            owner_name,
            owner_uuid: crate::names::uuid_string(&uuid),
        })
    } else {
        PrivateOut::Admin(Empty {})
    };
    ClientOut {
        id: client.id,
        auth: 0,
        auth_pending: false,
        readonly: false,
        nrequests_max: 1,
        conn_time: client.conn_time,
        sock: SockOut {
            fd: client.fd,
            errfd: -1,
            pid: 0,
            is_client: true,
            unlink_unix: false,
        },
        private_data,
    }
}

fn write_lockspace(ls: &LockspaceState) -> LockspaceOut {
    LockspaceOut {
        directory: ls.directory.as_deref().map(text),
        resources: ls
            .resources
            .iter()
            .map(|r| ResourceOut {
                name: text(&r.name),
                path: text(&r.path),
                fd: r.fd,
                lock_held: r.lock_held,
                flags: r.flags,
                // pids are written unsigned, as libvirt reads them; the reader
                // truncates back to i32.
                owners: r.owners.iter().map(|&p| p as u32).collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {

    /// The writer emits compact JSON; expectations are written pretty.
    fn compact(pretty: &str) -> String {
        let mut out = String::new();
        let mut in_string = false;
        let mut escaped = false;
        for c in pretty.chars() {
            if in_string {
                out.push(c);
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_string = false,
                    _ => {}
                }
            } else if c == '"' {
                in_string = true;
                out.push(c);
            } else if !c.is_whitespace() {
                out.push(c);
            }
        }
        out
    }
    use super::super::FenceState;
    use super::*;
    use serde_json::json;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    /// Spec Appendix B, verbatim except for the `<64 hex chars>` placeholders.
    const APPENDIX_B: &str = r#"{
  "daemon": {
    "servers": {
      "admin": {
        "min_workers": 0, "max_workers": 0, "priority_workers": 0,
        "max_clients": 5000, "max_anonymous_clients": 5000,
        "keepaliveInterval": 4294967295, "keepaliveCount": 0,
        "next_client_id": 2,
        "services": [
          { "auth": 0, "readonly": false, "nrequests_client_max": 1,
            "socks": [ { "fd": 4, "errfd": -1, "pid": 0, "isClient": false, "unlinkUNIX": false } ] }
        ],
        "clients": [
          { "id": 1, "auth": 0, "auth_pending": false, "readonly": false, "nrequests_max": 1,
            "conn_time": 1700000100,
            "sock": { "fd": 9, "errfd": -1, "pid": 0, "isClient": true, "unlinkUNIX": false },
            "privateData": {} }
        ]
      },
      "virtlockd": {
        "min_workers": 0, "max_workers": 0, "priority_workers": 0,
        "max_clients": 1024, "max_anonymous_clients": 1024,
        "keepaliveInterval": 4294967295, "keepaliveCount": 0,
        "next_client_id": 4,
        "services": [
          { "auth": 0, "readonly": false, "nrequests_client_max": 1,
            "socks": [ { "fd": 3, "errfd": -1, "pid": 0, "isClient": false, "unlinkUNIX": false } ] }
        ],
        "clients": [
          { "id": 2, "auth": 0, "auth_pending": false, "readonly": false, "nrequests_max": 1,
            "conn_time": 1700000000,
            "sock": { "fd": 7, "errfd": -1, "pid": 0, "isClient": true, "unlinkUNIX": false },
            "privateData": { "restricted": true, "ownerPid": 12345, "ownerId": 1,
                             "ownerName": "vm1",
                             "ownerUUID": "00112233-4455-6677-8899-aabbccddeeff" } }
        ]
      }
    }
  },
  "defaultLockspace": { "resources": [] },
  "lockspaces": [
    { "directory": "/var/lib/libvirt/lockd/files",
      "resources": [
        { "name": "<64 hex chars>", "path": "/var/lib/libvirt/lockd/files/<64 hex chars>",
          "fd": 8, "lockHeld": true, "flags": 2, "owners": [ 12345 ] } ] }
  ],
  "magic": "4242"
}"#;

    fn appendix_b() -> String {
        APPENDIX_B.replace("<64 hex chars>", HEX)
    }

    /// Trimmed from observed-behaviour.md §7 (libvirt 9.0's own output), keeping
    /// its formatting: empty arrays as `[\n\n        ]`, both servers, a
    /// restricted client, a shared resource and a repeated directory.
    const OBSERVED: &str = r#"{
  "daemon": {
    "servers": {
      "admin": {
        "min_workers": 0,
        "max_workers": 0,
        "priority_workers": 0,
        "max_clients": 5,
        "max_anonymous_clients": 5,
        "keepaliveInterval": 4294967295,
        "keepaliveCount": 0,
        "next_client_id": 1,
        "services": [
          {
            "auth": 0,
            "readonly": false,
            "nrequests_client_max": 1,
            "socks": [
              {
                "fd": 6,
                "errfd": -1,
                "pid": 0,
                "isClient": false,
                "unlinkUNIX": true
              }
            ]
          }
        ],
        "clients": [

        ]
      },
      "virtlockd": {
        "min_workers": 0,
        "max_workers": 0,
        "priority_workers": 0,
        "max_clients": 4096,
        "max_anonymous_clients": 4096,
        "keepaliveInterval": 4294967295,
        "keepaliveCount": 0,
        "next_client_id": 63,
        "services": [
          {
            "auth": 0,
            "readonly": false,
            "nrequests_client_max": 1,
            "socks": [
              {
                "fd": 5,
                "errfd": -1,
                "pid": 0,
                "isClient": false,
                "unlinkUNIX": true
              }
            ]
          }
        ],
        "clients": [
          {
            "id": 57,
            "auth": 0,
            "auth_pending": false,
            "readonly": false,
            "nrequests_max": 1,
            "conn_time": 1795374136,
            "sock": {
              "fd": 12,
              "errfd": -1,
              "pid": 0,
              "isClient": true,
              "unlinkUNIX": false
            },
            "privateData": {
              "restricted": false,
              "ownerPid": 4200001,
              "ownerId": 1,
              "ownerName": "vmA",
              "ownerUUID": "aaaaaaaa-0000-0000-0000-000000000001"
            }
          },
          {
            "id": 60,
            "auth": 0,
            "auth_pending": false,
            "readonly": false,
            "nrequests_max": 1,
            "conn_time": 1795374136,
            "sock": {
              "fd": 14,
              "errfd": -1,
              "pid": 0,
              "isClient": true,
              "unlinkUNIX": false
            },
            "privateData": {
              "restricted": true,
              "ownerPid": 4200004,
              "ownerId": 4,
              "ownerName": "vmD",
              "ownerUUID": "dddddddd-0000-0000-0000-000000000004"
            }
          }
        ]
      }
    }
  },
  "defaultLockspace": {
    "resources": [
      {
        "name": "$BASE/default-lockspace-res",
        "path": "$BASE/default-lockspace-res",
        "fd": 18,
        "lockHeld": true,
        "flags": 2,
        "owners": [
          4200004
        ]
      }
    ]
  },
  "lockspaces": [
    {
      "directory": "$BASE/ls",
      "resources": [

      ]
    },
    {
      "directory": "/",
      "resources": [

      ]
    },
    {
      "directory": "$BASE/ls",
      "resources": [
        {
          "name": "s1",
          "path": "$BASE/ls/s1",
          "fd": 16,
          "lockHeld": true,
          "flags": 3,
          "owners": [
            4200002,
            4200003
          ]
        }
      ]
    }
  ],
  "magic": "10063"
}"#;

    // --- builders for the §11.2-style cases -------------------------------

    fn sock(fd: i32, is_client: bool) -> Value {
        json!({"fd": fd, "errfd": -1, "pid": 0, "isClient": is_client, "unlinkUNIX": !is_client})
    }

    fn lock_private(id: u32) -> Value {
        json!({
            "restricted": false, "ownerPid": 100 + id, "ownerId": id,
            "ownerName": format!("vm{id}"),
            "ownerUUID": "00000000-0000-0000-0000-00000000000a"
        })
    }

    /// A lock client; `id` None leaves the key out.
    fn client(id: Option<u64>, fd: i32) -> Value {
        let mut c = json!({
            "auth": 0, "auth_pending": false, "readonly": false, "nrequests_max": 1,
            "sock": sock(fd, true), "privateData": lock_private(1)
        });
        if let (Some(id), Some(obj)) = (id, c.as_object_mut()) {
            obj.insert("id".into(), json!(id));
        }
        c
    }

    fn server(clients: Vec<Value>) -> Value {
        json!({
            "min_workers": 0, "max_workers": 0, "priority_workers": 0,
            "max_clients": 10, "max_anonymous_clients": 10,
            "keepaliveInterval": 4294967295u32, "keepaliveCount": 0,
            "next_client_id": 7,
            "services": [{"auth": 0, "readonly": false, "nrequests_client_max": 1,
                          "socks": [sock(3, false)]}],
            "clients": clients
        })
    }

    fn doc_with(key: &str, daemon: Value) -> Value {
        let mut doc = json!({
            "defaultLockspace": {"resources": []},
            "lockspaces": [],
            "magic": "42"
        });
        if let Some(obj) = doc.as_object_mut() {
            obj.insert(key.into(), daemon);
        }
        doc
    }

    fn doc(daemon: Value) -> Value {
        doc_with("daemon", daemon)
    }

    fn parse(v: &Value) -> Result<Snapshot, StateError> {
        from_json(&v.to_string())
    }

    fn err(v: &Value) -> String {
        match parse(v) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(StateError::Invalid(msg)) => msg,
            Err(e) => panic!("wrong error kind: {e}"),
        }
    }

    /// Sets `doc[path...] = value`, creating nothing (the path must exist).
    fn set(doc: &mut Value, path: &[&str], value: Value) {
        let mut cur = doc;
        for p in path {
            cur = match p.parse::<usize>() {
                Ok(i) => &mut cur[i],
                Err(_) => &mut cur[*p],
            };
        }
        *cur = value;
    }

    fn remove(doc: &mut Value, path: &[&str], key: &str) {
        let mut cur = doc;
        for p in path {
            cur = match p.parse::<usize>() {
                Ok(i) => &mut cur[i],
                Err(_) => &mut cur[*p],
            };
        }
        if let Some(obj) = cur.as_object_mut() {
            obj.remove(key);
        }
    }

    // --- reading -------------------------------------------------------------

    #[test]
    fn appendix_b_every_field() {
        let s = from_json(&appendix_b()).unwrap();
        let expected = Snapshot {
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
                        unlink: false,
                    }],
                    clients: vec![ClientState {
                        id: 2,
                        fd: 7,
                        conn_time: 1_700_000_000,
                        session: Some(SessionState {
                            restricted: true,
                            owner: Some(OwnerState {
                                uuid: [
                                    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99,
                                    0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
                                ],
                                name: b"vm1".to_vec(),
                                id: 1,
                                pid: 12345,
                            }),
                        }),
                        pending: vec![],
                        peer_pid: None,
                        peer_ids: None,
                    }],
                    max_unauth_clients: None,
                    prio_workers: None,
                },
                ServerState {
                    name: ADMIN_SERVER.into(),
                    max_clients: 5000,
                    next_client_id: 2,
                    listeners: vec![ListenerState {
                        fd: 4,
                        unlink: false,
                    }],
                    clients: vec![ClientState {
                        id: 1,
                        fd: 9,
                        conn_time: 1_700_000_100,
                        session: None,
                        pending: vec![],
                        peer_pid: None,
                        peer_ids: None,
                    }],
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
                    owners: Vec::new(),
                    resources: vec![ResourceState {
                        name: HEX.as_bytes().to_vec(),
                        path: format!("/var/lib/libvirt/lockd/files/{HEX}").into_bytes(),
                        fd: 8,
                        lock_held: true,
                        flags: 2,
                        owners: vec![12345],
                        acquired_at: 0,
                        lost_reason: None,
                        lost_since: 0,
                        file_id: None,
                    }],
                },
            ],
            upgrades: 0,
            started_at: 0,
            fencing: vec![],
            token: 0,
            timeout: None,
        };
        assert_eq!(s, expected);
        assert_eq!(s.fds(), vec![3, 7, 4, 9, 8]);
    }

    #[test]
    fn observed_libvirt_9_output() {
        let s = from_json(OBSERVED).unwrap();
        assert_eq!(s.magic, 10063);
        let names: Vec<&str> = s.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [LOCK_SERVER, ADMIN_SERVER]);

        let lock = &s.servers[0];
        assert_eq!((lock.max_clients, lock.next_client_id), (4096, 63));
        assert_eq!(
            lock.listeners,
            [ListenerState {
                fd: 5,
                unlink: true
            }]
        );
        let ids: Vec<(u64, i32)> = lock.clients.iter().map(|c| (c.id, c.fd)).collect();
        assert_eq!(ids, [(57, 12), (60, 14)]);
        let d = lock.clients[1].session.as_ref().unwrap();
        assert!(d.restricted);
        let owner = d.owner.as_ref().unwrap();
        assert_eq!(
            (owner.id, owner.pid, &owner.name[..]),
            (4, 4_200_004, &b"vmD"[..])
        );
        assert_eq!(owner.uuid[..4], [0xdd; 4]);
        assert_eq!(owner.uuid[15], 4);
        assert!(!lock.clients[0].session.as_ref().unwrap().restricted);

        let admin = &s.servers[1];
        assert_eq!((admin.max_clients, admin.next_client_id), (5, 1));
        assert_eq!(
            admin.listeners,
            [ListenerState {
                fd: 6,
                unlink: true
            }]
        );
        assert!(admin.clients.is_empty());

        let dirs: Vec<Option<&[u8]>> = s
            .lockspaces
            .iter()
            .map(|l| l.directory.as_deref())
            .collect();
        assert_eq!(
            dirs,
            [
                None,
                Some(&b"$BASE/ls"[..]),
                Some(&b"/"[..]),
                Some(&b"$BASE/ls"[..])
            ]
        );
        assert_eq!(s.lockspaces[0].resources[0].fd, 18);
        assert_eq!(s.lockspaces[0].resources[0].owners, [4_200_004]);
        let s1 = &s.lockspaces[3].resources[0];
        assert_eq!((s1.flags, s1.fd), (3, 16));
        assert_eq!(s1.owners, [4_200_002, 4_200_003]);
        assert_eq!(s.fds(), vec![5, 12, 14, 6, 18, 16]);
    }

    #[test]
    fn legacy_flat_daemon_without_servers_key() {
        // libvirt's "initial" case: the daemon object is the server itself, and
        // neither ids nor next_client_id nor unlinkUNIX are present.
        let mut srv = server(vec![client(None, 5), client(None, 6)]);
        for key in ["next_client_id", "max_anonymous_clients"] {
            remove(&mut srv, &[], key);
        }
        remove(&mut srv, &["services", "0", "socks", "0"], "unlinkUNIX");
        remove(&mut srv, &["clients", "0", "sock"], "unlinkUNIX");
        let s = parse(&doc(srv)).unwrap();
        assert_eq!(s.servers.len(), 1);
        let srv = &s.servers[0];
        assert_eq!(srv.name, LOCK_SERVER);
        assert_eq!(srv.max_clients, 10);
        assert_eq!(
            srv.listeners,
            [ListenerState {
                fd: 3,
                unlink: true
            }]
        );
        let ids: Vec<u64> = srv.clients.iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(srv.next_client_id, 3);
    }

    #[test]
    fn legacy_server_key() {
        let s = parse(&doc_with("server", server(vec![client(Some(4), 5)]))).unwrap();
        assert_eq!(s.servers.len(), 1);
        assert_eq!(s.servers[0].name, LOCK_SERVER);
        assert_eq!(s.servers[0].clients[0].fd, 5);
        // "daemon" wins over "server" when both exist.
        let mut both = doc(json!({"servers": {}}));
        set(&mut both, &["server"], server(vec![]));
        assert!(parse(&both).unwrap().servers.is_empty());
        // Neither.
        let mut none = doc(json!({}));
        remove(&mut none, &[], "daemon");
        assert!(err(&none).contains("\"daemon\""));
    }

    #[test]
    fn servers_array_form() {
        let s = parse(&doc(json!({"servers": [server(vec![client(Some(1), 5)])]}))).unwrap();
        assert_eq!(s.servers.len(), 1);
        assert_eq!(s.servers[0].name, LOCK_SERVER);
        assert!(s.servers[0].clients[0].session.is_some());

        let two = doc(json!({"servers": [server(vec![]), server(vec![])]}));
        assert_eq!(
            err(&two),
            "Server count 2 greater than default name count 1"
        );
    }

    #[test]
    fn servers_object_form_names() {
        let mut admin = server(vec![client(Some(1), 8)]);
        set(&mut admin, &["clients", "0", "privateData"], json!({}));
        let s = parse(&doc(
            json!({"servers": {"admin": admin, "virtlockd": server(vec![])}}),
        ))
        .unwrap();
        let names: Vec<&str> = s.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [LOCK_SERVER, ADMIN_SERVER]);
        assert_eq!(s.servers[1].clients[0].session, None);

        let bad = doc(json!({"servers": {"testServer0": server(vec![])}}));
        assert_eq!(
            err(&bad),
            "Unexpected server name 'testServer0' during restart"
        );
        let bad = doc(json!({"servers": "virtlockd"}));
        assert!(err(&bad).contains("\"servers\""));
    }

    #[test]
    fn old_keepalive_required_key_is_ignored() {
        let mut srv = server(vec![]);
        set(&mut srv, &["keepaliveRequired"], json!(true));
        set(&mut srv, &["someFutureKey"], json!({"x": [1.5]}));
        assert_eq!(
            parse(&doc(json!({"servers": {"virtlockd": srv}})))
                .unwrap()
                .servers
                .len(),
            1
        );
    }

    #[test]
    fn client_ids_preserved_or_assigned() {
        let srv = server(vec![
            client(Some(40), 5),
            client(None, 6),
            client(Some(3), 7),
        ]);
        let s = parse(&doc(json!({"servers": {"virtlockd": srv}}))).unwrap();
        let ids: Vec<u64> = s.servers[0].clients.iter().map(|c| c.id).collect();
        // The missing id takes next_client_id (7), which then moves on.
        assert_eq!(ids, [40, 7, 3]);
        assert_eq!(s.servers[0].next_client_id, 8);

        let mut bad = server(vec![client(Some(1), 5)]);
        set(&mut bad, &["clients", "0", "id"], json!("1"));
        assert!(err(&doc(bad)).contains("\"id\""));
    }

    #[test]
    fn next_client_id_preserved_or_defaulted() {
        let s = parse(&doc(server(vec![]))).unwrap();
        assert_eq!(s.servers[0].next_client_id, 7);
        let mut srv = server(vec![]);
        remove(&mut srv, &[], "next_client_id");
        assert_eq!(parse(&doc(srv)).unwrap().servers[0].next_client_id, 1);
        // libvirt only warns about a malformed one, and starts from 1.
        let mut srv = server(vec![]);
        set(&mut srv, &["next_client_id"], json!("many"));
        assert_eq!(parse(&doc(srv)).unwrap().servers[0].next_client_id, 1);
    }

    #[test]
    fn conn_time_preserved_or_zero() {
        let mut srv = server(vec![client(Some(1), 5), client(Some(2), 6)]);
        set(
            &mut srv,
            &["clients", "0", "conn_time"],
            json!(1_234_567_890),
        );
        let s = parse(&doc(srv)).unwrap();
        assert_eq!(s.servers[0].clients[0].conn_time, 1_234_567_890);
        assert_eq!(s.servers[0].clients[1].conn_time, 0);
    }

    #[test]
    fn auth_pending_rules() {
        let mut srv = server(vec![client(Some(1), 5)]);
        set(&mut srv, &["clients", "0", "auth_pending"], json!(true));
        assert_eq!(
            err(&doc(srv.clone())),
            "Invalid auth_pending and auth combination in JSON state document"
        );
        // Legitimate for libvirt with SASL/polkit, but we cannot authenticate.
        set(&mut srv, &["clients", "0", "auth"], json!(2));
        assert!(err(&doc(srv.clone())).contains("waiting for authentication"));
        remove(&mut srv, &["clients", "0"], "auth_pending");
        assert!(err(&doc(srv.clone())).contains("waiting for authentication"));
        // Already authenticated through another method: fine.
        set(&mut srv, &["clients", "0", "auth_pending"], json!(false));
        assert_eq!(
            parse(&doc(srv.clone())).unwrap().servers[0].clients.len(),
            1
        );
        // Absent with auth 0: not pending.
        set(&mut srv, &["clients", "0", "auth"], json!(0));
        remove(&mut srv, &["clients", "0"], "auth_pending");
        assert_eq!(parse(&doc(srv)).unwrap().servers[0].clients.len(), 1);
    }

    #[test]
    fn max_anonymous_clients_limits() {
        let mut srv = server(vec![]);
        set(&mut srv, &["max_anonymous_clients"], json!(11));
        assert_eq!(
            err(&doc(srv.clone())),
            "The overall maximum number of clients must not be less than the number of \
             clients waiting for authentication"
        );
        set(&mut srv, &["max_anonymous_clients"], json!(10));
        assert!(parse(&doc(srv)).is_ok());
    }

    #[test]
    fn magic_is_required_and_decimal() {
        let mut d = doc(server(vec![]));
        remove(&mut d, &[], "magic");
        assert_eq!(err(&d), "missing \"magic\"");
        for bad in [
            json!(42),
            json!(""),
            json!("0x2a"),
            json!("042"),
            json!("-1"),
            json!(" 42"),
            json!("4294967296"),
        ] {
            set(&mut d, &["magic"], bad.clone());
            assert!(err(&d).contains("\"magic\""), "{bad}");
        }
        set(&mut d, &["magic"], json!("0"));
        assert_eq!(parse(&d).unwrap().magic, 0);
        set(&mut d, &["magic"], json!("4294967295"));
        assert_eq!(parse(&d).unwrap().magic, u32::MAX);
    }

    #[test]
    fn lock_private_data_keys_are_required() {
        for key in [
            "restricted",
            "ownerPid",
            "ownerId",
            "ownerName",
            "ownerUUID",
        ] {
            let mut srv = server(vec![client(Some(1), 5)]);
            remove(&mut srv, &["clients", "0", "privateData"], key);
            let msg = err(&doc(srv));
            assert!(msg.starts_with(&format!("missing \"{key}\"")), "{msg}");
            assert!(msg.contains("daemon.clients[0].privateData"), "{msg}");
        }
        let mut srv = server(vec![client(Some(1), 5)]);
        remove(&mut srv, &["clients", "0"], "privateData");
        assert!(err(&doc(srv)).contains("\"privateData\""));
        // The admin server ignores whatever is there, but it must be there.
        let mut admin = server(vec![client(Some(1), 5)]);
        set(&mut admin, &["clients", "0", "privateData"], Value::Null);
        assert!(parse(&doc(json!({"servers": {"admin": admin.clone()}}))).is_ok());
        remove(&mut admin, &["clients", "0"], "privateData");
        assert!(err(&doc(json!({"servers": {"admin": admin}}))).contains("\"privateData\""));
    }

    #[test]
    fn unregistered_owner_and_uuid_forms() {
        let mut srv = server(vec![client(Some(1), 5)]);
        set(
            &mut srv,
            &["clients", "0", "privateData", "ownerId"],
            json!(0),
        );
        let s = parse(&doc(srv.clone())).unwrap();
        assert_eq!(
            s.servers[0].clients[0].session,
            Some(SessionState::default())
        );

        set(
            &mut srv,
            &["clients", "0", "privateData", "ownerId"],
            json!(9),
        );
        let uuid_at = ["clients", "0", "privateData", "ownerUUID"];
        let want = [
            0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45,
            0x67, 0x89,
        ];
        for good in [
            "abcdef01-2345-6789-abcd-ef0123456789",
            "ABCDEF01-2345-6789-ABCD-EF0123456789",
            "abcdef0123456789abcdef0123456789",
            "  abcdef01 2345-6789-abcd-ef0123456789\n",
        ] {
            set(&mut srv, &uuid_at, json!(good));
            let s = parse(&doc(srv.clone())).unwrap();
            let owner = s.servers[0].clients[0]
                .session
                .clone()
                .unwrap()
                .owner
                .unwrap();
            assert_eq!(owner.uuid, want, "{good}");
            assert_eq!((owner.id, owner.pid, owner.name), (9, 101, b"vm1".to_vec()));
        }
        for bad in [
            "",
            "abcdef01-2345-6789-abcd-ef012345678",
            "abcdef01-2345-6789-abcd-ef01234567890",
            "abcdef01-2345-6789-abcd-ef012345678g",
            "a-bcdef01-2345-6789-abcd-ef012345678",
            "abcdef01-2345-6789-abcd-ef0123456789-",
        ] {
            set(&mut srv, &uuid_at, json!(bad));
            assert!(err(&doc(srv.clone())).contains("\"ownerUUID\""), "{bad}");
        }
    }

    #[test]
    fn numbers_are_integers_of_the_right_range() {
        let at_max = ["max_clients"];
        let mut srv = server(vec![client(Some(1), 5)]);
        for bad in [
            json!(1.5),
            json!(10.0),
            json!(1e3),
            json!("10"),
            json!(true),
            json!(null),
            json!(4_294_967_296u64),
            json!(-4_294_967_296i64),
        ] {
            set(&mut srv, &at_max, bad.clone());
            let msg = err(&doc(srv.clone()));
            assert!(msg.contains("\"max_clients\""), "{bad}: {msg}");
        }
        // Exponent and fraction straight from text, not through json!().
        let text = doc(server(vec![])).to_string();
        for bad in ["1e1", "10.0", "1E1", "100000000000000000000"] {
            let t = text.replace("\"max_clients\":10", &format!("\"max_clients\":{bad}"));
            assert_ne!(t, text);
            assert!(
                matches!(from_json(&t), Err(StateError::Invalid(_))),
                "{bad}"
            );
        }
        // libvirt's unsigned parsers wrap a minus sign: -1 is u32::MAX.
        set(&mut srv, &at_max, json!(-1));
        set(&mut srv, &["max_anonymous_clients"], json!(-1));
        set(&mut srv, &["keepaliveInterval"], json!(-1));
        assert_eq!(
            parse(&doc(srv.clone())).unwrap().servers[0].max_clients,
            4_294_967_295
        );
        set(
            &mut srv,
            &["clients", "0", "privateData", "ownerPid"],
            json!(-2),
        );
        let s = parse(&doc(srv.clone())).unwrap();
        let owner = s.servers[0].clients[0]
            .session
            .clone()
            .unwrap()
            .owner
            .unwrap();
        assert_eq!(owner.pid, u32::MAX - 1);
        // Signed 32-bit ones do not.
        set(
            &mut srv,
            &["clients", "0", "sock", "fd"],
            json!(2_147_483_648u64),
        );
        assert!(err(&doc(srv.clone())).contains("\"fd\" in daemon.clients[0].sock"));
        set(&mut srv, &["clients", "0", "sock", "fd"], json!(5.0));
        assert!(err(&doc(srv.clone())).contains("\"fd\""));
        // Booleans must be JSON booleans.
        set(&mut srv, &["clients", "0", "sock", "fd"], json!(5));
        set(&mut srv, &["clients", "0", "sock", "isClient"], json!(1));
        assert!(err(&doc(srv)).contains("\"isClient\""));
    }

    #[test]
    fn lockspace_rules() {
        let res = |name: &str, owners: Value| {
            json!({"name": name, "path": format!("/d/{name}"), "fd": 9, "lockHeld": true,
                   "flags": 1, "owners": owners})
        };
        let mut d = doc(server(vec![]));
        set(
            &mut d,
            &["lockspaces"],
            json!([{"directory": "/d", "resources": [
                res("a", json!([4_294_967_295u64, 18_446_744_073_709_551_615u64, -1, 7]))
            ]}]),
        );
        let s = parse(&d).unwrap();
        assert_eq!(s.lockspaces[1].resources[0].owners, [-1, -1, -1, 7]);

        set(
            &mut d,
            &["lockspaces", "0", "resources", "0", "owners", "0"],
            json!("1"),
        );
        assert!(err(&d).contains("owner 0 in lockspaces[0].resources[0]"));

        set(
            &mut d,
            &["lockspaces", "0", "resources"],
            json!([res("a", json!([1])), res("a", json!([2]))]),
        );
        assert!(err(&d).contains("appears twice"));

        set(
            &mut d,
            &["lockspaces", "0", "resources"],
            json!([res("a", json!([1]))]),
        );
        remove(&mut d, &["lockspaces", "0", "resources", "0"], "lockHeld");
        assert!(err(&d).starts_with("missing \"lockHeld\" in lockspaces[0].resources[0]"));

        remove(&mut d, &["lockspaces", "0"], "directory");
        assert!(err(&d).contains("\"directory\""));
        set(&mut d, &["lockspaces"], json!({}));
        assert!(err(&d).contains("\"lockspaces\""));
        set(&mut d, &["lockspaces"], json!([]));
        remove(&mut d, &[], "defaultLockspace");
        assert!(err(&d).contains("\"defaultLockspace\""));
    }

    #[test]
    fn extra_top_level_keys_are_ignored() {
        // The hand-over code tags our output with its token right after the
        // opening brace; libvirt's reader and ours must both skip it.
        let text = to_json(&rich()).unwrap();
        let tagged = text.replacen('{', "{\n  \"virtlockdRsToken\": \"77\",", 1);
        assert_eq!(from_json(&tagged).unwrap(), json_view(rich()));
    }

    #[test]
    fn not_json_or_not_an_object() {
        assert!(matches!(from_json("{"), Err(StateError::Invalid(_))));
        assert!(matches!(from_json("[]"), Err(StateError::Invalid(_))));
        assert!(matches!(from_json(""), Err(StateError::Invalid(_))));
    }

    // --- writing -------------------------------------------------------------

    fn owner(id: u32, pid: u32, name: &[u8]) -> Option<OwnerState> {
        Some(OwnerState {
            uuid: [id as u8; 16],
            name: name.to_vec(),
            id,
            pid,
        })
    }

    fn rich() -> Snapshot {
        Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            magic: 31337,
            servers: vec![
                ServerState {
                    name: LOCK_SERVER.into(),
                    max_clients: 1024,
                    next_client_id: 12,
                    listeners: vec![
                        ListenerState {
                            fd: 3,
                            unlink: true,
                        },
                        ListenerState {
                            fd: 4,
                            unlink: false,
                        },
                    ],
                    clients: vec![
                        ClientState {
                            id: 9,
                            fd: 10,
                            conn_time: 1_700_000_000,
                            session: Some(SessionState {
                                restricted: true,
                                owner: owner(1, 4000, "vmé".as_bytes()),
                            }),
                            pending: vec![0, 0, 0, 0x1c, 1],
                            peer_pid: None,
                            peer_ids: None,
                        },
                        ClientState {
                            id: 10,
                            fd: 11,
                            conn_time: 0,
                            session: Some(SessionState::default()),
                            pending: vec![],
                            peer_pid: None,
                            peer_ids: None,
                        },
                        ClientState {
                            id: 11,
                            fd: 12,
                            conn_time: -5,
                            session: Some(SessionState {
                                restricted: false,
                                owner: owner(7, u32::MAX, b"big-pid"),
                            }),
                            pending: vec![],
                            peer_pid: None,
                            peer_ids: None,
                        },
                    ],
                    max_unauth_clients: None,
                    prio_workers: None,
                },
                ServerState {
                    name: ADMIN_SERVER.into(),
                    max_clients: 5000,
                    next_client_id: 3,
                    listeners: vec![ListenerState {
                        fd: 5,
                        unlink: true,
                    }],
                    clients: vec![ClientState {
                        id: 2,
                        fd: 13,
                        conn_time: 1_700_000_100,
                        session: None,
                        pending: vec![9],
                        peer_pid: None,
                        peer_ids: None,
                    }],
                    max_unauth_clients: None,
                    prio_workers: None,
                },
            ],
            lockspaces: vec![
                LockspaceState {
                    directory: None,
                    owners: Vec::new(),
                    resources: vec![ResourceState {
                        name: b"/images/disk.qcow2".to_vec(),
                        path: b"/images/disk.qcow2".to_vec(),
                        fd: 14,
                        lock_held: true,
                        flags: 3,
                        owners: vec![-1, 4000, 4000],
                        acquired_at: 1_700_000_001,
                        lost_reason: None,
                        lost_since: 0,
                        file_id: None,
                    }],
                },
                LockspaceState {
                    directory: Some(b"/var/lib/libvirt/lockd/files".to_vec()),
                    owners: Vec::new(),
                    resources: vec![
                        ResourceState {
                            name: HEX.as_bytes().to_vec(),
                            path: format!("/var/lib/libvirt/lockd/files/{HEX}").into_bytes(),
                            fd: 15,
                            lock_held: true,
                            flags: 2,
                            owners: vec![i32::MIN],
                            acquired_at: 7,
                            lost_reason: None,
                            lost_since: 0,
                            file_id: None,
                        },
                        ResourceState {
                            name: b"quote\"back\\slash\ttab".to_vec(),
                            path: b"/var/lib/libvirt/lockd/files/quote\"back\\slash\ttab".to_vec(),
                            fd: 16,
                            lock_held: false,
                            flags: 0,
                            owners: vec![],
                            acquired_at: 0,
                            lost_reason: Some("another host or process holds the lock now".into()),
                            lost_since: 1_700_000_002,
                            file_id: None,
                        },
                    ],
                },
                LockspaceState {
                    directory: Some(b"/empty".to_vec()),
                    owners: Vec::new(),
                    resources: vec![],
                },
            ],
            upgrades: 5,
            started_at: 1_600_000_000,
            fencing: vec![FenceState {
                pid: 4000,
                label: "vmé".into(),
            }],
            token: 77,
            timeout: None,
        }
    }

    /// What survives a trip through JSON.
    fn json_view(mut s: Snapshot) -> Snapshot {
        s.upgrades = 0;
        s.started_at = 0;
        s.fencing.clear();
        s.token = 0;
        s.timeout = None;
        for server in &mut s.servers {
            server.max_unauth_clients = None;
            server.prio_workers = None;
            for c in &mut server.clients {
                c.pending.clear();
            }
        }
        for ls in &mut s.lockspaces {
            for r in &mut ls.resources {
                r.acquired_at = 0;
                r.lost_reason = None;
                r.lost_since = 0;
                r.file_id = None;
            }
        }
        s
    }

    #[test]
    fn round_trip() {
        let s = rich();
        let text = to_json(&s).unwrap();
        assert_eq!(from_json(&text).unwrap(), json_view(s.clone()));
        // And the reader's output writes the same document again.
        assert_eq!(to_json(&from_json(&text).unwrap()).unwrap(), text);
        // Spec Appendix B survives too (it differs from ours only in layout).
        let b = from_json(&appendix_b()).unwrap();
        assert_eq!(from_json(&to_json(&b).unwrap()).unwrap(), b);
        let o = from_json(OBSERVED).unwrap();
        assert_eq!(from_json(&to_json(&o).unwrap()).unwrap(), o);
    }

    #[test]
    fn negative_owner_pid_round_trips() {
        let text = to_json(&rich()).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let owners = |v: &Value| v["resources"][0]["owners"].clone();
        assert_eq!(
            owners(&v["defaultLockspace"]),
            json!([4_294_967_295u32, 4000, 4000])
        );
        assert_eq!(owners(&v["lockspaces"][0]), json!([2_147_483_648u32]));
        let back = from_json(&text).unwrap();
        assert_eq!(back.lockspaces[0].resources[0].owners, [-1, 4000, 4000]);
        assert_eq!(back.lockspaces[1].resources[0].owners, [i32::MIN]);
    }

    #[test]
    fn unregistered_client_gets_placeholder_owner() {
        let mut s = rich();
        s.servers[0].clients.truncate(2);
        s.servers[0].clients.remove(0);
        // A lock client without any session is written the same way.
        s.servers[0].clients.push(ClientState {
            id: 20,
            fd: 20,
            conn_time: 0,
            session: None,
            pending: vec![],
            peer_pid: None,
            peer_ids: None,
        });
        let text = to_json(&s).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        for c in v["daemon"]["servers"]["virtlockd"]["clients"]
            .as_array()
            .unwrap()
        {
            assert_eq!(
                c["privateData"],
                json!({"restricted": false, "ownerPid": 0, "ownerId": 0, "ownerName": "",
                       "ownerUUID": "00000000-0000-0000-0000-000000000000"})
            );
            // conn_time 0 is left out, as libvirt does.
            assert!(c.get("conn_time").is_none());
        }
        let back = from_json(&text).unwrap();
        for c in &back.servers[0].clients {
            assert_eq!(c.session, Some(SessionState::default()));
        }
    }

    /// Positions of `keys` (as `"key":`) found one after the other from `from`.
    fn in_order(text: &str, from: &str, keys: &[&str]) {
        let mut pos = text
            .find(from)
            .unwrap_or_else(|| panic!("{from} not in {text}"));
        for key in keys {
            let needle = format!("\"{key}\":");
            match text[pos..].find(&needle) {
                Some(p) => pos += p + needle.len(),
                None => panic!("{key} not after position {pos} (from {from}) in {text}"),
            }
        }
    }

    #[test]
    fn key_order_is_libvirts() {
        let text = to_json(&rich()).unwrap();
        // Top level.
        let top = ["daemon", "defaultLockspace", "lockspaces", "magic"];
        let pos: Vec<usize> = top
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
        assert!(text.contains("\"magic\":\"31337\""));
        // Servers sorted by name, admin first.
        in_order(&text, "\"servers\"", &["admin", "virtlockd"]);
        let server = [
            "min_workers",
            "max_workers",
            "priority_workers",
            "max_clients",
            "max_anonymous_clients",
            "keepaliveInterval",
            "keepaliveCount",
            "next_client_id",
            "services",
            "auth",
            "readonly",
            "nrequests_client_max",
            "socks",
            "fd",
            "errfd",
            "pid",
            "isClient",
            "unlinkUNIX",
            "clients",
            "id",
            "auth",
            "auth_pending",
            "readonly",
            "nrequests_max",
            "conn_time",
            "sock",
            "fd",
            "errfd",
            "pid",
            "isClient",
            "unlinkUNIX",
            "privateData",
            "restricted",
            "ownerPid",
            "ownerId",
            "ownerName",
            "ownerUUID",
        ];
        in_order(&text, "\"virtlockd\":{", &server);
        // The admin server: same keys, empty private data.
        in_order(&text, "\"admin\":{", &server[..32]);
        assert!(text.contains("\"privateData\":{}"));
        in_order(
            &text,
            "\"defaultLockspace\"",
            &[
                "resources",
                "name",
                "path",
                "fd",
                "lockHeld",
                "flags",
                "owners",
            ],
        );
        in_order(
            &text,
            "\"lockspaces\"",
            &[
                "directory",
                "resources",
                "name",
                "path",
                "fd",
                "lockHeld",
                "flags",
                "owners",
            ],
        );
        // No directory key for the default lockspace.
        let default =
            &text[text.find("\"defaultLockspace\"").unwrap()..text.find("\"lockspaces\"").unwrap()];
        assert!(!default.contains("directory"));
    }

    #[test]
    fn exact_text_of_a_small_snapshot() {
        let s = Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            magic: 7,
            servers: vec![ServerState {
                name: LOCK_SERVER.into(),
                max_clients: 4,
                next_client_id: 2,
                listeners: vec![ListenerState {
                    fd: 3,
                    unlink: true,
                }],
                clients: vec![ClientState {
                    id: 1,
                    fd: 6,
                    conn_time: 99,
                    session: Some(SessionState {
                        restricted: false,
                        owner: Some(OwnerState {
                            uuid: [
                                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
                                0xbb, 0xcc, 0xdd, 0xee, 0xff,
                            ],
                            name: b"vm".to_vec(),
                            id: 3,
                            pid: 42,
                        }),
                    }),
                    pending: vec![],
                    peer_pid: None,
                    peer_ids: None,
                }],
                max_unauth_clients: None,
                prio_workers: None,
            }],
            lockspaces: vec![LockspaceState {
                directory: Some(b"/d".to_vec()),
                owners: Vec::new(),
                resources: vec![ResourceState {
                    name: b"r".to_vec(),
                    path: b"/d/r".to_vec(),
                    fd: 5,
                    lock_held: true,
                    flags: 2,
                    owners: vec![-1],
                    acquired_at: 1,
                    lost_reason: None,
                    lost_since: 0,
                    file_id: None,
                }],
            }],
            upgrades: 0,
            started_at: 0,
            fencing: vec![],
            token: 0,
            timeout: None,
        };
        let expected = r#"{
  "daemon": {
    "servers": {
      "virtlockd": {
        "min_workers": 0,
        "max_workers": 0,
        "priority_workers": 0,
        "max_clients": 4,
        "max_anonymous_clients": 4,
        "keepaliveInterval": 4294967295,
        "keepaliveCount": 0,
        "next_client_id": 2,
        "services": [
          {
            "auth": 0,
            "readonly": false,
            "nrequests_client_max": 1,
            "socks": [
              {
                "fd": 3,
                "errfd": -1,
                "pid": 0,
                "isClient": false,
                "unlinkUNIX": true
              }
            ]
          }
        ],
        "clients": [
          {
            "id": 1,
            "auth": 0,
            "auth_pending": false,
            "readonly": false,
            "nrequests_max": 1,
            "conn_time": 99,
            "sock": {
              "fd": 6,
              "errfd": -1,
              "pid": 0,
              "isClient": true,
              "unlinkUNIX": false
            },
            "privateData": {
              "restricted": false,
              "ownerPid": 42,
              "ownerId": 3,
              "ownerName": "vm",
              "ownerUUID": "00112233-4455-6677-8899-aabbccddeeff"
            }
          }
        ]
      }
    }
  },
  "defaultLockspace": {
    "resources": []
  },
  "lockspaces": [
    {
      "directory": "/d",
      "resources": [
        {
          "name": "r",
          "path": "/d/r",
          "fd": 5,
          "lockHeld": true,
          "flags": 2,
          "owners": [
            4294967295
          ]
        }
      ]
    }
  ],
  "magic": "7"
}"#;
        assert_eq!(to_json(&s).unwrap(), compact(expected));
    }

    #[test]
    fn writer_refusals_and_clamps() {
        let mut s = rich();
        s.servers[1].name = "testServer1".into();
        assert!(matches!(to_json(&s), Err(StateError::Invalid(m)) if m.contains("testServer1")));

        let mut s = rich();
        s.servers[1].name = LOCK_SERVER.into();
        assert!(matches!(to_json(&s), Err(StateError::Invalid(m)) if m.contains("twice")));

        let mut s = rich();
        s.lockspaces[1].directory = None;
        assert!(to_json(&s).is_err());

        // No admin server, no default lockspace, huge max_clients.
        let mut s = rich();
        s.servers.truncate(1);
        s.lockspaces.remove(0);
        s.servers[0].max_clients = u64::MAX;
        let text = to_json(&s).unwrap();
        assert!(!text.contains("\"admin\""));
        assert!(text.contains("\"max_clients\":4294967295"));
        let back = from_json(&text).unwrap();
        assert_eq!(back.servers.len(), 1);
        assert_eq!(back.servers[0].max_clients, u64::from(u32::MAX));
        assert_eq!(
            back.lockspaces[0],
            LockspaceState {
                directory: None,
                owners: Vec::new(),
                resources: vec![]
            }
        );
    }

    #[test]
    fn non_utf8_bytes_are_written_lossily() {
        let mut s = rich();
        s.lockspaces[1].resources[1].name = b"bad\xffname".to_vec();
        s.servers[0].clients[0].session = Some(SessionState {
            restricted: false,
            owner: owner(1, 1, b"\xfe"),
        });
        let back = from_json(&to_json(&s).unwrap()).unwrap();
        assert_eq!(
            back.lockspaces[1].resources[1].name,
            "bad\u{fffd}name".as_bytes()
        );
        let name = back.servers[0].clients[0]
            .session
            .clone()
            .unwrap()
            .owner
            .unwrap()
            .name;
        assert_eq!(name, "\u{fffd}".as_bytes());
    }
}
