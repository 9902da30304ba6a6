//! Crash-safe mode: leases that outlive a crash of the daemon (SIGKILL, the
//! OOM killer, a panic).
//!
//! Under a service manager with a file-descriptor store (systemd's
//! `FileDescriptorStoreMax=`), leases are OFD locks whose open file
//! descriptions are kept alive outside the process, and every change of state
//! is written to a journal kept outside the process before the reply goes out.
//! A restarted daemon rebuilds everything from them (see `crate::restore`).
//! Without a store the daemon runs exactly as before: POSIX locks, no journal.

pub mod entry;
pub mod fdstore;
pub mod journal;
pub mod memory;
pub mod park;
pub mod store;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use nix::errno::Errno;
use thiserror::Error;
use tracing::{error, warn};

pub use entry::{client_tag, Entry};
use memory::BusyTable;
use store::Store;

/// Why the crash-safe store could not take a change.
#[derive(Debug, Error)]
pub enum CrashError {
    #[error("crash-safe store: {0}")]
    Sys(#[from] Errno),
    #[error("crash-safe store: cannot encode a record: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("crash-safe store: journal full")]
    Full,
    #[error("crash-safe store: the journal handed over is not one")]
    NotAJournal,
}

/// Whether crash-safe mode was asked for, and whether it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `crash_safe = 0` (the default outside the shipped systemd unit).
    Off,
    /// Asked for, but it cannot run here; the reason.
    Inactive(&'static str),
    /// Leases are OFD locks kept in the service manager's fd store.
    Active,
}

impl Mode {
    /// The word `virtlockctl status` shows: `off`, `inactive` or `active`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Inactive(_) => "inactive",
            Self::Active => "active",
        }
    }

    /// Why an asked-for mode is not running (empty otherwise).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Inactive(why) => why,
            _ => "",
        }
    }
}

/// What `virtlockctl status` reports about crash safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub mode: Mode,
    /// Open file descriptions kept in the store (leases and client sockets,
    /// including references not yet compacted away).
    pub parked: u64,
    /// Bytes of the journal in use.
    pub journal_bytes: u64,
    /// Generation of the store (grows at each compaction and restart).
    pub generation: u64,
    /// Restarts after a crash that this daemon recovered from.
    pub recoveries: u64,
}

static MODE: AtomicU8 = AtomicU8::new(0);
const ACTIVE: u8 = 1;
const INACTIVE_NO_STORE: u8 = 2;

static STORE: Mutex<Option<Store>> = Mutex::new(None);
static BUSY: OnceLock<BusyTable> = OnceLock::new();
/// The generation whose name the busy table is stored under.
static BUSY_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Free slots of the busy table.
static FREE_SLOTS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn with_store<R>(f: impl FnOnce(&mut Store) -> R) -> Option<R> {
    let mut guard = STORE.lock().unwrap_or_else(PoisonError::into_inner);
    guard.as_mut().map(f)
}

/// The daemon's crash-safety status, as of now.
pub fn status() -> Status {
    let (parked, journal_bytes, generation, recoveries) = with_store(|s| {
        (
            s.parked() as u64,
            s.journal_bytes() as u64,
            s.generation(),
            s.recoveries,
        )
    })
    .unwrap_or_default();
    Status {
        mode: mode(),
        parked,
        journal_bytes,
        generation,
        recoveries,
    }
}

/// Records the mode asked for but not running (no store).
pub fn set_inactive() {
    MODE.store(INACTIVE_NO_STORE, Ordering::Relaxed);
}

/// Makes `store` the running one, with `busy` (stored under generation
/// `busy_generation`) as the busy table.
pub fn install(store: Store, busy: BusyTable, busy_generation: u64) {
    busy.clear();
    BUSY_GENERATION.store(busy_generation, Ordering::Relaxed);
    if BUSY.set(busy).is_err() {
        error!("crash-safe store installed twice; the first busy table stays");
    }
    *FREE_SLOTS.lock().unwrap_or_else(PoisonError::into_inner) = (0..memory::SLOTS).rev().collect();
    *STORE.lock().unwrap_or_else(PoisonError::into_inner) = Some(store);
    MODE.store(ACTIVE, Ordering::Relaxed);
}

