//! One actor per lock-protocol client. It decodes packets, applies the session
//! rules, routes each lock operation to the lockspace actor that owns the path,
//! and writes replies in order. Requests on one connection are handled strictly
//! one at a time (`ctx.wait`), as libvirt does; different connections proceed
//! concurrently.
//!
//! When the connection closes and its peer is the registered owner (QEMU's own
//! connection), the owner's leases are released in every lockspace and, if it held
//! any, the owner is fenced: a VM must not run on without its leases.

use std::future::Future;
use std::rc::Rc;
use std::time::SystemTime;

use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use super::fence;
use super::gate::Slot;
use super::lockspace::{Acquire, CreateResource, DeleteResource, Release, ReleaseOwner};
use super::registry::Registry;
use super::supervisor::{Disconnected, OpenError, OpenLockspace, Supervisor};
use crate::lockspace::error::show;
use crate::lockspace::OwnerPid;
use crate::protocol::error::{code, domain};
use crate::protocol::lock::{self, LockCall, Procedure};
use crate::protocol::{self as proto, Frame, FrameCodec, FrameError, Header, RemoteError, Route};
use crate::session::{uuid_string, Session};

/// Peer credentials read with SO_PEERCRED at accept time.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// -1 when the kernel reported none.
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub struct Connection {
    id: u64,
    peer: Peer,
    connected_at: SystemTime,
    session: Session,
    /// [`Connection::owner_label`] of the current registration.
    label: Rc<str>,
    registry: Registry,
    supervisor: Addr<Supervisor>,
    writer: FramedWrite<Frame, OwnedWriteHalf, FrameCodec>,
    /// Set once the disconnect semantics have been started (by [`Close`]).
    closed: bool,
    _slot: Slot,
}

impl Connection {
    pub fn launch(
        id: u64,
        peer: Peer,
        stream: UnixStream,
        slot: Slot,
        registry: Registry,
        supervisor: Addr<Supervisor>,
    ) -> Addr<Self> {
        Connection::create(move |ctx| {
            let (read, write) = stream.into_split();
            ctx.add_stream(FramedRead::new(read, FrameCodec));
            Connection {
                id,
                peer,
                connected_at: SystemTime::now(),
                session: Session::default(),
                label: "unregistered".into(),
                registry,
                supervisor,
                writer: FramedWrite::new(write, FrameCodec, ctx),
                closed: false,
                _slot: slot,
            }
        })
    }

    fn reply(&mut self, call: &Header, result: Result<(), RemoteError>) {
        let frame = match result {
            Ok(()) => proto::void_reply(call),
            Err(e) => proto::error_reply(call, &e),
        };
        self.writer.write(frame);
    }

    /// Runs `op` and replies with its result before this connection reads its next
    /// request.
    fn reply_when<F>(&mut self, call: Header, op: F, ctx: &mut Context<Self>)
    where
        F: Future<Output = Result<(), RemoteError>> + 'static,
    {
        ctx.wait(
            op.into_actor(self)
                .map(move |result, act, _| act.reply(&call, result)),
        );
    }

    /// Describes the registered owner for log lines; computed once per REGISTER,
    /// not per request.
    fn owner_label(&self) -> Rc<str> {
        match self.session.owner() {
            Some(o) => format!(
                "{} uuid={} pid={}",
                show(&o.name),
                uuid_string(&o.uuid),
                o.pid as OwnerPid
            )
            .into(),
            None => "unregistered".into(),
        }
    }

    fn dispatch(&mut self, call: Header, args: LockCall, ctx: &mut Context<Self>) {
        if let Err(e) = self.session.admit(&args) {
            return self.reply(&call, Err(e));
        }
        // admit() guarantees an owner for every call below except these three.
        let owner = self.session.owner_pid().unwrap_or(0);
        match args {
            LockCall::Register { owner, .. } => {
                let r = self.session.register(owner);
                if r.is_ok() {
                    self.label = self.owner_label();
                    debug!(client = self.id, owner = %self.label, "registered");
                }
                self.reply(&call, r)
            }
            LockCall::Restrict { .. } => {
                self.session.restrict();
                self.reply(&call, Ok(()))
            }
            LockCall::New { path, .. } if path.is_empty() => self.reply(
                &call,
                Err(RemoteError::new(
                    code::OPERATION_INVALID,
                    domain::RPC,
                    "the default lockspace already exists",
                )),
            ),
            LockCall::New { path, .. } => self.open_lockspace(call, path, true, ctx),
            LockCall::CreateLockspace { path } => {
                if self.registry.contains(&path) {
                    return self.reply(&call, Ok(()));
                }
                self.open_lockspace(call, path, false, ctx)
            }
            LockCall::CreateResource { path, name, .. } => {
                self.in_lockspace(call, &path, CreateResource { name }, ctx)
            }
            LockCall::DeleteResource { path, name, .. } => {
                self.in_lockspace(call, &path, DeleteResource { name }, ctx)
            }
            LockCall::Acquire { path, name, flags } => {
                let Some(addr) = self.lookup(&call, &path) else {
                    return;
                };
                let op = addr.send(Acquire { name, owner, flags });
                let logged = async move { flatten(op.await) }
                    .into_actor(self)
                    .map(move |result, act, _| {
                        match &result {
                            Ok(()) => debug!(lockspace = %show(&path), owner = %act.label, flags, "acquired"),
                            Err(e) => info!(lockspace = %show(&path), owner = %act.label, flags, error = %e.message, "acquire refused"),
                        }
                        act.reply(&call, result)
                    });
                ctx.wait(logged)
            }
            LockCall::Release { path, name, .. } => {
                self.in_lockspace(call, &path, Release { name, owner }, ctx)
            }
        }
    }

