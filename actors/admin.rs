//! Connections on the admin socket. The admin program's procedures are not served
//! yet: every call gets libvirt's "unknown procedure" error (which virt-admin shows
//! as "not supported"), keepalive works, and malformed input closes the connection.

use actix::prelude::*;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::connection::{Peer, Quiesce};
use super::gate::Slot;
use super::supervisor::{Disconnected, Server, Supervisor};
use super::wire::Wire;
use crate::protocol::{self as proto, admin, Frame, FrameError, RemoteError, Route};
use crate::state::ClientState;

pub struct AdminConnection {
    id: u64,
    peer: Peer,
    conn_time: i64,
    wire: Wire,
    supervisor: Addr<Supervisor>,
    _slot: Slot,
}

/// Everything an admin connection starts with.
pub struct AdminInit {
    pub id: u64,
    pub peer: Peer,
    pub stream: UnixStream,
    pub slot: Slot,
    pub supervisor: Addr<Supervisor>,
    pub conn_time: i64,
    pub pending: Vec<u8>,
}

impl AdminConnection {
    pub fn launch(init: AdminInit) -> Addr<Self> {
        AdminConnection::create(move |ctx| {
            let (wire, incoming) = Wire::new(init.stream, &init.pending);
            ctx.add_stream(incoming);
            AdminConnection {
                id: init.id,
                peer: init.peer,
                conn_time: init.conn_time,
                wire,
                supervisor: init.supervisor,
                _slot: init.slot,
            }
        })
    }
}

impl Actor for AdminConnection {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        debug!(
            admin_client = self.id,
            pid = self.peer.pid,
            "admin client disconnected"
        );
        self.supervisor.do_send(Disconnected {
            server: Server::Admin,
            id: self.id,
        });
    }
}

impl StreamHandler<Result<Frame, FrameError>> for AdminConnection {
    fn handle(&mut self, item: Result<Frame, FrameError>, ctx: &mut Self::Context) {
        let frame = match item {
            Ok(f) => f,
            Err(e) => {
                warn!(admin_client = self.id, pid = self.peer.pid, error = %e, "closing connection");
                return ctx.stop();
            }
        };
        let header = frame.header;
        match proto::route(frame, admin::PROGRAM, admin::VERSION) {
            Route::Call { .. } => {
                let e = RemoteError::rpc(format!("unknown procedure: {}", header.proc_));
                self.wire.send(proto::error_reply(&header, &e), ctx);
            }
            Route::Reject(e) => self.wire.send(proto::error_reply(&header, &e), ctx),
            Route::Ping => self.wire.send(proto::pong(), ctx),
            Route::Ignore => {}
            Route::Close(why) => {
                warn!(admin_client = self.id, "{why}; closing connection");
                ctx.stop();
            }
        }
    }
}

impl Handler<Quiesce> for AdminConnection {
    type Result = MessageResult<Quiesce>;
    fn handle(&mut self, m: Quiesce, ctx: &mut Self::Context) -> Self::Result {
        let state = ClientState {
            id: self.id,
            fd: self.wire.raw_fd(),
            conn_time: self.conn_time,
            session: None,
            pending: self.wire.pending(),
            peer_pid: Some(self.peer.pid),
        };
        let resume: oneshot::Receiver<()> = m.resume;
        ctx.wait(actix::fut::wrap_future(async move {
            let _ = resume.await;
        }));
        MessageResult(state)
    }
}
