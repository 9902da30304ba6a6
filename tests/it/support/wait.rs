//! Bounded waits: each polls a condition the test can observe (a file, a
//! process, the daemon's status or log) until it holds, and fails the test
//! when it does not within its limit. A test sleeps only where time must pass
//! on purpose (nothing may happen within it), and says so.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use virtlockd::client::{Client, ClientError};
use virtlockd::protocol::inspect::{self, procedure, StatusView};

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
        if let Some(held) = verdict(&mut done, deadline) {
            return held;
        }
        tokio::time::sleep(tick).await;
    }
}

/// [`within`] for code that runs outside the async runtime.
pub fn within_blocking(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(held) = verdict(&mut done, deadline) {
            return held;
        }
        std::thread::sleep(TICK);
    }
}

/// Whether `done` held (`Some(true)`), the time is up (`Some(false)`), or the
/// poll goes on (`None`).
fn verdict(done: &mut impl FnMut() -> bool, deadline: Instant) -> Option<bool> {
    if done() {
        Some(true)
    } else if Instant::now() >= deadline {
        Some(false)
    } else {
        None
    }
}

/// Waits until `done` holds; returns how long that took. Fails the test,
/// naming `what`, after `limit`.
pub async fn until(what: &str, limit: Duration, done: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    assert!(within(limit, done).await, "{what}: not within {limit:?}");
    t0.elapsed()
}

/// [`until`] for code that runs outside the async runtime.
pub fn until_blocking(what: &str, limit: Duration, done: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    assert!(within_blocking(limit, done), "{what}: not within {limit:?}");
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

/// The daemon's summary, asked on an admin connection `admin` already has.
pub async fn status_on(admin: &mut Client) -> Result<StatusView, ClientError> {
    let reply = admin
        .call_program(
            inspect::PROGRAM,
            inspect::VERSION,
            procedure::STATUS,
            Bytes::new(),
        )
        .await?;
    StatusView::decode(&reply).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Waits until the daemon behind `admin` reports a status for which `done`
/// holds; fails with `what`, the last answer and `log()` after `limit`.
async fn wait_status(
    admin: &mut Client,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&StatusView) -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        let seen = status_on(admin).await;
        if seen.as_ref().is_ok_and(&mut done) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?} (last answer {seen:?}):\n{}",
            log()
        );
        tokio::time::sleep(TICK).await;
    }
}

/// Waits until the daemon behind `admin` (a connection to its admin socket,
/// which every upgrade carries over) reports `n` live upgrades: the new
/// image then serves every client again.
pub async fn wait_upgraded_on(admin: &mut Client, n: u64, log: impl Fn() -> String) {
    wait_upgraded_within(admin, n, SLOW, log).await;
}

/// [`wait_upgraded_on`] with a limit of its own, for an upgrade of a huge state.
pub async fn wait_upgraded_within(
    admin: &mut Client,
    n: u64,
    limit: Duration,
    log: impl Fn() -> String,
) {
    let what = format!("upgrade {n} done");
    wait_status(admin, limit, &what, |s| s.upgrades >= n, log).await;
}

/// Waits until the daemon with the admin socket `socket` reports `n` live
/// upgrades, on a connection of its own.
pub async fn wait_upgraded_at(socket: &Path, n: u64, log: impl Fn() -> String) {
    let mut admin = Client::connect(socket).await.expect("connect admin socket");
    wait_upgraded_on(&mut admin, n, log).await;
}

/// Waits until `d` reports `n` live upgrades.
pub async fn wait_upgraded(d: &Daemon, n: u64) {
    wait_upgraded_at(&d.admin_socket(), n, || d.log()).await;
}

/// Waits until `d` serves exactly `n` lock clients: a connection a test
/// closed is then gone from the daemon too, with whatever its close releases.
pub async fn wait_lock_clients(d: &Daemon, n: u32) {
    wait_lock_clients_at(&d.admin_socket(), n, || d.log()).await;
}

/// [`wait_lock_clients`] for the daemon with the admin socket `socket`.
pub async fn wait_lock_clients_at(socket: &Path, n: u32, log: impl Fn() -> String) {
    let mut admin = Client::connect(socket).await.expect("connect admin socket");
    let what = format!("{n} lock clients");
    wait_status(&mut admin, SLOW, &what, |s| s.lock_clients == n, log).await;
}
