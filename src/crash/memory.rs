//! Shared memory the fd store keeps: memfds, and the table of connections
//! with a request in progress.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, MapFlags, ProtFlags};

/// A memfd of `size` bytes (sparse: pages are allocated when written).
pub fn memfd(name: &str, size: usize) -> Result<OwnedFd, Errno> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&fd, size as libc::off_t)?;
    Ok(fd)
}

/// Maps `len` bytes of the memfd `fd` shared and writable: what is written
/// there is in the memfd at once, whatever happens to this process. The
/// caller unmaps it ([`unmap`]) with the same length.
pub fn map_shared(fd: &OwnedFd, len: usize) -> Result<NonNull<u8>, Errno> {
    let len = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
    // SAFETY: a fresh mapping of a file we hold open; the caller owns it.
    let base = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd.as_fd(),
            0,
        )?
    };
    Ok(base.cast())
}

/// Ends a mapping [`map_shared`] made.
///
/// # Safety
/// `base` and `len` are those of a live mapping nothing borrows any more.
pub unsafe fn unmap(base: NonNull<u8>, len: usize) {
    // SAFETY: as the caller promises.
    let _ = unsafe { nix::sys::mman::munmap(base.cast(), len) };
}

/// How many connections the busy table tracks at once; more than any
/// `max_clients` a host sets (a connection beyond it is not tracked, and
/// logged).
pub const SLOTS: usize = 1 << 17;

/// One word per connection slot: the connection's tag while it has a request
/// read but not yet answered (or a packet partly read), else 0. A crash
/// leaves it behind; the restarted daemon closes those connections with the
/// usual disconnect semantics, so that no client waits for a reply that will
/// not come. Plain atomic stores into shared memory: no system call.
pub struct BusyTable {
    fd: OwnedFd,
    words: NonNull<AtomicU64>,
}

// SAFETY: the words are atomics in a mapping that lives as long as the table.
unsafe impl Send for BusyTable {}
unsafe impl Sync for BusyTable {}

impl BusyTable {
    pub fn create() -> Result<Self, Errno> {
        Self::map(memfd("virtlockd-busy", SLOTS * 8)?)
    }

    /// The table a previous process or image left.
    pub fn open(fd: OwnedFd) -> Result<Self, Errno> {
        if (nix::sys::stat::fstat(fd.as_fd())?.st_size as usize) < SLOTS * 8 {
            return Err(Errno::EINVAL);
        }
        Self::map(fd)
    }

    fn map(fd: OwnedFd) -> Result<Self, Errno> {
        let base = map_shared(&fd, SLOTS * 8)?;
        Ok(Self {
            fd,
            words: base.cast(),
        })
    }

    fn word(&self, slot: usize) -> &AtomicU64 {
        assert!(slot < SLOTS);
        // SAFETY: in bounds (checked), aligned (page-aligned base), atomics.
        unsafe { &*self.words.as_ptr().add(slot) }
    }

    pub fn set(&self, slot: usize, tag: u64) {
        self.word(slot).store(tag, Ordering::Relaxed);
    }

    /// Tags marked busy.
    pub fn busy(&self) -> Vec<u64> {
        (0..SLOTS)
            .map(|s| self.word(s).load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .collect()
    }

    /// Clears every slot (a new image reassigns them).
    pub fn clear(&self) {
        for s in 0..SLOTS {
            self.set(s, 0);
        }
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Drop for BusyTable {
    fn drop(&mut self) {
        // SAFETY: our own mapping with its length; borrows of it are tied to &self.
        unsafe { unmap(self.words.cast(), SLOTS * 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_marks_are_seen_through_another_mapping() {
        let t = BusyTable::create().unwrap();
        t.set(3, 99);
        t.set(SLOTS - 1, 7);
        let other = BusyTable::open(t.fd().try_clone().unwrap()).unwrap();
        assert_eq!(other.busy(), [99, 7]);
        t.set(3, 0);
        assert_eq!(other.busy(), [7]);
        other.clear();
        assert!(t.busy().is_empty());
    }
}
