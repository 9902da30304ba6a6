//! Crashes around the rest of a daemon's life: while a lease owner's own
//! connection closes (close:start, close:released: after the restart its
//! leases are released and the owner fenced, as a close without a crash
//! does), just before the exec of a live upgrade (upgrade:before-exec, from
//! `systemctl reload`), and while a new store generation replaces the old one
//! (store:new-generation-stored, reached by the restarted daemon as it
//! re-arms the store: it crashes again, and the third daemon recovers from
//! two generations). The background's leases and connections are untouched
//! by all of it.

use std::collections::BTreeSet;

use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use super::background::Background;
use super::ledger::{Ledger, Res};
use super::rig::{CrashHost, LS_A};
use crate::systemd::setup::{lease_name, LOCK_SOCKET, PATIENCE};

const HOLDER: &str = "/usr/local/bin/lease_holder";

/// Starts `examples/lease_holder` in the container, QEMU's part: its own pid
/// is the owner, so closing its connection releases its lease and fences it.
/// It closes when a line is written to `/srv/vltest/TAG.in`. Returns its pid
/// once it holds lease `name` in LS_A.
fn start_holder(ch: &CrashHost, tag: &str, name: &str) -> u32 {
    // Its stdin is a fifo it also holds open for writing (fd 3): no end of
    // input until the test writes the line.
    ch.c.exec_ok(&format!(
        "cd /srv/vltest && mkfifo {tag}.in && \
         setsid sh -c 'exec 3<>{tag}.in; exec {HOLDER} {LOCK_SOCKET} {LS_A} {name} --linger 60000 \
         <{tag}.in >{tag}.out 2>&1' </dev/null >/dev/null 2>&1 & echo $! >/srv/vltest/{tag}.pid"
    ));
    let out = ch.c.path(&format!("/srv/vltest/{tag}.out"));
    ch.wait_for(&format!("holder {tag} holds its lease"), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.starts_with("held\n"))
    });
    let pid = std::fs::read_to_string(ch.c.path(&format!("/srv/vltest/{tag}.pid")))
        .expect("holder pid file");
    pid.trim().parse().expect("holder pid")
}

/// Whether `pid` runs in the container (a zombie counts as gone).
fn running(ch: &CrashHost, pid: u32) -> bool {
    std::fs::read_to_string(ch.c.path(&format!("/proc/{pid}/stat"))).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_points_in_close_upgrade_and_store() {
    let test = "crash_points_in_close_upgrade_and_store";
    let Some(ch) = CrashHost::boot_or_skip(test, true) else {
        return;
    };
    let started = std::time::Instant::now();
    ch.c.copy_in(&crate::support::example("lease_holder"), HOLDER);
    let mut bg = Background::establish(&ch).await;

    for point in ["close:start", "close:released"] {
        let tag = point.replace(':', "-");
        let name = lease_name(&tag);
        let holder = start_holder(&ch, &tag, &name);
        let res = Res::in_dir(LS_A, name.clone(), ACQUIRE_AUTOCREATE);
        let key = (Some(LS_A.to_owned()), name.clone());
        assert_eq!(
            ch.listed().get(&key).map(|(o, _)| o.clone()),
            Some(vec![u64::from(holder)])
        );
        ch.arm(point);
        ch.c.exec_ok(&format!("echo close >/srv/vltest/{tag}.in"));
        ch.wait_for(&format!("{point}: reached"), || !ch.armed());
        ch.wait_restarted(bg.restarts + 1);
        // The close goes on in the restarted daemon: released, fenced.
        ch.wait_for(&format!("{point}: the holder's lease released"), || {
            !ch.listed().contains_key(&key)
        });
        ch.wait_for(&format!("{point}: the holder fenced"), || {
            !running(&ch, holder)
        });
        let fenced = format!("fencing lease owner pid={holder} ");
        let journal = ch.journal("-o cat");
        assert!(
            journal.lines().any(|l| l.starts_with(&fenced)),
            "{point}: no `{fenced}...` in the journal:\n{journal}"
        );
        let extra = Ledger::from([(res, BTreeSet::new())]);
        bg.after_crashes(&ch, 1, &extra, &[], point).await;
        ch.assert_crashed_at(point);
        eprintln!("{test}: {point}: holder {holder}'s lease released and the holder fenced after the restart");
    }

    // A live upgrade that dies before its exec.
    let point = "upgrade:before-exec";
    let pid = ch.main_pid();
    ch.arm(point);
    // systemd fails the reload job: the daemon died during it.
    let reload = ch.c.exec(&format!(
        "timeout --foreground {} systemctl reload virtlockd.service",
        PATIENCE.as_secs()
    ));
    assert_ne!(reload.status.code(), Some(124), "{point}: reload hung");
    ch.wait_for(&format!("{point}: reached"), || !ch.armed());
    let after = bg.after_crashes(&ch, 1, &Ledger::new(), &[], point).await;
    assert_ne!(after, pid);
    ch.assert_crashed_at(point);

    // A crash while a new generation replaces the old: the restarted daemon
    // dies there as it re-arms the store, and the next one recovers.
    let point = "store:new-generation-stored";
    let generation = ch.crash_safety()["generation"]
        .as_u64()
        .expect("generation");
    ch.arm(point);
    ch.kill_daemon();
    bg.after_crashes(&ch, 2, &Ledger::new(), &[], point).await;
    assert!(!ch.armed(), "{point}: not reached");
    ch.assert_crashed_at(point);
    let now = ch.crash_safety()["generation"]
        .as_u64()
        .expect("generation");
    assert!(now > generation + 1, "generation {generation} then {now}");

    bg.release_all(&ch).await;
    eprintln!(
        "{test}: 4 crash points (5 crashes) in {:?}",
        started.elapsed()
    );
}
