//! One actor per lock-protocol client. It decodes packets, applies the session
//! rules, routes each lock operation to the lockspace actor that owns the path,
//! and writes replies in order. Requests on one connection are handled strictly
//! one at a time (`ctx.wait`), as libvirt does; different connections proceed
//! concurrently.
//!
//! When the connection closes and its peer is the registered owner (QEMU's own
//! connection), the owner's leases are released in every lockspace and, if it held
//! any, the owner is fenced: a VM must not run on without its leases.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::answered::{Answered, LockAnswer, LockRequest};
use super::fence;
use super::fence_marks::FencingMarks;
use super::lockspace::{
    Acquire, CreateResource, DeleteResource, LockspaceActor, Release, ReleaseOwner,
};
use super::lockspace_table::LockspaceTable;
use super::releases::PendingReleases;
use super::rpc::{self, LinkInit, Quiesce, RpcActor, RpcLink};
use super::supervisor::{OpenError, OpenLockspace, Server};
use super::vouched::{Vouched, VouchedOwners};
use crate::lockspace::OwnerPid;
use crate::names::lossy_utf8;
use crate::protocol::error::{code, domain};
use crate::protocol::lock::{self, LockCall, Procedure};
use crate::protocol::{Frame, FrameError, Header, RemoteError};
use crate::session::{OwnerLabel, Session};
use crate::state::{OwnerState, SessionState};

/// How long a closed owner connection waits for each lockspace to release the
/// owner's leases before it fences the owner anyway.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

/// Everything a lock connection starts with.
pub struct ConnectionInit {
    pub link: LinkInit,
    pub shared: ConnectionShared,
    /// Restored session (live upgrade).
    pub session: Session,
}

/// The daemon-wide state a lock connection reads and changes.
#[derive(Clone, Default)]
pub struct ConnectionShared {
    pub lockspaces: LockspaceTable,
    pub releases: PendingReleases,
    pub vouched: VouchedOwners,
    pub fencing: FencingMarks,
}

/// One lock client. Kept small: it lives inline in the actor's task, which
/// tokio allocates in steps of 128 B (its cache-line alignment); the owner's
/// details and its log label live in the session's shared `Owner`.
pub struct Connection {
    link: RpcLink,
    session: Session,
    shared: ConnectionShared,
    /// Set once the release and fencing of a close have been started (by [`Close`]).
    closed: bool,
    /// Held while the registered owner is this connection's own peer: only
    /// such owners are fenced when a lease of theirs is lost.
    vouched: Option<Vouched>,
}

impl Connection {
    pub fn launch(init: ConnectionInit) -> Addr<Self> {
        RpcLink::launch(init.link, move |link| {
            let mut conn = Connection {
                link,
                session: init.session,
                shared: init.shared,
                closed: false,
                vouched: None,
            };
            // A session restored after a live upgrade vouches as before.
            conn.vouch();
            conn
        })
    }

    fn reply(&mut self, call: &Header, result: Result<(), RemoteError>, ctx: &mut Context<Self>) {
        self.link.answer(call, result.map(|()| Bytes::new()), ctx);
    }

    /// Runs `op` and replies with its result before this connection reads its next
    /// request.
    fn reply_when<F>(&mut self, call: Header, op: F, ctx: &mut Context<Self>)
    where
        F: Future<Output = Result<(), RemoteError>> + 'static,
    {
        rpc::answer_when(
            self,
            call,
            async move { op.await.map(|()| Bytes::new()) },
            ctx,
        );
    }

