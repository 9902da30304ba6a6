//! The journal: an append-only log of state records in a memfd that the
//! service manager's fd store keeps, written through a shared mapping. A
//! record is a memory copy, no system call, and it is in the kernel's page
//! cache the moment the copy ends: a SIGKILL right after loses nothing.
//!
//! Layout: a 4 KiB header (magic, generation), then records, each
//! `len: u32 LE | check: u32 LE | payload`, ending at the first zero length.
//! A process killed in the middle of a copy leaves a record whose check does
//! not match: the log ends before it (its reply was never written).

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;

/// Starts every journal; also how a binary is known to keep the store (see
/// `crate::crash::binary_keeps_store`).
pub const MAGIC: &[u8; 8] = b"VLRSJNL1";
const HEADER: usize = 4096;
const RECORD_HEAD: usize = 8;

/// A journal mapped into this process.
pub struct Journal {
    fd: OwnedFd,
    base: NonNull<u8>,
    size: usize,
    /// Where the next record goes.
    end: usize,
    generation: u64,
}

// SAFETY: the mapping is owned by the journal and only touched through
// `&mut self` (appends) or `&self` reads of bytes already written; the store
// keeps the journal behind a mutex.
unsafe impl Send for Journal {}

/// The record does not fit: time for a new generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Journal {
    /// A new, empty journal with room for `capacity` bytes of records. The
    /// memfd's pages are only allocated as records are written.
    pub fn create(generation: u64, capacity: usize) -> Result<Self, Errno> {
        let fd = super::memory::memfd("virtlockd-journal", HEADER + capacity)?;
        let mut j = Self::map(fd, HEADER + capacity, generation)?;
        j.bytes_mut(0, HEADER)[..8].copy_from_slice(MAGIC);
        j.bytes_mut(8, 8).copy_from_slice(&generation.to_le_bytes());
        Ok(j)
    }

    /// Maps a journal a previous process (or image) left; `None` if it is not
    /// one. Its records are read with [`Journal::records`].
    pub fn open(fd: OwnedFd) -> Result<Option<Self>, Errno> {
        let size = nix::sys::stat::fstat(fd.as_fd())?.st_size as usize;
        if size < HEADER {
            return Ok(None);
        }
        let mut j = Self::map(fd, size, 0)?;
        if j.bytes(0, 8) != MAGIC {
            return Ok(None);
        }
        let mut generation = [0u8; 8];
        generation.copy_from_slice(j.bytes(8, 8));
        j.generation = u64::from_le_bytes(generation);
        j.end = j.scan().1;
        Ok(Some(j))
    }

    fn map(fd: OwnedFd, size: usize, generation: u64) -> Result<Self, Errno> {
        // Unmapped only in `Drop`.
        let base = super::memory::map_shared(&fd, size)?;
        Ok(Self {
            fd,
            base,
            size,
            end: HEADER,
            generation,
        })
    }

    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        assert!(at + len <= self.size);
        // SAFETY: in bounds of the live mapping (checked above).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(at), len) }
    }

    fn bytes_mut(&mut self, at: usize, len: usize) -> &mut [u8] {
        assert!(at + len <= self.size);
        // SAFETY: in bounds of the live mapping, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(at), len) }
    }

    /// Appends one record; answers where it starts (for [`Journal::record_at`]).
    pub fn append(&mut self, payload: &[u8]) -> Result<usize, Full> {
        let at = self.end;
        let total = RECORD_HEAD + payload.len();
        // Room for this record and the zero length that ends the log.
        if at + total + 4 > self.size || payload.is_empty() || payload.len() > u32::MAX as usize {
            return Err(Full);
        }
        let head = self.bytes_mut(at, total);
        head[RECORD_HEAD..].copy_from_slice(payload);
        head[4..8].copy_from_slice(&check(payload).to_le_bytes());
        // The length last: a reader that finds it finds the rest written
        // (within this process; across a crash the check decides).
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        self.end = at + total;
        Ok(at)
    }

    /// The payload of the record at `at` (an offset [`Journal::append`] gave).
    pub fn record_at(&self, at: usize) -> &[u8] {
        let mut len = [0u8; 4];
        len.copy_from_slice(self.bytes(at, 4));
        self.bytes(at + RECORD_HEAD, u32::from_le_bytes(len) as usize)
    }

    /// Every intact record, in order, with its offset; and where the intact
    /// log ends. A torn or corrupt record ends the log.
    pub fn records(&self) -> Vec<(usize, &[u8])> {
        self.scan().0
    }

    /// Whether the log ends cleanly (no torn or corrupt record before the end).
    pub fn intact(&self) -> bool {
        self.scan().2
    }

    fn scan(&self) -> (Vec<(usize, &[u8])>, usize, bool) {
        let mut out = Vec::new();
        let mut at = HEADER;
        while at + RECORD_HEAD <= self.size {
            let head = self.bytes(at, RECORD_HEAD);
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len == 0 {
                return (out, at, true);
            }
            let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if at + RECORD_HEAD + len > self.size {
                return (out, at, false);
            }
            let payload = self.bytes(at + RECORD_HEAD, len);
            if check(payload) != sum {
                return (out, at, false);
            }
            out.push((at, payload));
            at += RECORD_HEAD + len;
        }
        (out, at, false)
    }

    /// Bytes of records written.
    pub fn used(&self) -> usize {
        self.end - HEADER
    }

    /// Bytes of records it can hold in all.
    pub fn capacity(&self) -> usize {
        self.size - HEADER
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // SAFETY: our own mapping, with the length it was made with; nothing
        // borrows it any more (borrows are tied to &self).
        unsafe { super::memory::unmap(self.base, self.size) };
    }
}

/// FNV-1a over the payload: tells a record cut short by a crash, not an
/// attacker (nobody else can write the memfd).
fn check(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_new_mapping_and_a_torn_tail_ends_the_log() {
        let mut j = Journal::create(7, 1 << 16).unwrap();
        let a = j.append(b"first").unwrap();
        j.append(b"second record").unwrap();
        assert_eq!(j.record_at(a), b"first");
        let dup = j.fd().try_clone().unwrap();
        let copy = Journal::open(dup).unwrap().unwrap();
        assert_eq!(copy.generation(), 7);
        let recs: Vec<&[u8]> = copy.records().into_iter().map(|(_, r)| r).collect();
        assert_eq!(recs, [&b"first"[..], &b"second record"[..]]);
        assert!(copy.intact());
        drop(copy);

        // A crash in the middle of the third record's copy: its length is
        // there, its bytes only in part.
        let third = j.append(b"third, cut short").unwrap();
        let torn = j.bytes_mut(third + RECORD_HEAD + 3, 4);
        torn.copy_from_slice(&[0, 0, 0, 0]);
        let copy = Journal::open(j.fd().try_clone().unwrap()).unwrap().unwrap();
        assert_eq!(copy.records().len(), 2);
        assert!(!copy.intact());
    }

    #[test]
    fn a_full_journal_says_so_and_foreign_memfds_are_not_journals() {
        let mut j = Journal::create(1, 64).unwrap();
        assert!(j.append(&[1; 40]).is_ok());
        assert_eq!(j.append(&[2; 40]), Err(Full));
        let other = super::super::memory::memfd("other", 8192).unwrap();
        assert!(Journal::open(other).unwrap().is_none());
    }
}
