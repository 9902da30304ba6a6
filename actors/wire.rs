//! The socket of one client, as its connection actor uses it: a framed reader the
//! actor consumes as a stream (shared, so a live upgrade can take the bytes of a
//! partly received request), and a writer that sends each reply at once and, if
//! the socket is full, holds the actor (`ctx.wait`) until the reply is out. So a
//! connection never reads its next request before its last reply is written, and
//! a live upgrade never starts with a reply half sent.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

use actix::prelude::*;
use bytes::{Buf, BytesMut};
use futures_util::Stream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::{Decoder, Encoder, FramedRead};
use tracing::debug;

use crate::protocol::{Frame, FrameCodec, FrameError};

type Reader = Rc<RefCell<FramedRead<OwnedReadHalf, FrameCodec>>>;

/// Initial read buffer per connection.
const READ_BUFFER: usize = 1024;

pub struct Wire {
    reader: Reader,
    writer: Rc<OwnedWriteHalf>,
    out: BytesMut,
    fd: RawFd,
}

/// The incoming packets of a [`Wire`], for `ctx.add_stream`.
pub struct Incoming(Reader);

impl Stream for Incoming {
    type Item = Result<Frame, FrameError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        // Single-threaded: the actor borrows the reader only between polls.
        Pin::new(&mut *self.0.borrow_mut()).poll_next(cx)
    }
}

impl Wire {
    /// Splits `stream`; `pending` are bytes already received (live upgrade).
    pub fn new(stream: UnixStream, pending: &[u8]) -> (Self, Incoming) {
        let fd = stream.as_raw_fd();
        let (read, write) = stream.into_split();
        // Requests are small (a REGISTER is 64 bytes); thousands of idle clients
        // should not cost 8 KiB each. The buffer grows for a larger packet.
        let mut framed = FramedRead::with_capacity(read, FrameCodec, READ_BUFFER);
        framed.read_buffer_mut().extend_from_slice(pending);
        let reader = Rc::new(RefCell::new(framed));
        let wire = Self {
            reader: reader.clone(),
            writer: Rc::new(write),
            out: BytesMut::with_capacity(256),
            fd,
        };
        (wire, Incoming(reader))
    }

    /// The socket's fd number (both halves share it).
    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// Decodes whole packets already in the buffer (carried over a live upgrade).
    /// A malformed one is left for the stream, which reports it.
    pub fn take_complete(&mut self) -> Vec<Frame> {
        let mut reader = self.reader.borrow_mut();
        let mut frames = Vec::new();
        while let Ok(Some(f)) = FrameCodec.decode(reader.read_buffer_mut()) {
            frames.push(f);
        }
        frames
    }

    /// Bytes received but not yet forming a whole packet.
    pub fn pending(&self) -> Vec<u8> {
        self.reader.borrow().read_buffer().to_vec()
    }

    /// Sends one packet. Usually one write() finishes it; otherwise the actor is
    /// held until the rest is written, and stopped if the peer is gone.
    pub fn send<A>(&mut self, frame: Frame, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        if FrameCodec.encode(frame, &mut self.out).is_err() {
            return;
        }
        loop {
            match self.writer.try_write(&self.out) {
                Ok(n) => {
                    self.out.advance(n);
                    if self.out.is_empty() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "write failed; closing connection");
                    self.out.clear();
                    ctx.stop();
                    return;
                }
            }
        }
        let mut rest = self.out.split().freeze();
        let writer = self.writer.clone();
        let flush = async move {
            while !rest.is_empty() {
                writer.writable().await?;
                match writer.try_write(&rest) {
                    Ok(n) => rest.advance(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Ok::<(), std::io::Error>(())
        };
        ctx.wait(
            actix::fut::wrap_future::<_, A>(flush).map(|r, _, ctx: &mut Context<A>| {
                if let Err(e) = r {
                    debug!(error = %e, "write failed; closing connection");
                    ctx.stop();
                }
            }),
        );
    }
}
