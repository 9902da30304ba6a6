//! libvirt's restart-state JSON (`virtlockd-restart-exec.json`, spec §8.3): read when
//! libvirt's virtlockd execs us (migration), written so that libvirt's virtlockd can
//! adopt our state (rollback).
//!
//! Reading follows libvirt's own post-exec reader (9.0 to 11.x): lenient where it is
//! (legacy layouts, optional keys, `-1` for unsigned numbers, liberal UUID text,
//! unknown keys), strict where it is (required keys, JSON types, integers only).
//! Writing produces exactly the layout libvirt 9.0 writes, key order included.
//!
//! * [`layout`]: the JSON layout as serde types, used by both directions;
//! * [`fields`]: how libvirt reads each value (numbers, UUIDs, optional and lenient
//!   keys) as `deserialize_with` functions;
//! * [`read`]: the document deserialized, then checked and turned into a [`Snapshot`]
//!   in the order of libvirt's post-exec code;
//! * [`write`]: a [`Snapshot`] turned into the layout.
//!
//! What libvirt's schema cannot carry: partly received requests
//! ([`ClientState::pending`]), [`Snapshot::upgrades`], [`Snapshot::started_at`],
//! [`Snapshot::fencing`], [`Snapshot::token`], [`ResourceState::acquired_at`] and
//! the loss details of a lost lease ([`ResourceState::lost_reason`],
//! [`ResourceState::lost_since`]; it stays `lockHeld: false`) are dropped on write and zero/empty on read (the token is added beside the
//! schema by the hand-over code, which also reads it back itself).
//! Names, paths and owner names are JSON strings: bytes that are not UTF-8 are
//! written with U+FFFD replacement characters (libvirt could not use them anyway).

mod fields;
mod layout;
mod read;
mod write;

#[cfg(doc)]
use super::{ClientState, ResourceState, ADMIN_SERVER, FORMAT, LOCK_SERVER, VERSION};
use super::{Snapshot, StateError};

/// Parses libvirt's restart JSON (any schema variant libvirt 9.0/11.x reads) into a
/// [`Snapshot`] (`format` = [`FORMAT`], `version` = [`VERSION`], `magic` = the parsed
/// decimal pid, `upgrades` = 0, `started_at` = 0, no `fencing`, `token` = 0).
///
/// Servers come out lock server first, then admin (whatever the document order);
/// lockspaces come out default first, then the `"lockspaces"` array in order
/// (duplicate directories are kept: libvirt keeps the first and silently drops
/// the others, together with their locks' bookkeeping).
pub fn from_json(text: &str) -> Result<Snapshot, StateError> {
    read::from_json(text)
}

/// Writes exactly the schema libvirt 9.0's reader accepts (spec §8.3), from a
/// [`Snapshot`], pretty-printed with 2-space indentation like libvirt.
///
/// Differences from what libvirt itself would write, all accepted by its reader:
/// * an unregistered lock client (libvirt fails the whole re-exec on it) gets
///   `ownerPid` 0, `ownerId` 0, `ownerName` `""` and the all-zero `ownerUUID`;
///   a lock client without a session is written the same way, unrestricted;
/// * every listener gets its own service;
/// * `max_clients` above `u32::MAX` is written as `u32::MAX` (libvirt reads an
///   unsigned int there);
/// * a negative owner pid is written as its `u32` value (libvirt writes the
///   64-bit two's complement; its reader truncates both to the same pid).
///
/// Servers other than [`LOCK_SERVER`] and [`ADMIN_SERVER`], a server named twice
/// or two default lockspaces are refused, as libvirt could not read them back.
/// A missing server is simply not written; a missing default lockspace is
/// written empty (libvirt requires the key).
pub fn to_json(s: &Snapshot) -> Result<String, StateError> {
    write::to_json(s)
}

#[cfg(test)]
mod tests;
