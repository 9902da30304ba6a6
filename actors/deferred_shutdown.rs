//! A shutdown asked for while a live upgrade had the daemon paused: the
//! supervisor records it, the upgrade checks it just before exec and gives up,
//! and the supervisor shuts down once the upgrade has resumed everything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct DeferredShutdown(Arc<AtomicBool>);

impl DeferredShutdown {
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
