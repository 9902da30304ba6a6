//! A live upgrade's lockspaces encoded where they live: each lockspace writes
//! the MessagePack of its [`LockspaceState`] straight from its lease table,
//! and the snapshot splices those bytes in. Thousands of leases are then not
//! first copied into `ResourceState`s (names and owner lists allocated anew)
//! only to be encoded and dropped, while every client waits. The bytes are
//! exactly what `rmp_serde` makes of the same state (tests below), so the
//! reader is the one of [`Snapshot::from_msgpack`].
//!
//! The resources and owners, the bulk of a snapshot, are written with `rmp`'s
//! value writers, the ones `rmp_serde` itself calls for each field: about a
//! fifth of the time of going through serde's visitors per field, inside
//! the freeze of a live upgrade.

use std::io;

use rmp::encode::{self as mp, ValueWriteError};

use super::{OwnerState, Snapshot, StateError};

/// One resource as its lockspace lends it: the fields of [`ResourceState`], in
/// its order and with its encodings, borrowed where they can be.
///
/// [`ResourceState`]: super::ResourceState
pub struct ResourceView<'a> {
    pub name: &'a [u8],
    pub path: &'a [u8],
    pub fd: i32,
    pub lock_held: bool,
    pub flags: u32,
    pub owners: &'a [i32],
    pub acquired_at: i64,
    pub lost_reason: Option<String>,
    pub lost_since: i64,
    pub file_id: Option<(u64, u64)>,
    pub ofd: bool,
    pub tag: u64,
}

impl ResourceView<'_> {
    /// The same resource, owned.
    pub fn to_state(&self) -> super::ResourceState {
        super::ResourceState {
            name: self.name.to_vec(),
            path: self.path.to_vec(),
            fd: self.fd,
            lock_held: self.lock_held,
            flags: self.flags,
            owners: self.owners.to_vec(),
            acquired_at: self.acquired_at,
            lost_reason: self.lost_reason.clone(),
            lost_since: self.lost_since,
            file_id: self.file_id,
            ofd: self.ofd,
            tag: self.tag,
        }
    }
}

/// A lockspace's [`LockspaceState`], encoded.
///
/// [`LockspaceState`]: super::LockspaceState
#[derive(Debug)]
pub struct EncodedLockspace {
    /// `None` for the default lockspace (which the snapshot lists first).
    pub directory: Option<Vec<u8>>,
    pub bytes: Vec<u8>,
    /// The lease fds it names, which must survive the exec.
    pub fds: Vec<i32>,
}

impl EncodedLockspace {
    /// Encodes a lockspace from its parts.
    pub fn encode<'a>(
        directory: Option<Vec<u8>>,
        resources: impl ExactSizeIterator<Item = ResourceView<'a>>,
        owners: &[OwnerState],
        fds: Vec<i32>,
    ) -> Result<Self, StateError> {
        // About what a lease takes (a short name, one owner), so that the
        // buffer is not grown and copied a dozen times over.
        let mut bytes = Vec::with_capacity(64 + 64 * fds.len() + 40 * owners.len());
        write_lockspace(&mut bytes, directory.as_deref(), resources, owners)
            .map_err(|e| StateError::Format(e.to_string()))?;
        Ok(Self {
            directory,
            bytes,
            fds,
        })
    }
}

/// A `LockspaceState`: a 3-field array, as `rmp_serde` writes a struct.
fn write_lockspace<'a>(
    out: &mut Vec<u8>,
    directory: Option<&[u8]>,
    resources: impl ExactSizeIterator<Item = ResourceView<'a>>,
    owners: &[OwnerState],
) -> io::Result<()> {
    array_len(out, 3);
    match directory {
        Some(d) => mp::write_bin(out, d).map_err(write_error)?,
        None => mp::write_nil(out)?,
    }
    array_len(out, resources.len());
    for r in resources {
        write_resource(out, &r)?;
    }
    array_len(out, owners.len());
    for o in owners {
        write_owner(out, o)?;
    }
    Ok(())
}

