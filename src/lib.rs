//! virtlockd-rs: a wire-compatible replacement for libvirt's `virtlockd`.
//!
//! * [`protocol`]: libvirt's RPC wire format (pure, no I/O).
//! * [`lockspace`]: the lock engine: lockspaces, resources, owners, fcntl leases.
//! * [`session`]: per-connection rules (registration, restriction, check order).
//! * [`admin_rules`]: the admin program's checks and settings, pure.
//! * [`actors`]: the running daemon: supervisor, connections, lockspaces.
//! * [`client`]: an async client for the lock protocol.

#[path = "../actors/mod.rs"]
pub mod actors;
pub mod admin_rules;
pub mod cli;
pub mod client;
pub mod client_limits;
pub mod clock;
pub mod config;
pub mod crash;
pub mod ctl;
pub mod daemon;
pub mod daemonize;
pub mod failpoint;
pub mod first_come;
pub mod heap;
pub mod idle;
pub mod listener;
pub mod lockspace;
pub mod logging;
pub mod names;
pub mod paths;
pub mod pidfile;
pub mod proclocks;
pub mod protocol;
pub mod restore;
pub mod session;
pub mod signals;
pub mod state;
pub mod systemd;
