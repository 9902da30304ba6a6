//! Reading libvirt's restart JSON: the document is deserialized into the
//! [`super::layout`] types, then checked and turned into a [`Snapshot`] the way
//! libvirt's post-exec code does.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use super::super::{
    ClientState, ListenerState, LockspaceState, OwnerState, ResourceState, ServerState,
    SessionState, Snapshot, StateError, ADMIN_SERVER, FORMAT, LOCK_SERVER, VERSION,
};
use super::fields::{refusal, shown};
use super::layout::{
    AdminPrivate, Client, DocumentIn, LockPrivate, LockspaceIn, Resources, Server,
};

pub(super) fn invalid(msg: impl Into<String>) -> StateError {
    StateError::Invalid(msg.into())
}

pub(super) fn from_json(text: &str) -> Result<Snapshot, StateError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
    if !doc.is_object() {
        return Err(invalid("the document must be a JSON object"));
    }
    let doc: DocumentIn = typed(doc, &[])?;

    // Same order of checks as virLockDaemonPostExecRestart / NewPostExecRestart.
    let magic = read_magic(&doc.magic)?;
    let mut lockspaces = vec![read_lockspace(
        doc.default_lockspace,
        &[Step::Key("defaultLockspace")],
        true,
    )?];
    for (i, ls) in doc.lockspaces.into_iter().enumerate() {
        lockspaces.push(read_lockspace(
            ls,
            &[Step::Key("lockspaces"), Step::Index(i)],
            false,
        )?);
    }
    let servers = read_daemon(doc.daemon, doc.server)?;

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
        crash: None,
        stale_fds: Vec::new(),
    })
}

/// `value` deserialized as `T`; `base` is the place of `value` in the document
/// (empty for the top level), so that every error names the offending key and its
/// place.
fn typed<T: DeserializeOwned>(value: Value, base: &[Step]) -> Result<T, StateError> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| locate(base, e.path(), &e.inner().to_string()))
}

/// One step of a place in the document.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A place in the document as the messages write it: `daemon.clients[0].sock`.
fn join(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) if out.is_empty() => out.push_str(key),
            Step::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// `"key"`, or `"key" in PLACE` below the top level.
fn place(at: &str, key: &str) -> String {
    if at.is_empty() {
        format!("\"{key}\"")
    } else {
        format!("\"{key}\" in {at}")
    }
}

/// The error for a refusal `msg` (from serde or [`super::fields`]) at `path` below
/// `base`, in this module's words.
fn locate(base: &[Step], path: &serde_path_to_error::Path, msg: &str) -> StateError {
    let steps: Vec<Step> = base
        .iter()
        .copied()
        .chain(path.iter().filter_map(|segment| match segment {
            Segment::Map { key } => Some(Step::Key(key)),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        }))
        .collect();
    // serde's text for a required key that is absent (`de::Error::missing_field`);
    // the path is the object's.
    if let Some(key) = msg
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return invalid(format!("missing {}", place(&join(&steps), key)));
    }
    // A misplaced value where an object belongs is named by its path.
    if msg.starts_with("must be an object,") {
        return invalid(format!("{} {msg}", join(&steps)));
    }
    match steps.as_slice() {
        [parent @ .., Step::Key(key)] => invalid(format!("{} {msg}", place(&join(parent), key))),
        [resource @ .., Step::Key("owners"), Step::Index(i)] => {
            invalid(format!("owner {i} in {} {msg}", join(resource)))
        }
        _ => invalid(format!("{} {msg}", join(&steps))),
    }
}

fn as_obj(v: Value, at: &str) -> Result<Map<String, Value>, StateError> {
    match v {
        Value::Object(obj) => Ok(obj),
        other => Err(invalid(format!("{at} {}", refusal("an object", &other)))),
    }
}

fn read_magic(magic: &str) -> Result<u32, StateError> {
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
fn read_daemon(
    daemon: Option<Value>,
    server: Option<Value>,
) -> Result<Vec<ServerState>, StateError> {
    // "daemon" wins when both are present, as in libvirt; "server" is the layout
    // of virtlockd before the admin server existed.
    let (daemon, at) = match (daemon, server) {
        (Some(d), _) => (d, "daemon"),
        (None, Some(s)) => (s, "server"),
        (None, None) => return Err(invalid("missing \"daemon\" (or legacy \"server\")")),
    };
    let mut obj = as_obj(daemon, at)?;

    let mut servers = Vec::new();
    match obj.remove("servers") {
        // No "servers": the object itself is the one server, named like the first
        // default name libvirt's virtlockd passes ("virtlockd").
        None => servers.push(read_server::<LockPrivate>(
            LOCK_SERVER,
            obj,
            &[Step::Key(at)],
        )?),
        Some(Value::Array(list)) => {
            if list.len() > 1 {
                return Err(invalid(format!(
                    "Server count {} greater than default name count 1",
                    list.len()
                )));
            }
            for v in list {
                let base = [Step::Key(at), Step::Key("servers"), Step::Index(0)];
                let obj = as_obj(v, &join(&base))?;
                servers.push(read_server::<LockPrivate>(LOCK_SERVER, obj, &base)?);
            }
        }
        Some(Value::Object(map)) => {
            for (name, v) in map {
                let base = [Step::Key(at), Step::Key("servers"), Step::Key(&name)];
                let obj = || as_obj(v, &join(&base));
                let server = match name.as_str() {
                    LOCK_SERVER => read_server::<LockPrivate>(&name, obj()?, &base)?,
                    ADMIN_SERVER => read_server::<AdminPrivate>(&name, obj()?, &base)?,
                    _ => {
                        return Err(invalid(format!(
                            "Unexpected server name '{name}' during restart"
                        )))
                    }
                };
                servers.push(server);
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "\"servers\" in {at} must be an object or an array, not {}",
                shown(&other)
            )))
        }
    }
    // A stable order independent of the document's (object keys are unordered).
    servers.sort_by_key(|s| s.name != LOCK_SERVER);
    Ok(servers)
}