    /// Describes the registered owner for log lines, formatted only when a
    /// line is written.
    fn label(&self) -> Label<'_> {
        Label(self.session.owner().map(|o| OwnerLabel {
            pid: o.pid as OwnerPid,
            owner: Some(o),
        }))
    }

    /// The registered owner if the kernel vouches for it: the connection's
    /// SO_PEERCRED pid is the owner pid (libvirt's test before it kills).
    fn own_owner(&self) -> Option<OwnerPid> {
        self.session
            .owner_pid()
            .filter(|&owner| self.link.peer().pid > 0 && owner == self.link.peer().pid)
    }

    /// Holds a [`Vouched`] guard exactly while this connection is its owner's own.
    fn vouch(&mut self) {
        self.vouched = self.own_owner().map(|pid| self.shared.vouched.vouch(pid));
    }

    fn dispatch(&mut self, call: Header, args: LockCall, ctx: &mut Context<Self>) {
        if let Err(e) = self.session.admit(&args) {
            return self.reply(&call, Err(e), ctx);
        }
        // admit() guarantees an owner for every call below except these three.
        let owner = self.session.owner_pid().unwrap_or(0);
        match args {
            LockCall::Register { owner, .. } => {
                let r = self.session.register(owner);
                if r.is_ok() {
                    self.vouch();
                    let details = self.session.shared_owner().cloned();
                    self.link.entry().update(|e| e.owner = details);
                    crate::failpoint::crash_point("register:before-journal");
                    self.link.journal(Some(self.session_state()));
                    crate::failpoint::crash_point("register:journaled");
                    debug!(client = self.link.id(), owner = %self.label(), "registered");
                }
                self.reply(&call, r, ctx)
            }
            LockCall::Restrict { .. } => {
                self.session.restrict();
                self.link.entry().update(|e| e.restricted = true);
                self.link.journal(Some(self.session_state()));
                self.reply(&call, Ok(()), ctx)
            }
            LockCall::New { path, .. } if path.is_empty() => self.reply(
                &call,
                Err(RemoteError::new(
                    code::OPERATION_INVALID,
                    domain::RPC,
                    "the default lockspace already exists",
                )),
                ctx,
            ),
            LockCall::New { path, .. } => self.open_lockspace(call, path.to_vec(), true, ctx),
            LockCall::CreateLockspace { path } => {
                if self.shared.lockspaces.contains(&path) {
                    return self.reply(&call, Ok(()), ctx);
                }
                self.open_lockspace(call, path.to_vec(), false, ctx)
            }
            LockCall::CreateResource { path, name, .. } => {
                self.in_lockspace(call, &path, CreateResource { name }, ctx)
            }
            LockCall::DeleteResource { path, name, .. } => {
                self.in_lockspace(call, &path, DeleteResource { name }, ctx)
            }
            LockCall::Acquire { path, name, flags } => {
                let acquire = Acquire {
                    name,
                    owner,
                    flags,
                    details: self.session.shared_owner().cloned(),
                };
                let Some(answer) = self.send_to_lockspace(&call, &path, acquire, ctx) else {
                    return;
                };
                // One combinator over the answer, no async block: the future
                // is boxed per request, and each async layer around it would
                // store it again.
                ctx.wait(answer.into_actor(self).map(move |result, act, ctx| {
                    let result = flatten(result);
                    match &result {
                        Ok(()) => debug!(lockspace = %lossy_utf8(&path), owner = %act.label(), flags, "acquired"),
                        Err(e) => info!(lockspace = %lossy_utf8(&path), owner = %act.label(), flags, error = %e.message, "acquire refused"),
                    }
                    act.reply(&call, result, ctx)
                }))
            }
            LockCall::Release { path, name, .. } => {
                self.in_lockspace(call, &path, Release { name, owner }, ctx)
            }
        }
    }

    /// Sends `msg` to the lockspace actor of `path`; replies "does not exist"
    /// if there is none.
    fn send_to_lockspace<M>(
        &mut self,
        call: &Header,
        path: &[u8],
        msg: M,
        ctx: &mut Context<Self>,
    ) -> Option<oneshot::Receiver<LockAnswer>>
    where
        M: LockRequest,
        LockspaceActor: Handler<Answered<M>>,
    {
        let answer = self.shared.lockspaces.request(path, msg);
        if answer.is_none() {
            self.reply(
                call,
                Err(RemoteError::new(
                    code::INTERNAL_ERROR,
                    domain::RPC,
                    format!("Lockspace for path {} does not exist", lossy_utf8(path)),
                )),
                ctx,
            );
        }
        answer
    }

    fn in_lockspace<M>(&mut self, call: Header, path: &[u8], msg: M, ctx: &mut Context<Self>)
    where
        M: LockRequest,
        LockspaceActor: Handler<Answered<M>>,
    {
        if let Some(answer) = self.send_to_lockspace(&call, path, msg, ctx) {
            ctx.wait(
                answer
                    .into_actor(self)
                    .map(move |result, act, ctx| act.reply(&call, flatten(result), ctx)),
            );
        }
    }

    fn open_lockspace(
        &mut self,
        call: Header,
        path: Vec<u8>,
        must_be_new: bool,
        ctx: &mut Context<Self>,
    ) {
        let op = self
            .link
            .supervisor()
            .send(OpenLockspace { path, must_be_new });
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
}

impl RpcActor for Connection {
    fn link(&mut self) -> &mut RpcLink {
        &mut self.link
    }

    fn program(_: &Header) -> (u32, u32) {
        (lock::PROGRAM, lock::VERSION)
    }

    fn call(&mut self, header: Header, payload: Bytes, ctx: &mut Context<Self>) {
        let Some(procedure) = Procedure::from_wire(header.proc_) else {
            let e = RemoteError::rpc(format!("unknown procedure: {}", header.proc_));
            return self.reply(&header, Err(e), ctx);
        };
        match LockCall::decode(procedure, &payload) {
            Ok(args) => self.dispatch(header, args, ctx),
            Err(e) => {
                debug!(client = self.link.id(), error = %e, "undecodable payload");
                self.reply(
                    &header,
                    Err(RemoteError::rpc("Unable to decode message payload")),
                    ctx,
                )
            }
        }
    }
}

