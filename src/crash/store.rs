//! The crash-safe store of a running daemon: the journal, the parking socket
//! and the fds parked in it, one generation at a time in the service
//! manager's fd store.
//!
//! A generation is replaced (compaction) when the journal is full or the
//! parking queue holds many more references than there are live fds: the new
//! one gets the latest record of every live key and a reference to every fd
//! still open, is stored, and only once the service manager has taken it
//! (`BARRIER=1`) is the old one removed. A crash at any moment finds at least
//! one complete generation in the store.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use tracing::{debug, info, warn};

use super::entry::{Entry, Key};
use super::fdstore;
use super::journal::{Full, Journal};
use super::park::Park;
use super::CrashError;

/// Room for records in a new journal, at least (virtual: pages are allocated
/// as written).
const MIN_CAPACITY: usize = 64 << 20;
/// Parked references beyond the live fds that trigger a compaction, at least.
/// Each dead reference (a lease released since) costs the kernel a queued
/// message and an open file until then; each compaction costs re-parking
/// every live fd and a round trip to the service manager. This many keeps
/// compactions to a few a second under a benchmark's churn, and the queue to
/// some tens of megabytes at most.
const SLACK: usize = 16_384;
/// How long a new generation waits for the service manager to take it.
const BARRIER_PATIENCE: Duration = Duration::from_secs(5);

pub struct Store {
    journal: Journal,
    park: Park,
    /// Where the latest record of every live key starts in the journal.
    live: HashMap<Key, usize>,
    /// fds parked and still open in this process, by tag: what a new
    /// generation parks. An fd leaves before it is closed ([`Store::forget`]),
    /// so every number here is the one parked under its tag.
    open: HashMap<u64, RawFd>,
    scratch: Vec<u8>,
    /// Leases parked and journaled in a batch (see [`Store::defer_park`]):
    /// their fds, then the records (bytes, and each record's key and end).
    pending_parks: Vec<(u64, RawFd)>,
    pending_bytes: Vec<u8>,
    pending_records: Vec<(Key, bool, usize)>,
    pub next_tag: u64,
    pub recoveries: u64,
}

/// The store names of generation `g`.
pub fn names(g: u64) -> [String; 3] {
    [
        format!("{}journal-{g}", fdstore::PREFIX),
        format!("{}parktx-{g}", fdstore::PREFIX),
        format!("{}parkrx-{g}", fdstore::PREFIX),
    ]
}

impl Store {
    /// A new generation holding `records` (the live state, one record per
    /// key) and a reference to each of `open`, stored in the fd store.
    /// Generations listed in `retire` are removed from the store once the
    /// service manager has taken the new one.
    pub fn create(
        generation: u64,
        records: &[Entry],
        open: HashMap<u64, RawFd>,
        retire: &[u64],
    ) -> Result<Self, CrashError> {
        let mut scratch = Vec::new();
        let mut encoded = Vec::with_capacity(records.len());
        let mut bytes = 0;
        for e in records {
            e.encode(&mut scratch)?;
            bytes += scratch.len() + 8;
            encoded.push((e.key(), scratch.clone()));
        }
        let mut journal = Journal::create(generation, MIN_CAPACITY.max(bytes * 4))?;
        let mut live = HashMap::with_capacity(encoded.len());
        for (key, payload) in encoded {
            let at = journal.append(&payload).map_err(|Full| CrashError::Full)?;
            live.insert(key, at);
        }
        let mut park = Park::create()?;
        park_all(&mut park, &open)?;
        let store = Self {
            journal,
            park,
            live,
            open,
            scratch,
            pending_parks: Vec::new(),
            pending_bytes: Vec::new(),
            pending_records: Vec::new(),
            next_tag: 1,
            recoveries: 0,
        };
        store.publish(retire)?;
        Ok(store)
    }

    /// Carries on with the generation a previous image of this process kept
    /// (live upgrade): its records are read back for the live-key index.
    pub fn adopt(journal: Journal, park: Park, open: HashMap<u64, RawFd>) -> Self {
        let mut live = HashMap::new();
        for (at, payload) in journal.records() {
            if let Ok(e) = Entry::decode(payload) {
                if e.is_removal() {
                    live.remove(&e.key());
                } else {
                    live.insert(e.key(), at);
                }
            }
        }
        Self {
            journal,
            park,
            live,
            open,
            scratch: Vec::new(),
            pending_parks: Vec::new(),
            pending_bytes: Vec::new(),
            pending_records: Vec::new(),
            next_tag: 1,
            recoveries: 0,
        }
    }

