//! Owner pids the kernel vouches for: pid -> number of open lock connections
//! whose SO_PEERCRED pid equals the owner pid they registered. Only those
//! owners are ever fenced for a lost lease (a registered pid alone is just
//! what a client claimed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone, Default)]
pub struct VouchedOwners(Arc<Mutex<HashMap<i32, usize>>>);

/// Held by a lock connection whose peer (SO_PEERCRED) is the owner it registered.
pub struct Vouched {
    owners: VouchedOwners,
    pid: i32,
}

impl Drop for Vouched {
    fn drop(&mut self) {
        let mut table = self.owners.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = table.get_mut(&self.pid) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.pid);
            }
        }
    }
}

impl VouchedOwners {
    /// Marks `pid` as vouched for by a connection of its own (peer pid ==
    /// registered owner pid) while the guard lives.
    pub fn vouch(&self, pid: i32) -> Vouched {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(pid)
            .or_default() += 1;
        Vouched {
            owners: self.clone(),
            pid,
        }
    }

    /// Whether an open lock connection of `pid` itself registered it as owner.
    pub fn contains(&self, pid: i32) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_vouched_while_any_connection_of_its_own_is_open() {
        let owners = VouchedOwners::default();
        assert!(!owners.contains(7));
        let a = owners.vouch(7);
        let b = owners.vouch(7);
        drop(a);
        assert!(owners.contains(7));
        drop(b);
        assert!(!owners.contains(7));
    }
}
