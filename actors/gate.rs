//! The `max_clients` gate of one RPC server. At the limit the accept loop stops
//! calling accept(), so new clients wait in the kernel backlog (as with libvirt)
//! instead of being refused; a disconnect or a raised limit lets the next one in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

pub struct ClientGate {
    connected: AtomicUsize,
    max: AtomicUsize,
    changed: Notify,
    /// Wakes an accept loop already waiting in accept() when the limit drops, so
    /// that it stops accepting at once (admin srv-clients-set).
    lowered: Notify,
}

/// One admitted client; dropping it frees the slot.
pub struct Slot(Arc<ClientGate>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

impl ClientGate {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            connected: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            changed: Notify::new(),
            lowered: Notify::new(),
        })
    }

    /// Clients currently admitted.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Changes the limit live. Lowering it disconnects nobody; it only stops
    /// admitting until enough clients have left.
    pub fn set_max(&self, max: usize) {
        let old = self.max.swap(max, Ordering::AcqRel);
        self.changed.notify_one();
        if max < old {
            self.lowered.notify_waiters();
        }
    }

    /// Resolves when the limit is lowered (see [`ClientGate::set_max`]).
    pub async fn lowered(&self) {
        self.lowered.notified().await;
    }

    /// Whether the next client would have to wait.
    pub fn full(&self) -> bool {
        self.connected() >= self.max()
    }

    /// Waits until a client may be admitted. The accept loop calls it before
    /// accept() and takes the slot after: a client is only counted once it exists.
    pub async fn room(&self) {
        while self.full() {
            // notify_one stores a wake-up if nobody waits yet, so none is lost
            // between the check above and this await.
            self.changed.notified().await;
        }
    }

    /// Counts an admitted client (also one adopted across a live upgrade, which
    /// may exceed the limit).
    pub fn take(self: &Arc<Self>) -> Slot {
        self.connected.fetch_add(1, Ordering::AcqRel);
        Slot(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_at_the_limit_and_resumes() {
        let g = ClientGate::new(1);
        g.room().await;
        let a = g.take();
        assert!(g.full());
        let g2 = g.clone();
        let waiter = tokio::spawn(async move {
            g2.room().await;
            g2.take()
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        let b = tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.connected(), 1);
        g.set_max(2);
        g.room().await;
        let c = g.take();
        assert_eq!(g.connected(), 2);
        drop((b, c));
        assert_eq!(g.connected(), 0);
    }
}