    /// Stores this generation, then retires the listed ones.
    fn publish(&self, retire: &[u64]) -> Result<(), CrashError> {
        let g = self.journal.generation();
        let [journal, tx, rx] = names(g);
        fdstore::store(&journal, &[self.journal.fd().as_fd()])?;
        fdstore::store(&tx, &[self.park.tx()])?;
        fdstore::store(&rx, &[self.park.rx()])?;
        if retire.is_empty() {
            return Ok(());
        }
        crate::failpoint::crash_point("store:new-generation-stored");
        if !fdstore::barrier(BARRIER_PATIENCE)? {
            warn!(
                generation = g,
                "the service manager did not confirm the new store in time; the old one is kept"
            );
            return Ok(());
        }
        for old in retire {
            for name in names(*old) {
                fdstore::remove(&name)?;
            }
        }
        Ok(())
    }

    /// Appends `entry` (a new generation first if the journal is full).
    pub fn record(&mut self, entry: &Entry) -> Result<(), CrashError> {
        entry.encode(&mut self.scratch)?;
        let at = match self.journal.append(&self.scratch) {
            Ok(at) => at,
            Err(Full) => {
                self.compact()?;
                entry.encode(&mut self.scratch)?;
                self.journal
                    .append(&self.scratch)
                    .map_err(|Full| CrashError::Full)?
            }
        };
        let key = entry.key();
        if entry.is_removal() {
            self.live.remove(&key);
        } else {
            self.live.insert(key, at);
        }
        Ok(())
    }

    /// Parks `fd` under `tag`.
    pub fn park(&mut self, tag: u64, fd: BorrowedFd<'_>) -> Result<(), CrashError> {
        use std::os::fd::AsRawFd;
        match self.park.park_one(tag, fd) {
            Ok(()) => {}
            Err(Errno::EAGAIN | Errno::ENOBUFS) => {
                self.compact()?;
                self.park.park_one(tag, fd)?;
            }
            Err(e) => return Err(e.into()),
        }
        self.open.insert(tag, fd.as_raw_fd());
        if self.park.fds() > 3 * self.open.len() + SLACK {
            self.compact()?;
        }
        Ok(())
    }

    /// Parks `fd` under `tag` with the next [`Store::flush`]. The lock
    /// engine's changes go this way: the many leases a busy event loop turn
    /// takes share one `sendmsg`, where each would cost one. Every reply is
    /// written after a flush, so none acknowledges a lease not yet parked;
    /// and the fd stays open until then (a close flushes first).
    pub fn defer_park(&mut self, tag: u64, fd: RawFd) {
        self.pending_parks.push((tag, fd));
    }

    /// Journals `entry` with the next [`Store::flush`], after the fds
    /// deferred before it: a lease's record never precedes its parking, and
    /// records keep their order.
    pub fn defer_record(&mut self, entry: &Entry) -> Result<(), CrashError> {
        entry.encode(&mut self.scratch)?;
        self.pending_bytes.extend_from_slice(&self.scratch);
        self.pending_records
            .push((entry.key(), entry.is_removal(), self.pending_bytes.len()));
        Ok(())
    }

    /// Whether deferred work waits for a flush.
    pub fn has_pending(&self) -> bool {
        !self.pending_parks.is_empty() || !self.pending_records.is_empty()
    }