    /// Looks up the lockspace actor for `path`, replying "does not exist" if none.
    fn lookup(&mut self, call: &Header, path: &[u8]) -> Option<Addr<super::lockspace::Lockspace>> {
        let addr = self.registry.get(path);
        if addr.is_none() {
            self.reply(
                call,
                Err(RemoteError::new(
                    code::INTERNAL_ERROR,
                    domain::RPC,
                    format!("Lockspace for path {} does not exist", show(path)),
                )),
            );
        }
        addr
    }

    fn in_lockspace<M>(&mut self, call: Header, path: &[u8], msg: M, ctx: &mut Context<Self>)
    where
        M: Message<Result = Result<(), crate::lockspace::LockError>> + Send + 'static,
        super::lockspace::Lockspace: Handler<M>,
    {
        if let Some(addr) = self.lookup(&call, path) {
            let op = addr.send(msg);
            self.reply_when(call, async move { flatten(op.await) }, ctx);
        }
    }

    fn open_lockspace(
        &mut self,
        call: Header,
        path: Vec<u8>,
        must_be_new: bool,
        ctx: &mut Context<Self>,
    ) {
        let op = self.supervisor.send(OpenLockspace { path, must_be_new });
        self.reply_when(
            call,
            async move {
                match op.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(OpenError::Exists(p))) => Err(RemoteError::new(
                        code::INTERNAL_ERROR,
                        domain::RPC,
                        format!("Lockspace for path {p} already exists"),
                    )),
                    Ok(Err(OpenError::Create(e))) => Err(e.into()),
                    Err(e) => Err(unavailable(e)),
                }
            },
            ctx,
        );
    }

    fn handle_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let header = frame.header;
        match proto::route(frame, lock::PROGRAM, lock::VERSION) {
            Route::Call { payload } => {
                let Some(procedure) = Procedure::from_wire(header.proc_) else {
                    let e = RemoteError::rpc(format!("unknown procedure: {}", header.proc_));
                    return self.reply(&header, Err(e));
                };
                match LockCall::decode(procedure, &payload) {
                    Ok(args) => self.dispatch(header, args, ctx),
                    Err(e) => {
                        debug!(client = self.id, error = %e, "undecodable payload");
                        self.reply(
                            &header,
                            Err(RemoteError::rpc("Unable to decode message payload")),
                        )
                    }
                }
            }
            Route::Reject(e) => self.reply(&header, Err(e)),
            Route::Ping => self.writer.write(proto::pong()),
            Route::Ignore => {}
            Route::Close(why) => {
                warn!(
                    client = self.id,
                    pid = self.peer.pid,
                    "{why}; closing connection"
                );
                ctx.stop();
            }
        }
    }
}

fn unavailable(e: MailboxError) -> RemoteError {
    RemoteError::new(
        code::INTERNAL_ERROR,
        domain::LOCKING,
        format!("lockspace unavailable: {e}"),
    )
}

fn flatten(
    r: Result<Result<(), crate::lockspace::LockError>, MailboxError>,
) -> Result<(), RemoteError> {
    match r {
        Ok(r) => r.map_err(RemoteError::from),
        Err(e) => Err(unavailable(e)),
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        debug!(
            client = self.id,
            pid = self.peer.pid,
            uid = self.peer.uid,
            "client connected"
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        debug!(client = self.id, pid = self.peer.pid, "client disconnected");
        self.supervisor.do_send(Disconnected { id: self.id });
        if !self.closed {
            actix::spawn(self.disconnect_semantics());
        }
    }
}

impl Connection {
    /// What closing this connection means (spec §5.3). Only the owner's own
    /// connection (QEMU's) releases: libvirtd's short-lived connections register
    /// the QEMU pid too and must not. If the owner held anything, it is fenced.
    fn disconnect_semantics(&mut self) -> impl Future<Output = ()> + 'static {
        self.closed = true;
        let owner = self
            .session
            .owner_pid()
            .filter(|&owner| owner == self.peer.pid);
        let label = self.label.to_string();
        let lockspaces = if owner.is_some() {
            self.registry.all()
        } else {
            Vec::new()
        };
        async move {
            let Some(owner) = owner else { return };
            let mut released = 0;
            let mut failed = false;
            for ls in lockspaces {
                match ls.send(ReleaseOwner { owner }).await {
                    Ok(names) => {
                        for n in &names {
                            info!(owner = %label, resource = %show(n), "lease released on disconnect");
                        }
                        released += names.len();
                    }
                    Err(_) => failed = true,
                }
            }
            if released > 0 || failed {
                fence::fence(owner, &label).await;
            }
        }
    }
}

/// Close this connection now (daemon shutdown, admin client-disconnect), with the
/// same release and fencing as a client hang-up. Resolves when both are done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

impl Handler<Close> for Connection {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Close, ctx: &mut Self::Context) -> Self::Result {
        let done = self.disconnect_semantics();
        ctx.stop();
        Box::pin(done)
    }
}

impl StreamHandler<Result<Frame, FrameError>> for Connection {
    fn handle(&mut self, item: Result<Frame, FrameError>, ctx: &mut Self::Context) {
        match item {
            Ok(frame) => self.handle_frame(frame, ctx),
            Err(e) => {
                warn!(client = self.id, pid = self.peer.pid, error = %e, "closing connection");
                ctx.stop();
            }
        }
    }
}

impl WriteHandler<FrameError> for Connection {
    fn error(&mut self, err: FrameError, _: &mut Self::Context) -> Running {
        debug!(client = self.id, error = %err, "write failed");
        Running::Stop
    }
}

impl Connection {
    pub fn connected_at(&self) -> SystemTime {
        self.connected_at
    }
}
