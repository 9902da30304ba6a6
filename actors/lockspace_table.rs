//! The table of lockspace actors, keyed by the exact path string clients use
//! (`""` = default lockspace). The supervisor is its only writer; connections read
//! it directly, because a lookup happens on almost every request and lockspaces are
//! never removed while the daemon runs.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use actix::{Addr, Handler};
use tokio::sync::oneshot;

use super::answered::{Answered, LockAnswer, LockRequest};
use super::lockspace::LockspaceActor;

#[derive(Clone, Default)]
pub struct LockspaceTable(Arc<RwLock<HashMap<Vec<u8>, Addr<LockspaceActor>>>>);

impl LockspaceTable {
    pub fn get(&self, path: &[u8]) -> Option<Addr<LockspaceActor>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned()
    }

    /// Sends `msg` to the lockspace of `path`, if there is one; its answer
    /// comes on the receiver (see [`Answered`]). No address is cloned: each
    /// clone of an actix address allocates a sender record, which on the
    /// request path would be two allocations per request.
    pub fn request<M>(&self, path: &[u8], msg: M) -> Option<oneshot::Receiver<LockAnswer>>
    where
        M: LockRequest,
        LockspaceActor: Handler<Answered<M>>,
    {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let addr = map.get(path)?;
        let (reply, answer) = oneshot::channel();
        addr.do_send(Answered { msg, reply });
        Some(answer)
    }

    pub fn contains(&self, path: &[u8]) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(path)
    }

    /// Every lockspace, for release-on-disconnect, inspection and upgrade.
    pub fn all(&self) -> Vec<Addr<LockspaceActor>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Inserts unless the key exists; returns whether it was inserted.
    pub(super) fn insert_new(&self, path: Vec<u8>, addr: Addr<LockspaceActor>) -> bool {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(&path) {
            return false;
        }
        map.insert(path, addr);
        true
    }
}
