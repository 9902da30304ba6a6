//! The table of lockspace actors, keyed by the exact path string clients use
//! (`""` = default lockspace). The supervisor is its only writer; connections read
//! it directly, because a lookup happens on almost every request and lockspaces are
//! never removed while the daemon runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use actix::Addr;
use tokio::sync::Notify;

use super::lockspace::Lockspace;
use crate::config::{LossAction, DEFAULT_LEASE_CHECK_INTERVAL};

#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<HashMap<Vec<u8>, Addr<Lockspace>>>>,
    /// Leases held in all lockspaces, kept current by the lockspace actors.
    leases: Arc<AtomicUsize>,
    disconnects: Arc<Disconnects>,
    /// A shutdown asked for while a live upgrade had the daemon paused.
    shutdown_requested: Arc<AtomicBool>,
    lease_check: Arc<LeaseCheck>,
    /// Owner pids the kernel vouches for: pid -> number of open lock connections
    /// whose SO_PEERCRED pid equals the owner pid they registered. Only those
    /// owners are ever fenced for a lost lease (a registered pid alone is just
    /// what a client claimed).
    vouched: Arc<Mutex<HashMap<i32, usize>>>,
}

/// Revalidation settings of leases on network storage (virtlockd.conf,
/// changed by SIGHUP), read by every lockspace actor at each tick.
pub struct LeaseCheck {
    interval_secs: AtomicU64,
    fence: AtomicBool,
}

impl Default for LeaseCheck {
    fn default() -> Self {
        Self {
            interval_secs: AtomicU64::new(DEFAULT_LEASE_CHECK_INTERVAL),
            fence: AtomicBool::new(LossAction::default() == LossAction::Fence),
        }
    }
}

impl LeaseCheck {
    pub fn set(&self, interval_secs: u64, action: LossAction) {
        self.interval_secs.store(interval_secs, Ordering::Release);
        self.fence
            .store(action == LossAction::Fence, Ordering::Release);
    }

    /// `None` when checks are off.
    pub fn interval(&self) -> Option<Duration> {
        match self.interval_secs.load(Ordering::Acquire) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    pub fn action(&self) -> LossAction {
        if self.fence.load(Ordering::Acquire) {
            LossAction::Fence
        } else {
            LossAction::Log
        }
    }
}

/// Work a closed connection still has to do. A live upgrade waits for releases
/// to finish (they change lockspace state) and carries unfinished fencing over.
#[derive(Default)]
struct Disconnects {
    releasing: AtomicUsize,
    settled: Notify,
    /// Owner pid -> owner label, while being fenced.
    fencing: Mutex<HashMap<i32, String>>,
}

/// Held while a closed connection releases its owner's leases.
pub struct Releasing(Arc<Disconnects>);

impl Drop for Releasing {
    fn drop(&mut self) {
        if self.0.releasing.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// Held while an owner is being fenced; only [`Registry::start_fencing`] makes
/// one, so exactly one guard exists per pid in the table, and its drop removes
/// its own mark only.
pub struct Fencing {
    disconnects: Arc<Disconnects>,
    pid: i32,
    label: String,
}

impl Fencing {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for Fencing {
    fn drop(&mut self) {
        self.disconnects
            .fencing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.pid);
    }
}

/// Held by a lock connection whose peer (SO_PEERCRED) is the owner it registered.
pub struct Vouched {
    table: Arc<Mutex<HashMap<i32, usize>>>,
    pid: i32,
}

impl Drop for Vouched {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = table.get_mut(&self.pid) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.pid);
            }
        }
    }
}

impl Registry {
    pub fn lease_check(&self) -> &LeaseCheck {
        &self.lease_check
    }

    /// Marks `pid` as vouched for by a connection of its own (peer pid ==
    /// registered owner pid) while the guard lives.
    pub fn vouch(&self, pid: i32) -> Vouched {
        *self
            .vouched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(pid)
            .or_default() += 1;
        Vouched {
            table: self.vouched.clone(),
            pid,
        }
    }

    /// Whether an open lock connection of `pid` itself registered it as owner.
    pub fn is_vouched(&self, pid: i32) -> bool {
        self.vouched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&pid)
    }

    pub fn request_shutdown(&self) {
        self.shutdown_requested.store(true, Ordering::Release);
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown_requested.load(Ordering::Acquire)
    }

    pub fn releasing(&self) -> Releasing {
        self.disconnects.releasing.fetch_add(1, Ordering::AcqRel);
        Releasing(self.disconnects.clone())
    }

    /// Resolves once no closed connection is releasing leases any more.
    pub async fn releases_settled(&self) {
        loop {
            let settled = self.disconnects.settled.notified();
            if self.disconnects.releasing.load(Ordering::Acquire) == 0 {
                return;
            }
            settled.await;
        }
    }

    /// Marks `pid` as being fenced, checked and inserted under one lock: `None`
    /// if it already is (a disconnect and a lease loss, or a carried-over
    /// fencing, must not fence one process twice). The mark is what a live
    /// upgrade carries over; it ends with the guard.
    pub fn start_fencing(&self, pid: i32, label: &str) -> Option<Fencing> {
        let mut fencing = self
            .disconnects
            .fencing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if fencing.contains_key(&pid) {
            return None;
        }
        fencing.insert(pid, label.to_owned());
        Some(Fencing {
            disconnects: self.disconnects.clone(),
            pid,
            label: label.to_owned(),
        })
    }

    /// Owners being fenced right now: (pid, label).
    pub fn fencing_now(&self) -> Vec<(i32, String)> {
        self.disconnects
            .fencing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(p, l)| (*p, l.clone()))
            .collect()
    }

    /// Leases held in all lockspaces.
    pub fn leases(&self) -> usize {
        self.leases.load(Ordering::Acquire)
    }

    /// The counter lockspace actors keep current.
    pub(super) fn lease_counter(&self) -> Arc<AtomicUsize> {
        self.leases.clone()
    }

    pub fn get(&self, path: &[u8]) -> Option<Addr<Lockspace>> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned()
    }

    pub fn contains(&self, path: &[u8]) -> bool {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(path)
    }

    /// Every lockspace, for release-on-disconnect and status.
    pub fn all(&self) -> Vec<Addr<Lockspace>> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Inserts unless the key exists; returns whether it was inserted.
    pub(super) fn insert_new(&self, path: Vec<u8>, addr: Addr<Lockspace>) -> bool {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(&path) {
            return false;
        }
        map.insert(path, addr);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fencing_per_pid_and_each_guard_clears_only_its_own_mark() {
        let r = Registry::default();
        let first = r.start_fencing(42, "vm a").expect("first fencing");
        assert!(r.start_fencing(42, "vm a again").is_none());
        let other = r.start_fencing(43, "vm b").expect("other pid");
        drop(other);
        assert_eq!(r.fencing_now(), [(42, "vm a".to_owned())]);
        drop(first);
        assert!(r.fencing_now().is_empty());
        assert!(r.start_fencing(42, "vm a").is_some());
    }

    #[test]
    fn an_owner_is_vouched_while_any_connection_of_its_own_is_open() {
        let r = Registry::default();
        assert!(!r.is_vouched(7));
        let a = r.vouch(7);
        let b = r.vouch(7);
        drop(a);
        assert!(r.is_vouched(7));
        drop(b);
        assert!(!r.is_vouched(7));
    }
}
