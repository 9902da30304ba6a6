//! Owners being fenced right now. The mark keeps one process from being fenced
//! twice (a disconnect and a lease loss, or a carried-over fencing), and is what
//! a live upgrade carries over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Owner pid -> owner label, while being fenced.
#[derive(Clone, Default)]
pub struct FencingMarks(Arc<Mutex<HashMap<i32, String>>>);

/// Held while an owner is being fenced; only [`FencingMarks::start`] makes
/// one, so exactly one guard exists per pid in the table, and its drop removes
/// its own mark only.
pub struct Fencing {
    marks: FencingMarks,
    pid: i32,
    label: String,
}

impl Fencing {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for Fencing {
    fn drop(&mut self) {
        crate::crash::record_or_log(&crate::crash::Entry::Fence {
            pid: self.pid,
            label: None,
        });
        self.marks
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.pid);
    }
}

impl FencingMarks {
    /// Marks `pid` as being fenced, checked and inserted under one lock: `None`
    /// if it already is. The mark ends with the guard.
    pub fn start(&self, pid: i32, label: &str) -> Option<Fencing> {
        let mut marks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if marks.contains_key(&pid) {
            return None;
        }
        marks.insert(pid, label.to_owned());
        // Journaled before anything is done to the owner: a crash during the
        // fencing finds it and fences again.
        crate::crash::record_or_log(&crate::crash::Entry::Fence {
            pid,
            label: Some(label.to_owned()),
        });
        Some(Fencing {
            marks: self.clone(),
            pid,
            label: label.to_owned(),
        })
    }

    /// Owners being fenced right now: (pid, label).
    pub fn now(&self) -> Vec<(i32, String)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(p, l)| (*p, l.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fencing_per_pid_and_each_guard_clears_only_its_own_mark() {
        let marks = FencingMarks::default();
        let first = marks.start(42, "vm a").expect("first fencing");
        assert!(marks.start(42, "vm a again").is_none());
        let other = marks.start(43, "vm b").expect("other pid");
        drop(other);
        assert_eq!(marks.now(), [(42, "vm a".to_owned())]);
        drop(first);
        assert!(marks.now().is_empty());
        assert!(marks.start(42, "vm a").is_some());
    }
}
