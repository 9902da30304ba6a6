//! The socket of one client, as its connection actor uses it: a framed reader the
//! actor consumes as a stream (shared, so a live upgrade can take the bytes of a
//! partly received request), and a writer that sends each reply at once and, if
//! the socket is full, holds the actor (`ctx.wait`) until the reply is out. So a
//! connection never reads its next request before its last reply is written, and
//! a live upgrade never starts with a reply half sent.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context as TaskContext, Poll};

use actix::prelude::*;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use tokio::net::UnixStream;
use tokio_util::codec::{Decoder, Encoder};
use tracing::debug;

use crate::crash::BusySlot;
use crate::protocol::{Frame, FrameCodec, FrameError};

/// How much one read() takes at most (into a buffer on the stack).
const READ_CHUNK: usize = 4096;

/// The read side of a connection. Bytes are read into a buffer on the stack
/// and only those of a packet not yet complete are kept, so an idle client
/// holds no read buffer at all. (A framed reader with a buffer of its own
/// per connection cost 1 KiB per idle client, and, since each decoded
/// packet still shared that buffer, a new 1 KiB allocation per request:
/// with many clients the allocator walked its bins for it on every call.)
struct Reader {
    /// Crash-safe mode: this connection's word in the busy table, set while
    /// a request is read but not answered.
    slot: Option<BusySlot>,
    /// Bytes of a packet not yet complete; empty (unallocated) between packets.
    partial: BytesMut,
    /// Set once the peer has closed (or the stream failed): nothing more comes.
    done: bool,
}

impl Reader {
    /// The next whole packet in `partial`; the buffer is let go once empty,
    /// so that it is freed with the last packet decoded from it.
    fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        let frame = FrameCodec.decode(&mut self.partial);
        if self.partial.is_empty() {
            self.partial = BytesMut::new();
        }
        frame
    }

    fn poll_frame(
        &mut self,
        stream: &UnixStream,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame, FrameError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.decode() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            // Polled again only once the actor has answered what it was
            // given: with nothing partly read, nothing is left unanswered.
            if self.partial.is_empty() {
                if let Some(s) = &self.slot {
                    s.idle();
                }
            }
            if let Some(slot) = &self.slot {
                if let Err(e) = ready!(mark_before_reading(stream, slot, cx)) {
                    self.done = true;
                    return Poll::Ready(Some(Err(FrameError::Io(e))));
                }
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let read = match ready!(poll_read(stream, &mut chunk, cx)) {
                Ok(read) => read,
                Err(e) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(FrameError::Io(e))));
                }
            };
            if read.is_empty() {
                // End of stream: a packet cut short is an error, as with a
                // framed reader.
                self.done = true;
                return Poll::Ready(match FrameCodec.decode_eof(&mut self.partial) {
                    Ok(Some(frame)) => Some(Ok(frame)),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                });
            }
            self.partial.extend_from_slice(read);
        }
    }
}

