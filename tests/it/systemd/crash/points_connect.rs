//! Crashes while a new client connects and registers (crash points
//! accept:accepted, accept:parked, register:before-journal,
//! register:journaled). The new client gets its answer or its connection
//! closed, never a hang; no trace of it stays in the restarted daemon; the
//! background's leases and connections are untouched.

use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use super::background::Background;
use super::ledger::{Ledger, Res};
use super::rig::{Answer, CrashHost, LS_A};

const POINTS: &[&str] = &[
    "accept:accepted",
    "accept:parked",
    "register:before-journal",
    "register:journaled",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_points_while_a_client_connects_and_registers() {
    let test = "crash_points_while_a_client_connects_and_registers";
    let Some(ch) = CrashHost::boot_or_skip(test, true) else {
        return;
    };
    let started = std::time::Instant::now();
    let mut bg = Background::establish(&ch).await;
    let ledger = Ledger::new();
    for (i, point) in POINTS.iter().enumerate() {
        let owner = 4_000_200 + i as u32;
        ch.arm(point);
        let answer = Answer::of(ch.connect(owner).await.map(drop));
        assert!(!ch.armed(), "{point}: not reached");
        assert!(
            matches!(answer, Answer::Done | Answer::Closed(_)),
            "{point}: the new client got {answer:?}"
        );
        bg.after_crashes(&ch, 1, &ledger, &[], point).await;
        // The new connection is gone (closed by the crash or by the
        // restarted daemon), and with it its registration.
        let expected: Vec<u64> = bg.owners().into_iter().collect();
        ch.wait_for(
            &format!("{point}: only the background's clients left"),
            || ch.lock_client_owners() == expected,
        );
        // And the owner can connect again and be served.
        let mut again = ch.open(owner).await;
        let r = Res::in_dir(LS_A, format!("new-{i}"), ACQUIRE_AUTOCREATE);
        r.acquire(&mut again)
            .await
            .expect("ACQUIRE after the crash");
        r.release(&mut again)
            .await
            .expect("RELEASE after the crash");
        drop(again);
        eprintln!("{test}: {point}: the new client got {answer:?}");
    }
    bg.release_all(&ch).await;
    eprintln!(
        "{test}: {} crash points in {:?}",
        POINTS.len(),
        started.elapsed()
    );
}
