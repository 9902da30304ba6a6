//! Signals: SIGTERM/SIGINT/SIGQUIT shut down cleanly (sockets and pid file
//! removed, exit 0); SIGHUP, SIGUSR1 and SIGUSR2, which kill libvirt's daemon and
//! drop every lock, leave ours running with its locks.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use virtlockd::client::owner;
use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use crate::harness::{bytes, Daemon};

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
    let mut c = d.client().await;
    c.create_lockspace(&bytes(&ls)).await.unwrap();
    c.register(&owner("vm", 1, 4_000_001)).await.unwrap();
    c.acquire(&bytes(&ls), b"r", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
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
