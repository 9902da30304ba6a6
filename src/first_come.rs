//! A job offered to a thread of its own, which the one who needs its result
//! runs itself if that thread has not started it by then.
//!
//! A live upgrade's restore rebuilds thousands of leases beside the rest of
//! the start-up. On a quiet host the thread gets the other CPU at once; on a
//! busy one (a host full of guests) it may wait a whole scheduler slice for a
//! CPU while every client waits for it. Waiting for a thread that has not
//! begun is never faster than doing the work here.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// The job, if nobody took it yet.
type Slot<F> = Arc<Mutex<Option<F>>>;

pub struct FirstCome<F, T> {
    job: Slot<F>,
    /// Ends with the result if the thread ran the job, `None` if it found
    /// the job taken.
    thread: Option<JoinHandle<Option<T>>>,
}

impl<F, T> FirstCome<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    /// Offers `job` to a new thread. If the thread cannot be made, the job
    /// waits for [`FirstCome::result`].
    pub fn spawn(name: &str, job: F) -> Self {
        let job: Slot<F> = Arc::new(Mutex::new(Some(job)));
        let offered = Arc::clone(&job);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || take(&offered).map(|job| job()))
            .ok();
        Self { job, thread }
    }

    /// The job's result: run here if the thread has not started it, else
    /// the thread's. `None` if the thread panicked while running it.
    pub fn result(self) -> Option<T> {
        if let Some(job) = take(&self.job) {
            // Detached: it finds the slot empty and ends.
            return Some(job());
        }
        self.thread?.join().ok().flatten()
    }
}

fn take<F>(slot: &Mutex<Option<F>>) -> Option<F> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn the_thread_result_is_waited_for_once_it_started() {
        let (started_tx, started_rx) = mpsc::channel();
        let work = FirstCome::spawn("test-started", move || {
            let _ = started_tx.send(());
            std::thread::sleep(Duration::from_millis(50));
            std::thread::current().name().map(str::to_owned)
        });
        started_rx.recv().unwrap();
        assert_eq!(work.result().flatten().as_deref(), Some("test-started"));
    }

    #[test]
    fn a_job_no_thread_took_runs_on_the_caller() {
        // As when the thread was not made, or has not had a CPU yet.
        let work = FirstCome {
            job: Arc::new(Mutex::new(Some(|| std::thread::current().id()))),
            thread: None,
        };
        assert_eq!(work.result(), Some(std::thread::current().id()));
    }
}
