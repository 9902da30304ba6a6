//! One actor per lockspace: the only owner of that lockspace's lease fds. Every
//! acquire, release, create and delete for the lockspace is a message to it, so
//! the table needs no lock and its operations are serialized per lockspace.
//!
//! Lockspaces on local filesystems run on the event thread (a message costs well
//! under a microsecond there). Lockspaces whose syscalls may hang (NFS, CephFS,
//! GFS2, OCFS2, FUSE, and the default lockspace, whose files may live anywhere)
//! each run on a thread of their own: a hung mount stalls only its own lockspace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::lockspace::lease::Storage;
use crate::lockspace::{LockError, LockSpace, OwnerPid};
use crate::protocol::inspect::LeaseView;
use crate::state::LockspaceState;

pub struct Lockspace {
    space: LockSpace,
    storage: Storage,
    /// The daemon-wide lease count (for `-t`): this lockspace's share is `counted`.
    leases: Arc<AtomicUsize>,
    counted: usize,
}

impl Lockspace {
    pub fn new(space: LockSpace, storage: Storage, leases: Arc<AtomicUsize>) -> Self {
        let counted = space.len();
        leases.fetch_add(counted, Ordering::AcqRel);
        Self {
            space,
            storage,
            leases,
            counted,
        }
    }

    /// Runs `op` on the table and keeps the daemon-wide lease count current.
    fn with_space<R>(&mut self, op: impl FnOnce(&mut LockSpace) -> R) -> R {
        let r = op(&mut self.space);
        let now = self.space.len();
        if now > self.counted {
            self.leases.fetch_add(now - self.counted, Ordering::AcqRel);
        } else {
            self.leases.fetch_sub(self.counted - now, Ordering::AcqRel);
        }
        self.counted = now;
        r
    }
}

impl Actor for Lockspace {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(
            lockspace = %String::from_utf8_lossy(self.space.key()),
            storage = ?self.storage,
            "lockspace started"
        );
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

impl Handler<Acquire> for Lockspace {
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

impl Handler<Release> for Lockspace {
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

impl Handler<CreateResource> for Lockspace {
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

impl Handler<DeleteResource> for Lockspace {
    type Result = Result<(), LockError>;
    fn handle(&mut self, m: DeleteResource, _: &mut Self::Context) -> Self::Result {
        self.space.delete_resource(&m.name)
    }
}

/// Release everything `owner` holds here (its connection closed).
/// Answers with the names released.
#[derive(Message)]
#[rtype(result = "Vec<Vec<u8>>")]
pub struct ReleaseOwner {
    pub owner: OwnerPid,
}

impl Handler<ReleaseOwner> for Lockspace {
    type Result = MessageResult<ReleaseOwner>;
    fn handle(&mut self, m: ReleaseOwner, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.with_space(|s| s.release_owner(m.owner)))
    }
}

/// Release every lease (daemon shutdown): AUTOCREATE files are removed, as libvirt
/// does when it frees its lockspaces. Answers with the names released.
#[derive(Message)]
#[rtype(result = "Vec<Vec<u8>>")]
pub struct ReleaseAll;

impl Handler<ReleaseAll> for Lockspace {
    type Result = MessageResult<ReleaseAll>;
    fn handle(&mut self, _: ReleaseAll, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.with_space(LockSpace::release_all))
    }
}

/// Live upgrade: hand over the table (fds by number) and hold still until
/// `resume` fires (exec failed) or the process image is replaced.
#[derive(Message)]
#[rtype(result = "LockspaceState")]
pub struct Freeze {
    pub resume: oneshot::Receiver<()>,
}

impl Handler<Freeze> for Lockspace {
    type Result = MessageResult<Freeze>;
    fn handle(&mut self, m: Freeze, ctx: &mut Self::Context) -> Self::Result {
        let state = self.space.state();
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

impl Handler<Inspect> for Lockspace {
    type Result = MessageResult<Inspect>;
    fn handle(&mut self, _: Inspect, _: &mut Self::Context) -> Self::Result {
        MessageResult(crate::lockspace::inspect::leases(&self.space))
    }
}
