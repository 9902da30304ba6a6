//! One actor per lockspace: the only owner of that lockspace's lease fds. Every
//! acquire, release, create and delete for the lockspace is a message to it, so
//! the table needs no lock and its operations are serialized per lockspace.
//!
//! Lockspaces on local filesystems run on the event thread (a message costs well
//! under a microsecond there). Lockspaces whose syscalls may hang (NFS, CephFS,
//! GFS2, OCFS2, FUSE, and the default lockspace, whose files may live anywhere)
//! each run on a thread of their own: a hung mount stalls only its own lockspace.
//!
//! Those lockspaces also revalidate their leases every `lease_check_interval`
//! seconds, on their own thread: a lease found lost is logged at error level and,
//! with `lease_loss_action = "fence"`, its owners are fenced as on a disconnect:
//! each owner only if a connection of its own vouches for its pid.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::fence;
use super::fence_marks::FencingMarks;
use super::lease_check::LeaseCheck;
use super::lease_count::{LeaseCount, LeaseShare};
use super::vouched::VouchedOwners;
use crate::config::LossAction;
use crate::lockspace::lease::Storage;
use crate::lockspace::{LockError, LockSpace, Loss, OwnerPid};
use crate::names::lossy_utf8;
use crate::names::uuid_string;
use crate::protocol::inspect::LeaseView;
use crate::session::owner_label;
use crate::state::encoded::EncodedLockspace;
use crate::state::{LockspaceState, StateError};

/// How often a lockspace on network storage looks whether a check is due: a
/// reload that shortens `lease_check_interval` takes effect within this.
const CHECK_TICK: Duration = Duration::from_secs(1);

pub struct LockspaceActor {
    space: LockSpace,
    storage: Storage,
    /// This lockspace's part of the daemon-wide lease count (for `-t`).
    leases: LeaseShare,
    lease_check: LeaseCheck,
    vouched: VouchedOwners,
    fencing: FencingMarks,
    last_check: Instant,
}

/// The daemon-wide state a lockspace actor reads and changes.
#[derive(Clone, Default)]
pub struct LockspaceShared {
    pub leases: LeaseCount,
    pub lease_check: LeaseCheck,
    pub vouched: VouchedOwners,
    pub fencing: FencingMarks,
}

impl LockspaceActor {
    pub fn new(space: LockSpace, storage: Storage, shared: LockspaceShared) -> Self {
        Self {
            leases: shared.leases.share(space.len()),
            space,
            storage,
            lease_check: shared.lease_check,
            vouched: shared.vouched,
            fencing: shared.fencing,
            last_check: Instant::now(),
        }
    }

    /// Revalidates the leases if a check is due (see `crate::lockspace::revalidate`).
    fn tick(&mut self, _: &mut Context<Self>) {
        let Some(interval) = self.lease_check.interval() else {
            return;
        };
        // Half a tick of slack: ticks drift by a few ms, and a check due "just
        // after" this tick would otherwise wait a whole tick more, which with
        // two failing checks needed for a loss doubles the time to fence.
        if self.space.is_empty() || self.last_check.elapsed() + CHECK_TICK / 2 < interval {
            return;
        }
        self.last_check = Instant::now();
        let losses = self.space.revalidate();
        if !losses.is_empty() {
            self.lost(losses);
        }
    }

    /// Logs lost leases and runs the configured action on their owners.
    fn lost(&self, losses: Vec<Loss>) {
        let action = self.lease_check.action();
        let lockspace = lossy_utf8(self.space.key());
        let mut owners = BTreeSet::new();
        for loss in &losses {
            let resource = lossy_utf8(&loss.name);
            for &pid in loss.owners.iter().collect::<BTreeSet<_>>() {
                // What the owner registered when it acquired here.
                let details = self.space.owner_details(pid);
                let (name, uuid) = details.map_or(("unknown".into(), "unknown".into()), |o| {
                    (lossy_utf8(&o.name), uuid_string(&o.uuid))
                });
                tracing::error!(
                    lockspace = %lockspace,
                    resource = %resource,
                    path = %loss.path.display(),
                    owner = %name,
                    uuid = %uuid,
                    pid,
                    cause = %loss.cause,
                    action = action.name(),
                    "lease lost"
                );
                owners.insert((pid, owner_label(pid, details.map(|o| &**o))));
            }
        }
        if action != LossAction::Fence {
            return;
        }
        let me = std::process::id() as OwnerPid;
        for (pid, label) in owners {
            if pid == me {
                continue;
            }
            // The owner pid is only what a client sent in REGISTER. Like
            // libvirt, kill only a process the kernel vouched for: one with an
            // open connection of its own (SO_PEERCRED pid == owner pid).
            if !self.vouched.contains(pid) {
                tracing::error!(
                    lockspace = %lockspace,
                    pid,
                    owner = %label,
                    "owner not verified (no connection of its own); not fenced"
                );
                continue;
            }
            // None: already being fenced (its connection closed); once is enough.
            if let Some(fencing) = self.fencing.start(pid, &label) {
                fence::spawn(fencing);
            }
        }
    }

    /// Runs `op` on the table and keeps the daemon-wide lease count current.
    fn with_space<R>(&mut self, op: impl FnOnce(&mut LockSpace) -> R) -> R {
        let r = op(&mut self.space);
        self.leases.set(self.space.len());
        r
    }
}

