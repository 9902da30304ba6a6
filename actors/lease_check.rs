//! Revalidation settings of leases on storage that may drop them
//! (virtlockd.conf, changed by SIGHUP): the supervisor sets them, every
//! lockspace actor that revalidates reads them at each tick.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{LossAction, DEFAULT_LEASE_CHECK_INTERVAL};

#[derive(Clone)]
pub struct LeaseCheck(Arc<Settings>);

struct Settings {
    interval_secs: AtomicU64,
    fence: AtomicBool,
}

impl Default for LeaseCheck {
    fn default() -> Self {
        Self(Arc::new(Settings {
            interval_secs: AtomicU64::new(DEFAULT_LEASE_CHECK_INTERVAL),
            fence: AtomicBool::new(LossAction::default() == LossAction::Fence),
        }))
    }
}

impl LeaseCheck {
    pub fn set(&self, interval_secs: u64, action: LossAction) {
        self.0.interval_secs.store(interval_secs, Ordering::Release);
        self.0
            .fence
            .store(action == LossAction::Fence, Ordering::Release);
    }

    /// `None` when checks are off.
    pub fn interval(&self) -> Option<Duration> {
        match self.0.interval_secs.load(Ordering::Acquire) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    pub fn action(&self) -> LossAction {
        if self.0.fence.load(Ordering::Acquire) {
            LossAction::Fence
        } else {
            LossAction::Log
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_interval_turns_checks_off() {
        let check = LeaseCheck::default();
        let reader = check.clone();
        check.set(0, LossAction::Log);
        assert_eq!(reader.interval(), None);
        assert_eq!(reader.action(), LossAction::Log);
        check.set(7, LossAction::Fence);
        assert_eq!(reader.interval(), Some(Duration::from_secs(7)));
        assert_eq!(reader.action(), LossAction::Fence);
    }
}
