//! The supervisor: owns the listening sockets, admits clients (peer credentials,
//! `max_clients`), starts one connection actor per client, owns the lockspace
//! registry and starts one lockspace actor per lockspace.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::stream::{self, Stream};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{error, info, warn};

use super::admin::AdminConnection;
use super::connection::{Connection, Peer};
use super::lockspace::Lockspace;
use super::registry::Registry;
use crate::lockspace::lease::{self, Storage};
use crate::lockspace::{create_directory, LockError, LockSpace};

/// How long accepting pauses when the process is out of file descriptors.
const EMFILE_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Which RPC server a listener belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub lock_listener: std::os::unix::net::UnixListener,
    pub admin_listener: Option<std::os::unix::net::UnixListener>,
    pub max_clients: usize,
    pub admin_max_clients: usize,
    /// Files to remove on clean shutdown (self-bound sockets).
    pub unlink_on_exit: Vec<PathBuf>,
}

pub struct Supervisor {
    registry: Registry,
    listeners: Vec<(Server, std::os::unix::net::UnixListener, Arc<Semaphore>)>,
    next_client_id: [u64; 2],
    euid: u32,
    unlink_on_exit: Vec<PathBuf>,
}

impl Supervisor {
    pub fn new(cfg: SupervisorConfig) -> Self {
        let mut listeners = vec![(
            Server::Lock,
            cfg.lock_listener,
            Arc::new(Semaphore::new(cfg.max_clients)),
        )];
        if let Some(admin) = cfg.admin_listener {
            listeners.push((
                Server::Admin,
                admin,
                Arc::new(Semaphore::new(cfg.admin_max_clients)),
            ));
        }
        Self {
            registry: Registry::default(),
            listeners,
            next_client_id: [1, 1],
            euid: nix::unistd::geteuid().as_raw(),
            unlink_on_exit: cfg.unlink_on_exit,
        }
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// Starts a lockspace actor where its storage allows: on the event thread for
    /// local filesystems, on a thread of its own otherwise.
    fn start_lockspace(space: LockSpace, storage: Storage) -> Addr<Lockspace> {
        match storage {
            Storage::Local => Lockspace::new(space, storage).start(),
            Storage::Network(_) => {
                let arbiter = Arbiter::new();
                Lockspace::start_in_arbiter(&arbiter.handle(), move |_| {
                    Lockspace::new(space, storage)
                })
            }
        }
    }

    fn admit(&self, server: Server, stream: &UnixStream) -> Result<Peer, String> {
        let cred = stream
            .peer_cred()
            .map_err(|e| format!("cannot read peer credentials: {e}"))?;
        // Lock server: root daemon admits root only, a user daemon its own uid.
        // Admin server: the daemon's euid only. Both rules reduce to "same euid".
        let _ = server;
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
}

/// Accepts on one listener while a client slot is free. Waiting for a slot before
/// calling accept() leaves new clients in the kernel backlog, as libvirt does.
fn accept_stream(
    server: Server,
    listener: UnixListener,
    slots: Arc<Semaphore>,
) -> impl Stream<Item = Accepted> {
    stream::unfold(
        (listener, slots, false),
        move |(listener, slots, mut at_limit)| async move {
            if slots.available_permits() == 0 && !at_limit {
                warn!(server = server.name(), "client limit reached; new connections wait in the backlog");
                at_limit = true;
            }
            let permit = slots.clone().acquire_owned().await.ok()?;
            if at_limit {
                info!(server = server.name(), "below the client limit again; accepting");
                at_limit = false;
            }
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let item = Accepted {
                            server,
                            stream,
                            permit,
                        };
                        return Some((item, (listener, slots, at_limit)));
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                        error!(server = server.name(), error = %e, "out of file descriptors; pausing accept");
                        actix_rt::time::sleep(EMFILE_PAUSE).await;
                    }
                    Err(e) => warn!(server = server.name(), error = %e, "accept failed"),
                }
            }
        },
    )
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The default lockspace's files may be on any filesystem, NFS included, so
        // it gets a thread of its own like every lockspace that may block.
        let default = Self::start_lockspace(LockSpace::default_space(), Storage::Network("any"));
        self.registry.insert_new(Vec::new(), default);

        for (server, listener, slots) in std::mem::take(&mut self.listeners) {
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| UnixListener::from_std(listener));
            match listener {
                Ok(l) => {
                    ctx.add_stream(accept_stream(server, l, slots));
                }
                Err(e) => {
                    error!(server = server.name(), error = %e, "cannot listen");
                    System::current().stop_with_code(6);
                }
            }
        }
        info!("virtlockd ready");
    }
}

/// A connection that passed accept().
pub struct Accepted {
    server: Server,
    stream: UnixStream,
    permit: OwnedSemaphorePermit,
}

impl StreamHandler<Accepted> for Supervisor {
    fn handle(&mut self, a: Accepted, ctx: &mut Self::Context) {
        let peer = match self.admit(a.server, &a.stream) {
            Ok(p) => p,
            Err(why) => {
                warn!(server = a.server.name(), "{why}; connection closed");
                return;
            }
        };
        let slot = match a.server {
            Server::Lock => 0,
            Server::Admin => 1,
        };
        let id = self.next_client_id[slot];
        self.next_client_id[slot] += 1;
        match a.server {
            Server::Lock => {
                Connection::launch(
                    id,
                    peer,
                    a.stream,
                    a.permit,
                    self.registry.clone(),
                    ctx.address(),
                );
            }
            Server::Admin => {
                AdminConnection::launch(id, peer, a.stream, a.permit);
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        error!("a listener stopped accepting");
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
        let shown = String::from_utf8_lossy(&m.path).into_owned();
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
            let os = std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&path));
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
            let addr = Self::start_lockspace(LockSpace::directory(m.path.clone()), storage);
            act.registry.insert_new(m.path, addr);
            info!(lockspace = %shown, ?storage, "lockspace created");
            Ok(())
        }))
    }
}

/// Clean shutdown (SIGTERM, SIGINT, SIGQUIT): remove our sockets and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) {
        for p in &self.unlink_on_exit {
            if let Err(e) = std::fs::remove_file(p) {
                warn!(path = %p.display(), error = %e, "cannot remove socket");
            }
        }
        info!("shutting down");
        System::current().stop();
    }
}
