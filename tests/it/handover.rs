//! Live hand-over through SIGUSR1 re-exec between libvirt's real virtlockd
//! (/usr/sbin/virtlockd) and ours, both ways and round trip: same pid, same kernel
//! locks, every connection kept with its owner and RESTRICT flag, state file consumed.
//! Needs root, `unshare` and libvirt's daemon; skipped (with a note) without them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use crate::support::namespaced::{prerequisites, Impl, Namespaced, PATIENCE};
use crate::support::{assert_err, bytes};

const RESTRICTED: &str = "operation forbidden: lock manager connection has been restricted";

/// Copies the restart state file while a hand-over is under way, so a failure
/// can show what the old image wrote (the new one unlinks it at once).
struct StateSpy {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<String>>>,
}

impl StateSpy {
    fn start(file: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + PATIENCE;
            let mut seen: Option<String> = None;
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(text) = std::fs::read_to_string(&file) {
                    if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                        seen = Some(text);
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            seen
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).flatten()
    }
}

impl Drop for StateSpy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` within [`PATIENCE`].
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
}

/// The leases held across the hand-over, and the connections holding them.
struct Leases {
    _base: tempfile::TempDir,
    ls: PathBuf,
    disk: PathBuf,
    /// Exclusive AUTOCREATE lease `excl` in `ls`.
    a: Client,
    /// `b` and `c` share the AUTOCREATE lease `shared` in `ls`.
    b: Client,
    c: Client,
    /// Direct lock on `disk` in the default lockspace; RESTRICTed.
    d: Client,
}

impl Leases {
    fn lsb(&self) -> Vec<u8> {
        bytes(&self.ls)
    }

    fn diskb(&self) -> Vec<u8> {
        bytes(&self.disk)
    }
}

/// Sets up the leases; every connection is registered (libvirt's writer needs
/// owner data for each client). Lockspace and files live outside the
/// namespace's /run, in a temp dir of the test.
async fn populate(ns: &Namespaced) -> Leases {
    let base = tempfile::tempdir().expect("base dir");
    let ls = base.path().join("ls");
    let disk = base.path().join("disk.img");
    std::fs::write(&disk, b"disk").expect("disk file");
    let (lsb, diskb) = (bytes(&ls), bytes(&disk));
    let socket = ns.socket();
    bounded("populate", async {
        let mut a = Client::connect(&socket).await.unwrap();
        a.register(&owner("vm-a", 1, 4_000_001)).await.unwrap();
        a.create_lockspace(&lsb).await.unwrap();
        a.acquire(&lsb, b"excl", ACQUIRE_AUTOCREATE).await.unwrap();
        let mut b = Client::connect(&socket).await.unwrap();
        b.register(&owner("vm-b", 2, 4_000_002)).await.unwrap();
        b.acquire(&lsb, b"shared", ACQUIRE_SHARED | ACQUIRE_AUTOCREATE)
            .await
            .unwrap();
        let mut c = Client::connect(&socket).await.unwrap();
        c.register(&owner("vm-c", 3, 4_000_003)).await.unwrap();
        c.acquire(&lsb, b"shared", ACQUIRE_SHARED | ACQUIRE_AUTOCREATE)
            .await
            .unwrap();
        let mut d = Client::connect(&socket).await.unwrap();
        d.register(&owner("vm-d", 4, 4_000_004)).await.unwrap();
        d.acquire(b"", &diskb, 0).await.unwrap();
        d.restrict().await.unwrap();
        Leases {
            _base: base,
            ls,
            disk,
            a,
            b,
            c,
            d,
        }
    })
    .await
}

/// The kernel locks of the leases, as the test expects them.
fn assert_lease_locks(ns: &Namespaced, l: &Leases, when: &str) {
    assert_eq!(
        ns.locks_on(&l.ls.join("excl")),
        ["POSIX WRITE 0-0"],
        "excl {when}"
    );
    assert_eq!(
        ns.locks_on(&l.ls.join("shared")),
        ["POSIX READ 0-0"],
        "shared {when}"
    );
    assert_eq!(ns.locks_on(&l.disk), ["POSIX WRITE 0-0"], "disk {when}");
}

/// Re-points the symlink to `to`, sends SIGUSR1 and waits until `to` answers;
/// then checks pid, kernel locks and that the state files were consumed.
/// Returns the probe connection (registered, holds nothing).
async fn hand_over(ns: &mut Namespaced, to: Impl, locks_before: &[String]) -> Client {
    let what = format!("hand-over to {to:?}");
    let pid = ns.pid();
    let spy = StateSpy::start(ns.state_files()[0].clone());
    ns.repoint(to);
    ns.sigusr1();
    let probe = ns.wait_serving(to, &what).await;
    let json = spy.finish();
    let dump = || {
        format!(
            "state JSON seen: {}\nlogs:\n{}",
            json.as_deref().unwrap_or("(not caught)"),
            ns.log()
        )
    };
    assert_eq!(ns.pid(), pid);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim_end(), "virtlockd", "{what}: comm");
    assert_eq!(
        ns.kernel_locks(),
        locks_before,
        "{what}: /proc/locks changed; {}",
        dump()
    );
    if to == Impl::Libvirt {
        // Ours takes its signals on a thread of its own with every thread
        // blocking them; libvirt's daemon must get them unblocked, or it would
        // never see a SIGTERM.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
        let guarded = [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGHUP,
            libc::SIGUSR1,
        ]
        .iter()
        .fold(0u64, |m, &s| m | 1 << (s - 1));
        assert_eq!(blocked.map(|b| b & guarded), Some(0), "{what}: {status}");
    }
    let [json_file, snapshot_file] = ns.state_files();
    assert!(
        !json_file.exists(),
        "{what}: {} left behind; {}",
        json_file.display(),
        dump()
    );
    // libvirt knows nothing of our MessagePack twin and leaves it; ours consumes it.
    if to == Impl::Ours {
        assert!(
            !snapshot_file.exists(),
            "{what}: {} left behind; {}",
            snapshot_file.display(),
            dump()
        );
    }
    probe
}

/// Checks, without changing anything, that every lease and connection survived:
/// new clients are refused the exclusive leases and may share `shared`; the
/// restricted connection stays restricted; the owner connections are still
/// registered under their owner.
async fn assert_intact(ns: &Namespaced, l: &mut Leases, probe: &mut Client, when: &str) {
    let (lsb, diskb) = (l.lsb(), l.diskb());
    let disk_busy = format!(
        "resource busy: Lockspace resource '{}' is locked",
        l.disk.display()
    );
    bounded(when, async {
        assert_err(
            probe.acquire(&lsb, b"excl", 0).await,
            87,
            51,
            "resource busy: Lockspace resource 'excl' is locked",
        );
        assert_err(
            probe.acquire(&lsb, b"shared", 0).await,
            87,
            51,
            "resource busy: Lockspace resource 'shared' is locked",
        );
        assert_err(probe.acquire(b"", &diskb, 0).await, 87, 51, &disk_busy);
        probe
            .acquire(&lsb, b"shared", ACQUIRE_SHARED)
            .await
            .unwrap();
        probe.release(&lsb, b"shared").await.unwrap();
        // Owner a holds excl already: the kernel lock is taken, busy.
        assert_err(
            l.a.acquire(&lsb, b"excl", 0).await,
            87,
            51,
            "resource busy: Lockspace resource 'excl' is locked",
        );
        // a is still registered: it can take and drop another lease.
        l.a.acquire(&lsb, b"extra", ACQUIRE_AUTOCREATE)
            .await
            .unwrap();
        l.a.release(&lsb, b"extra").await.unwrap();
        assert_err(l.d.release(b"", &diskb).await, 29, 7, RESTRICTED);
        assert_err(
            l.d.acquire(&lsb, b"other", ACQUIRE_AUTOCREATE).await,
            29,
            7,
            RESTRICTED,
        );
    })
    .await;
    assert_lease_locks(ns, l, when);
}

/// Releases what can be released (through the old connections) and checks that
/// the kernel agrees.
async fn release_all(ns: &Namespaced, l: &mut Leases, probe: &mut Client) {
    let (lsb, diskb) = (l.lsb(), l.diskb());
    bounded("release", async {
        l.a.release(&lsb, b"excl").await.unwrap();
        probe
            .acquire(&lsb, b"excl", ACQUIRE_AUTOCREATE)
            .await
            .unwrap();
        probe.release(&lsb, b"excl").await.unwrap();
        l.b.release(&lsb, b"shared").await.unwrap();
        assert_err(
            probe.acquire(&lsb, b"shared", 0).await,
            87,
            51,
            "resource busy: Lockspace resource 'shared' is locked",
        );
        l.c.release(&lsb, b"shared").await.unwrap();
        probe
            .acquire(&lsb, b"shared", ACQUIRE_AUTOCREATE)
            .await
            .unwrap();
        probe.release(&lsb, b"shared").await.unwrap();
        // The restricted connection cannot release; its lock stays.
        assert_err(l.d.release(b"", &diskb).await, 29, 7, RESTRICTED);
    })
    .await;
    assert!(ns.locks_on(&l.ls.join("excl")).is_empty());
    assert!(ns.locks_on(&l.ls.join("shared")).is_empty());
    assert!(!l.ls.join("excl").exists(), "AUTOCREATE file removed");
    assert_eq!(ns.locks_on(&l.disk), ["POSIX WRITE 0-0"]);
}

/// Starts `path[0]`, sets up the leases, hands over along `path`, checking at each
/// step; releases at the end.
async fn run(test: &str, path: &[Impl]) {
    if !prerequisites(test) {
        return;
    }
    let mut ns = Namespaced::start(path[0]);
    let mut probe = ns.wait_serving(path[0], "start-up").await;
    let mut leases = populate(&ns).await;
    assert_lease_locks(&ns, &leases, "before the hand-over");
    let locks_before = ns.kernel_locks();
    assert_eq!(
        locks_before.len(),
        4,
        "3 leases + pid file: {locks_before:?}"
    );
    assert_intact(&ns, &mut leases, &mut probe, "before the hand-over").await;

    let mut adoptions = 0;
    for (step, &to) in path.iter().enumerate().skip(1) {
        let when = format!("after hand-over {step} to {to:?}");
        probe = hand_over(&mut ns, to, &locks_before).await;
        if to == Impl::Ours && path[step - 1] == Impl::Libvirt {
            adoptions += 1;
            let log = ns.log();
            assert_eq!(
                log.matches("adopting the state of libvirt's virtlockd")
                    .count(),
                adoptions,
                "{when}: our daemon did not adopt libvirt's state; logs:\n{log}"
            );
        }
        assert_intact(&ns, &mut leases, &mut probe, &when).await;
        ns.assert_alive(&when);
    }
    release_all(&ns, &mut leases, &mut probe).await;
    ns.assert_alive("at the end");
}

#[tokio::test]
async fn libvirt_hands_over_to_ours() {
    run("libvirt_hands_over_to_ours", &[Impl::Libvirt, Impl::Ours]).await;
}

#[tokio::test]
async fn ours_hands_over_to_libvirt() {
    run("ours_hands_over_to_libvirt", &[Impl::Ours, Impl::Libvirt]).await;
}

#[tokio::test]
async fn round_trip_libvirt_ours_libvirt_ours() {
    run(
        "round_trip_libvirt_ours_libvirt_ours",
        &[Impl::Libvirt, Impl::Ours, Impl::Libvirt, Impl::Ours],
    )
    .await;
}
