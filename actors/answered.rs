//! A lock request sent with its own reply channel. Each ACQUIRE and RELEASE
//! is a message to its lockspace actor; actix's `send` would hand back a
//! future that also carries a timer slot and a copy of the message in case
//! the mailbox is full (216-264 bytes boxed per request, which glibc's malloc
//! keeps out of its fast bins). With the answer on a oneshot of our own the
//! boxed wait is about a third of that, and the mailbox (unbounded, see
//! `lockspace`) never hands the message back.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::lockspace::{Acquire, CreateResource, DeleteResource, LockspaceActor, Release};
use crate::lockspace::LockError;

/// What a lockspace answers to a lock request.
pub type LockAnswer = Result<(), LockError>;

/// `msg`, to be answered on `reply`.
pub struct Answered<M> {
    pub msg: M,
    pub reply: oneshot::Sender<LockAnswer>,
}

impl<M> Message for Answered<M> {
    type Result = ();
}

/// The lock requests that may be sent as [`Answered`].
pub trait LockRequest: Message<Result = LockAnswer> + Send + 'static {}

/// One handler per request type (a blanket impl over every `M` sends the
/// compiler's trait search into `Answered<Answered<..>>`).
macro_rules! answered {
    ($($request:ty),*) => {$(
        impl LockRequest for $request {}

        impl Handler<Answered<$request>> for LockspaceActor {
            type Result = ();

            fn handle(&mut self, a: Answered<$request>, ctx: &mut Self::Context) {
                let answer = <Self as Handler<$request>>::handle(self, a.msg, ctx);
                // The requester may be gone (its connection closed meanwhile):
                // nobody waits for the answer then, and the change stands.
                let _ = a.reply.send(answer);
            }
        }
    )*};
}

answered!(Acquire, Release, CreateResource, DeleteResource);