impl Actor for LockspaceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Unbounded mailbox: each connection has at most one request in
        // flight, so the queue is bounded by the connections anyway. With
        // actix's default bound of 16, every sender past it parks (a lock and
        // a queued task record per request), a cost that grows with the
        // number of connections.
        ctx.set_mailbox_capacity(0);
        tracing::debug!(
            lockspace = %lossy_utf8(self.space.key()),
            storage = ?self.storage,
            "lockspace started"
        );
        // Only storage that can drop locks behind our back is revalidated;
        // this actor then runs on a thread of its own (see the supervisor).
        if matches!(self.storage, Storage::MayHang(_)) {
            ctx.run_interval(CHECK_TICK, Self::tick);
        }
    }
}

/// Take a lease on `name` for `owner` (ACQUIRE_RESOURCE).
#[derive(Message)]
#[rtype(result = "Result<(), LockError>")]
pub struct Acquire {
    pub name: Bytes,
    pub owner: OwnerPid,
    pub flags: u32,
    /// What the owner registered, kept for inspection.
    pub details: Option<std::sync::Arc<crate::protocol::lock::Owner>>,
}

impl Handler<Acquire> for LockspaceActor {
    type Result = Result<(), LockError>;
    fn handle(&mut self, m: Acquire, _: &mut Self::Context) -> Self::Result {
        self.with_space(|s| s.acquire_as(&m.name, m.owner, m.flags, m.details))
    }
}

/// Drop one ownership entry of `owner` on `name` (RELEASE_RESOURCE).
#[derive(Message)]
#[rtype(result = "Result<(), LockError>")]
pub struct Release {
    pub name: Bytes,
    pub owner: OwnerPid,
}

impl Handler<Release> for LockspaceActor {
    type Result = Result<(), LockError>;
    fn handle(&mut self, m: Release, _: &mut Self::Context) -> Self::Result {
        self.with_space(|s| s.release(&m.name, m.owner))
    }
}

/// Touch the file of `name` (CREATE_RESOURCE).
#[derive(Message)]
#[rtype(result = "Result<(), LockError>")]
pub struct CreateResource {
    pub name: Bytes,
}

impl Handler<CreateResource> for LockspaceActor {
    type Result = Result<(), LockError>;
    fn handle(&mut self, m: CreateResource, _: &mut Self::Context) -> Self::Result {
        self.space.create_resource(&m.name)
    }
}

/// Unlink the file of `name` (DELETE_RESOURCE).
#[derive(Message)]
#[rtype(result = "Result<(), LockError>")]
pub struct DeleteResource {
    pub name: Bytes,
}

impl Handler<DeleteResource> for LockspaceActor {
    type Result = Result<(), LockError>;
    fn handle(&mut self, m: DeleteResource, _: &mut Self::Context) -> Self::Result {
        self.space.delete_resource(&m.name)
    }
}

/// Release everything `owner` holds here (its connection closed).
/// Answers with the names released.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseOwner {
    pub owner: OwnerPid,
    /// Where the names go. Sent with `do_send`, not actix's `send`: actix
    /// skips a message whose `send` future was dropped, and a closing
    /// connection stops waiting for a lockspace on a hung mount (it fences
    /// the owner instead); the release must still run when the mount recovers.
    pub reply: oneshot::Sender<Vec<Vec<u8>>>,
}

impl Handler<ReleaseOwner> for LockspaceActor {
    type Result = ();
    fn handle(&mut self, m: ReleaseOwner, _: &mut Self::Context) {
        let released = self.with_space(|s| s.release_owner(m.owner));
        // Nobody may wait any more (see above): the release stands anyway.
        let _ = m.reply.send(released);
    }
}

/// Release every lease (daemon shutdown): AUTOCREATE files are removed, as libvirt
/// does when it frees its lockspaces. Answers with the names released.
#[derive(Message)]
#[rtype(result = "Vec<Vec<u8>>")]
pub struct ReleaseAll;

impl Handler<ReleaseAll> for LockspaceActor {
    type Result = MessageResult<ReleaseAll>;
    fn handle(&mut self, _: ReleaseAll, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.with_space(LockSpace::release_all))
    }
}

/// Live upgrade: hand over the table (fds by number) and hold still until
/// `resume` fires (exec failed) or the process image is replaced.
#[derive(Message)]
#[rtype(result = "Frozen")]
pub struct Freeze {
    pub resume: oneshot::Receiver<()>,
    /// Encode the state here (our own snapshot alone is written) rather than
    /// hand it over as it is (libvirt's JSON is written too).
    pub encode: bool,
}

/// A frozen lockspace's state, as [`Freeze`] asked for it.
pub enum Frozen {
    State(LockspaceState),
    Encoded(Result<EncodedLockspace, StateError>),
}

impl Handler<Freeze> for LockspaceActor {
    type Result = MessageResult<Freeze>;
    fn handle(&mut self, m: Freeze, ctx: &mut Self::Context) -> Self::Result {
        let t = Instant::now();
        self.space.close_spares();
        let state = if m.encode {
            Frozen::Encoded(self.space.encode_state())
        } else {
            Frozen::State(self.space.state())
        };
        tracing::debug!(
            leases = self.space.len(),
            ms = t.elapsed().as_secs_f64() * 1e3,
            "frozen"
        );
        ctx.wait(actix::fut::wrap_future(async move {
            let _ = m.resume.await;
        }));
        MessageResult(state)
    }
}

/// Inspection: every lease held here, with its owners.
#[derive(Message)]
#[rtype(result = "Vec<LeaseView>")]
pub struct Inspect;

impl Handler<Inspect> for LockspaceActor {
    type Result = MessageResult<Inspect>;
    fn handle(&mut self, _: Inspect, _: &mut Self::Context) -> Self::Result {
        MessageResult(crate::lockspace::inspect::leases(&self.space))
    }
}
