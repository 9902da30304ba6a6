//! The number of leases held in all lockspaces: the idle timeout (`-t`) and the
//! inspection status read it; each lockspace actor keeps its own share current
//! through a [`LeaseShare`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct LeaseCount(Arc<AtomicUsize>);

impl LeaseCount {
    /// Leases held in all lockspaces.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// A lockspace's share of the count, starting at `held`.
    pub fn share(&self, held: usize) -> LeaseShare {
        self.0.fetch_add(held, Ordering::AcqRel);
        LeaseShare {
            total: self.0.clone(),
            counted: held,
        }
    }
}

/// One lockspace's part of the [`LeaseCount`].
pub struct LeaseShare {
    total: Arc<AtomicUsize>,
    counted: usize,
}

impl LeaseShare {
    /// This lockspace now holds `held` leases.
    pub fn set(&mut self, held: usize) {
        if held > self.counted {
            self.total.fetch_add(held - self.counted, Ordering::AcqRel);
        } else {
            self.total.fetch_sub(self.counted - held, Ordering::AcqRel);
        }
        self.counted = held;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_the_sum_of_the_shares() {
        let count = LeaseCount::default();
        let mut a = count.share(3);
        let mut b = count.share(0);
        assert_eq!(count.get(), 3);
        b.set(2);
        a.set(1);
        assert_eq!(count.get(), 3);
        a.set(0);
        b.set(0);
        assert_eq!(count.get(), 0);
    }
}
