//! Crash points for the crash-safety tests, compiled only with the
//! `failpoints` feature (the test suite's build; never a package's).
//!
//! A test arms one point by writing its name to the file named by
//! `$VIRTLOCKD_FAILPOINT` (for the daemon under systemd, set in a drop-in).
//! The daemon that reaches that point removes the file and kills itself
//! there, with SIGKILL (or SIGABRT, as a panic would end it, with
//! `NAME:abort`). The file is consumed by the crash, so the daemon that
//! systemd restarts runs on unarmed: exactly one crash per arming, which a
//! per-process failpoint configuration (as the `fail` crate keeps it, read
//! again by every restarted process) cannot express.

/// Kills the daemon here if a test armed `name`; nothing otherwise.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    let Some(file) = std::env::var_os("VIRTLOCKD_FAILPOINT") else {
        return;
    };
    let Ok(armed) = std::fs::read_to_string(&file) else {
        return;
    };
    let armed = armed.trim();
    let (point, signal) = match armed.strip_suffix(":abort") {
        Some(p) => (p, nix::sys::signal::Signal::SIGABRT),
        None => (armed, nix::sys::signal::Signal::SIGKILL),
    };
    if point != name || std::fs::remove_file(&file).is_err() {
        return;
    }
    tracing::error!(
        point = name,
        ?signal,
        "crash point reached: killing the daemon"
    );
    if signal == nix::sys::signal::Signal::SIGABRT {
        std::process::abort();
    }
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), signal);
    loop {
        std::thread::park();
    }
}

/// Kills the daemon here if a test armed `name`; nothing otherwise.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}
