//! The supervisor: owns the listening sockets, admits clients (peer credentials,
//! `max_clients`), starts one connection actor per client, owns the lockspace
//! table and starts one lockspace actor per lockspace, creates the daemon-wide
//! shared state and hands each actor the pieces it uses, and runs shutdown and
//! the idle timeout.

mod restore;

use restore::restore_session;
pub use restore::Restored;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, error, info, warn};

use super::accept::{accept_stream, Accepted};
use super::admin::{AdminConnection, AdminInit, CloseAdmin};
use super::admin_state::{AdminState, DaemonInfo, ServerSettings};
use super::clients::{ClientRecord, ClientTable};
use super::connection::{Close, Connection, ConnectionInit, ConnectionShared};
use super::deferred_shutdown::DeferredShutdown;
use super::gate::{ClientGate, Slot};
use super::handoff::UpgradeShared;
use super::lockspace::{LockspaceActor, LockspaceShared, ReleaseAll};
use super::lockspace_table::LockspaceTable;
use super::rpc::{LinkInit, Peer};
use super::standing::{Stand, Standing};
use crate::config::LossAction;
use crate::idle::IdleTimeout;
use crate::lockspace::lease::{self, Storage};
use crate::lockspace::{create_directory, LockError, LockSpace};
use crate::names::lossy_utf8;
use crate::session::Session;
use crate::state::{ClientState, ListenerState, OwnerState, ServerState, SessionState};

/// How often the idle timeout is checked.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Which RPC server a listener belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// How the crash journal names this server.
    pub fn journal_id(self) -> crate::crash::entry::ServerId {
        match self {
            Self::Lock => crate::crash::entry::LOCK,
            Self::Admin => crate::crash::entry::ADMIN,
        }
    }

    /// The tag of this server's client `id` in the crash-safe store.
    pub fn client_tag(self, id: u64) -> u64 {
        crate::crash::client_tag(self.journal_id(), id)
    }
}

/// A listening socket handed to the supervisor.
pub struct ListenerSpec {
    pub server: Server,
    pub listener: std::os::unix::net::UnixListener,
    /// Remove the socket path on clean shutdown (we bound it; systemd did not).
    pub unlink: bool,
}

/// Settings the supervisor starts with.
pub struct SupervisorConfig {
    pub listeners: Vec<ListenerSpec>,
    pub max_clients: usize,
    pub admin_max_clients: usize,
    /// Shut down after this long with no client and no lease (`-t`).
    pub timeout: Option<Duration>,
    /// State carried over a live upgrade, with the storage kind of each lockspace.
    pub restored: Option<Restored>,
    /// `lease_check_interval` (seconds, 0 = off) and `lease_loss_action`.
    pub lease_check: (u64, LossAction),
    /// Logging handle and history, for the admin server.
    pub info: DaemonInfo,
}

/// A listener the supervisor keeps open while accepting pauses (live upgrade).
struct Listening {
    server: Server,
    listener: Rc<UnixListener>,
    unlink: bool,
}

pub struct Supervisor {
    lockspaces: LockspaceTable,
    /// What lockspace actors share (lease count, settings, owners).
    lockspace_shared: LockspaceShared,
    /// What lock connections share besides the lockspace table.
    connection_shared: ConnectionShared,
    shutdown: DeferredShutdown,
    pending_listeners: Vec<ListenerSpec>,
    listeners: Vec<Listening>,
    accepting: Vec<SpawnHandle>,
    lock_gate: Arc<ClientGate>,
    admin_gate: Arc<ClientGate>,
    next_client_id: HashMap<Server, u64>,
    connections: HashMap<u64, Addr<Connection>>,
    admin_connections: HashMap<u64, Addr<AdminConnection>>,
    euid: u32,
    idle: IdleTimeout,
    /// The idle check, running while a timeout is set.
    idle_check: Option<SpawnHandle>,
    clients: ClientTable,
    admin_state: Rc<AdminState>,
    shutting_down: bool,
    /// Paused by a live upgrade (accepting stopped, clients quiesced).
    upgrading: bool,
    restored: Option<Restored>,
    /// Clients of a live upgrade not rebuilt yet (see `restore_clients`), with
    /// the gate slot each already holds.
    restoring: std::collections::VecDeque<(Server, ClientState, Slot)>,
    /// When their restore began; `None` once every one is back.
    restore_began: Option<Instant>,
    /// Every connection, as a live upgrade reads it without a message.
    standing: Standing,
    /// fds the previous image left for this one to close once every client
    /// is back (see `handoff::close_stale_later`).
    stale_fds: Vec<i32>,
    /// This actor's address as every client connection keeps it: one for
    /// all of them (each `Addr` made costs two allocations, 96 B per client).
    address: Option<Rc<Addr<Supervisor>>>,
}

