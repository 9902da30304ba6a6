//! The owners of one held resource: one entry per acquisition, in order. A
//! lease has one owner, a shared one a few, so up to two live inline; the
//! list costs 16 bytes in every lease record (a `SmallVec` of two cost 24,
//! and a host holds thousands of leases, each a bucket of the lockspace's
//! table).

use std::ops::Deref;

use super::OwnerPid;

#[derive(Debug, Clone)]
pub enum Owners {
    /// `len` (0-2) entries of `pids`.
    Few { len: u8, pids: [OwnerPid; 2] },
    /// More than two (shared leases), on the heap.
    Many(Box<Vec<OwnerPid>>),
}

/// Equal when the lists are: not the representation (a removed entry
/// leaves a stale slot behind, and a list may be on the heap or inline).
impl PartialEq for Owners {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Owners {}

impl Owners {
    /// A resource's first owner.
    pub fn one(pid: OwnerPid) -> Self {
        Self::Few {
            len: 1,
            pids: [pid, 0],
        }
    }

    pub fn from_vec(pids: Vec<OwnerPid>) -> Self {
        match *pids.as_slice() {
            [] => Self::Few {
                len: 0,
                pids: [0; 2],
            },
            [a] => Self::Few {
                len: 1,
                pids: [a, 0],
            },
            [a, b] => Self::Few {
                len: 2,
                pids: [a, b],
            },
            _ => Self::Many(Box::new(pids)),
        }
    }

    pub fn push(&mut self, pid: OwnerPid) {
        match self {
            Self::Few { len, pids } if usize::from(*len) < pids.len() => {
                pids[usize::from(*len)] = pid;
                *len += 1;
            }
            Self::Few { pids, .. } => {
                let mut all = pids.to_vec();
                all.push(pid);
                *self = Self::Many(Box::new(all));
            }
            Self::Many(all) => all.push(pid),
        }
    }

    pub fn pop(&mut self) -> Option<OwnerPid> {
        match self {
            Self::Few { len: 0, .. } => None,
            Self::Few { len, pids } => {
                *len -= 1;
                Some(pids[usize::from(*len)])
            }
            Self::Many(all) => all.pop(),
        }
    }

    /// Removes the entry at `idx` (which must exist), keeping the order.
    pub fn remove(&mut self, idx: usize) -> OwnerPid {
        match self {
            Self::Few { len, pids } => {
                assert!(idx < usize::from(*len), "owner index out of range");
                let pid = pids[idx];
                pids.copy_within(idx + 1.., idx);
                *len -= 1;
                pid
            }
            Self::Many(all) => all.remove(idx),
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&OwnerPid) -> bool) {
        match self {
            Self::Few { .. } => {
                let kept: Vec<OwnerPid> = self.iter().copied().filter(|p| keep(p)).collect();
                *self = Self::from_vec(kept);
            }
            Self::Many(all) => all.retain(keep),
        }
    }
}

impl Deref for Owners {
    type Target = [OwnerPid];

    fn deref(&self) -> &[OwnerPid] {
        match self {
            Self::Few { len, pids } => &pids[..usize::from(*len)],
            Self::Many(all) => all,
        }
    }
}

impl<'a> IntoIterator for &'a Owners {
    type Item = &'a OwnerPid;
    type IntoIter = std::slice::Iter<'a, OwnerPid>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Extend<OwnerPid> for Owners {
    fn extend<I: IntoIterator<Item = OwnerPid>>(&mut self, pids: I) {
        for pid in pids {
            self.push(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_order_inline_and_on_the_heap() {
        let mut o = Owners::one(1);
        o.push(2);
        assert!(matches!(o, Owners::Few { len: 2, .. }));
        o.push(1);
        assert!(matches!(o, Owners::Many(_)));
        assert_eq!(&*o, [1, 2, 1]);
        assert_eq!(o.remove(0), 1);
        assert_eq!(&*o, [2, 1]);
        o.retain(|&p| p != 2);
        assert_eq!(&*o, [1]);
        assert_eq!(o.pop(), Some(1));
        assert_eq!(o.pop(), None);
        assert!(o.is_empty());

        let mut few = Owners::from_vec(vec![5, 6]);
        assert_eq!(few.remove(0), 5);
        assert_eq!(&*few, [6]);
        few.extend([7, 8]);
        assert_eq!(&*few, [6, 7, 8]);
        let mut two = Owners::from_vec(vec![3, 4]);
        two.retain(|&p| p == 4);
        assert_eq!(&*two, [4]);
    }

    #[test]
    fn lists_compare_by_their_entries_not_their_representation() {
        let mut removed = Owners::from_vec(vec![6, 5]);
        removed.pop();
        assert_eq!(removed, Owners::one(6));
        let mut shrunk = Owners::from_vec(vec![6, 7, 8]);
        shrunk.retain(|&p| p == 6);
        assert!(matches!(shrunk, Owners::Many(_)));
        assert_eq!(shrunk, Owners::one(6));
        assert_ne!(shrunk, Owners::one(7));
    }

    #[test]
    fn a_lease_record_pays_16_bytes_for_its_owners() {
        assert_eq!(std::mem::size_of::<Owners>(), 16);
    }
}
