//! SIGKILL under closed-loop load: many clients take and release leases as
//! fast as the daemon answers (exclusive, shared by several owners,
//! AUTOCREATE; direct paths and two directory lockspaces) while the daemon
//! is killed. systemd restarts it; every client goes on over its own
//! connection, except one whose request was in flight at the kill, which may
//! find its connection closed (it reconnects as the same owner and learns
//! what became of its request). What was acknowledged holds.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtlockd::client::{Client, ClientError};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use super::ledger::{assert_nothing_left, verify, Ledger, Res};
use super::rig::{Answer, CrashHost, DIRECT, DIRECT_AUTO, LS_A, LS_B};
use crate::systemd::setup::PATIENCE;

const CLIENTS: u32 = 24;
const OWNER_BASE: u32 = 4_000_100;
const CHECKER: u32 = 4_090_000;
/// Calls each client makes before the kill, at least.
const OPS_BEFORE_KILL: u64 = 100;
/// The kill waits for the store to have compacted under the load (each
/// acquisition parks a lease fd; a few thousand make a new generation), so
/// that the restart recovers from a compacted generation; this long at most.
const COMPACTION_PATIENCE: Duration = Duration::from_secs(60);
/// Calls each client makes after the restart, on its connection.
const OPS_AFTER_RESTART: u64 = 50;
const AUTO: u32 = ACQUIRE_AUTOCREATE;
/// How long a client waits for an answer before it gives up: longer than
/// [`wait_progress`] waits, so that a stalled connection is still open when
/// the test reports on it.
const STALL_PATIENCE: Duration = Duration::from_secs(3 * PATIENCE.as_secs());
const SHARED: u32 = ACQUIRE_SHARED;

/// Resources every client uses: contested exclusive ones and shared ones.
fn common_pool() -> Vec<Res> {
    let mut pool = Vec::new();
    for k in 0..4 {
        pool.push(Res::in_dir(LS_A, format!("x{k}"), AUTO));
        pool.push(Res::in_dir(LS_B, format!("s{k}"), SHARED | AUTO));
    }
    for k in 0..2 {
        pool.push(Res::direct(format!("{DIRECT}/x{k}"), 0));
        pool.push(Res::direct(format!("{DIRECT}/s{k}"), SHARED));
        pool.push(Res::direct(format!("{DIRECT_AUTO}/s{k}"), SHARED | AUTO));
    }
    pool
}

/// Resources only client `i` uses.
fn own_pool(i: u32) -> Vec<Res> {
    vec![
        Res::direct(format!("{DIRECT}/p{i}"), 0),
        Res::direct(format!("{DIRECT_AUTO}/p{i}"), AUTO),
        Res::in_dir(LS_A, format!("p{i}-0"), AUTO),
        Res::in_dir(LS_A, format!("p{i}-1"), AUTO),
        Res::in_dir(LS_B, format!("p{i}"), AUTO),
    ]
}

/// A call whose connection was closed instead of answered.
#[derive(Debug)]
struct Cut {
    res: Res,
    acquiring: bool,
    started: Instant,
    error: String,
    /// What the reconnected owner found: whether it held the resource.
    was_held: bool,
}

struct Worker {
    owner: u32,
    client: Client,
    held: BTreeSet<Res>,
    pool: Vec<Res>,
    rng: u64,
    ops: Arc<AtomicU64>,
    cuts: Vec<Cut>,
    /// The slowest call: how long, and what.
    slowest: (Duration, String),
}

impl Worker {
    fn next(&mut self) -> usize {
        // xorshift64: reproducible, and enough to mix the calls.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % self.pool.len() as u64) as usize
    }

