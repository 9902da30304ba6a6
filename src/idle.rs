//! The idle timeout (`-t`, admin daemon-timeout, carried over a live upgrade):
//! the daemon shuts down once it has had no client and no lease for the whole
//! timeout. Pure: the supervisor tells it, at each tick, whether the daemon is
//! idle.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct IdleTimeout {
    timeout: Option<Duration>,
    idle_since: Option<Instant>,
}

impl IdleTimeout {
    /// `None`: never.
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            idle_since: None,
        }
    }

    /// A new timeout in seconds (0 = never); idleness counts from now on.
    pub fn set_secs(&mut self, secs: u32) {
        *self = Self::new((secs > 0).then(|| Duration::from_secs(secs.into())));
    }

    /// The timeout in seconds as the admin API and the snapshot carry it
    /// (0 = never).
    pub fn secs(&self) -> u32 {
        self.timeout
            .map_or(0, |t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX))
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// One tick at `now`: whether the daemon has been idle for the whole
    /// timeout. Any activity starts the count again.
    pub fn expired(&mut self, idle: bool, now: Instant) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        if !idle {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        now.saturating_duration_since(since) >= timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn expires_after_a_whole_timeout_of_idleness() {
        let t0 = Instant::now();
        let mut idle = IdleTimeout::new(Some(3 * S));
        assert!(!idle.expired(true, t0));
        assert!(!idle.expired(true, t0 + 2 * S));
        assert!(idle.expired(true, t0 + 3 * S));
    }

    #[test]
    fn activity_starts_the_count_again() {
        let t0 = Instant::now();
        let mut idle = IdleTimeout::new(Some(3 * S));
        assert!(!idle.expired(true, t0));
        assert!(!idle.expired(false, t0 + 2 * S));
        assert!(!idle.expired(true, t0 + 4 * S));
        assert!(!idle.expired(true, t0 + 6 * S));
        assert!(idle.expired(true, t0 + 7 * S));
    }

    #[test]
    fn zero_means_never_and_a_new_timeout_counts_from_then() {
        let t0 = Instant::now();
        let mut idle = IdleTimeout::new(None);
        assert!(!idle.expired(true, t0 + 1000 * S));
        assert_eq!(idle.secs(), 0);
        idle.set_secs(2);
        assert_eq!(idle.secs(), 2);
        assert!(!idle.expired(true, t0 + 1000 * S));
        assert!(idle.expired(true, t0 + 1002 * S));
        idle.set_secs(0);
        assert_eq!(idle.timeout(), None);
        assert!(!idle.expired(true, t0 + 2000 * S));
    }

    #[test]
    fn a_timeout_beyond_u32_seconds_reads_as_the_largest() {
        let idle = IdleTimeout::new(Some(Duration::from_secs(u64::MAX)));
        assert_eq!(idle.secs(), u32::MAX);
    }
}
