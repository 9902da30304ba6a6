//! `systemctl stop virtlockd` under real systemd: the shutdown the README
//! describes (each lease owner's connection closed, its leases released, the
//! owner fenced: SIGTERM, then SIGKILL after 1.6 s), exit 0; the sockets stay
//! with systemd, and the next connection starts the daemon again.

use std::path::Path;
use std::time::Instant;

use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use super::setup::{lease_name, Host, Units, ADMIN_SOCKET, LOCKSPACE, LOCK_SOCKET, PATIENCE};

const HOLDER: &str = "/usr/local/bin/lease_holder";

/// Starts `examples/lease_holder` inside the container (its pid and its
/// connection's peer pid are the container's, so the daemon may fence it);
/// returns its pid once it holds the lease `name`.
fn start_holder(h: &Host, tag: &str, name: &str, extra: &str) -> u32 {
    // Its stdin is a pipe that stays open (the holder closes its connection
    // at the first line or at end of input).
    h.c.exec_ok(&format!(
        "cd /srv/vltest && setsid sh -c 'sleep 600 | {HOLDER} {LOCK_SOCKET} {LOCKSPACE} {name} {extra} \
         >{tag}.out 2>&1 & echo $! >{tag}.pid' </dev/null >/dev/null 2>&1"
    ));
    let out = h.c.path(&format!("/srv/vltest/{tag}.out"));
    h.wait_for(&format!("holder {tag} holds its lease"), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.starts_with("held\n"))
    });
    let pid = std::fs::read_to_string(h.c.path(&format!("/srv/vltest/{tag}.pid")))
        .expect("holder pid file");
    pid.trim().parse().expect("holder pid")
}

/// Whether `pid` runs in the container (a zombie counts as gone).
fn running(h: &Host, pid: u32) -> bool {
    std::fs::read_to_string(h.c.path(&format!("/proc/{pid}/stat"))).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

async fn stop_fences_and_sockets_stay(test: &str, units: Units) {
    let Some(h) = Host::boot_or_skip(test, units) else {
        return;
    };
    h.c.copy_in(&crate::support::example("lease_holder"), HOLDER);
    let names = [lease_name("stop-a"), lease_name("stop-b")];
    // The first connection (the holder's) starts the daemon.
    let polite = start_holder(&h, "polite", &names[0], "");
    let stubborn = start_holder(&h, "stubborn", &names[1], "--ignore-term");
    let pid = h.main_pid();
    assert_ne!(pid, 0);
    let lease_inodes = h.lease_inodes(&names);
    assert_eq!(h.locked_inodes(pid), lease_inodes);
    let sockets_before = [h.inode(LOCK_SOCKET), h.inode(ADMIN_SOCKET)];

    let t = Instant::now();
    h.c.exec_ok(&format!(
        "timeout --foreground {} systemctl stop virtlockd.service",
        PATIENCE.as_secs()
    ));
    let stopped = t.elapsed();
    let result = h.show(
        "virtlockd.service",
        &["Result", "ExecMainCode", "ExecMainStatus"],
    );
    assert_eq!(h.state(), "inactive/dead");
    // Exited (CLD_EXITED = 1) with status 0: a clean shutdown, not a kill.
    assert_eq!(
        (
            result["Result"].as_str(),
            result["ExecMainCode"].as_str(),
            result["ExecMainStatus"].as_str()
        ),
        ("success", "1", "0")
    );
    // Fenced: the polite holder by SIGTERM, the stubborn one by SIGKILL, and
    // the daemon waited for that before it exited.
    h.wait_for("both holders are gone", || {
        !running(&h, polite) && !running(&h, stubborn)
    });
    assert!(
        stopped.as_millis() >= 1500,
        "stop took {stopped:?}: the SIGKILL 1.6 s after SIGTERM was not waited for"
    );
    let journal = h.journal("-o cat");
    for (holder, signal) in [
        (polite, "SIGTERM"),
        (stubborn, "SIGTERM"),
        (stubborn, "SIGKILL"),
    ] {
        let line = format!("fencing lease owner pid={holder} ");
        assert!(
            journal
                .lines()
                .any(|l| l.starts_with(&line) && l.ends_with(&format!("signal={signal}"))),
            "no `{line}... signal={signal}` in the journal:\n{journal}"
        );
    }
    // Released, not just dropped with the process: AUTOCREATE files are
    // removed on release.
    for name in &names {
        assert!(
            !Path::new(&h.c.path(&format!("{LOCKSPACE}/{name}"))).exists(),
            "lease file {name} left behind"
        );
    }
    // The sockets stay with systemd: still listening, the very same sockets.
    assert_eq!(
        h.c.exec_ok("systemctl is-active virtlockd.socket virtlockd-admin.socket"),
        "active\nactive\n"
    );
    assert_eq!(
        [h.inode(LOCK_SOCKET), h.inode(ADMIN_SOCKET)],
        sockets_before
    );
    eprintln!(
        "{test}: `systemctl stop` took {stopped:?} (2 holders fenced, one needing SIGKILL), exit 0, sockets kept"
    );

    // The next connection starts a new daemon, and the leases are free.
    let t = Instant::now();
    let mut c = h.client(4_000_001).await;
    c.create_lockspace(LOCKSPACE.as_bytes())
        .await
        .expect("CREATE_LOCKSPACE");
    for name in &names {
        c.acquire(LOCKSPACE.as_bytes(), name.as_bytes(), ACQUIRE_AUTOCREATE)
            .await
            .expect("the stopped daemon's leases are free");
    }
    let second = h.main_pid();
    assert!(second != 0 && second != pid, "MainPID {pid} then {second}");
    eprintln!(
        "{test}: next connection started daemon {second} and took both leases in {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn systemd_stop_fences_and_sockets_stay_with_our_units() {
    stop_fences_and_sockets_stay(
        "systemd_stop_fences_and_sockets_stay_with_our_units",
        Units::Ours,
    )
    .await;
}

#[tokio::test]
async fn systemd_stop_fences_and_sockets_stay_with_debian_units() {
    stop_fences_and_sockets_stay(
        "systemd_stop_fences_and_sockets_stay_with_debian_units",
        Units::Debian,
    )
    .await;
}