/// A `ResourceState`, field by field.
fn write_resource(out: &mut Vec<u8>, r: &ResourceView<'_>) -> io::Result<()> {
    array_len(out, 12);
    mp::write_bin(out, r.name).map_err(write_error)?;
    mp::write_bin(out, r.path).map_err(write_error)?;
    mp::write_sint(out, r.fd.into()).map_err(write_error)?;
    mp::write_bool(out, r.lock_held)?;
    mp::write_uint(out, r.flags.into()).map_err(write_error)?;
    array_len(out, r.owners.len());
    for &o in r.owners {
        mp::write_sint(out, o.into()).map_err(write_error)?;
    }
    mp::write_sint(out, r.acquired_at).map_err(write_error)?;
    match &r.lost_reason {
        Some(why) => mp::write_str(out, why).map_err(write_error)?,
        None => mp::write_nil(out)?,
    }
    mp::write_sint(out, r.lost_since).map_err(write_error)?;
    match r.file_id {
        Some((dev, ino)) => {
            array_len(out, 2);
            mp::write_uint(out, dev).map_err(write_error)?;
            mp::write_uint(out, ino).map_err(write_error)?;
        }
        None => mp::write_nil(out)?,
    }
    mp::write_bool(out, r.ofd)?;
    mp::write_uint(out, r.tag).map_err(write_error)?;
    Ok(())
}

/// An `OwnerState` (its uuid an array of 16 integers, as serde makes of an
/// array).
fn write_owner(out: &mut Vec<u8>, o: &OwnerState) -> io::Result<()> {
    array_len(out, 4);
    array_len(out, o.uuid.len());
    for &b in &o.uuid {
        mp::write_uint(out, b.into()).map_err(write_error)?;
    }
    mp::write_bin(out, &o.name).map_err(write_error)?;
    mp::write_uint(out, o.id.into()).map_err(write_error)?;
    mp::write_uint(out, o.pid.into()).map_err(write_error)?;
    Ok(())
}

/// The io error inside one of rmp's write errors (a marker or the data after it).
fn write_error(e: ValueWriteError<io::Error>) -> io::Error {
    match e {
        ValueWriteError::InvalidMarkerWrite(e) | ValueWriteError::InvalidDataWrite(e) => e,
    }
}

/// A MessagePack array header, as `rmp` writes it (smallest form).
fn array_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn put<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), StateError> {
    rmp_serde::encode::write(out, value).map_err(|e| StateError::Format(e.to_string()))
}

impl Snapshot {
    /// [`Snapshot::to_msgpack`] with `encoded` after `self.lockspaces` (which a
    /// live upgrade leaves empty): the same bytes as if they had been there.
    pub fn to_msgpack_with(&self, encoded: &[EncodedLockspace]) -> Result<Vec<u8>, StateError> {
        // Every field, in order: a field added to `Snapshot` breaks this until
        // it is written here too.
        let Snapshot {
            format,
            version,
            magic,
            servers,
            lockspaces,
            upgrades,
            started_at,
            fencing,
            token,
            timeout,
            crash,
            stale_fds,
        } = self;
        let bulk: usize = encoded.iter().map(|l| l.bytes.len()).sum();
        let mut out = Vec::with_capacity(bulk + 256 * (servers.len() + 1) + 4096);
        array_len(&mut out, 12);
        put(&mut out, format)?;
        put(&mut out, version)?;
        put(&mut out, magic)?;
        put(&mut out, servers)?;
        array_len(&mut out, lockspaces.len() + encoded.len());
        for l in lockspaces {
            put(&mut out, l)?;
        }
        for l in encoded {
            out.extend_from_slice(&l.bytes);
        }
        put(&mut out, upgrades)?;
        put(&mut out, started_at)?;
        put(&mut out, fencing)?;
        put(&mut out, token)?;
        put(&mut out, timeout)?;
        put(&mut out, crash)?;
        put(&mut out, stale_fds)?;
        Ok(out)
    }

