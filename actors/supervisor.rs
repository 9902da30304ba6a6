//! The supervisor: owns the listening sockets, admits clients (peer credentials,
//! `max_clients`), starts one connection actor per client, owns the lockspace
//! registry and starts one lockspace actor per lockspace, and runs shutdown and
//! the idle timeout.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::stream::{self, Stream};
use tokio::net::{UnixListener, UnixStream};
use tracing::{error, info, warn};

use super::admin::AdminConnection;
use super::connection::{Close, Connection, Peer};
use super::gate::{ClientGate, Slot};
use super::lockspace::{Lockspace, ReleaseAll};
use super::registry::Registry;
use crate::lockspace::error::show;
use crate::lockspace::lease::{self, Storage};
use crate::lockspace::{create_directory, LockError, LockSpace};

/// How long accepting pauses when the process is out of file descriptors.
const EMFILE_PAUSE: Duration = Duration::from_secs(5);
/// How often the idle timeout is checked.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Which RPC server a listener belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    Lock,
    Admin,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lock => "virtlockd",
            Self::Admin => "admin",
        }
    }
}

/// Settings the supervisor starts with.
pub struct SupervisorConfig {
    pub lock_listeners: Vec<std::os::unix::net::UnixListener>,
    pub admin_listeners: Vec<std::os::unix::net::UnixListener>,
    pub max_clients: usize,
    pub admin_max_clients: usize,
    /// Files to remove on clean shutdown (self-bound sockets).
    pub unlink_on_exit: Vec<PathBuf>,
    /// Shut down after this long with no client and no lease (`-t`).
    pub timeout: Option<Duration>,
}

pub struct Supervisor {
    registry: Registry,
    listeners: Vec<(Server, std::os::unix::net::UnixListener)>,
    accepting: Vec<SpawnHandle>,
    lock_gate: Arc<ClientGate>,
    admin_gate: Arc<ClientGate>,
    next_client_id: HashMap<Server, u64>,
    connections: HashMap<u64, Addr<Connection>>,
    euid: u32,
    unlink_on_exit: Vec<PathBuf>,
    timeout: Option<Duration>,
    idle_since: Option<Instant>,
    shutting_down: bool,
}

impl Supervisor {
    pub fn new(cfg: SupervisorConfig) -> Self {
        let listeners = cfg
            .lock_listeners
            .into_iter()
            .map(|l| (Server::Lock, l))
            .chain(cfg.admin_listeners.into_iter().map(|l| (Server::Admin, l)))
            .collect();
        Self {
            registry: Registry::default(),
            listeners,
            accepting: Vec::new(),
            lock_gate: ClientGate::new(cfg.max_clients),
            admin_gate: ClientGate::new(cfg.admin_max_clients),
            next_client_id: HashMap::from([(Server::Lock, 1), (Server::Admin, 1)]),
            connections: HashMap::new(),
            euid: nix::unistd::geteuid().as_raw(),
            unlink_on_exit: cfg.unlink_on_exit,
            timeout: cfg.timeout,
            idle_since: None,
            shutting_down: false,
        }
    }

    fn gate(&self, server: Server) -> &Arc<ClientGate> {
        match server {
            Server::Lock => &self.lock_gate,
            Server::Admin => &self.admin_gate,
        }
    }

    /// Starts a lockspace actor where its storage allows: on the event thread for
    /// local filesystems, on a thread of its own otherwise.
    fn start_lockspace(&self, space: LockSpace, storage: Storage) -> Addr<Lockspace> {
        let leases = self.registry.lease_counter();
        match storage {
            Storage::Local => Lockspace::new(space, storage, leases).start(),
            Storage::Network(_) => {
                let arbiter = Arbiter::new();
                Lockspace::start_in_arbiter(&arbiter.handle(), move |_| {
                    Lockspace::new(space, storage, leases)
                })
            }
        }
    }