impl Supervisor {
    pub fn new(cfg: SupervisorConfig) -> Self {
        let lockspaces = LockspaceTable::default();
        let lockspace_shared = LockspaceShared::default();
        lockspace_shared
            .lease_check
            .set(cfg.lease_check.0, cfg.lease_check.1);
        let connection_shared = ConnectionShared {
            lockspaces: lockspaces.clone(),
            releases: Default::default(),
            vouched: lockspace_shared.vouched.clone(),
            fencing: lockspace_shared.fencing.clone(),
        };
        let lock_gate = ClientGate::new(cfg.max_clients);
        let admin_gate = ClientGate::new(cfg.admin_max_clients);
        let clients = ClientTable::default();
        let admin_state = Rc::new(AdminState {
            clients: clients.clone(),
            lock: ServerSettings::new(lock_gate.clone()),
            admin: ServerSettings::new(admin_gate.clone()),
            lockspaces: lockspaces.clone(),
            leases: lockspace_shared.leases.clone(),
            info: cfg.info,
        });
        Self {
            lockspaces,
            lockspace_shared,
            connection_shared,
            shutdown: DeferredShutdown::default(),
            pending_listeners: cfg.listeners,
            listeners: Vec::new(),
            accepting: Vec::new(),
            lock_gate,
            admin_gate,
            next_client_id: HashMap::from([(Server::Lock, 1), (Server::Admin, 1)]),
            connections: HashMap::new(),
            admin_connections: HashMap::new(),
            euid: nix::unistd::geteuid().as_raw(),
            idle: IdleTimeout::new(cfg.timeout),
            idle_check: None,
            clients,
            admin_state,
            shutting_down: false,
            upgrading: false,
            restored: cfg.restored,
            restoring: Default::default(),
            restore_began: None,
            standing: Standing::default(),
            stale_fds: Vec::new(),
            address: None,
        }
    }

