//! The client limits of one RPC server: `max_clients` (what the accept gate
//! enforces) and the maximum of clients waiting for authentication
//! (`nclients_unauth_max`, kept and validated as libvirt does, though no client
//! of ours ever waits for authentication). Pure: how each event changes them.

/// One server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub max: usize,
    pub unauth_max: usize,
}

impl ClientLimits {
    /// At start-up both are `max_clients` (libvirt's virtlockd passes the same
    /// value for both).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            unauth_max: max,
        }
    }

    /// Limits as the old image left them across a live upgrade (admin API,
    /// reload), not as this image's config says: libvirt's restart does the
    /// same. A state without the unauthenticated maximum (libvirt's) gets
    /// `max`; none is ever above `max`.
    pub fn restored(max: u64, unauth_max: Option<u64>) -> Self {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        Self {
            max,
            unauth_max: unauth_max
                .map_or(max, |u| usize::try_from(u).unwrap_or(usize::MAX).min(max)),
        }
    }

    /// SIGHUP reload with a new `max_clients`. libvirt's virtlockd does not
    /// re-read limits on SIGHUP at all; ours does, so srv-clients-info must
    /// stay consistent with it: the unauthenticated maximum follows `max` as
    /// at start-up (where both are equal), except that a lower value set by the
    /// admin API is kept, clamped to the new `max` (never above it, which
    /// srv-clients-set refuses).
    pub fn reloaded(self, max: usize) -> Self {
        Self {
            max,
            unauth_max: if self.unauth_max == self.max {
                max
            } else {
                self.unauth_max.min(max)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_moves_a_following_unauth_max_and_clamps_a_lower_one() {
        let start = ClientLimits::new(10);
        assert_eq!(start.reloaded(20), ClientLimits::new(20));
        let lowered = ClientLimits {
            max: 10,
            unauth_max: 4,
        };
        assert_eq!(lowered.reloaded(20).unauth_max, 4);
        assert_eq!(lowered.reloaded(3), ClientLimits::new(3));
    }

    #[test]
    fn a_restored_unauth_max_defaults_to_max_and_never_exceeds_it() {
        assert_eq!(ClientLimits::restored(5, None), ClientLimits::new(5));
        assert_eq!(ClientLimits::restored(5, Some(9)), ClientLimits::new(5));
        assert_eq!(ClientLimits::restored(5, Some(2)).unauth_max, 2);
        assert_eq!(ClientLimits::restored(u64::MAX, None).max, usize::MAX);
    }
}