    /// Peer credentials; both servers admit only the daemon's own euid (root for
    /// the system daemon), as libvirt does.
    fn admit(&self, stream: &UnixStream) -> Result<Peer, String> {
        let cred = stream
            .peer_cred()
            .map_err(|e| format!("cannot read peer credentials: {e}"))?;
        if cred.uid() != self.euid {
            return Err(format!("Disallowing client with uid {}", cred.uid()));
        }
        Ok(Peer {
            pid: match cred.pid() {
                Some(0) | None => -1,
                Some(p) => p,
            },
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }

    fn check_idle(&mut self, _ctx: &mut Context<Self>) {
        let Some(timeout) = self.timeout else { return };
        let idle = self.lock_gate.connected() == 0
            && self.admin_gate.connected() == 0
            && self.registry.leases() == 0;
        if !idle {
            self.idle_since = None;
            return;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= timeout && !self.shutting_down {
            info!(
                timeout = timeout.as_secs(),
                "no clients and no leases; shutting down"
            );
            _ctx.address().do_send(Shutdown);
        }
    }
}

/// Accepts on one listener while the server has room for a client.
fn accept_stream(
    server: Server,
    listener: UnixListener,
    gate: Arc<ClientGate>,
) -> impl Stream<Item = Accepted> {
    stream::unfold((listener, gate), move |(listener, gate)| async move {
        if gate.full() {
            warn!(
                server = server.name(),
                max = gate.max(),
                "client limit reached; new connections wait in the backlog"
            );
            gate.room().await;
            info!(
                server = server.name(),
                "below the client limit again; accepting"
            );
        }
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let item = Accepted {
                        server,
                        stream,
                        slot: gate.take(),
                    };
                    return Some((item, (listener, gate)));
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    error!(server = server.name(), error = %e, "out of file descriptors; pausing accept");
                    actix_rt::time::sleep(EMFILE_PAUSE).await;
                }
                Err(e) => warn!(server = server.name(), error = %e, "accept failed"),
            }
        }
    })
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The default lockspace's files may be on any filesystem, NFS included, so
        // it gets a thread of its own like every lockspace that may block.
        let default = self.start_lockspace(LockSpace::default_space(), Storage::Network("any"));
        self.registry.insert_new(Vec::new(), default);

        for (server, listener) in std::mem::take(&mut self.listeners) {
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| UnixListener::from_std(listener));
            match listener {
                Ok(l) => {
                    let gate = self.gate(server).clone();
                    self.accepting
                        .push(ctx.add_stream(accept_stream(server, l, gate)));
                }
                Err(e) => {
                    error!(server = server.name(), error = %e, "cannot listen");
                    System::current().stop_with_code(6);
                }
            }
        }
        if self.timeout.is_some() {
            ctx.run_interval(IDLE_TICK, Self::check_idle);
        }
        crate::systemd::notify("READY=1");
        info!(pid = std::process::id(), "virtlockd ready");
    }
}

/// A connection that passed accept().
pub struct Accepted {
    server: Server,
    stream: UnixStream,
    slot: Slot,
}