    /// What a live upgrade of this daemon waits for, freezes and carries over.
    pub fn upgrade_shared(&self) -> UpgradeShared {
        UpgradeShared {
            lockspaces: self.lockspaces.clone(),
            releases: self.connection_shared.releases.clone(),
            fencing: self.lockspace_shared.fencing.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    fn start_accepting(&mut self, ctx: &mut Context<Self>) {
        for l in &self.listeners {
            let gate = self.gate(l.server).clone();
            self.accepting
                .push(ctx.add_stream(accept_stream(l.server, l.listener.clone(), gate)));
        }
    }

    fn launch(
        &mut self,
        server: Server,
        peer: Peer,
        stream: UnixStream,
        slot: Slot,
        state: Option<ClientState>,
        ctx: &mut Context<Self>,
    ) {
        let id = match &state {
            Some(s) => s.id,
            None => {
                let next = self.next_client_id.entry(server).or_insert(1);
                *next += 1;
                *next - 1
            }
        };
        let conn_time = state
            .as_ref()
            .map_or_else(crate::clock::now_epoch_seconds, |s| s.conn_time);
        let fresh = state.is_none();
        let tag = if crate::crash::active() {
            server.client_tag(id)
        } else {
            0
        };
        // A new client's socket is kept across a live upgrade's exec from
        // the start (accept gave it FD_CLOEXEC): the upgrade then has no
        // fcntl to make per client.
        if fresh {
            if let Err(e) = super::handoff::keep_across_exec(&[stream.as_raw_fd()]) {
                error!(server = server.name(), client = id, error = %e, "connection refused: cannot keep it across an upgrade");
                return;
            }
        }
        // A new client's socket is parked before anything is read from it:
        // from then on a crash keeps it connected. (A restored one is parked
        // already.)
        if fresh && tag != 0 {
            crate::failpoint::crash_point("accept:accepted");
            if let Err(e) = crate::crash::park(tag, std::os::fd::AsFd::as_fd(&stream)) {
                error!(server = server.name(), client = id, error = %e, "connection refused: cannot keep it safe from a crash");
                return;
            }
            crate::failpoint::crash_point("accept:parked");
            crate::crash::record_or_log(&crate::crash::Entry::Client {
                server: server.journal_id(),
                id,
                client: Some(ClientState {
                    id,
                    fd: -1,
                    conn_time,
                    session: (server == Server::Lock).then(Default::default),
                    pending: Vec::new(),
                    peer_pid: Some(peer.pid),
                    peer_ids: Some((peer.uid, peer.gid)),
                }),
            });
        }
        let (session, pending) = match state {
            Some(s) => (restore_session(s.session), s.pending),
            None => (Session::default(), Vec::new()),
        };
        let entry = self.clients.insert(
            server,
            id,
            ClientRecord {
                conn_time,
                peer,
                called: false,
                owner: session.shared_owner().cloned(),
                restricted: session.is_restricted(),
                link: None,
                closing: false,
            },
        );
        let link = LinkInit {
            server,
            id,
            peer,
            stream,
            slot,
            supervisor: self
                .address
                .get_or_insert_with(|| Rc::new(ctx.address()))
                .clone(),
            conn_time,
            pending,
            entry,
            tag,
            standing: self.standing.clone(),
        };
        match server {
            Server::Lock => {
                let addr = Connection::launch(ConnectionInit {
                    link,
                    shared: self.connection_shared.clone(),
                    session,
                });
                self.connections.insert(id, addr);
            }
            Server::Admin => {
                let addr = AdminConnection::launch(AdminInit {
                    link,
                    state: self.admin_state.clone(),
                });
                self.admin_connections.insert(id, addr);
            }
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
    fn start_lockspace(&self, space: LockSpace, storage: Storage) -> Addr<LockspaceActor> {
        let shared = self.lockspace_shared.clone();
        match storage {
            Storage::Local => LockspaceActor::new(space, storage, shared).start(),
            Storage::MayHang(_) => {
                let arbiter = Arbiter::new();
                LockspaceActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    LockspaceActor::new(space, storage, shared)
                })
            }
        }
    }

    /// Peer credentials; both servers admit only the daemon's own euid (root for
    /// the system daemon), as libvirt does.
    fn admit(&self, stream: &UnixStream) -> Result<Peer, String> {
        let peer = Peer::of(stream).map_err(|e| format!("cannot read peer credentials: {e}"))?;
        if peer.uid != self.euid {
            return Err(format!("Disallowing client with uid {}", peer.uid));
        }
        Ok(peer)
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let idle = self.lock_gate.connected() == 0
            && self.admin_gate.connected() == 0
            && self.lockspace_shared.leases.get() == 0;
        if self.idle.expired(idle, Instant::now()) && !self.shutting_down {
            info!(
                timeout = self.idle.secs(),
                "no clients and no leases; shutting down"
            );
            ctx.address().do_send(Shutdown);
        }
    }

    /// Runs the idle check exactly while a timeout is set.
    fn schedule_idle_check(&mut self, ctx: &mut Context<Self>) {
        match (self.idle.timeout().is_some(), self.idle_check.is_some()) {
            (true, false) => {
                self.idle_check = Some(ctx.run_interval(IDLE_TICK, Self::check_idle));
            }
            (false, true) => {
                if let Some(h) = self.idle_check.take() {
                    ctx.cancel_future(h);
                }
            }
            _ => {}
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(restored) = self.restored.take() {
            self.restore(restored, ctx);
        } else {
            // The default lockspace's files may be on any filesystem, NFS included,
            // so it gets a thread of its own like every lockspace that may block.
            let default = self.start_lockspace(LockSpace::default_space(), Storage::ANYWHERE);
            self.lockspaces.insert_new(Vec::new(), default);
        }
        for spec in std::mem::take(&mut self.pending_listeners) {
            let listener = spec
                .listener
                .set_nonblocking(true)
                .and_then(|()| UnixListener::from_std(spec.listener));
            match listener {
                Ok(l) => self.listeners.push(Listening {
                    server: spec.server,
                    listener: Rc::new(l),
                    unlink: spec.unlink,
                }),
                Err(e) => {
                    error!(server = spec.server.name(), error = %e, "cannot listen");
                    System::current().stop_with_code(6);
                }
            }
        }
        // After a live upgrade, accepting resumes once every client is back.
        if self.restore_began.is_none() {
            self.start_accepting(ctx);
        }
        self.schedule_idle_check(ctx);
        crate::systemd::notify("READY=1");
        info!(pid = std::process::id(), "virtlockd ready");
    }
}

impl StreamHandler<Option<Accepted>> for Supervisor {
    fn handle(&mut self, a: Option<Accepted>, ctx: &mut Self::Context) {
        // `None`: the limit was lowered while accept() waited; nothing to do.
        let Some(a) = a else { return };
        let peer = match self.admit(&a.stream) {
            Ok(p) => p,
            Err(why) => {
                warn!(server = a.server.name(), "{why}; connection closed");
                return;
            }
        };
        self.launch(a.server, peer, a.stream, a.slot, None, ctx);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        if !self.shutting_down {
            error!("a listener stopped accepting");
        }
    }
}

/// A connection ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnected {
    pub server: Server,
    pub id: u64,
}

impl Handler<Disconnected> for Supervisor {
    type Result = ();
    fn handle(&mut self, m: Disconnected, _: &mut Self::Context) {
        match m.server {
            Server::Lock => self.connections.remove(&m.id).map(drop),
            Server::Admin => self.admin_connections.remove(&m.id).map(drop),
        };
    }
}

/// Live upgrade, step one: stop accepting (listeners stay open) and name every
/// client, so the handoff can quiesce them.
#[derive(Message)]
#[rtype(result = "Option<Paused>")]
pub struct Pause;

pub struct Paused {
    /// Both servers, with the clients that were between requests.
    pub servers: Vec<ServerState>,
    /// The idle timeout in effect, seconds (0 = none).
    pub timeout: u32,
    /// The clients in the middle of a request, to be quiesced.
    pub lock_clients: Vec<Addr<Connection>>,
    pub admin_clients: Vec<Addr<AdminConnection>>,
}

impl Handler<Pause> for Supervisor {
    type Result = MessageResult<Pause>;
    fn handle(&mut self, _: Pause, ctx: &mut Self::Context) -> Self::Result {
        if self.shutting_down {
            return MessageResult(None);
        }
        let t_pause = Instant::now();
        self.upgrading = true;
        self.finish_restoring_clients(ctx);
        for h in self.accepting.drain(..) {
            ctx.cancel_future(h);
        }
        let t_hold = Instant::now();
        let mut held = self.hold_clients();
        let hold_ms = t_hold.elapsed().as_secs_f64() * 1e3;
        let servers = [Server::Lock, Server::Admin]
            .into_iter()
            .map(|server| ServerState {
                name: server.name().to_owned(),
                max_clients: self.gate(server).max() as u64,
                next_client_id: self.next_client_id.get(&server).copied().unwrap_or(1),
                listeners: self
                    .listeners
                    .iter()
                    .filter(|l| l.server == server)
                    .map(|l| ListenerState {
                        fd: l.listener.as_raw_fd(),
                        unlink: l.unlink,
                    })
                    .collect(),
                clients: std::mem::take(match server {
                    Server::Lock => &mut held.lock_idle,
                    Server::Admin => &mut held.admin_idle,
                }),
                max_unauth_clients: Some(self.admin_state.server(server).unauth_max.get() as u64),
                prio_workers: Some(self.admin_state.server(server).prio_workers.get()),
            })
            .collect();
        let paused = Paused {
            timeout: self.idle.secs(),
            servers,
            lock_clients: held.lock_busy,
            admin_clients: held.admin_busy,
        };
        debug!(
            ms = t_pause.elapsed().as_secs_f64() * 1e3,
            hold_ms,
            idle = paused
                .servers
                .iter()
                .map(|s| s.clients.len())
                .sum::<usize>(),
            busy = paused.lock_clients.len() + paused.admin_clients.len(),
            "paused"
        );
        MessageResult(Some(paused))
    }
}

/// Live upgrade failed: accept again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resume;

impl Handler<Resume> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Resume, ctx: &mut Self::Context) {
        self.upgrading = false;
        self.standing.release();
        if self.shutdown.requested() {
            ctx.notify(Shutdown);
        } else if self.accepting.is_empty() && !self.shutting_down {
            self.start_accepting(ctx);
        }
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
        let shown = lossy_utf8(&m.path);
        if self.lockspaces.contains(&m.path) {
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
            Ok::<_, LockError>(lease::storage_of(os).unwrap_or(Storage::MayHang("unknown")))
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
            if act.lockspaces.contains(&m.path) {
                return if m.must_be_new {
                    Err(OpenError::Exists(shown))
                } else {
                    Ok(())
                };
            }
            crate::crash::record(&crate::crash::Entry::Lockspace {
                directory: m.path.clone(),
            })
            .map_err(|e| {
                error!(error = %e, "lockspace not created");
                OpenError::Create(LockError::CrashStore(e.to_string()))
            })?;
            let addr = act.start_lockspace(LockSpace::directory(m.path.clone()), storage);
            act.lockspaces.insert_new(m.path, addr);
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
        for (server, max) in [
            (Server::Lock, m.max_clients),
            (Server::Admin, m.admin_max_clients),
        ] {
            let s = self.admin_state.server(server);
            s.set_limits(s.limits().reloaded(max));
            s.journal(server);
        }
        info!(
            max_clients = m.max_clients,
            admin_max_clients = m.admin_max_clients,
            "client limits set"
        );
    }
}

/// New lease revalidation settings (SIGHUP reload): every lockspace reads them
/// at its next tick.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetLeaseCheck {
    pub interval_secs: u64,
    pub action: LossAction,
}

