//! The skeleton both RPC connection actors (lock and admin) stand on: the
//! client's socket and credentials, its row in the client table and its slot
//! under the client limit, replies written in call order, the packets every RPC
//! server answers the same way (keepalive, rejected headers, malformed input),
//! requests carried over a live upgrade, and the client's state for the next
//! one. Each actor adds only its program's calls.

use std::future::Future;
use std::rc::Rc;

use actix::prelude::*;
use bytes::Bytes;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::clients::ClientEntry;
use super::gate::Slot;
use super::standing::Standing;
use super::supervisor::{Disconnected, Server, Supervisor};
use super::wire::Wire;
use crate::protocol::{self as proto, Frame, FrameError, Header, RemoteError, Route};
use crate::state::{ClientState, SessionState};

/// Peer credentials read with SO_PEERCRED at accept time.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// -1 when the kernel reported none.
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl Peer {
    /// Reads SO_PEERCRED of a connected socket (at accept, and again after a
    /// live upgrade: the kernel keeps the values of connect time).
    pub fn of(stream: &UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        Ok(Self {
            pid: match cred.pid() {
                Some(0) | None => -1,
                Some(p) => p,
            },
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }
}

/// What a call answers: a reply payload (empty for a void reply) or an error.
pub type Answer = Result<Bytes, RemoteError>;

/// Everything a connection of either server starts with.
pub struct LinkInit {
    pub server: Server,
    pub id: u64,
    pub peer: Peer,
    pub stream: UnixStream,
    pub slot: Slot,
    /// Shared by every connection of the event thread.
    pub supervisor: Rc<Addr<Supervisor>>,
    /// Connect time, seconds since the epoch.
    pub conn_time: i64,
    /// Bytes of a partly received request (live upgrade).
    pub pending: Vec<u8>,
    /// This connection's row in the client table (admin server's view).
    pub entry: ClientEntry,
    /// The socket's name in the crash-safe store (0: not parked).
    pub tag: u64,
    /// Where a live upgrade finds this connection.
    pub standing: Standing,
}

/// One client connection of an RPC server, whatever its program. It lives in
/// every connection actor, idle ones included, so nothing is kept twice: the
/// server and id are the client-table row's (`entry`).
pub struct RpcLink {
    peer: Peer,
    conn_time: i64,
    wire: Wire,
    entry: ClientEntry,
    /// Whether a call was made (see [`super::clients::ClientRecord::called`]).
    called: bool,
    supervisor: Rc<Addr<Supervisor>>,
    _slot: Slot,
}

/// An actor serving one RPC program on one client connection.
pub trait RpcActor:
    Actor<Context = Context<Self>> + StreamHandler<Result<Frame, FrameError>>
{
    fn link(&mut self) -> &mut RpcLink;

    /// The (program, version) a packet with this header is served by.
    fn program(header: &Header) -> (u32, u32);

    /// A call to that program, routed and counted.
    fn call(&mut self, header: Header, payload: Bytes, ctx: &mut Context<Self>);
}

impl RpcLink {
    /// Starts the actor `make` builds around the connection `init` describes.
    pub fn launch<A: RpcActor>(init: LinkInit, make: impl FnOnce(RpcLink) -> A) -> Addr<A> {
        A::create(move |ctx| {
            let (wire, incoming) = Wire::new(init.stream, &init.pending, init.tag);
            let (incoming, view) = init.standing.register(incoming, !init.pending.is_empty());
            init.entry.update(|r| r.link = Some(view));
            ctx.add_stream(incoming);
            make(RpcLink {
                peer: init.peer,
                conn_time: init.conn_time,
                wire,
                entry: init.entry,
                called: false,
                supervisor: init.supervisor,
                _slot: init.slot,
            })
        })
    }

    pub fn id(&self) -> u64 {
        self.entry.id()
    }

    fn server(&self) -> Server {
        self.entry.server()
    }

    pub fn peer(&self) -> Peer {
        self.peer
    }

    pub fn entry(&self) -> &ClientEntry {
        &self.entry
    }

    pub fn supervisor(&self) -> &Addr<Supervisor> {
        &self.supervisor
    }

    /// Writes the answer to `call`.
    pub fn answer<A>(&mut self, call: &Header, answer: Answer, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        let frame = match answer {
            // The last guard against a frame no client could read (libvirt's
            // virNetMessageEncodePayload fails the call the same way).
            Ok(payload) if payload.len() > crate::protocol::inspect::MAX_PAYLOAD => {
                proto::error_reply(call, &RemoteError::rpc("Unable to encode message payload"))
            }
            Ok(payload) if payload.is_empty() => proto::void_reply(call),
            Ok(payload) => proto::data_reply(call, payload),
            Err(e) => proto::error_reply(call, &e),
        };
        self.wire.send(frame, ctx);
    }

    /// Journals this client as it is now (crash-safe mode; nothing
    /// otherwise). The record names no fd: the socket is parked under its tag.
    pub fn journal(&self, session: Option<SessionState>) {
        if crate::crash::active() {
            let mut state = self.state(session);
            state.fd = -1;
            state.pending = Vec::new();
            crate::crash::record_or_log(&crate::crash::Entry::Client {
                server: self.server().journal_id(),
                id: self.id(),
                client: Some(state),
            });
        }
    }

    /// This client as a live upgrade carries it over.
    pub fn state(&self, session: Option<SessionState>) -> ClientState {
        ClientState {
            id: self.id(),
            fd: self.wire.raw_fd(),
            conn_time: self.conn_time,
            session,
            pending: self.wire.pending(),
            peer_pid: Some(self.peer.pid),
            peer_ids: Some((self.peer.uid, self.peer.gid)),
        }
    }

    /// Answers a packet every server answers alike; a call to the served
    /// program comes back, as (header, arguments), for the actor.
    fn route<A>(
        &mut self,
        frame: Frame,
        program: (u32, u32),
        ctx: &mut Context<A>,
    ) -> Option<(Header, Bytes)>
    where
        A: Actor<Context = Context<A>>,
    {
        let header = frame.header;
        match proto::route(frame, program.0, program.1) {
            Route::Call { payload } => {
                if !self.called {
                    self.called = true;
                    self.entry.update(|e| e.called = true);
                }
                return Some((header, payload));
            }
            Route::Reject(e) => self.wire.send(proto::error_reply(&header, &e), ctx),
            Route::Ping => self.wire.send(proto::pong(), ctx),
            Route::Ignore => {}
            Route::Close(why) => {
                warn!(
                    server = self.server().name(),
                    client = self.id(),
                    pid = self.peer.pid,
                    "{why}; closing connection"
                );
                ctx.stop();
            }
        }
        None
    }
}

/// Handles one packet read from the client.
pub fn receive<A: RpcActor>(act: &mut A, frame: Frame, ctx: &mut Context<A>) {
    let program = A::program(&frame.header);
    if let Some((header, payload)) = act.link().route(frame, program, ctx) {
        act.call(header, payload, ctx);
    }
}

/// The body of each actor's `StreamHandler`: a packet, or why the stream broke.
pub fn incoming<A: RpcActor>(act: &mut A, item: Result<Frame, FrameError>, ctx: &mut Context<A>) {
    match item {
        Ok(frame) => receive(act, frame, ctx),
        Err(e) => {
            let link = act.link();
            warn!(server = link.server().name(), client = link.id(), pid = link.peer.pid, error = %e, "closing connection");
            ctx.stop();
        }
    }
}

/// At start: whole requests carried over a live upgrade, which the stream
/// would only look at once more bytes arrive.
pub fn replay_pending<A: RpcActor>(act: &mut A, ctx: &mut Context<A>) {
    for frame in act.link().wire.take_complete() {
        receive(act, frame, ctx);
    }
}

/// Journals that client `id` of `server` is gone, its closing done.
pub fn journal_gone(server: Server, id: u64) {
    if crate::crash::active() {
        crate::crash::record_or_log(&crate::crash::Entry::Client {
            server: server.journal_id(),
            id,
            client: None,
        });
    }
}

/// At stop: the supervisor forgets the connection. An admin client is gone
/// at once; a lock client once its leases are released (see `connection`).
pub fn stopped(link: &RpcLink) {
    // Handed over no more: a live upgrade skips a stopping connection.
    link.entry.update(|r| r.link = None);
    if link.server() == Server::Admin {
        journal_gone(link.server(), link.id());
    }
    debug!(
        server = link.server().name(),
        client = link.id(),
        pid = link.peer.pid,
        "client disconnected"
    );
    link.supervisor.do_send(Disconnected {
        server: link.server(),
        id: link.id(),
    });
}

/// Answers `call` when `f` resolves, before the next call is read: requests on
/// one connection are handled strictly one at a time, as libvirt does.
pub fn answer_when<A, F>(act: &mut A, call: Header, f: F, ctx: &mut Context<A>)
where
    A: RpcActor,
    F: Future<Output = Answer> + 'static,
{
    ctx.wait(
        f.into_actor(act)
            .map(move |answer, act, ctx| act.link().answer(&call, answer, ctx)),
    );
}

/// Live upgrade: hand over this client's state and hold still until `resume`
/// fires (exec failed) or the process image is replaced. Handled only between
/// requests: a request in progress has been answered and its reply written.
/// Sent only to a connection in the middle of a request: one between requests
/// is read without a message (see `standing`).
#[derive(Message)]
#[rtype(result = "ClientState")]
pub struct Quiesce {
    pub resume: oneshot::Receiver<()>,
}

impl Quiesce {
    /// Holds the actor until resumed; `state` is what it hands over.
    pub fn hold<A>(self, state: ClientState, ctx: &mut Context<A>) -> MessageResult<Quiesce>
    where
        A: Actor<Context = Context<A>>,
    {
        let resume = self.resume;
        ctx.wait(actix::fut::wrap_future(async move {
            let _ = resume.await;
        }));
        MessageResult(state)
    }
}
