//! Where each connection stands, as a live upgrade reads it without a message
//! to the connection: one hold that stops every connection from taking its next
//! request (or its hang-up) off the socket, and per connection whether it is
//! between requests. A connection between requests hands over only its socket
//! and the bytes of a request not yet complete, which are read here directly;
//! only one in the middle of a request is asked (`rpc::Quiesce`), and answers
//! once its reply is written. With thousands of idle clients this spares the
//! upgrade a message, a wake-up and an answer per client.
//!
//! Everything here lives on the daemon's event thread (the supervisor and every
//! connection run there): plain cells, no locks.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use futures_util::Stream;

use super::wire::Incoming;
use crate::protocol::{Frame, FrameError};

/// The one hold over every connection's reading.
#[derive(Default)]
struct ReadHold {
    held: Cell<bool>,
    /// Requests taken by all connections so far: a clock that ticks per
    /// request, for which connections were active last.
    requests: Cell<u64>,
    /// Connections that wanted to read while held, woken at release.
    waiting: RefCell<Vec<Waker>>,
}

/// One connection as the upgrade sees it; kept in the connection's row of
/// the client table (`clients::ClientRecord::link`), so that the hold reads
/// one table, and a client costs no second one.
pub struct LinkView {
    /// A request was taken off the socket and is not known answered yet: the
    /// connection's stream has not been polled again since.
    busy: Cell<bool>,
    /// [`ReadHold::requests`] when it last took one.
    last: Cell<u64>,
    /// Read through a shared reference (see [`Incoming::poll_frame`]): no
    /// cell of its own, so that a view is 40 bytes, one per client.
    incoming: Incoming,
}

/// The hold over every connection's reading.
#[derive(Clone, Default)]
pub struct Standing {
    hold: Rc<ReadHold>,
}

impl std::fmt::Debug for LinkView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkView")
            .field("busy", &self.busy.get())
            .finish_non_exhaustive()
    }
}

/// A connection counts as active if it took a request among the last this
/// many (all connections together): a client in a request loop, whose next
/// request is likely waiting once the new image runs.
const RECENT_REQUESTS: u64 = 4096;

/// Where one connection stands at the hold.
pub enum Stand {
    /// Between requests: its fd, the bytes received but not yet forming a
    /// whole request, and whether it was active lately.
    Idle {
        fd: RawFd,
        pending: Vec<u8>,
        active: bool,
    },
    /// In the middle of a request: to be asked.
    Busy,
}

impl Standing {
    /// Puts a new connection's packets behind the hold. `replay` says whether
    /// it starts with bytes carried over a live upgrade, which it handles as
    /// it starts, not through the stream: it counts as busy until then. The
    /// view goes into the connection's client-table row.
    pub fn register(&self, incoming: Incoming, replay: bool) -> (HeldIncoming, Rc<LinkView>) {
        let view = Rc::new(LinkView {
            busy: Cell::new(replay),
            last: Cell::new(0),
            incoming,
        });
        (
            HeldIncoming {
                view: view.clone(),
                hold: self.hold.clone(),
            },
            view,
        )
    }

    /// Stops every connection from reading. Nothing a connection between
    /// requests holds changes until [`Standing::release`], as long as no
    /// message reaches it (the supervisor defers closes).
    pub fn hold(&self) {
        self.hold.held.set(true);
    }

    /// Where `view`'s connection stands at the hold.
    pub fn stand(&self, view: &LinkView) -> Stand {
        let recent = self.hold.requests.get().saturating_sub(RECENT_REQUESTS);
        if view.busy.get() {
            Stand::Busy
        } else {
            Stand::Idle {
                fd: view.incoming.raw_fd(),
                pending: view.incoming.pending(),
                active: view.last.get() > recent,
            }
        }
    }

    /// Lets every connection read again (the upgrade did not happen).
    pub fn release(&self) {
        self.hold.held.set(false);
        for w in self.hold.waiting.take() {
            w.wake();
        }
    }
}

/// A connection's packets, behind the hold. Polled again only once the
/// connection has answered what it was last given (see `wire`): that is when
/// it is between requests.
pub struct HeldIncoming {
    view: Rc<LinkView>,
    hold: Rc<ReadHold>,
}

impl Stream for HeldIncoming {
    type Item = Result<Frame, FrameError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.view.busy.set(false);
        if self.hold.held.get() {
            self.hold.waiting.borrow_mut().push(cx.waker().clone());
            return Poll::Pending;
        }
        let next = self.view.incoming.poll_frame(cx);
        if next.is_ready() {
            // A request, or the end of the connection: either is handled
            // before the stream is polled again.
            self.view.busy.set(true);
            let now = self.hold.requests.get() + 1;
            self.hold.requests.set(now);
            self.view.last.set(now);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    use super::*;
    use crate::actors::wire::Wire;

    /// A whole packet: length word and header, no payload.
    fn packet() -> Vec<u8> {
        let mut p = 28u32.to_be_bytes().to_vec();
        for word in [0x0EA7_BEEFu32, 1, 1, 0, 7, 0] {
            p.extend(word.to_be_bytes());
        }
        p
    }

    fn idle_pending(stand: Stand) -> Option<usize> {
        match stand {
            Stand::Idle { pending, .. } => Some(pending.len()),
            Stand::Busy => None,
        }
    }

    /// Real sockets: a held connection reads nothing until released; it
    /// stands busy from the packet it took until it is polled again, and
    /// idle with whatever it has partly received.
    #[test]
    fn a_held_connection_reads_nothing_and_stands_as_its_last_poll_left_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (ours, mut peer) = UnixStream::pair().unwrap();
            let (_wire, incoming) = Wire::new(ours, &[], 0);
            let standing = Standing::default();
            let (mut held, view) = standing.register(incoming, false);
            assert_eq!(idle_pending(standing.stand(&view)), Some(0));

            let p = packet();
            peer.write_all(&p[..10]).await.unwrap();
            tokio::task::yield_now().await;
            assert!(held.next().now_or_never().is_none(), "half a packet");
            assert_eq!(idle_pending(standing.stand(&view)), Some(10));

            standing.hold();
            peer.write_all(&p[10..]).await.unwrap();
            tokio::task::yield_now().await;
            assert!(held.next().now_or_never().is_none(), "read while held");
            assert_eq!(idle_pending(standing.stand(&view)), Some(10));

            standing.release();
            let frame = held.next().await.expect("a packet").expect("a whole one");
            assert_eq!(frame.header.serial, 7);
            assert_eq!(idle_pending(standing.stand(&view)), None, "busy");
            // Polled again: its answer is written, it is between requests.
            assert!(held.next().now_or_never().is_none());
            assert_eq!(idle_pending(standing.stand(&view)), Some(0));
        });
    }
}
