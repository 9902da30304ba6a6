//! The restart policy of our unit under real systemd: a crash of the daemon
//! (here a SIGKILL, as from the OOM killer) restarts it at once, so that it
//! can take its leases back from the file-descriptor store; `systemctl stop`
//! is a shutdown and restarts nothing.

use std::time::Instant;

use super::setup::{Host, Units, PATIENCE};

#[test]
fn systemd_restarts_the_daemon_after_a_crash_but_not_after_a_stop() {
    let test = "systemd_restarts_the_daemon_after_a_crash_but_not_after_a_stop";
    let Some(h) = Host::boot_or_skip(test, Units::Ours) else {
        return;
    };
    // As systemd 252 reads the unit (a setting it cannot parse is dropped
    // with a warning, and would show its default here).
    let unit = h.show(
        "virtlockd.service",
        &[
            "Restart",
            "RestartUSec",
            "NotifyAccess",
            "FileDescriptorStoreMax",
            "OOMPolicy",
            "Environment",
        ],
    );
    assert_eq!(
        (
            unit["Restart"].as_str(),
            unit["RestartUSec"].as_str(),
            unit["NotifyAccess"].as_str(),
            unit["FileDescriptorStoreMax"].as_str(),
            unit["OOMPolicy"].as_str(),
        ),
        ("on-failure", "0", "main", "64", "continue"),
        "{unit:?}"
    );
    assert!(
        unit["Environment"]
            .split_whitespace()
            .any(|v| v == "VIRTLOCKD_CRASH_SAFE=1"),
        "{unit:?}"
    );

    h.c.exec_ok(&format!(
        "timeout --foreground {} systemctl start virtlockd.service",
        PATIENCE.as_secs()
    ));
    let crashed = h.main_pid();
    assert_ne!(crashed, 0);
    let restarts = |h: &Host| h.show("virtlockd.service", &["NRestarts"])["NRestarts"].clone();
    assert_eq!(restarts(&h), "0");

    // A crash: the daemon dies by SIGKILL, not through systemctl.
    let t = Instant::now();
    h.c.exec_ok(&format!("kill -KILL {crashed}"));
    h.wait_for("a new daemon runs after the crash", || {
        let pid = h.main_pid();
        pid != 0 && pid != crashed && h.state() == "active/running"
    });
    let back = t.elapsed();
    assert_eq!(restarts(&h), "1");
    let restarted = h.main_pid();
    // The restarted daemon answers on the sockets systemd kept.
    assert_eq!(
        h.ctl(&["status"])["pid"].as_u64(),
        Some(u64::from(restarted))
    );

    // A stop is a shutdown: nothing is restarted, now or scheduled.
    h.c.exec_ok(&format!(
        "timeout --foreground {} systemctl stop virtlockd.service",
        PATIENCE.as_secs()
    ));
    assert_eq!(h.state(), "inactive/dead");
    assert_eq!(restarts(&h), "1");
    eprintln!(
        "{test}: after SIGKILL of pid {crashed}, pid {restarted} was active in {back:?}; \
         a stop restarted nothing"
    );
}
