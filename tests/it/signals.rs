//! Signals: SIGTERM/SIGINT/SIGQUIT shut down cleanly (sockets and pid file
//! removed, exit 0); SIGHUP, SIGUSR1 and SIGUSR2, which kill libvirt's daemon and
//! drop every lock, leave ours running with its locks.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::daemon::verbose_in;
use crate::support::wait::wait_upgraded;
use crate::support::{bytes, holding, Daemon};

#[tokio::test]
async fn terminating_signals_exit_cleanly_and_remove_runtime_files() {
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
        let mut d = Daemon::start();
        let run = d.dir.path().join("run");
        assert!(run.join("virtlockd.pid").exists());
        assert_eq!(
            std::fs::read_to_string(run.join("virtlockd.pid")).unwrap(),
            d.pid().to_string(),
            "pid file holds the pid without a newline"
        );
        assert_eq!(d.stop_with(sig), Some(0), "{sig}");
        for f in ["virtlockd-sock", "virtlockd-admin-sock", "virtlockd.pid"] {
            assert!(!run.join(f).exists(), "{f} left behind after {sig}");
        }
    }
}

#[tokio::test]
async fn hangup_and_user_signals_keep_the_daemon_and_its_locks() {
    let mut d = Daemon::start();
    let ls = d.base().join("ls");
    let mut c = holding(&d, &ls, b"r").await;
    for sig in [
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPIPE,
    ] {
        kill(Pid::from_raw(d.pid() as i32), sig).unwrap();
        c.ping().await.unwrap();
        assert!(d.alive(), "daemon died of {sig}");
        assert_eq!(
            d.kernel_locks_on(&ls.join("r")),
            ["POSIX WRITE 0-0"],
            "{sig}"
        );
    }
}

#[tokio::test]
async fn second_daemon_on_the_same_paths_refuses_and_leaves_the_first_alone() {
    let d = Daemon::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_virtlockd"))
        .arg("--runtime-dir")
        .arg(d.dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unable to obtain pidfile"));
    d.client().await.ping().await.unwrap();
}

#[test]
fn sockets_are_mode_0700() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    for s in [d.socket(), d.admin_socket()] {
        let mode = std::fs::metadata(&s).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", s.display());
    }
}

/// Whether the start-up has reached a given point (run directory, daemon pid).
type Reached = fn(&std::path::Path, u32) -> bool;

/// Spawns the daemon and sends `sig` the moment `ready` says so, polling without
/// sleeping: the signal lands in the middle of the start-up.
fn start_and_signal_at_once(sig: Signal, ready: Reached) -> (tempfile::TempDir, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_virtlockd"));
    let mut child = verbose_in(&mut daemon, &run)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready(&run, child.id()) {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "daemon did not start:\n{}",
                std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
            );
        }
        std::thread::yield_now();
    }
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    let code = match child.wait() {
        Ok(s) => s.code(),
        Err(_) => None,
    };
    (dir, code)
}

/// The pid file holding the pid: `main` has run, the sockets are not bound yet.
fn pid_file_written(run: &std::path::Path, pid: u32) -> bool {
    std::fs::read_to_string(run.join("virtlockd.pid")).is_ok_and(|s| s == pid.to_string())
}

/// A client can connect: the sockets are bound, the actors may not exist yet.
fn socket_accepts(run: &std::path::Path, _: u32) -> bool {
    std::os::unix::net::UnixStream::connect(run.join("virtlockd-sock")).is_ok()
}

#[test]
fn a_shutdown_signal_during_start_up_is_a_clean_shutdown() {
    // Once `main` runs, no signal may kill the daemon with its default action:
    // it is handled once the actors exist, as a clean shutdown.
    let ready: [(&str, Reached); 2] = [
        ("pid file written", pid_file_written),
        ("socket accepts", socket_accepts),
    ];
    for round in 0..20 {
        let (when, ready) = ready[round % 2];
        let sig = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT][round % 3];
        let (dir, code) = start_and_signal_at_once(sig, ready);
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        assert_eq!(
            code,
            Some(0),
            "round {round}: {sig} once the {when}:\n{log}"
        );
        let run = dir.path().join("run");
        for f in ["virtlockd-sock", "virtlockd-admin-sock", "virtlockd.pid"] {
            assert!(
                !run.join(f).exists(),
                "round {round}: {f} left behind after {sig} once the {when}"
            );
        }
        assert!(log.contains("shutdown requested"), "round {round}:\n{log}");
    }
}

/// A signal mask field ("SigBlk", "SigCgt") of /proc/<pid>/task/<tid>/status.
fn mask(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(":"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
}

#[tokio::test]
async fn every_thread_blocks_the_daemons_signals_and_none_has_a_handler() {
    let d = Daemon::start();
    let mut c = d.client().await;
    c.create_lockspace(&bytes(&d.base().join("ls")))
        .await
        .unwrap();
    let guarded: u64 = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ]
    .iter()
    .map(|&s| 1u64 << (s as i32 - 1))
    .sum();
    for when in ["after start-up", "after a live upgrade"] {
        let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", d.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("status")).ok())
            .collect();
        assert!(tasks.len() > 1, "{when}: the daemon has threads");
        // The one thread that takes them: its mask is lifted inside sigwaitinfo.
        let waiting = tasks
            .iter()
            .filter(|s| s.starts_with("Name:\tsignals\n"))
            .count();
        assert_eq!(waiting, 1, "{when}: one signal thread");
        for status in &tasks {
            let name = status.lines().next().unwrap_or_default();
            assert!(
                name == "Name:\tsignals" || mask(status, "SigBlk") & guarded == guarded,
                "{when}: {name} may take a signal"
            );
            // No handler: none can run on a thread an exec discards.
            assert_eq!(mask(status, "SigCgt") & guarded, 0, "{when}: {name}");
        }
        d.signal(Signal::SIGUSR1);
        wait_upgraded(&d, 1).await;
    }
}