/// Reads what the socket has into `chunk` once it is readable; the bytes
/// read (none at the end of the stream). A shared reference does (tokio's
/// readiness calls take `&self`), so the stream needs no read half of its own.
///
/// Like tokio's own `poll_read`, a read that fills only part of `chunk` has
/// drained the socket and clears its readiness, so the next poll waits for
/// the reactor instead of trying a read that can only fail with EAGAIN (one
/// system call per request). tokio clears readiness only for a closure that
/// reports `WouldBlock`, which is what a short read reports to it; the bytes
/// are taken from `got`.
fn poll_read<'a>(
    stream: &UnixStream,
    chunk: &'a mut [MaybeUninit<u8>],
    cx: &mut TaskContext<'_>,
) -> Poll<std::io::Result<&'a [u8]>> {
    let len = chunk.len();
    loop {
        ready!(stream.poll_read_ready(cx))?;
        let mut got = None;
        let read = stream.try_io(tokio::io::Interest::READABLE, || {
            // SAFETY: read(2) of at most `len` bytes into `chunk`, which we
            // own, on the socket's open fd.
            let n = unsafe { libc::read(stream.as_raw_fd(), chunk.as_mut_ptr().cast(), len) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = n as usize;
            got = Some(n);
            if n > 0 && n < len {
                Err(std::io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (got, read) {
            (Some(n), _) => {
                // SAFETY: read(2) wrote these `n` bytes at the start of `chunk`.
                let read = unsafe { std::slice::from_raw_parts(chunk.as_ptr().cast::<u8>(), n) };
                return Poll::Ready(Ok(read));
            }
            (None, Err(e)) if e.kind() != std::io::ErrorKind::WouldBlock => {
                return Poll::Ready(Err(e))
            }
            // Readiness was stale: cleared by try_io; wait again.
            (None, _) => continue,
        }
    }
}

/// Crash-safe mode: waits until the socket has bytes (or its end) to read,
/// and marks the connection busy before a read takes them out of the socket.
/// A crash can then never consume a request unmarked, and an idle connection
/// (QEMU's, which never sends anything) is never marked: the bytes are
/// looked at first (`MSG_PEEK`), which takes nothing out.
fn mark_before_reading(
    stream: &UnixStream,
    slot: &BusySlot,
    cx: &mut TaskContext<'_>,
) -> Poll<std::io::Result<()>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut byte = 0u8;
            // SAFETY: recv(2) into one byte we own, on the socket's open fd;
            // MSG_PEEK leaves the byte in the socket.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
        match peeked {
            Ok(()) => {
                slot.busy();
                return Poll::Ready(Ok(()));
            }
            // Readiness was stale: cleared by try_io; wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

thread_local! {
    /// Where replies are encoded before they are written: one buffer for all
    /// the connections of the event thread, so an idle client holds none.
    static ENCODED: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(4096));
}

/// The socket and its read state, in one allocation shared by the actor's
/// [`Wire`] (which writes) and its [`Incoming`] stream (which reads): an idle
/// connection's largest piece of heap after its actor and tokio's own
/// registration (a split stream, a read half and a write half in `Rc`s of
/// their own cost three allocations, 224 B of heap per client).
struct Socket {
    stream: UnixStream,
    /// Borrowed only inside a poll of [`Incoming`] or a call of [`Wire`],
    /// never across an await: the event thread runs one at a time.
    reader: RefCell<Reader>,
    /// The socket's name in the crash-safe store (0: not parked).
    tag: u64,
}

pub struct Wire(Rc<Socket>);

/// The incoming packets of a [`Wire`], for `ctx.add_stream`.
pub struct Incoming(Rc<Socket>);

impl Stream for Incoming {
    type Item = Result<Frame, FrameError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.poll_frame(cx)
    }
}

impl Incoming {
    /// The next packet, as [`Stream::poll_next`] gives it, through a shared
    /// reference: the socket's read state has a cell of its own.
    pub fn poll_frame(&self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Frame, FrameError>>> {
        let socket = &*self.0;
        socket.reader.borrow_mut().poll_frame(&socket.stream, cx)
    }

    /// The socket's fd number.
    pub fn raw_fd(&self) -> RawFd {
        self.0.stream.as_raw_fd()
    }

    /// Bytes received but not yet forming a whole packet.
    pub fn pending(&self) -> Vec<u8> {
        self.0.reader.borrow().partial.to_vec()
    }
}

impl Wire {
    /// Takes `stream`; `pending` are bytes already received (live upgrade);
    /// `tag` names the socket in the crash-safe store (0: not parked).
    pub fn new(stream: UnixStream, pending: &[u8], tag: u64) -> (Self, Incoming) {
        let slot = (tag != 0).then(|| BusySlot::take(tag)).flatten();
        if let Some(s) = &slot {
            if !pending.is_empty() {
                s.busy();
            }
        }
        let socket = Rc::new(Socket {
            stream,
            reader: RefCell::new(Reader {
                slot,
                partial: BytesMut::from(pending),
                done: false,
            }),
            tag,
        });
        (Self(socket.clone()), Incoming(socket))
    }

    /// The socket's fd number.
    pub fn raw_fd(&self) -> RawFd {
        self.0.stream.as_raw_fd()
    }

    /// Decodes whole packets already in the buffer (carried over a live upgrade).
    /// A malformed one is left for the stream, which reports it.
    pub fn take_complete(&mut self) -> Vec<Frame> {
        let mut reader = self.0.reader.borrow_mut();
        let mut frames = Vec::new();
        while let Ok(Some(f)) = reader.decode() {
            frames.push(f);
        }
        frames
    }

    /// Bytes received but not yet forming a whole packet.
    pub fn pending(&self) -> Vec<u8> {
        self.0.reader.borrow().partial.to_vec()
    }

    /// Sends one packet. Usually one write() finishes it; otherwise the actor is
    /// held until the rest is written, and stopped if the peer is gone.
    pub fn send<A>(&mut self, frame: Frame, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        // Whatever this reply acknowledges is in the crash-safe store first.
        crate::crash::flush();
        let unsent = ENCODED.with_borrow_mut(|out| {
            out.clear();
            FrameCodec.encode(frame, out).ok()?;
            let mut written = 0;
            while written < out.len() {
                match self.0.stream.try_write(&out[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!(error = %e, "write failed; closing connection");
                        ctx.stop();
                        return None;
                    }
                }
            }
            (written < out.len()).then(|| Bytes::copy_from_slice(&out[written..]))
        });
        let Some(mut rest) = unsent else { return };
        let socket = self.0.clone();
        let flush = async move {
            while !rest.is_empty() {
                socket.stream.writable().await?;
                match socket.stream.try_write(&rest) {
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

impl Drop for Wire {
    /// The connection ends: its peer must see it closed at once, even while
    /// a reference to the socket stays parked in the crash-safe store, so the
    /// socket itself is shut down, not only our fd closed.
    fn drop(&mut self) {
        crate::crash::forget(self.0.tag);
        if self.0.tag != 0 {
            // SAFETY: shutdown(2) on the socket this wire owns, still open
            // (the stream closes it once its last reference goes, after
            // this); no memory is involved.
            unsafe { libc::shutdown(self.raw_fd(), libc::SHUT_RDWR) };
        }
    }
}
