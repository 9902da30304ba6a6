//! virtlockd-rs: a wire-compatible replacement for libvirt's `virtlockd`.
//!
//! * [`protocol`]: libvirt's RPC wire format (pure, no I/O).
//! * [`lockspace`]: the lock engine: lockspaces, resources, owners, fcntl leases.
//! * [`actors`]: the running daemon: supervisor, connections, lockspaces.
//! * [`client`]: an async client for the lock protocol.

pub mod lockspace;
pub mod proclocks;
pub mod protocol;
