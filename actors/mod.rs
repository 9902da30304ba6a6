//! The running daemon as actors: a [`supervisor::Supervisor`] that owns the
//! listeners and the lockspace registry, one [`connection::Connection`] per lock
//! client, one [`lockspace::Lockspace`] per lockspace (the only holder of lease
//! fds), and admin connections.

pub mod admin;
pub mod admin_state;
pub mod clients;
pub mod connection;
pub mod fence;
pub mod gate;
pub mod handoff;
pub mod inspect;
pub mod lockspace;
pub mod registry;
pub mod supervisor;
pub mod wire;