/// What a server's private-data hook makes of a client's `privateData`.
trait PrivateData {
    fn session(self) -> Option<SessionState>;
}

impl PrivateData for LockPrivate {
    /// `virLockDaemonClientNewPostExecRestart`.
    fn session(self) -> Option<SessionState> {
        let o = self.0;
        // ownerId 0 is how libvirt marks a connection that never registered
        // (REGISTER refuses id 0), whatever the other fields say.
        let owner = (o.owner_id != 0).then(|| OwnerState {
            uuid: o.owner_uuid,
            name: o.owner_name.into_bytes(),
            id: o.owner_id,
            pid: o.owner_pid,
        });
        Some(SessionState {
            restricted: o.restricted,
            owner,
        })
    }
}

impl PrivateData for AdminPrivate {
    /// The admin server's hook ignores its (empty) private data.
    fn session(self) -> Option<SessionState> {
        None
    }
}

/// `virNetServerNewPostExecRestart`. Workers and keepalive are validated only: we
/// run no worker pool and no server-side keepalive.
fn read_server<P>(
    name: &str,
    obj: Map<String, Value>,
    base: &[Step],
) -> Result<ServerState, StateError>
where
    P: DeserializeOwned + PrivateData,
{
    let server: Server<P> = typed(Value::Object(obj), base)?;
    if let Some(anon) = server.max_anonymous_clients {
        if server.max_clients < anon {
            return Err(invalid(
                "The overall maximum number of clients must not be less than the number \
                 of clients waiting for authentication",
            ));
        }
    }
    let mut next_client_id = server.next_client_id.unwrap_or(1);
    let listeners = server
        .services
        .into_iter()
        .flat_map(|service| service.socks)
        .map(|sock| ListenerState {
            fd: sock.fd,
            unlink: sock.unlink_unix.unwrap_or(!sock.is_client),
        })
        .collect();
    let mut clients = Vec::new();
    for (i, client) in server.clients.into_iter().enumerate() {
        let at = format!("{}.clients[{i}]", join(base));
        clients.push(read_client(client, &at, &mut next_client_id)?);
    }
    Ok(ServerState {
        name: name.into(),
        max_clients: u64::from(server.max_clients),
        next_client_id,
        listeners,
        clients,
        max_unauth_clients: None,
        prio_workers: None,
    })
}

/// `virNetServerClientNewPostExecRestart` plus the server's private-data hook.
fn read_client<P: PrivateData>(
    client: Client<P>,
    at: &str,
    next_client_id: &mut u64,
) -> Result<ClientState, StateError> {
    let auth = client.auth;
    // Only auth 0 ("none") implies an authenticated client; without the key the
    // client is pending exactly when its method needs a handshake.
    if client.auth_pending == Some(true) && auth == 0 {
        return Err(invalid(
            "Invalid auth_pending and auth combination in JSON state document",
        ));
    }
    if client.auth_pending.unwrap_or(auth != 0) {
        // libvirt accepts this (for SASL/polkit services, which virtlockd never
        // has); we have no authentication step, so adopting the client would
        // silently authenticate it.
        return Err(invalid(format!(
            "{at} is still waiting for authentication (auth {auth}), which is not supported"
        )));
    }
    let id = match client.id {
        Some(id) => id,
        None => {
            let id = *next_client_id;
            *next_client_id = next_client_id.wrapping_add(1);
            id
        }
    };
    Ok(ClientState {
        id,
        fd: client.sock.fd,
        conn_time: client.conn_time,
        session: client.private_data.session(),
        pending: Vec::new(),
        peer_pid: None,
        peer_ids: None,
    })
}

/// `virLockSpaceNewPostExecRestart`.
fn read_lockspace(
    ls: LockspaceIn,
    base: &[Step],
    default: bool,
) -> Result<LockspaceState, StateError> {
    let at = join(base);
    let directory = if default {
        // libvirt never writes one here; the default lockspace has no directory
        // by definition, so a stray key is ignored.
        None
    } else {
        // libvirt would silently drop a directory lockspace without a usable
        // key (and lose track of its leases); refusing is safer.
        match ls.directory {
            None => return Err(invalid(format!("missing {}", place(&at, "directory")))),
            Some(Value::String(dir)) => Some(dir.into_bytes()),
            Some(other) => {
                return Err(invalid(format!(
                    "{} {}",
                    place(&at, "directory"),
                    refusal("a string", &other)
                )))
            }
        }
    };

    let list = ls
        .resources
        .ok_or_else(|| invalid(format!("missing {}", place(&at, "resources"))))?;
    let list: Resources = typed(list, &[base, &[Step::Key("resources")]].concat())?;
    let mut names = HashSet::new();
    let mut resources = Vec::with_capacity(list.0.len());
    for (i, res) in list.0.into_iter().enumerate() {
        // libvirt keys resources by name in a hash table and fails on a duplicate.
        if !names.insert(res.name.clone()) {
            return Err(invalid(format!(
                "{at}.resources[{i}]: resource '{}' appears twice in the lockspace",
                res.name
            )));
        }
        resources.push(ResourceState {
            name: res.name.into_bytes(),
            path: res.path.into_bytes(),
            fd: res.fd,
            lock_held: res.lock_held,
            flags: res.flags,
            owners: res.owners,
            acquired_at: 0,
            lost_reason: None,
            lost_since: 0,
            file_id: None,
            ofd: false,
            tag: 0,
        });
    }
    Ok(LockspaceState {
        directory,
        owners: Vec::new(),
        resources,
    })
}