/// The registered owner's [`OwnerLabel`], or `unregistered`.
struct Label<'a>(Option<OwnerLabel<'a>>);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(label) => label.fmt(f),
            None => f.write_str("unregistered"),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(
        code::INTERNAL_ERROR,
        domain::LOCKING,
        format!("lockspace unavailable: {e}"),
    )
}

/// A lockspace's answer; none if the lockspace actor is gone.
fn flatten(r: Result<LockAnswer, oneshot::error::RecvError>) -> Result<(), RemoteError> {
    match r {
        Ok(r) => r.map_err(RemoteError::from),
        Err(_) => Err(unavailable("its actor has stopped")),
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let peer = self.link.peer();
        debug!(
            client = self.link.id(),
            pid = peer.pid,
            uid = peer.uid,
            "client connected"
        );
        rpc::replay_pending(self, ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        rpc::stopped(&self.link);
        if !self.closed {
            actix::spawn(self.release_and_fence());
        }
    }
}

impl Connection {
    /// What closing this connection means (spec §5.3). Only the owner's own
    /// connection (QEMU's) releases: libvirtd's short-lived connections register
    /// the QEMU pid too and must not. If the owner held anything, it is fenced.
    fn release_and_fence(&mut self) -> impl Future<Output = ()> + 'static {
        self.closed = true;
        let owner = self.own_owner();
        // Still vouched for until its fencing has started: a lease loss seen
        // meanwhile finds the fencing instead of an unverified owner.
        let vouched = self.vouched.take();
        let label = self.label().to_string();
        let shared = self.shared.clone();
        // Counted from now, not from when the task first runs: a live upgrade
        // must see that this release is still to come.
        let releasing = owner.map(|_| shared.releases.start());
        let id = self.link.id();
        crate::failpoint::crash_point("close:start");
        async move {
            let Some(owner) = owner else {
                rpc::journal_gone(Server::Lock, id);
                return;
            };
            let mut released = 0;
            let mut failed = false;
            // All lockspaces at once: one on a hung mount must not hold up the
            // releases in the others. Nor may it hold up the fencing: a
            // lockspace that has not answered in time may still hold this
            // owner's lease (its release stays queued and runs when the mount
            // recovers), so it counts as a failed release, which fences, as
            // libvirt does when a release fails.
            let replies =
                futures_util::future::join_all(shared.lockspaces.all().into_iter().map(|ls| {
                    let (reply, released) = oneshot::channel();
                    ls.do_send(ReleaseOwner { owner, reply });
                    tokio::time::timeout(RELEASE_PATIENCE, released)
                }))
                .await;
            for reply in replies {
                match reply {
                    Ok(Ok(names)) => {
                        for n in &names {
                            info!(owner = %label, resource = %lossy_utf8(n), "lease released on disconnect");
                        }
                        released += names.len();
                    }
                    Ok(Err(_)) => failed = true,
                    Err(_) => {
                        warn!(
                            owner = %label,
                            "a lockspace did not answer the release within {RELEASE_PATIENCE:?} \
                             (hung filesystem?); fencing the owner, the release runs when it answers"
                        );
                        failed = true;
                    }
                }
            }
            // The mark is set before `releasing` ends, so a live upgrade
            // waiting for releases sees it and carries the fencing over.
            let fencing = (released > 0 || failed)
                .then(|| shared.fencing.start(owner, &label))
                .flatten();
            drop(releasing);
            drop(vouched);
            // Gone only now: a crash before this finds the client still there,
            // its socket shut down, and closes it again, releases included.
            crate::failpoint::crash_point("close:released");
            rpc::journal_gone(Server::Lock, id);
            if let Some(fencing) = fencing {
                fence::run(fencing).await;
            }
        }
    }

    /// This client's session as a live upgrade carries it over.
    fn session_state(&self) -> SessionState {
        SessionState {
            restricted: self.session.is_restricted(),
            owner: self.session.owner().map(|o| OwnerState {
                uuid: o.uuid,
                name: o.name.clone(),
                id: o.id,
                pid: o.pid,
            }),
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
        let done = self.release_and_fence();
        ctx.stop();
        Box::pin(done)
    }
}

impl Handler<Quiesce> for Connection {
    type Result = MessageResult<Quiesce>;
    fn handle(&mut self, m: Quiesce, ctx: &mut Self::Context) -> Self::Result {
        m.hold(self.link.state(Some(self.session_state())), ctx)
    }
}

impl StreamHandler<Result<Frame, FrameError>> for Connection {
    fn handle(&mut self, item: Result<Frame, FrameError>, ctx: &mut Self::Context) {
        rpc::incoming(self, item, ctx);
    }
}