impl StreamHandler<Accepted> for Supervisor {
    fn handle(&mut self, a: Accepted, ctx: &mut Self::Context) {
        let peer = match self.admit(&a.stream) {
            Ok(p) => p,
            Err(why) => {
                warn!(server = a.server.name(), "{why}; connection closed");
                return;
            }
        };
        let next = self.next_client_id.entry(a.server).or_insert(1);
        let id = *next;
        *next += 1;
        match a.server {
            Server::Lock => {
                let addr = Connection::launch(
                    id,
                    peer,
                    a.stream,
                    a.slot,
                    self.registry.clone(),
                    ctx.address(),
                );
                self.connections.insert(id, addr);
            }
            Server::Admin => {
                AdminConnection::launch(id, peer, a.stream, a.slot);
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        if !self.shutting_down {
            error!("a listener stopped accepting");
        }
    }
}

/// A lock connection ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnected {
    pub id: u64,
}

impl Handler<Disconnected> for Supervisor {
    type Result = ();
    fn handle(&mut self, m: Disconnected, _: &mut Self::Context) {
        self.connections.remove(&m.id);
    }
}

/// Why a lockspace could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("Lockspace for path {0} already exists")]
    Exists(String),
    #[error(transparent)]
    Create(#[from] LockError),
}

/// Make a directory lockspace available (CREATE_LOCKSPACE, or NEW when
/// `must_be_new`). The directory is created on the blocking pool, so a hung mount
/// only delays the caller.
#[derive(Message)]
#[rtype(result = "Result<(), OpenError>")]
pub struct OpenLockspace {
    pub path: Vec<u8>,
    pub must_be_new: bool,
}

impl Handler<OpenLockspace> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), OpenError>>;

    fn handle(&mut self, m: OpenLockspace, _: &mut Self::Context) -> Self::Result {
        let shown = show(&m.path);
        if self.registry.contains(&m.path) {
            let r = if m.must_be_new {
                Err(OpenError::Exists(shown))
            } else {
                Ok(())
            };
            return Box::pin(fut::ready(r));
        }
        let path = m.path.clone();
        let prepare = actix_rt::task::spawn_blocking(move || {
            create_directory(&path)?;
            let os = std::path::Path::new(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&path),
            );
            // An unknown filesystem is treated as one that may block.
            Ok::<_, LockError>(lease::storage_of(os).unwrap_or(Storage::Network("unknown")))
        });
        Box::pin(prepare.into_actor(self).map(move |joined, act, _| {
            let storage = match joined {
                Ok(r) => r?,
                Err(e) => {
                    error!(error = %e, "lockspace creation task failed");
                    return Err(OpenError::Create(LockError::CreateLockspace {
                        dir: shown,
                        errno: nix::errno::Errno::EIO,
                    }));
                }
            };
            // Another request may have created it while we were in mkdir.
            if act.registry.contains(&m.path) {
                return if m.must_be_new {
                    Err(OpenError::Exists(shown))
                } else {
                    Ok(())
                };
            }
            let addr = act.start_lockspace(LockSpace::directory(m.path.clone()), storage);
            act.registry.insert_new(m.path, addr);
            info!(lockspace = %shown, ?storage, "lockspace created");
            Ok(())
        }))
    }
}

/// New client limits (SIGHUP reload, admin API). Takes effect at once: the gate
/// admits again as soon as the count is below the new limit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetLimits {
    pub max_clients: usize,
    pub admin_max_clients: usize,
}

impl Handler<SetLimits> for Supervisor {
    type Result = ();
    fn handle(&mut self, m: SetLimits, _: &mut Self::Context) {
        self.lock_gate.set_max(m.max_clients);
        self.admin_gate.set_max(m.admin_max_clients);
        info!(
            max_clients = m.max_clients,
            admin_max_clients = m.admin_max_clients,
            "client limits set"
        );
    }
}

/// Clean shutdown (SIGTERM, SIGINT, SIGQUIT, `-t`), as libvirt does it: stop
/// accepting, close every client (an owner connection releases its leases and its
/// owner is fenced), free the remaining leases (AUTOCREATE files removed), remove
/// our sockets, then stop the event loop with exit code 0.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        if self.shutting_down {
            return Box::pin(fut::ready(()));
        }
        self.shutting_down = true;
        crate::systemd::notify("STOPPING=1");
        info!(
            clients = self.connections.len(),
            leases = self.registry.leases(),
            "shutting down"
        );
        for h in self.accepting.drain(..) {
            ctx.cancel_future(h);
        }
        let closes: Vec<_> = self.connections.values().map(|c| c.send(Close)).collect();
        let lockspaces = self.registry.all();
        let unlink = std::mem::take(&mut self.unlink_on_exit);
        Box::pin(
            async move {
                futures_util::future::join_all(closes).await;
                for ls in lockspaces {
                    if let Ok(names) = ls.send(ReleaseAll).await {
                        for n in names {
                            warn!(resource = %show(&n), "lease released at shutdown");
                        }
                    }
                }
                for p in &unlink {
                    if let Err(e) = std::fs::remove_file(p) {
                        warn!(path = %p.display(), error = %e, "cannot remove socket");
                    }
                }
            }
            .into_actor(self)
            .map(|(), _, _| System::current().stop_with_code(0)),
        )
    }
}
