//! The leases a crash-point test keeps around through every crash: two
//! owners on connections opened before the first crash, holding exclusive,
//! shared and AUTOCREATE leases (direct and in both directory lockspaces),
//! and leases they took and released. After each crash they must be exactly
//! as acknowledged, and both connections must still be served.

use std::collections::BTreeSet;

use virtlockd::client::Client;
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use super::ledger::{verify, Ledger, Res};
use super::rig::{Answer, CrashHost, DIRECT, DIRECT_AUTO, LS_A, LS_B};

pub const OWNER_A: u32 = 4_000_001;
pub const OWNER_B: u32 = 4_000_002;
pub const CHECKER: u32 = 4_090_000;

pub struct Background {
    clients: Vec<(u32, Client, Vec<Res>)>,
    pub checker: Client,
    pub ledger: Ledger,
    /// systemd's restart count, and the daemon's recoveries, so far.
    pub restarts: u32,
    pub recoveries: u64,
}

impl Background {
    pub async fn establish(ch: &CrashHost) -> Self {
        ch.c.exec_ok(&format!("touch {DIRECT}/bg-d {DIRECT}/bg-r"));
        let shared = Res::in_dir(LS_B, "bg-s", ACQUIRE_SHARED | ACQUIRE_AUTOCREATE);
        let plan = [
            (
                OWNER_A,
                vec![
                    Res::in_dir(LS_A, "bg-a", ACQUIRE_AUTOCREATE),
                    Res::direct(format!("{DIRECT}/bg-d"), 0),
                    shared.clone(),
                ],
                vec![Res::in_dir(LS_A, "bg-ra", ACQUIRE_AUTOCREATE)],
            ),
            (
                OWNER_B,
                vec![
                    shared,
                    Res::direct(format!("{DIRECT_AUTO}/bg-b"), ACQUIRE_AUTOCREATE),
                ],
                vec![
                    Res::direct(format!("{DIRECT}/bg-r"), 0),
                    Res::in_dir(LS_B, "bg-rb", ACQUIRE_AUTOCREATE),
                ],
            ),
        ];
        let mut ledger = Ledger::new();
        let mut clients = Vec::new();
        for (owner, held, released) in plan {
            let mut c = ch.open(owner).await;
            for r in released.iter().chain(&held) {
                r.acquire(&mut c).await.expect("ACQUIRE");
            }
            for r in &released {
                r.release(&mut c).await.expect("RELEASE");
                ledger.entry(r.clone()).or_default();
            }
            for r in &held {
                ledger.entry(r.clone()).or_default().insert(owner);
            }
            clients.push((owner, c, held));
        }
        let checker = ch.open(CHECKER).await;
        Self {
            clients,
            checker,
            ledger,
            restarts: 0,
            recoveries: 0,
        }
    }

    /// After `crashes` more crashes: waits for the daemon they leave
    /// running, and checks that it recovered `crashes` times more, that
    /// `ledger` (the background's leases and the caller's `extra`) holds,
    /// and that the background's connections are still served (each owner
    /// finds its own leases its own). Returns the daemon's pid.
    pub async fn after_crashes(
        &mut self,
        ch: &CrashHost,
        crashes: u32,
        extra: &Ledger,
        also_listed: &[(Option<String>, String)],
        when: &str,
    ) -> u32 {
        self.restarts += crashes;
        self.recoveries += u64::from(crashes);
        let (pid, back) = ch.wait_restarted(self.restarts);
        let safety = ch.crash_safety();
        assert_eq!(safety["mode"], "active", "{when}: {safety}");
        assert_eq!(
            safety["recoveries"].as_u64(),
            Some(self.recoveries),
            "{when}: {safety}"
        );
        let mut ledger = self.ledger.clone();
        for (r, owners) in extra {
            ledger.entry(r.clone()).or_default().extend(owners);
        }
        verify(ch, pid, &mut self.checker, &ledger, also_listed, when).await;
        for (owner, c, held) in &mut self.clients {
            for r in held.iter() {
                // Exclusive: a shared lease taken again would be a second
                // entry of the same owner.
                match Answer::of(r.acquire_exclusive(c).await) {
                    Answer::Busy => {}
                    other => {
                        panic!("{when}: owner {owner}'s own {r} over its connection: {other:?}")
                    }
                }
            }
        }
        eprintln!(
            "{when}: daemon {pid} ready {back:?} after the crash was seen; background intact"
        );
        pid
    }

    /// Owner pids of the background's connections, the checker's included.
    pub fn owners(&self) -> BTreeSet<u64> {
        self.clients
            .iter()
            .map(|(o, _, _)| u64::from(*o))
            .chain([u64::from(CHECKER)])
            .collect()
    }

    /// Everything released over the connections that lived through every
    /// crash; then nothing is left.
    pub async fn release_all(mut self, ch: &CrashHost) {
        for (owner, c, held) in &mut self.clients {
            for r in held.iter() {
                match Answer::of(r.release(c).await) {
                    Answer::Done => {}
                    other => panic!("owner {owner}: final release of {r}: {other:?}"),
                }
            }
        }
        super::ledger::assert_nothing_left(ch, "after every release");
    }
}
