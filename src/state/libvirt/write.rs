//! Writing libvirt's restart JSON: a [`Snapshot`] turned into the
//! [`super::layout`] types, in exactly the layout libvirt 9.0 writes.

use super::super::{
    ClientState, LockspaceState, ServerState, Snapshot, StateError, ADMIN_SERVER, LOCK_SERVER,
};
use super::layout::{
    AdminPrivate, Client, Daemon, Document, LockOwner, LockPrivate, Lockspace, Resource, Server,
    Servers, Service, Sock,
};
use super::read::invalid;

pub(super) fn to_json(s: &Snapshot) -> Result<String, StateError> {
    let mut servers = Servers {
        admin: None,
        virtlockd: None,
    };
    for server in &s.servers {
        let twice = || invalid(format!("server '{}' appears twice", server.name));
        match server.name.as_str() {
            LOCK_SERVER if servers.virtlockd.is_some() => return Err(twice()),
            LOCK_SERVER => servers.virtlockd = Some(write_server(server, lock_private)),
            ADMIN_SERVER if servers.admin.is_some() => return Err(twice()),
            ADMIN_SERVER => servers.admin = Some(write_server(server, |_| AdminPrivate)),
            other => {
                return Err(invalid(format!(
                    "server '{other}' cannot be written: libvirt only knows \
                     '{LOCK_SERVER}' and '{ADMIN_SERVER}'"
                )))
            }
        }
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

    let doc = Document {
        daemon: Daemon { servers },
        default_lockspace: default_lockspace.unwrap_or(Lockspace {
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_server<P>(server: &ServerState, private: impl Fn(&ClientState) -> P) -> Server<P> {
    let max_clients = u32::try_from(server.max_clients).unwrap_or(u32::MAX);
    Server {
        min_workers: 0,
        max_workers: 0,
        priority_workers: 0,
        max_clients,
        max_anonymous_clients: Some(max_clients),
        // libvirt's virtlockd disables server-side keepalive with -1.
        keepalive_interval: u32::MAX,
        keepalive_count: 0,
        next_client_id: Some(server.next_client_id),
        services: server
            .listeners
            .iter()
            .map(|l| Service {
                auth: 0,
                readonly: false,
                nrequests_client_max: 1,
                socks: vec![Sock {
                    fd: l.fd,
                    errfd: -1,
                    pid: 0,
                    is_client: false,
                    unlink_unix: Some(l.unlink),
                }],
            })
            .collect(),
        clients: server
            .clients
            .iter()
            .map(|c| Client {
                id: Some(c.id),
                auth: 0,
                auth_pending: Some(false),
                readonly: false,
                nrequests_max: 1,
                conn_time: c.conn_time,
                sock: Sock {
                    fd: c.fd,
                    errfd: -1,
                    pid: 0,
                    is_client: true,
                    unlink_unix: Some(false),
                },
                private_data: private(c),
            })
            .collect(),
    }
}

/// Placeholders for an unregistered client: libvirt's reader requires all five
/// keys, and ownerId 0 marks the client unregistered again.
fn lock_private(client: &ClientState) -> LockPrivate {
    let session = client.session.clone().unwrap_or_default();
    let (owner_pid, owner_id, owner_name, owner_uuid) = match &session.owner {
        Some(o) => (o.pid, o.id, text(&o.name), o.uuid),
        None => (0, 0, String::new(), [0; 16]),
    };
    LockPrivate(LockOwner {
        restricted: session.restricted,
        owner_pid,
        owner_id,
        owner_name,
        owner_uuid,
    })
}

fn write_lockspace(ls: &LockspaceState) -> Lockspace {
    Lockspace {
        directory: ls.directory.as_deref().map(text),
        resources: ls
            .resources
            .iter()
            .map(|r| Resource {
                name: text(&r.name),
                // Our snapshot leaves the path out (it is the directory and
                // the name); libvirt's reader wants it.
                path: if r.path.is_empty() {
                    text(
                        crate::lockspace::path_in(ls.directory.as_deref(), &r.name)
                            .as_os_str()
                            .as_encoded_bytes(),
                    )
                } else {
                    text(&r.path)
                },
                fd: r.fd,
                lock_held: r.lock_held,
                flags: r.flags,
                owners: r.owners.clone(),
            })
            .collect(),
    }
}
