//! The running daemon as actors: a [`supervisor::Supervisor`] that owns the
//! listeners and the lockspace table, one [`connection::Connection`] per lock
//! client and one [`admin::AdminConnection`] per admin client (both on the
//! [`rpc`] skeleton), and one [`lockspace::LockspaceActor`] per lockspace (the
//! only holder of lease fds). Each piece of state they share has a file of its
//! own: [`lockspace_table`], [`lease_count`], [`releases`], [`fence_marks`],
//! [`vouched`], [`lease_check`] and [`deferred_shutdown`].

pub mod accept;
pub mod admin;
pub mod admin_state;
pub mod adopt;
pub mod answered;
pub mod clients;
pub mod connection;
pub mod deferred_shutdown;
pub mod fence;
pub mod fence_marks;
pub mod gate;
pub mod handoff;
pub mod inspect;
pub mod lease_check;
pub mod lease_count;
pub mod lockspace;
pub mod lockspace_table;
pub mod releases;
pub mod rpc;
pub mod standing;
pub mod supervisor;
pub mod vouched;
pub mod wire;
