//! Crash-safe mode: leases that outlive a crash of the daemon (SIGKILL, the
//! OOM killer, a panic).
//!
//! Under a service manager with a file-descriptor store (systemd's
//! `FileDescriptorStoreMax=`), leases are OFD locks whose open file
//! descriptions are kept alive outside the process, and every change of state
//! is written to a journal kept outside the process before the reply goes out.
//! A restarted daemon rebuilds everything from them (see `crate::restore`).
//! Without a store the daemon runs exactly as before: POSIX locks, no journal.

use std::sync::atomic::{AtomicU8, Ordering};

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
const OFF: u8 = 0;
const ACTIVE: u8 = 1;
const INACTIVE_NO_STORE: u8 = 2;

/// The daemon's crash-safety status, as of now.
pub fn status() -> Status {
    Status {
        mode: mode(),
        parked: 0,
        journal_bytes: 0,
        generation: 0,
        recoveries: 0,
    }
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
