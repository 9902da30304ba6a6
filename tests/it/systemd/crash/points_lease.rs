//! Crashes in the middle of ACQUIRE and RELEASE (crash points acquire:locked,
//! acquire:parked, acquire:journaled, release:file-removed,
//! release:journaled; SIGKILL, and SIGABRT for one point of each). The client
//! whose call was in flight gets its answer or its connection closed; what
//! the restarted daemon then holds is what the journal had acknowledged by
//! the crash: a lease journaled is held (for its owner, who can release it
//! from a new connection), one not yet journaled is free. The background's
//! leases and connections are untouched.

use std::collections::BTreeSet;

use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use super::background::Background;
use super::ledger::{Ledger, Res};
use super::rig::{Answer, CrashHost, DIRECT_AUTO, LS_A, LS_B};

const OWNER_D: u32 = 4_000_300;

/// (crash point, whether the call is a RELEASE, whether the lease is held
/// after the crash).
const CASES: &[(&str, bool, bool)] = &[
    ("acquire:locked", false, false),
    ("acquire:parked", false, false),
    ("acquire:journaled", false, true),
    ("acquire:parked:abort", false, false),
    ("release:file-removed", true, true),
    ("release:journaled", true, false),
    ("release:file-removed:abort", true, true),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_points_in_acquire_and_release() {
    let test = "crash_points_in_acquire_and_release";
    let Some(ch) = CrashHost::boot_or_skip(test, true) else {
        return;
    };
    let started = std::time::Instant::now();
    let mut bg = Background::establish(&ch).await;
    for (i, &(point, releasing, held_after)) in CASES.iter().enumerate() {
        let res = match i % 3 {
            0 => Res::in_dir(LS_A, format!("fp-{i}"), ACQUIRE_AUTOCREATE),
            1 => Res::in_dir(LS_B, format!("fp-{i}"), ACQUIRE_AUTOCREATE),
            _ => Res::direct(format!("{DIRECT_AUTO}/fp-{i}"), ACQUIRE_AUTOCREATE),
        };
        let mut d = ch.open(OWNER_D).await;
        if releasing {
            res.acquire(&mut d).await.expect("ACQUIRE");
        }
        ch.arm(point);
        let answer = Answer::of(if releasing {
            res.release(&mut d).await
        } else {
            res.acquire(&mut d).await
        });
        assert!(!ch.armed(), "{point}: not reached");
        let held = match &answer {
            Answer::Done => !releasing,
            Answer::Closed(_) => held_after,
            other => panic!("{point}: the call in flight got {other:?}"),
        };
        let file_left = ch.c.path(&res.path()).exists();
        let mut extra = Ledger::new();
        let mut also = Vec::new();
        if held && !file_left {
            // Held, its file already removed by the release the crash cut
            // short: listed and busy, checked here.
            also.push((res.lockspace.map(str::to_owned), res.name.clone()));
        } else {
            let owners = if held {
                BTreeSet::from([OWNER_D])
            } else {
                BTreeSet::new()
            };
            extra.insert(res.clone(), owners);
        }
        if !held {
            eprintln!(
                "{test}: {point}: lease file {} after the crash",
                if file_left { "left in place" } else { "gone" }
            );
        }
        let when = format!(
            "{point} ({} {res})",
            if releasing { "RELEASE" } else { "ACQUIRE" }
        );
        bg.after_crashes(&ch, 1, &extra, &also, &when).await;
        ch.assert_crashed_at(point);
        if !also.is_empty() {
            let listed = ch.listed();
            assert_eq!(
                listed.get(&also[0]).map(|(o, _)| o.clone()),
                Some(vec![u64::from(OWNER_D)]),
                "{when}: {listed:?}"
            );
            match Answer::of(res.acquire_exclusive(&mut bg.checker).await) {
                Answer::Busy => {}
                other => panic!("{when}: a second owner gets {other:?}"),
            }
        }
        // The owner goes on (over a new connection if its own was closed)
        // and finds the lease as the daemon acknowledged it.
        let cut = matches!(answer, Answer::Closed(_));
        if cut {
            d = ch.open(OWNER_D).await;
        }
        let mut expected = bg.owners();
        expected.insert(u64::from(OWNER_D));
        let expected: Vec<u64> = expected.into_iter().collect();
        ch.wait_for(&format!("{when}: one connection of the owner left"), || {
            ch.lock_client_owners() == expected
        });
        let again = Answer::of(res.release(&mut d).await);
        assert_eq!(
            matches!(again, Answer::Done),
            held,
            "{when}: the owner's RELEASE after the crash got {again:?}"
        );
        if !held && file_left {
            // The file an unanswered ACQUIRE created: the owner's retry
            // takes the lease and its release removes the file.
            res.acquire(&mut d).await.expect("ACQUIRE again");
            res.release(&mut d).await.expect("RELEASE again");
        }
        assert!(
            !ch.c.path(&res.path()).exists(),
            "{when}: {} left after its release",
            res.path()
        );
        eprintln!("{test}: {when}: the call got {answer:?}; held after the crash: {held}");
    }
    bg.release_all(&ch).await;
    eprintln!(
        "{test}: {} crash points in {:?}",
        CASES.len(),
        started.elapsed()
    );
}
