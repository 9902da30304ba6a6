//! Releases still running for connections that closed. A live upgrade waits for
//! them to finish: they change lockspace state that the snapshot records.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct PendingReleases(Arc<Inner>);

#[derive(Default)]
struct Inner {
    running: AtomicUsize,
    settled: Notify,
}

/// Held while a closed connection releases its owner's leases.
pub struct Releasing(Arc<Inner>);

impl Drop for Releasing {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

impl PendingReleases {
    /// Counts one release from now until the guard drops.
    pub fn start(&self) -> Releasing {
        self.0.running.fetch_add(1, Ordering::AcqRel);
        Releasing(self.0.clone())
    }

    /// Resolves once no closed connection is releasing leases any more.
    pub async fn settled(&self) {
        loop {
            let settled = self.0.settled.notified();
            if self.0.running.load(Ordering::Acquire) == 0 {
                return;
            }
            settled.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settled_waits_for_every_running_release() {
        let releases = PendingReleases::default();
        releases.settled().await;
        let a = releases.start();
        let b = releases.start();
        let r = releases.clone();
        let waiter = tokio::spawn(async move { r.settled().await });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("settled after the last release")
            .expect("waiter task");
    }
}
