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
use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use futures_util::{Stream, StreamExt};

use super::supervisor::Server;
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

/// One connection as the upgrade sees it.
struct LinkView {
    /// A request was taken off the socket and is not known answered yet: the
    /// connection's stream has not been polled again since.
    busy: Cell<bool>,
    /// [`ReadHold::requests`] when it last took one.
    last: Cell<u64>,
    /// The socket's fd number (kept here: the hold reads thousands).
    fd: RawFd,
    incoming: RefCell<Incoming>,
}

/// Every registered connection, by server and id: in the client table's
/// order, so that the hold reads both side by side.
type Links = RefCell<BTreeMap<(Server, u64), Rc<LinkView>>>;

/// Every connection of both servers, and the hold over their reading.
#[derive(Clone, Default)]
pub struct Standing {
    hold: Rc<ReadHold>,
    links: Rc<Links>,
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
    /// it starts, not through the stream: it counts as busy until then.
    pub fn register(
        &self,
        server: Server,
        id: u64,
        incoming: Incoming,
        replay: bool,
    ) -> (HeldIncoming, Registration) {
        let view = Rc::new(LinkView {
            busy: Cell::new(replay),
            last: Cell::new(0),
            fd: incoming.raw_fd(),
            incoming: RefCell::new(incoming),
        });
        self.links.borrow_mut().insert((server, id), view.clone());
        (
            HeldIncoming {
                view,
                hold: self.hold.clone(),
            },
            Registration {
                links: Rc::downgrade(&self.links),
            },
        )
    }

    /// Stops every connection from reading. Nothing a connection between
    /// requests holds changes until [`Standing::release`], as long as no
    /// message reaches it (the supervisor defers closes).
    pub fn hold(&self) {
        self.hold.held.set(true);
    }

    /// Calls `f` with where each connection stands, in (server, id) order.
    pub fn each(&self, mut f: impl FnMut(Server, u64, Stand)) {
        let recent = self.hold.requests.get().saturating_sub(RECENT_REQUESTS);
        for (&(server, id), view) in self.links.borrow().iter() {
            let stand = if view.busy.get() {
                Stand::Busy
            } else {
                Stand::Idle {
                    fd: view.fd,
                    pending: view.incoming.borrow().pending(),
                    active: view.last.get() > recent,
                }
            };
            f(server, id, stand);
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
        let next = self.view.incoming.borrow_mut().poll_next_unpin(cx);
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

/// A connection's place in [`Standing`]; gone with the connection.
pub struct Registration {
    links: std::rc::Weak<Links>,
}

impl Registration {
    /// The connection `(server, id)` stopped: it hands over nothing any more.
    /// (The key is the connection's own, not kept here a second time: every
    /// byte of a connection actor counts, see `rpc::RpcLink`.)
    pub fn remove(&self, server: Server, id: u64) {
        if let Some(links) = self.links.upgrade() {
            links.borrow_mut().remove(&(server, id));
        }
    }
}
