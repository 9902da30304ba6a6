//! Bounded waits: each polls a condition the test can observe (a file, a
//! process, the daemon's status or log) until it holds, and fails the test
//! when it does not within its limit. No test sleeps to let something happen.

use std::time::{Duration, Instant};

use super::daemon::Daemon;

/// The longest round trip a client may see while another client's fencing or
/// a hung filesystem is under way. What it guards against lasts seconds (the
/// fencing schedule, or forever); the margin below that absorbs the scheduling
/// noise of a busy 2-core machine running the whole suite at once.
pub const UNSTALLED: Duration = Duration::from_millis(500);

/// How long a live upgrade, a reload or a logged event may take on a loaded
/// machine.
pub const SLOW: Duration = Duration::from_secs(20);

/// How often a condition is checked.
const TICK: Duration = Duration::from_millis(10);

/// Whether `done` holds within `limit`, checked every few milliseconds.
pub async fn within(limit: Duration, done: impl FnMut() -> bool) -> bool {
    within_every(TICK, limit, done).await
}

/// [`within`], checked every `tick`: a short one catches a short-lived state.
pub async fn within_every(tick: Duration, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(tick).await;
    }
}

/// [`within`] for code that runs outside the async runtime.
pub fn within_blocking(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(TICK);
    }
}

/// Waits until `done` holds; returns how long that took. Fails the test,
/// naming `what`, after `limit`.
pub async fn until(what: &str, limit: Duration, done: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    assert!(within(limit, done).await, "{what}: not within {limit:?}");
    t0.elapsed()
}

/// Waits until `log` holds `text` at least `n` times. For what only the log
/// shows (a failed upgrade, the exec window, a reload): checked every
/// millisecond, the exec window is short.
pub async fn wait_logged_in(log: impl Fn() -> String, text: &str, n: usize, what: &str) {
    let seen = within_every(Duration::from_millis(1), SLOW, || {
        log().matches(text).count() >= n
    })
    .await;
    assert!(seen, "{what} (no {n}x `{text}`):\n{}", log());
}

/// Waits until `d` has logged `text` at least `n` times.
pub async fn wait_logged(d: &Daemon, text: &str, n: usize, what: &str) {
    wait_logged_in(|| d.log(), text, n, what).await;
}