/// Journals `entry` (crash-safe mode; nothing otherwise). An error means the
/// change is not safe from a crash: a request making it should fail.
pub fn record(entry: &Entry) -> Result<(), CrashError> {
    if !active() {
        return Ok(());
    }
    with_store(|s| {
        flush_first(s)?;
        s.record(entry)
    })
    .unwrap_or(Ok(()))
}

/// What was deferred goes first: the journal keeps the order things
/// happened in.
fn flush_first(s: &mut Store) -> Result<(), CrashError> {
    if s.has_pending() {
        PENDING.store(false, Ordering::SeqCst);
        s.flush()?;
    }
    Ok(())
}

/// Journals `entry`, logging a failure (for changes nobody can be told of).
pub fn record_or_log(entry: &Entry) {
    if let Err(e) = record(entry) {
        error!(error = %e, "change not journaled; a crash now would lose it");
    }
}

/// Parks `fd` under `tag` (crash-safe mode; nothing otherwise).
pub fn park(tag: u64, fd: BorrowedFd<'_>) -> Result<(), CrashError> {
    if !active() {
        return Ok(());
    }
    with_store(|s| {
        flush_first(s)?;
        s.park(tag, fd)
    })
    .unwrap_or(Ok(()))
}

/// Whether deferred parks or records wait for [`flush`] (checked before
/// every reply, so kept outside the store's lock).
static PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Parks `fd` under `tag` and journals `entries` with the next [`flush`]
/// (crash-safe mode; nothing otherwise). See `Store::defer_park`.
pub fn defer(park: Option<(u64, RawFd)>, entries: &[Entry]) -> Result<(), CrashError> {
    if !active() {
        return Ok(());
    }
    with_store(|s| {
        if let Some((tag, fd)) = park {
            s.defer_park(tag, fd);
        }
        let r = entries.iter().try_for_each(|e| s.defer_record(e));
        PENDING.store(true, Ordering::SeqCst);
        r
    })
    .unwrap_or(Ok(()))
}

/// Tags a new lease, and parks its `fd` and journals the entry `entry`
/// makes of that tag with the next [`flush`]; answers the tag (0 outside
/// crash-safe mode). One trip through the store's lock per ACQUIRE.
pub fn defer_new_lease(fd: RawFd, entry: impl FnOnce(u64) -> Entry) -> Result<u64, CrashError> {
    if !active() {
        return Ok(0);
    }
    with_store(|s| {
        let tag = s.next_tag;
        s.next_tag += 1;
        s.defer_park(tag, fd);
        let r = s.defer_record(&entry(tag));
        PENDING.store(true, Ordering::SeqCst);
        r.map(|()| tag)
    })
    .unwrap_or(Ok(0))
}

/// Parks and journals what was deferred. Called before every reply is
/// written: no reply acknowledges a change the store does not hold.
pub fn flush() {
    if !PENDING.load(Ordering::SeqCst) {
        return;
    }
    let r = with_store(|s| {
        PENDING.store(false, Ordering::SeqCst);
        s.flush()
    });
    if let Some(Err(e)) = r {
        error!(error = %e, "leases not kept safe from a crash: the store refused them");
    }
}

/// The fd parked under `tag` is about to be closed in this process.
pub fn forget(tag: u64) {
    if tag != 0 && active() {
        if let Some(Err(e)) = with_store(|s| {
            PENDING.store(false, Ordering::SeqCst);
            s.forget(tag)
        }) {
            error!(error = %e, "leases not kept safe from a crash: the store refused them");
        }
    }
}

/// A connection's word in the busy table (see [`memory::BusyTable`]).
pub struct BusySlot {
    slot: usize,
    /// Never 0 (a parked socket's tag), so an `Option<BusySlot>` in each
    /// connection costs no word of its own.
    tag: NonZeroU64,
}

impl BusySlot {
    /// A slot for the connection tagged `tag`; `None` outside crash-safe
    /// mode, for tag 0 (a socket not parked), or with every slot taken
    /// (which is logged).
    pub fn take(tag: u64) -> Option<Self> {
        let tag = NonZeroU64::new(tag)?;
        if !active() {
            return None;
        }
        let slot = FREE_SLOTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if slot.is_none() {
            warn!(tag = tag.get(), "busy table full: a request of this connection in progress at a crash would not be seen");
        }
        Some(Self { slot: slot?, tag })
    }

