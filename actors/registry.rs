//! The table of lockspace actors, keyed by the exact path string clients use
//! (`""` = default lockspace). The supervisor is its only writer; connections read
//! it directly, because a lookup happens on almost every request and lockspaces are
//! never removed while the daemon runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use actix::Addr;

use super::lockspace::Lockspace;

#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<HashMap<Vec<u8>, Addr<Lockspace>>>>,
    /// Leases held in all lockspaces, kept current by the lockspace actors.
    leases: Arc<AtomicUsize>,
}

impl Registry {
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

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