    /// Parks the deferred fds (one message per 253), then writes the
    /// deferred records, in order.
    pub fn flush(&mut self) -> Result<(), CrashError> {
        // For the crash points only: what this flush makes durable.
        let acquired = self
            .pending_records
            .iter()
            .any(|(key, removal, _)| !removal && matches!(key, Key::Resource(..)));
        let freed = self
            .pending_records
            .iter()
            .any(|(key, removal, _)| *removal && matches!(key, Key::Resource(..)));
        if !self.pending_parks.is_empty() {
            let parks = std::mem::take(&mut self.pending_parks);
            let items: Vec<(u64, BorrowedFd<'_>)> = parks
                .iter()
                // SAFETY: a deferred fd stays open until flushed (forget
                // flushes before its close); borrowed for this call only.
                .map(|&(tag, fd)| (tag, unsafe { BorrowedFd::borrow_raw(fd) }))
                .collect();
            match self.park.park(&items) {
                Ok(()) => {}
                Err(Errno::EAGAIN | Errno::ENOBUFS) => {
                    // Part may be parked already: parked twice is harmless
                    // (one reference is dead weight until the next compaction).
                    self.compact()?;
                    self.park.park(&items)?;
                }
                Err(e) => return Err(e.into()),
            }
            self.open.extend(parks);
            crate::failpoint::crash_point("acquire:parked");
        }
        let bytes = std::mem::take(&mut self.pending_bytes);
        let mut start = 0;
        for (key, removal, end) in std::mem::take(&mut self.pending_records) {
            let payload = &bytes[start..end];
            start = end;
            let at = match self.journal.append(payload) {
                Ok(at) => at,
                Err(Full) => {
                    self.compact()?;
                    self.journal
                        .append(payload)
                        .map_err(|Full| CrashError::Full)?
                }
            };
            if removal {
                self.live.remove(&key);
            } else {
                self.live.insert(key, at);
            }
        }
        // The buffer's capacity is kept for the next batch.
        self.pending_bytes = bytes;
        self.pending_bytes.clear();
        if acquired {
            crate::failpoint::crash_point("acquire:journaled");
        }
        if freed {
            crate::failpoint::crash_point("release:journaled");
        }
        if self.park.fds() > 3 * self.open.len() + SLACK {
            self.compact()?;
        }
        Ok(())
    }

    /// `tag`'s fd is about to be closed.
    pub fn forget(&mut self, tag: u64) -> Result<(), CrashError> {
        let flushed = if self.has_pending() {
            self.flush()
        } else {
            Ok(())
        };
        self.open.remove(&tag);
        flushed
    }

    /// Replaces this generation with a compact one.
    pub fn compact(&mut self) -> Result<(), CrashError> {
        let t0 = std::time::Instant::now();
        let old = self.journal.generation();
        let mut offsets: Vec<usize> = self.live.values().copied().collect();
        offsets.sort_unstable();
        let records: Vec<Entry> = offsets
            .iter()
            .filter_map(|&at| Entry::decode(self.journal.record_at(at)).ok())
            .collect();
        let before = (self.journal.used(), self.park.fds());
        // Cloned: if the new generation cannot be made, this one carries on
        // with every fd it knows.
        let mut next = Self::create(old + 1, &records, self.open.clone(), &[old])?;
        next.next_tag = self.next_tag;
        next.recoveries = self.recoveries;
        // What waits for a flush (a compaction may come in the middle of one)
        // goes on with the new generation.
        next.pending_parks = std::mem::take(&mut self.pending_parks);
        next.pending_bytes = std::mem::take(&mut self.pending_bytes);
        next.pending_records = std::mem::take(&mut self.pending_records);
        *self = next;
        info!(
            generation = old + 1,
            journal_bytes_before = before.0,
            journal_bytes = self.journal.used(),
            parked_before = before.1,
            parked = self.park.fds(),
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "crash-safe store compacted"
        );
        Ok(())
    }

    pub fn generation(&self) -> u64 {
        self.journal.generation()
    }

    pub fn parked(&self) -> usize {
        self.park.fds()
    }

    pub fn journal_bytes(&self) -> usize {
        self.journal.used()
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn parking(&self) -> &Park {
        &self.park
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}

fn park_all(park: &mut Park, open: &HashMap<u64, RawFd>) -> Result<(), CrashError> {
    let items: Vec<(u64, BorrowedFd<'_>)> = open
        .iter()
        // SAFETY: every number in `open` is an fd this process holds open
        // (see `Store::open`); the borrow lasts for this call only.
        .map(|(&tag, &fd)| (tag, unsafe { BorrowedFd::borrow_raw(fd) }))
        .collect();
    park.park(&items)?;
    debug!(fds = items.len(), "parked");
    Ok(())
}