    /// A request is being read or answered.
    pub fn busy(&self) {
        if let Some(t) = BUSY.get() {
            t.set(self.slot, self.tag.get());
        }
    }

    /// Nothing read is left unanswered.
    pub fn idle(&self) {
        if let Some(t) = BUSY.get() {
            t.set(self.slot, 0);
        }
    }
}

impl Drop for BusySlot {
    fn drop(&mut self) {
        self.idle();
        FREE_SLOTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.slot);
    }
}

/// What a live upgrade carries of the store: its fds by number, left open
/// across the exec.
pub fn upgrade_state() -> Option<crate::state::CrashStoreState> {
    if !active() {
        return None;
    }
    // Nothing deferred may stay behind in this image.
    flush();
    let busy = BUSY.get()?.fd().as_raw_fd();
    with_store(|s| crate::state::CrashStoreState {
        journal: s.journal().fd().as_raw_fd(),
        park_tx: s.parking().tx().as_raw_fd(),
        park_rx: s.parking().rx().as_raw_fd(),
        busy,
        generation: s.generation(),
        parked: s.parked() as u64,
        recoveries: s.recoveries,
        next_tag: s.next_tag,
        busy_generation: BUSY_GENERATION.load(Ordering::Relaxed),
    })
}

/// Takes up the store a previous image of this process kept (live upgrade).
/// `open` are the parked fds the snapshot names, by tag.
pub fn adopt(
    state: &crate::state::CrashStoreState,
    open: HashMap<u64, RawFd>,
) -> Result<(), CrashError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: the previous image left these open for us (see upgrade_state);
    // nothing else in this process owns them.
    let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
    let journal = journal::Journal::open(own(state.journal))?.ok_or(CrashError::NotAJournal)?;
    let park = park::Park::adopt(
        own(state.park_tx),
        own(state.park_rx),
        state.parked as usize,
    );
    let busy = BusyTable::open(own(state.busy))?;
    let mut store = Store::adopt(journal, park, open);
    store.next_tag = state.next_tag.max(1);
    store.recoveries = state.recoveries;
    install(store, busy, state.busy_generation);
    Ok(())
}

/// The mode in effect.
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        ACTIVE => Mode::Active,
        INACTIVE_NO_STORE => Mode::Inactive("no service manager file-descriptor store"),
        _ => Mode::Off,
    }
}

/// Whether crash-safe mode runs (a single atomic load: asked on hot paths).
pub fn active() -> bool {
    MODE.load(Ordering::Relaxed) == ACTIVE
}

/// Whether the program at `path` takes up our crash-safe store after a live
/// upgrade: a build of ours contains the journal's magic. libvirt's daemon
/// does not, and must not inherit a store it would never empty: its releases
/// close lease fds, and a parked reference would keep their OFD locks held.
pub fn binary_keeps_store(path: &std::path::Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let magic = journal::MAGIC;
    bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == magic[0])
        .any(|(i, _)| bytes.get(i..i + magic.len()) == Some(&magic[..]))
}

/// Before a hand-over to a program that does not keep the store (libvirt's
/// daemon): empties the store, so that from the exec on each lease's lock
/// lives only as long as its fd, as that program expects. Answers the
/// generation released (to re-arm from if the exec fails).
pub fn release_store() -> Option<u64> {
    let mut guard = STORE.lock().unwrap_or_else(PoisonError::into_inner);
    let store = guard.take()?;
    let g = store.generation();
    MODE.store(INACTIVE_NO_STORE, Ordering::Relaxed);
    let mut names: Vec<String> = store::names(g).into();
    if BUSY.get().is_some() {
        names.push(format!(
            "{}busy-{}",
            fdstore::PREFIX,
            BUSY_GENERATION.load(Ordering::Relaxed)
        ));
    }
    for name in names {
        if let Err(e) = fdstore::remove(&name) {
            warn!(name, error = %e, "cannot remove from the fd store");
        }
    }
    match fdstore::barrier(std::time::Duration::from_secs(5)) {
        Ok(true) => {}
        _ => warn!("the service manager did not confirm emptying the store"),
    }
    drop(store);
    Some(g)
}