    /// Every fd the snapshot and `encoded` refer to.
    pub fn fds_with(&self, encoded: &[EncodedLockspace]) -> Vec<i32> {
        let mut fds = self.fds();
        for l in encoded {
            fds.extend_from_slice(&l.fds);
        }
        fds
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::super::{LockspaceState, ResourceState};
    use super::*;

    fn view(r: &ResourceState) -> ResourceView<'_> {
        ResourceView {
            name: &r.name,
            path: &r.path,
            fd: r.fd,
            lock_held: r.lock_held,
            flags: r.flags,
            owners: &r.owners,
            acquired_at: r.acquired_at,
            lost_reason: r.lost_reason.clone(),
            lost_since: r.lost_since,
            file_id: r.file_id,
            ofd: r.ofd,
            tag: r.tag,
        }
    }

    fn encoded(l: &LockspaceState) -> EncodedLockspace {
        EncodedLockspace::encode(
            l.directory.clone(),
            l.resources.iter().map(view),
            &l.owners,
            l.resources.iter().map(|r| r.fd).collect(),
        )
        .unwrap()
    }

    /// Many resources (array16 headers), a lost one, an OFD one.
    fn bulky() -> Snapshot {
        let mut s = sample();
        s.stale_fds = vec![12];
        let ls = &mut s.lockspaces[1];
        let first = ls.resources[0].clone();
        for i in 0..40u32 {
            let mut r = first.clone();
            r.name = format!("r{i}").into_bytes();
            r.path = Vec::new();
            r.fd = 100 + i as i32;
            r.owners = vec![1, 2, i as i32];
            r.file_id = Some((7, u64::from(i)));
            r.ofd = i % 2 == 0;
            r.tag = u64::from(i);
            if i == 3 {
                r.lock_held = false;
                r.lost_reason = Some("the file was replaced".into());
                r.lost_since = 1_700_000_100;
            }
            // Every width of MessagePack integer, string and byte string.
            if i == 5 {
                r.name = vec![b'n'; 300];
                r.path = vec![b'p'; 70_000];
                r.fd = 70_000;
                r.flags = 200;
                r.owners = vec![i32::MAX, 128, 40_000];
                r.acquired_at = -1;
                r.lost_since = -40_000;
                r.lock_held = false;
                r.lost_reason = Some("x".repeat(300));
                r.file_id = Some((u64::MAX, 1 << 40));
                r.tag = u64::MAX;
            }
            if i == 6 {
                r.acquired_at = i64::MIN;
                r.lost_since = -100;
                r.owners = Vec::new();
                r.file_id = None;
            }
            ls.resources.push(r);
        }
        let owner = ls.owners[0].clone();
        for i in 0..20u32 {
            let mut o = owner.clone();
            o.uuid = [i as u8 * 13; 16];
            o.name = vec![b'o'; 40 + i as usize];
            o.id = u32::MAX - i;
            o.pid = 70_000 + i;
            ls.owners.push(o);
        }
        s
    }

    #[test]
    fn a_view_made_owned_is_the_state_it_lends() {
        for l in &bulky().lockspaces {
            for r in &l.resources {
                assert_eq!(&view(r).to_state(), r);
            }
        }
    }

    #[test]
    fn an_encoded_lockspace_is_what_rmp_serde_makes_of_its_state() {
        for l in &bulky().lockspaces {
            assert_eq!(encoded(l).bytes, rmp_serde::to_vec(l).unwrap());
        }
    }

    #[test]
    fn a_snapshot_with_encoded_lockspaces_is_the_same_snapshot() {
        for mut s in [sample(), bulky()] {
            let whole = s.to_msgpack().unwrap();
            let fds = s.fds();
            let lockspaces = std::mem::take(&mut s.lockspaces);
            let encoded: Vec<_> = lockspaces.iter().map(encoded).collect();
            assert_eq!(s.to_msgpack_with(&encoded).unwrap(), whole);
            let (mut with, mut fds) = (s.fds_with(&encoded), fds);
            with.sort_unstable();
            fds.sort_unstable();
            assert_eq!(with, fds);
            s.lockspaces = lockspaces;
            assert_eq!(Snapshot::from_msgpack(&whole).unwrap(), s);
        }
    }
}
