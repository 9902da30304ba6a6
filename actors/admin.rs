//! Connections on the admin socket. The admin program's procedures are not served
//! yet: every call gets libvirt's "unknown procedure" error (which virt-admin shows
//! as "not supported"), keepalive works, and malformed input closes the connection.

use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use super::connection::Peer;
use super::gate::Slot;
use crate::protocol::{self as proto, admin, Frame, FrameCodec, FrameError, RemoteError, Route};

pub struct AdminConnection {
    id: u64,
    peer: Peer,
    writer: FramedWrite<Frame, OwnedWriteHalf, FrameCodec>,
    _slot: Slot,
}

impl AdminConnection {
    pub fn launch(id: u64, peer: Peer, stream: UnixStream, slot: Slot) -> Addr<Self> {
        AdminConnection::create(move |ctx| {
            let (read, write) = stream.into_split();
            ctx.add_stream(FramedRead::new(read, FrameCodec));
            AdminConnection {
                id,
                peer,
                writer: FramedWrite::new(write, FrameCodec, ctx),
                _slot: slot,
            }
        })
    }
}

impl Actor for AdminConnection {
    type Context = Context<Self>;
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
                self.writer.write(proto::error_reply(&header, &e));
            }
            Route::Reject(e) => self.writer.write(proto::error_reply(&header, &e)),
            Route::Ping => self.writer.write(proto::pong()),
            Route::Ignore => {}
            Route::Close(why) => {
                warn!(admin_client = self.id, "{why}; closing connection");
                ctx.stop();
            }
        }
    }
}

impl WriteHandler<FrameError> for AdminConnection {
    fn error(&mut self, err: FrameError, _: &mut Self::Context) -> Running {
        debug!(admin_client = self.id, error = %err, "write failed");
        Running::Stop
    }
}
