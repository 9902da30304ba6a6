//! Live hand-over through SIGUSR1 re-exec between libvirt's real virtlockd
//! (/usr/sbin/virtlockd) and ours, both ways and round trip: same pid, same kernel
//! locks, every connection kept with its owner and RESTRICT flag, state file consumed.
//! Needs root, `unshare` and libvirt's daemon; skipped (with a note) without them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use virtlockd::client::{owner, Client, ClientError};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use crate::harness::{assert_err, bytes, describe};

const LIBVIRT: &str = "/usr/sbin/virtlockd";
const OURS: &str = env!("CARGO_BIN_EXE_virtlockd");
/// Bound of every wait in these tests.
const PATIENCE: Duration = Duration::from_secs(10);

/// Runs in the new mount namespace: a private /run, then the daemon itself
/// (`exec`, so the spawned pid is the daemon's).
const SCRIPT: &str = "mount -t tmpfs -o mode=0755 lockd-run /run && \
                      mkdir -p /run/libvirt /run/lock && exec \"$0\" -f \"$1\"";

const RESTRICTED: &str = "operation forbidden: lock manager connection has been restricted";

/// Fake owner pids (never a real process): 4_000_001.. for the leases, above for probes.
static NEXT_PROBE_PID: AtomicU32 = AtomicU32::new(4_000_100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Impl {
    Libvirt,
    Ours,
}

impl Impl {
    fn binary(self) -> PathBuf {
        match self {
            Impl::Libvirt => LIBVIRT.into(),
            Impl::Ours => OURS.into(),
        }
    }
}

/// Whether this test can run here; prints `SKIPPED <test>: <reason>` if not.
pub(crate) fn prerequisites(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("needs root".to_owned())
    } else if !Path::new(LIBVIRT).exists() {
        Some(format!("{LIBVIRT} not installed (package libvirt-daemon)"))
    } else if !quiet_success(Command::new("setsid").arg("true")) {
        Some("setsid not available".to_owned())
    } else if !quiet_success(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "mount -t tmpfs -o mode=0755 probe /run",
    ])) {
        Some("cannot unshare a mount namespace with a tmpfs on /run".to_owned())
    } else {
        None
    };
    match reason {
        Some(r) => {
            eprintln!("SKIPPED {test}: {r}");
            false
        }
        None => true,
    }
}

fn quiet_success(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A daemon in a private mount namespace with its own tmpfs on /run, started
/// through the symlink `<dir>/bin/virtlockd` without --runtime-dir, so that both
/// implementations use libvirt's paths. Killed (SIGKILL, by pid) when dropped;
/// its namespace goes with it.
pub(crate) struct Namespaced {
    child: Child,
    dir: tempfile::TempDir,
}

impl Namespaced {
    pub(crate) fn start(first: Impl) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("bin")).expect("bin dir");
        let link = dir.path().join("bin/virtlockd");
        std::os::unix::fs::symlink(first.binary(), &link).expect("symlink");
        let conf = dir.path().join("virtlockd.conf");
        // libvirt's syntax, read by both implementations.
        std::fs::write(
            &conf,
            format!(
                "log_level = 3\nlog_filters = \"2:virtlockd 1:locking\"\nlog_outputs = \"1:file:{}\"\n",
                dir.path().join("daemon.log").display()
            ),
        )
        .expect("config");
        let out = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let child = Command::new("setsid")
            .args(["unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", SCRIPT])
            .arg(&link)
            .arg(&conf)
            .env_remove("LIBVIRT_LOG_OUTPUTS")
            .env_remove("LIBVIRT_LOG_FILTERS")
            .env_remove("LIBVIRT_DEBUG")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn setsid unshare");
        Self { child, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The test directory (config, logs) of this daemon.
    pub(crate) fn dir_path(&self) -> &Path {
        self.dir.path()
    }

    /// Path inside the daemon's namespace, seen from outside.
    pub(crate) fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid()))
    }

    fn socket(&self) -> PathBuf {
        self.inside("/run/libvirt/virtlockd-sock")
    }

    fn state_files(&self) -> [PathBuf; 2] {
        [
            self.inside("/run/virtlockd-restart-exec.json"),
            self.inside("/run/virtlockd-restart-exec.msgpack"),
        ]
    }

    /// Both implementations' logs (one file, one config) plus stderr.
    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- daemon.log\n{}\n--- stderr\n{}",
            read("daemon.log"),
            read("stderr.log")
        )
    }

    /// Re-points the symlink (new link, renamed over the old one).
    fn repoint(&self, to: Impl) {
        let link = self.dir.path().join("bin/virtlockd");
        let tmp = self.dir.path().join("bin/virtlockd.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(to.binary(), &tmp).expect("new symlink");
        std::fs::rename(&tmp, &link).expect("rename symlink");
    }

    fn sigusr1(&self) {
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGUSR1).expect("SIGUSR1");
    }

    /// Panics (with the logs) if the daemon has exited.
    pub(crate) fn assert_alive(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("daemon exited ({status}) {what}; logs:\n{}", self.log());
        }
    }

    /// Waits until the process runs `expected`'s binary, then until a fresh,
    /// registered connection is answered; returns that connection. Only connects
    /// once the exec has happened: libvirt's old image would die of a connection
    /// that is not yet registered when it serialises its clients.
    async fn wait_serving(&mut self, expected: Impl, what: &str) -> Client {
        let want = std::fs::canonicalize(expected.binary()).expect("canonical binary");
        let exe = PathBuf::from(format!("/proc/{}/exe", self.pid()));
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.assert_alive(what);
            if std::fs::read_link(&exe).is_ok_and(|p| p == want)
                && std::os::unix::net::UnixStream::connect(self.socket()).is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not running {expected:?} with a socket after {PATIENCE:?}; logs:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let socket = self.socket();
        let answered = tokio::time::timeout(PATIENCE, async move {
            let mut c = Client::connect(socket).await?;
            let pid = NEXT_PROBE_PID.fetch_add(1, Ordering::Relaxed);
            c.register(&owner("probe", pid - 4_000_000, pid)).await?;
            Ok::<_, ClientError>(c)
        })
        .await;
        match answered {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!("{what}: probe failed: {e}; logs:\n{}", self.log()),
            Err(_) => panic!(
                "{what}: no answer within {PATIENCE:?}; logs:\n{}",
                self.log()
            ),
        }
    }

    /// Sorted `/proc/locks` entries of the daemon.
    fn kernel_locks(&self) -> Vec<String> {
        let mut v: Vec<String> = virtlockd::proclocks::of_pid(self.pid())
            .expect("/proc/locks")
            .iter()
            .map(|l| format!("{} inode {}", describe(l), l.inode))
            .collect();
        v.sort();
        v
    }

    fn locks_on(&self, path: &Path) -> Vec<String> {
        virtlockd::proclocks::of_pid_on(self.pid(), path)
            .map(|v| v.iter().map(describe).collect())
            .unwrap_or_default()
    }
}

impl Drop for Namespaced {
    fn drop(&mut self) {
        // By pid: Child::kill sends SIGKILL to exactly the process we spawned.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