    async fn run(mut self, ch: Arc<CrashHost>, stop: Arc<AtomicBool>) -> Self {
        while !stop.load(Ordering::Relaxed) {
            let pick = self.next();
            let res = self.pool[pick].clone();
            let acquiring = !self.held.contains(&res);
            let started = Instant::now();
            let r = self.call(&res, acquiring).await;
            match Answer::of(r) {
                Answer::Done if acquiring => {
                    self.held.insert(res);
                }
                Answer::Done => {
                    self.held.remove(&res);
                }
                Answer::Busy if acquiring => {}
                Answer::Closed(error) => self.reconnect(&ch, res, acquiring, started, error).await,
                other => panic!(
                    "owner {}: {} {res}: {other:?}",
                    self.owner,
                    if acquiring { "ACQUIRE" } else { "RELEASE" }
                ),
            }
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
        self
    }

    /// One call, bounded by [`STALL_PATIENCE`]: a client that gets neither
    /// an answer nor a close keeps its connection until the test has looked
    /// at it (see [`wait_progress`]).
    async fn call(&mut self, res: &Res, acquiring: bool) -> Result<(), ClientError> {
        let (ls, name) = (res.ls(), res.name.as_bytes());
        let call = async {
            if acquiring {
                self.client.acquire(ls, name, res.flags).await
            } else {
                self.client.release(ls, name).await
            }
        };
        let started = Instant::now();
        let answer = tokio::time::timeout(STALL_PATIENCE, call).await;
        let took = started.elapsed();
        if took > self.slowest.0 {
            let op = if acquiring { "ACQUIRE" } else { "RELEASE" };
            self.slowest = (took, format!("{op} {res}"));
        }
        let Ok(r) = answer else {
            panic!(
                "owner {}: {} {res} neither answered nor closed within {STALL_PATIENCE:?}",
                self.owner,
                if acquiring { "ACQUIRE" } else { "RELEASE" },
            );
        };
        r
    }

    /// The connection was closed with `res`'s call in flight: a new
    /// connection as the same owner finds out whether the owner holds `res`
    /// (its release succeeds) and leaves it released, as libvirt would
    /// clean up. A lease file the unanswered call may have created is
    /// removed by taking it once more.
    async fn reconnect(
        &mut self,
        ch: &CrashHost,
        res: Res,
        acquiring: bool,
        started: Instant,
        error: String,
    ) {
        self.client = ch.open(self.owner).await;
        let was_held = match Answer::of(self.call(&res, false).await) {
            Answer::Done => true,
            Answer::Refused(_) | Answer::Busy => false,
            other => panic!("owner {}: release after reconnect: {other:?}", self.owner),
        };
        self.held.remove(&res);
        if !was_held && res.autocreate() {
            if let Answer::Done = Answer::of(self.call(&res, true).await) {
                match Answer::of(self.call(&res, false).await) {
                    Answer::Done => {}
                    other => panic!("owner {}: {res}: {other:?}", self.owner),
                }
            }
        }
        self.cuts.push(Cut {
            res,
            acquiring,
            started,
            error,
            was_held,
        });
    }
}

/// Waits until every counter passed `targets`.
async fn wait_progress(
    ch: &CrashHost,
    stop: &AtomicBool,
    ops: &[Arc<AtomicU64>],
    targets: &[u64],
    what: &str,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let behind: Vec<usize> = ops
            .iter()
            .zip(targets)
            .enumerate()
            .filter(|(_, (o, &t))| o.load(Ordering::Relaxed) < t)
            .map(|(i, _)| i)
            .collect();
        if behind.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            // The others finish their calls: the stalled ones are the only
            // connections with a request the daemon has not read.
            stop.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let clients = tokio::task::block_in_place(|| ch.ctl(&["clients"]));
            panic!(
                "{what}: clients {behind:?} made no progress within {PATIENCE:?}; clients:\n\
                 {clients:#}\nwho holds the far end of this process's sockets:\n{}\n\
                 the daemon's fds:\n{}\njournal:\n{}\ndaemon:\n{}",
                socket_peers(),
                ch.c.exec_ok(&format!(
                    "cd /proc/{}/fd && for f in *; do echo \"$f $(readlink $f) \
                     $(grep -E '^(lock|tfd):' ../fdinfo/$f | cut -c1-40 | tr -s '\\t\\n' '  ')\"; \
                     done",
                    ch.main_pid()
                )),
                ch.journal("-o short-precise"),
                ch.daemon_lines()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_safe_sigkill_under_load_keeps_every_acknowledged_lease() {
    let test = "crash_safe_sigkill_under_load_keeps_every_acknowledged_lease";
    let Some(ch) = CrashHost::boot_or_skip(test, false) else {
        return;
    };
    let ch = Arc::new(ch);
    let files: Vec<String> = (0..CLIENTS)
        .map(|i| format!("{DIRECT}/p{i}"))
        .chain((0..2).flat_map(|k| [format!("{DIRECT}/x{k}"), format!("{DIRECT}/s{k}")]))
        .collect();
    ch.c.exec_ok(&format!("touch {}", files.join(" ")));

    let stop = Arc::new(AtomicBool::new(false));
    let mut ops = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let owner = OWNER_BASE + i;
        let client = ch.open(owner).await;
        let counter = Arc::new(AtomicU64::new(0));
        ops.push(counter.clone());
        let mut pool = own_pool(i);
        pool.extend(common_pool());
        let worker = Worker {
            owner,
            client,
            held: BTreeSet::new(),
            pool,
            rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(owner),
            ops: counter,
            cuts: Vec::new(),
            slowest: (Duration::ZERO, String::new()),
        };
        tasks.push(tokio::spawn(worker.run(ch.clone(), stop.clone())));
    }
    let t = Instant::now();
    wait_progress(
        &ch,
        &stop,
        &ops,
        &vec![OPS_BEFORE_KILL; ops.len()],
        "before the kill",
    )
    .await;
    let deadline = Instant::now() + COMPACTION_PATIENCE;
    let store = loop {
        let ch2 = ch.clone();
        let store = tokio::task::spawn_blocking(move || ch2.crash_safety())
            .await
            .expect("status");
        if store["generation"].as_u64() > Some(1) {
            break store;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not compact under the load within {COMPACTION_PATIENCE:?}: {store}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let before_kill: u64 = ops.iter().map(|o| o.load(Ordering::Relaxed)).sum();

    let crashed = ch.main_pid();
    let ch2 = ch.clone();
    let (killed_at, (pid, back)) = tokio::task::spawn_blocking(move || {
        ch2.kill_daemon();
        let killed_at = Instant::now();
        eprintln!(
            "daemon killed at {:?} (wall clock)",
            std::time::SystemTime::now()
        );
        (killed_at, ch2.wait_restarted(1))
    })
    .await
    .expect("kill");
    assert_ne!(pid, crashed);
    let at_restart: Vec<u64> = ops.iter().map(|o| o.load(Ordering::Relaxed)).collect();
    let targets: Vec<u64> = at_restart.iter().map(|n| n + OPS_AFTER_RESTART).collect();
    wait_progress(&ch, &stop, &ops, &targets, "after the restart").await;
    stop.store(true, Ordering::Relaxed);
    let mut workers = Vec::new();
    for task in tasks {
        workers.push(task.await.expect("a client failed"));
    }
    let total: u64 = ops.iter().map(|o| o.load(Ordering::Relaxed)).sum();
    let slowest = workers
        .iter()
        .map(|w| (w.slowest.0, w.owner, &w.slowest.1))
        .max()
        .expect("workers");
    let load_time = t.elapsed();

    // Closed connections: only calls sent before the kill, at most one per
    // client.
    let cuts: Vec<(u32, &Cut)> = workers
        .iter()
        .flat_map(|w| w.cuts.iter().map(move |c| (w.owner, c)))
        .collect();
    for (owner, cut) in &cuts {
        assert!(
            cut.started < killed_at,
            "owner {owner}: connection closed on a call sent after the kill: {cut:?}"
        );
    }
    for w in &workers {
        assert!(w.cuts.len() <= 1, "owner {}: {:?}", w.owner, w.cuts);
    }
    eprintln!(
        "{test}: {CLIENTS} clients, {total} calls in {load_time:?} ({before_kill} before the \
         kill, store then: {store}); daemon {crashed} killed, {pid} ready \
         {back:?} later; slowest call {slowest:?}; {} connection(s) closed with a call in \
         flight: {:?}",
        cuts.len(),
        cuts.iter()
            .map(|(o, c)| format!(
                "owner {o} {} {} ({}; held after: {})",
                if c.acquiring { "ACQUIRE" } else { "RELEASE" },
                c.res,
                c.error,
                c.was_held
            ))
            .collect::<Vec<_>>()
    );

    let ch2 = ch.clone();
    let safety = tokio::task::spawn_blocking(move || ch2.crash_safety())
        .await
        .expect("status");
    assert_eq!(safety["mode"], "active", "{safety}");
    assert_eq!(safety["recoveries"], 1, "{safety}");

    let mut ledger = Ledger::new();
    for w in &workers {
        for r in &w.pool {
            ledger.entry(r.clone()).or_default();
        }
        for r in &w.held {
            ledger.entry(r.clone()).or_default().insert(w.owner);
        }
    }
    let held = ledger.values().filter(|o| !o.is_empty()).count();
    let mut checker = ch.open(CHECKER).await;
    verify(&ch, pid, &mut checker, &ledger, &[], "after the load").await;

    // Every client releases what it holds, over its connection.
    for w in &mut workers {
        for r in std::mem::take(&mut w.held) {
            match Answer::of(r.release(&mut w.client).await) {
                Answer::Done => {}
                other => panic!("owner {}: final release of {r}: {other:?}", w.owner),
            }
        }
    }
    let ch2 = ch.clone();
    tokio::task::spawn_blocking(move || assert_nothing_left(&ch2, "after every release"))
        .await
        .expect("nothing left");
    eprintln!(
        "{test}: {held} leases held at the end of the load checked (kernel, listing, busy), {} \
         released ones free; all released: no lock, no file left",
        ledger.len() - held
    );
}

/// For each Unix stream socket of this process: its peer's inode and who
/// holds that (`ss -xpn`), to tell a connection the daemon forgot from one
/// it still serves.
fn socket_peers() -> String {
    let me = format!("pid={},", std::process::id());
    let out = std::process::Command::new("ss")
        .arg("-xpn")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = out.lines().collect();
    let inode_line = |inode: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().nth(5) == Some(inode))
            .map_or("(no socket with that inode)", |l| l.trim())
    };
    lines
        .iter()
        .filter(|l| l.contains(&me))
        .map(|l| {
            let peer = l.split_whitespace().nth(7).unwrap_or("?");
            format!("{}\n  -> {}", l.trim(), inode_line(peer))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