impl Handler<SetLeaseCheck> for Supervisor {
    type Result = ();
    fn handle(&mut self, m: SetLeaseCheck, _: &mut Self::Context) {
        self.lockspace_shared
            .lease_check
            .set(m.interval_secs, m.action);
        info!(
            lease_check_interval = m.interval_secs,
            lease_loss_action = m.action.name(),
            "lease revalidation set"
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
        if self.upgrading {
            // Every client is paused by the upgrade: let it abort, then shut down.
            info!("shutdown requested during a live upgrade; it will follow");
            self.shutdown.request();
            return Box::pin(fut::ready(()));
        }
        self.shutting_down = true;
        self.finish_restoring_clients(ctx);
        crate::systemd::notify("STOPPING=1");
        info!(
            clients = self.connections.len(),
            leases = self.lockspace_shared.leases.get(),
            "shutting down"
        );
        for h in self.accepting.drain(..) {
            ctx.cancel_future(h);
        }
        let closes: Vec<_> = self.connections.values().map(|c| c.send(Close)).collect();
        let lockspaces = self.lockspaces.all();
        let unlink: Vec<std::path::PathBuf> = self
            .listeners
            .iter()
            .filter(|l| l.unlink)
            .filter_map(|l| l.listener.local_addr().ok())
            .filter_map(|a| a.as_pathname().map(std::path::Path::to_path_buf))
            .collect();
        Box::pin(
            async move {
                futures_util::future::join_all(closes).await;
                for ls in lockspaces {
                    if let Ok(names) = ls.send(ReleaseAll).await {
                        for n in names {
                            warn!(resource = %lossy_utf8(&n), "lease released at shutdown");
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
            .map(|(), _, _| {
                // A shutdown is not a crash: nothing is left to recover, and the
                // next start (a `systemctl restart`, which keeps the store) must
                // not find this daemon's store.
                if let Some(g) = crate::crash::release_store() {
                    info!(generation = g, "crash-safe store emptied at shutdown");
                }
                System::current().stop_with_code(0)
            }),
        )
    }
}

/// Admin client-disconnect: close client `id` of `server`, exactly as if it had
/// hung up (for a lock client: release and fencing of its owner).
#[derive(Message)]
#[rtype(result = "CloseOutcome")]
pub struct CloseClient {
    pub server: Server,
    pub id: u64,
}

/// What became of a [`CloseClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    Closed,
    NoSuchClient,
    /// A live upgrade holds every client: one between requests has been
    /// handed over as it stands and must not close under it, nor may the new
    /// image miss a close that was acknowledged. The caller tries again.
    Upgrading,
}

impl Handler<CloseClient> for Supervisor {
    type Result = MessageResult<CloseClient>;
    fn handle(&mut self, m: CloseClient, _: &mut Self::Context) -> Self::Result {
        MessageResult(if self.upgrading {
            CloseOutcome::Upgrading
        } else if self.close_client(m.server, m.id) {
            CloseOutcome::Closed
        } else {
            CloseOutcome::NoSuchClient
        })
    }
}

impl Supervisor {
    fn close_client(&self, server: Server, id: u64) -> bool {
        // Before the Close is even read: an upgrade that pauses before the
        // connection runs must not hand over a client about to close.
        self.clients.mark_closing(server, id);
        match server {
            Server::Lock => self
                .connections
                .get(&id)
                .map(|c| c.do_send(Close))
                .is_some(),
            Server::Admin => self
                .admin_connections
                .get(&id)
                .map(|c| c.do_send(CloseAdmin))
                .is_some(),
        }
    }

    /// Holds every client's reading (live upgrade). A client between
    /// requests is handed over as it stands, from its row in the client table
    /// (session, credentials) and its socket (partly received bytes); one in
    /// the middle of a request is named, to be quiesced once it has answered.
    fn hold_clients(&mut self) -> HeldClients {
        self.standing.hold();
        let mut held = HeldClients::default();
        let mut busy = Vec::new();
        // One pass over the client table, in (server, id) order, each row
        // read once as it lies (thousands of lookups would each miss the
        // cache). A row without a link is a connection that has stopped: it
        // has nothing to hand over. One told to close is asked, like a busy
        // one: the question waits behind the close, and fails once it is
        // done (a connection closed meanwhile).
        self.clients.each(|server, id, record| {
            let Some(view) = &record.link else { return };
            if record.closing {
                return busy.push((server, id));
            }
            let (fd, pending, active) = match self.standing.stand(view) {
                Stand::Busy => return busy.push((server, id)),
                Stand::Idle {
                    fd,
                    pending,
                    active,
                } => (fd, pending, active),
            };
            let session = (server == Server::Lock).then(|| SessionState {
                restricted: record.restricted,
                owner: record.owner.as_deref().map(|o| OwnerState {
                    uuid: o.uuid,
                    name: o.name.clone(),
                    id: o.id,
                    pid: o.pid,
                }),
            });
            let state = ClientState {
                id,
                fd,
                conn_time: record.conn_time,
                session,
                pending,
                peer_pid: Some(record.peer.pid),
                peer_ids: Some((record.peer.uid, record.peer.gid)),
            };
            match server {
                Server::Lock if active => held.lock_active.push(state),
                Server::Lock => held.lock_idle.push(state),
                Server::Admin => held.admin_idle.push(state),
            }
        });
        // The new image rebuilds clients in this order: the active ones
        // first (the ones quiesced go before them, see `handoff`).
        held.lock_active.append(&mut held.lock_idle);
        held.lock_idle = std::mem::take(&mut held.lock_active);
        for (server, id) in busy {
            match server {
                Server::Lock => held.lock_busy.extend(self.connections.get(&id).cloned()),
                Server::Admin => held
                    .admin_busy
                    .extend(self.admin_connections.get(&id).cloned()),
            }
        }
        held
    }
}

/// The clients of both servers as an upgrade's hold found them.
#[derive(Default)]
struct HeldClients {
    /// Idle lock clients that were active lately (see `standing`).
    lock_active: Vec<ClientState>,
    lock_idle: Vec<ClientState>,
    admin_idle: Vec<ClientState>,
    lock_busy: Vec<Addr<Connection>>,
    admin_busy: Vec<Addr<AdminConnection>>,
}

/// Admin daemon-timeout: shut down after this many idle seconds (0 = never).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetTimeout(pub u32);

impl Handler<SetTimeout> for Supervisor {
    type Result = ();
    fn handle(&mut self, m: SetTimeout, ctx: &mut Self::Context) {
        self.idle.set_secs(m.0);
        crate::crash::record_or_log(&crate::crash::Entry::Timeout(m.0));
        self.schedule_idle_check(ctx);
        info!(timeout = m.0, "idle timeout set");
    }
}
