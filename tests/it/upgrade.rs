//! Live upgrade (SIGUSR1): the daemon re-execs in place and keeps every lock,
//! every client, every session and every reply, under load, with half-sent
//! requests, after a failed exec, and a hundred times in a row.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::{LockCall, ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};
use virtlockd::protocol::{msg_type, status, Frame, FrameCodec, Header};

use crate::support::wait::{wait_upgraded, wait_upgraded_at, wait_upgraded_on, SLOW};
use crate::support::{assert_err, bytes, holding, next_frame, until, wait_logged, Daemon, Holder};

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn kernel_locks(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = virtlockd::proclocks::of_pid(d.pid())
        .unwrap()
        .iter()
        .filter(|l| l.start == 0 && l.end == Some(0))
        .map(|l| format!("{} {} {}", l.kind, l.mode, l.inode))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn upgrade_under_load_loses_no_reply_lock_or_session() {
    let mut d = Daemon::start();
    let ls = d.base().join("ls");
    let lsb = bytes(&ls);
    // Static state: an exclusive lease, a shared lease with two owners, a
    // restricted connection, an unregistered connection.
    let mut a = d.client().await;
    a.create_lockspace(&lsb).await.unwrap();
    a.register(&owner("a", 1, 4_000_001)).await.unwrap();
    a.acquire(&lsb, b"excl", ACQUIRE_AUTOCREATE).await.unwrap();
    a.acquire(&lsb, b"shared", ACQUIRE_SHARED | ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    let mut b = d.client().await;
    b.register(&owner("b", 2, 4_000_002)).await.unwrap();
    b.acquire(&lsb, b"shared", ACQUIRE_SHARED).await.unwrap();
    b.restrict().await.unwrap();
    let mut unregistered = d.client().await;
    unregistered.create_lockspace(&lsb).await.unwrap();
    let locks_before = kernel_locks(&d);
    assert_eq!(locks_before.len(), 2 + 1, "2 leases + pid file");

    // Closed-loop load from 16 clients while we upgrade 5 times.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..16u32 {
        let socket = d.socket();
        let lsb = lsb.clone();
        let stop = stop.clone();
        let answered = answered.clone();
        workers.push(tokio::spawn(async move {
            let mut c = Client::connect(socket).await.unwrap();
            c.register(&owner("load", 10 + i, 4_100_000 + i))
                .await
                .unwrap();
            let name = format!("load-{i}");
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    c.acquire(&lsb, name.as_bytes(), ACQUIRE_AUTOCREATE),
                )
                .await
                .expect("an ACQUIRE reply was lost");
                r.unwrap();
                tokio::time::timeout(Duration::from_secs(10), c.release(&lsb, name.as_bytes()))
                    .await
                    .expect("a RELEASE reply was lost")
                    .unwrap();
                n += 2;
                answered.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
            }
            n
        }));
    }
    // Each upgrade lands in running load: a round of replies from the
    // workers first, and again after every upgrade.
    let load_runs = || {
        let answered = answered.clone();
        let from = answered.load(std::sync::atomic::Ordering::Relaxed);
        move || answered.load(std::sync::atomic::Ordering::Relaxed) >= from + 32
    };
    until("load before the upgrades", SLOW, load_runs()).await;
    for n in 1..=5 {
        d.signal(Signal::SIGUSR1);
        wait_upgraded(&d, n).await;
        until("load after an upgrade", SLOW, load_runs()).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!(total > 100, "load ran: {total} replies");
    assert!(d.alive());

    // Same process, same kernel locks (the workers released theirs).
    assert_eq!(kernel_locks(&d), locks_before);
    // Sessions intact: ownership, restriction, registration.
    let mut f = d.client().await;
    f.register(&owner("f", 6, 4_000_006)).await.unwrap();
    assert_err(
        f.acquire(&lsb, b"excl", 0).await,
        87,
        51,
        "resource busy: Lockspace resource 'excl' is locked",
    );
    assert_err(
        b.release(&lsb, b"shared").await,
        29,
        7,
        "operation forbidden: lock manager connection has been restricted",
    );
    assert_err(
        unregistered.acquire(&lsb, b"x", 0).await,
        55,
        7,
        "Requested operation is not valid: lock owner details have not been registered",
    );
    a.release(&lsb, b"excl").await.unwrap();
    a.release(&lsb, b"shared").await.unwrap();
    assert!(ls.join("shared").exists(), "b still shares it");
    assert!(!ls.join("excl").exists());
    assert!(!d
        .dir
        .path()
        .join("run/virtlockd-restart-exec.json")
        .exists());
    assert!(!d
        .dir
        .path()
        .join("run/virtlockd-restart-exec.msgpack")
        .exists());
}

#[tokio::test]
async fn half_sent_request_completes_after_the_upgrade() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let call = LockCall::CreateLockspace {
        path: bytes(&d.base().join("ls")).into(),
    };
    let mut payload = bytes::BytesMut::new();
    call.encode(&mut payload);
    let frame = Frame {
        header: Header {
            prog: virtlockd::protocol::lock::PROGRAM,
            vers: 1,
            proc_: 8,
            msg_type: msg_type::CALL,
            serial: 77,
            status: status::OK,
        },
        payload: payload.freeze(),
    };
    let mut wire = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut FrameCodec, frame, &mut wire).unwrap();
    let (first, rest) = wire.split_at(10);
    c.send_raw(first).await.unwrap();
    // Deliberately a pause, not a poll: it lets the daemon read the first
    // bytes before the upgrade, which nothing outside the daemon shows. Had it
    // not read them yet, the new image reads them instead, as tested below.
    tokio::time::sleep(Duration::from_millis(50)).await;
    d.signal(Signal::SIGUSR1);
    wait_upgraded(&d, 1).await;
    c.send_raw(rest).await.unwrap();
    let reply = next_frame(&mut c, "reply lost").await.unwrap();
    assert_eq!((reply.header.serial, reply.header.status), (77, status::OK));
    assert!(d.base().join("ls").is_dir());
}

#[tokio::test]
async fn restricted_owner_is_still_fenced_after_the_upgrade() {
    let d = Daemon::start();
    let ls = d.base().join("ls");
    let mut holder = Holder::start(&d, &ls, "vmdisk", &["--restrict"]).await;
    d.signal(Signal::SIGUSR1);
    wait_upgraded(&d, 1).await;
    assert_eq!(d.kernel_locks_on(&ls.join("vmdisk")), ["POSIX WRITE 0-0"]);
    holder.assert_fenced_on_close(&d, &ls.join("vmdisk")).await;
}

/// A daemon run from a copy of the binary (which a test can make
/// unexecutable), and a client holding lease `r` in lockspace `ls`.
async fn on_a_copy_holding_a_lease() -> (std::path::PathBuf, Daemon, std::path::PathBuf, Client) {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("virtlockd");
    crate::support::copy_daemon(&exe);
    let d = Daemon::start_program(&exe, dir, &[]);
    let ls = d.base().join("ls");
    let c = holding(&d, &ls, b"r").await;
    (exe, d, ls, c)
}

#[tokio::test]
async fn failed_exec_resumes_with_everything() {
    let (exe, d, ls, mut c) = on_a_copy_holding_a_lease().await;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.signal(Signal::SIGUSR1);
    // Only the log tells a failed upgrade from one not yet done.
    wait_logged(&d, "live upgrade failed", 1, "no failure logged").await;
    // Everything as before: the same connection, its lease, new clients.
    assert_err(
        c.acquire(&bytes(&ls), b"r", ACQUIRE_AUTOCREATE).await,
        87,
        51,
        "resource busy: Lockspace resource 'r' is locked",
    );
    d.client().await.ping().await.unwrap();
    assert_eq!(d.kernel_locks_on(&ls.join("r")), ["POSIX WRITE 0-0"]);
    let run = d.dir.path().join("run");
    assert!(!run.join("virtlockd-restart-exec.json").exists());
    assert!(!run.join("virtlockd-restart-exec.msgpack").exists());
    // Fixed binary: the next upgrade works.
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    d.signal(Signal::SIGUSR1);
    wait_upgraded(&d, 1).await;
    c.release(&bytes(&ls), b"r").await.unwrap();
}

#[tokio::test]
async fn a_hundred_upgrades_leak_no_fd() {
    let d = Daemon::start();
    let ls_path = d.base().join("ls");
    let mut c = holding(&d, &ls_path, b"r").await;
    let ls = bytes(&ls_path);
    let mut admin = Client::connect(d.admin_socket()).await.unwrap();
    admin.ping().await.unwrap();
    let before = fd_count(d.pid());
    for n in 1..=100 {
        d.signal(Signal::SIGUSR1);
        // Asked on the connection the test keeps: a new one per poll would
        // still be open in the daemon when the fds are counted.
        wait_upgraded_on(&mut admin, n, || d.log()).await;
        c.ping().await.unwrap();
    }
    admin.ping().await.unwrap();
    assert_eq!(fd_count(d.pid()), before, "fds leaked over 100 upgrades");
    assert_err(
        c.acquire(&ls, b"r", ACQUIRE_AUTOCREATE).await,
        87,
        51,
        "resource busy: Lockspace resource 'r' is locked",
    );
}

#[tokio::test]
async fn owner_vanishing_during_the_upgrade_is_released_alone() {
    let d = Daemon::start();
    let ls = d.base().join("ls");
    let mut holder = Holder::start(&d, &ls, "gone", &["--restrict"]).await;
    let mut other = d.client().await;
    other.register(&owner("other", 2, 4_000_002)).await.unwrap();
    other
        .acquire(&bytes(&ls), b"kept", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    // The owner dies while the daemon re-execs.
    d.signal(Signal::SIGUSR1);
    holder.child.start_kill().unwrap();
    holder.wait(Duration::from_secs(5)).await;
    wait_upgraded(&d, 1).await;
    until(
        "dead owner's lease released",
        Duration::from_secs(5),
        || !ls.join("gone").exists(),
    )
    .await;
    assert_eq!(d.kernel_locks_on(&ls.join("kept")), ["POSIX WRITE 0-0"]);
    other.release(&bytes(&ls), b"kept").await.unwrap();
}

#[tokio::test]
async fn refused_alias_does_not_cost_the_lease_its_lock_across_an_upgrade() {
    let d = Daemon::start();
    let ls = d.base().join("ls");
    let mut c = holding(&d, &ls, b"disk").await;
    // The same file by its full path in the default lockspace: refused, and the
    // fd the daemon opened to find out stays open beside the lease.
    assert_err(
        c.acquire(b"", &bytes(&ls.join("disk")), 0).await,
        87,
        51,
        &format!(
            "resource busy: Lockspace resource '{}' is locked",
            ls.join("disk").display()
        ),
    );
    d.signal(Signal::SIGUSR1);
    wait_upgraded(&d, 1).await;
    assert_eq!(d.kernel_locks_on(&ls.join("disk")), ["POSIX WRITE 0-0"]);
}

#[tokio::test]
async fn package_upgrade_replacing_the_binary_execs_the_new_file() {
    // A package manager replaces the binary: a new file renamed over the path.
    let dir = tempfile::tempdir().unwrap();
    let sbin = dir.path().join("sbin");
    std::fs::create_dir(&sbin).unwrap();
    let exe = sbin.join("virtlockd");
    crate::support::copy_daemon(&exe);
    let d = Daemon::start_program(&exe, dir, &[]);
    let ls = d.base().join("ls");
    let mut c = holding(&d, &ls, b"r").await;
    let old_exe = std::fs::read_link(format!("/proc/{}/exe", d.pid())).unwrap();

    let staged = sbin.join(".virtlockd.new");
    crate::support::copy_daemon(&staged);
    std::fs::rename(&staged, &exe).unwrap();
    assert!(std::fs::read_link(format!("/proc/{}/exe", d.pid()))
        .unwrap()
        .to_string_lossy()
        .ends_with("(deleted)"));
    d.signal(Signal::SIGUSR1);
    wait_upgraded(&d, 1).await;
    // The new file runs now, with the lease and the connection.
    let now_exe = std::fs::read_link(format!("/proc/{}/exe", d.pid())).unwrap();
    assert_eq!(
        now_exe,
        std::fs::canonicalize(&exe).unwrap(),
        "was {old_exe:?}"
    );
    assert_eq!(d.kernel_locks_on(&ls.join("r")), ["POSIX WRITE 0-0"]);
    c.release(&bytes(&ls), b"r").await.unwrap();
}

#[tokio::test]
async fn relative_argv0_still_found_after_daemon_mode_changed_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sbin")).unwrap();
    crate::support::copy_daemon(&dir.path().join("sbin/virtlockd"));
    // `-d` changes the working directory to /, where ./sbin/virtlockd is not.
    let out = std::process::Command::new("./sbin/virtlockd")
        .current_dir(dir.path())
        .args(["-d", "--runtime-dir", "run", "-v"])
        .env(
            "LIBVIRT_LOG_OUTPUTS",
            format!("1:file:{}", dir.path().join("log").display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = dir.path().join("run");
    let pid: i32 = std::fs::read_to_string(run.join("virtlockd.pid"))
        .unwrap()
        .parse()
        .unwrap();
    let guard = KillOnDrop(pid);
    let mut c = Client::connect(run.join("virtlockd-sock")).await.unwrap();
    c.register(&owner("vm", 1, 4_000_001)).await.unwrap();
    kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
    let log = dir.path().join("log");
    wait_upgraded_at(&run.join("virtlockd-admin-sock"), 1, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    c.ping().await.unwrap();
    drop(guard);
}

/// Kills a daemon that the test started in the background (`-d`).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

#[tokio::test]
async fn a_reload_asked_for_during_an_upgrade_is_done_after_it() {
    let d = Daemon::start();
    let mut c = d.client().await;
    c.register(&owner("vm", 1, 4_000_001)).await.unwrap();
    // The second signal arrives between the exec and the new image's handlers
    // (the old image has logged its last line): it must be delayed, not lost.
    d.signal(Signal::SIGUSR1);
    // Only the log shows the exec window.
    wait_logged(&d, "state written, exec", 1, "first upgrade did not start").await;
    d.signal(Signal::SIGUSR1);
    wait_upgraded(&d, 2).await;
    c.ping().await.unwrap();
}

#[tokio::test]
async fn signals_sent_in_the_exec_window_are_each_acted_on_after_it() {
    let mut d = Daemon::start();
    let pid = Pid::from_raw(d.pid() as i32);
    let mut c = d.client().await;
    c.register(&owner("vm", 1, 4_000_001)).await.unwrap();
    // Each round: an upgrade, and in its exec window (the old image has written
    // its last line) a reload, an ignored signal and another upgrade. None may
    // be lost, whichever thread of the old or the new image is running.
    let rounds = 4;
    for round in 1..=rounds {
        d.signal(Signal::SIGUSR1);
        wait_logged(
            &d,
            "state written, exec",
            2 * round - 1,
            &format!("round {round}: upgrade did not start"),
        )
        .await;
        for sig in [Signal::SIGHUP, Signal::SIGUSR2, Signal::SIGUSR1] {
            kill(pid, sig).unwrap();
        }
        wait_upgraded(&d, 2 * round as u64).await;
        wait_logged(
            &d,
            "configuration reloaded",
            round,
            &format!("round {round}: SIGHUP lost"),
        )
        .await;
        wait_logged(
            &d,
            "signal ignored",
            round,
            &format!("round {round}: SIGUSR2 lost"),
        )
        .await;
        c.ping().await.unwrap();
    }
    // A shutdown asked for in the exec window: done by the new image, cleanly.
    d.signal(Signal::SIGUSR1);
    wait_logged(
        &d,
        "state written, exec",
        2 * rounds + 1,
        "last upgrade did not start",
    )
    .await;
    let code = d.stop_with(Signal::SIGTERM);
    let log = d.log();
    assert_eq!(code, Some(0), "SIGTERM in the exec window:\n{log}");
    assert_eq!(
        log.matches("restoring after live upgrade").count(),
        2 * rounds + 1,
        "the upgrade under way completes before the shutdown:\n{log}"
    );
    let run = d.dir.path().join("run");
    for f in ["virtlockd-sock", "virtlockd-admin-sock", "virtlockd.pid"] {
        assert!(!run.join(f).exists(), "{f} left behind:\n{log}");
    }
}

/// Clients `range`, each registered as owner "idle" and holding the lease
/// `c{i}` of the lockspace `ls`.
async fn idle_holders(d: &Daemon, ls: &[u8], range: std::ops::Range<u32>) -> Vec<Client> {
    let mut clients = Vec::with_capacity(range.len());
    for i in range {
        let mut c = d.client().await;
        c.register(&owner("idle", i + 1, 5_000_000 + i))
            .await
            .unwrap();
        c.acquire(ls, format!("c{i}").as_bytes(), ACQUIRE_AUTOCREATE)
            .await
            .unwrap();
        clients.push(c);
    }
    clients
}

#[tokio::test]
async fn an_upgrade_while_idle_clients_are_still_rebuilt_keeps_every_one() {
    // Enough clients for several restore batches: the second SIGUSR1 is
    // pending across the first exec, so the new image takes it right after its
    // start-up, while most idle clients are still waiting to be rebuilt.
    const CLIENTS: u32 = 700;
    let d = Daemon::start();
    let ls_path = d.base().join("ls");
    let ls = bytes(&ls_path);
    let mut first = holding(&d, &ls_path, b"c0").await;
    let mut clients = idle_holders(&d, &ls, 1..CLIENTS).await;
    let locks = kernel_locks(&d);
    assert!(locks.len() >= CLIENTS as usize, "{}", locks.len());
    d.signal(Signal::SIGUSR1);
    wait_logged(&d, "state written, exec", 1, "upgrade did not start").await;
    d.signal(Signal::SIGUSR1);
    wait_upgraded(&d, 2).await;
    first.ping().await.unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        c.ping()
            .await
            .unwrap_or_else(|e| panic!("client {} lost: {e}\n{}", i + 1, d.log()));
    }
    assert_eq!(kernel_locks(&d), locks, "{}", d.log());
    // The case this test is about did happen: the second upgrade found
    // clients not rebuilt yet (and rebuilt them before quiescing).
    let log = d.log();
    assert!(
        log.contains("rebuilding the restored clients still waiting at once"),
        "the second upgrade came after every client was back:\n{log}"
    );
    // Each lease is still its owner's: another client finds it busy, and the
    // owner releases it.
    let mut other = d.client().await;
    other.register(&owner("other", 9, 6_999_999)).await.unwrap();
    assert_err(
        other.acquire(&ls, b"c1", ACQUIRE_AUTOCREATE).await,
        87,
        51,
        "resource busy: Lockspace resource 'c1' is locked",
    );
    clients[0].release(&ls, b"c1").await.unwrap();
    other.acquire(&ls, b"c1", ACQUIRE_AUTOCREATE).await.unwrap();
}

/// An admin client-disconnect racing a live upgrade: either it closes the
/// client before the upgrade holds it (the client reads EOF and is gone after
/// the upgrade), or it is refused as "upgrade in progress" (the client stays,
/// served by the new image). Never acknowledged and then lost, and never a
/// client handed over that then closes under the upgrade.
#[tokio::test]
async fn an_admin_close_racing_an_upgrade_closes_or_is_refused_never_half() {
    use crate::support::admin::{admin_client, call, client_args, lock_client_ids};
    use virtlockd::protocol::admin::procedure as p;
    let d = Daemon::start();
    let mut admin = admin_client(&d).await;
    let (mut closed, mut refused) = (0, 0);
    for round in 0..12u32 {
        let mut c = d.client().await;
        c.register(&owner("vm", 1, 4_100_000 + round))
            .await
            .unwrap();
        let id = *lock_client_ids(&mut admin)
            .await
            .last()
            .expect("a lock client");
        // The close and the signal go out together, in turns one or the
        // other first and a little apart, so that the daemon meets them in
        // varying order (the window where the close is read before the hold
        // but reaches the supervisor after it is narrow: this checks that
        // every outcome is whole, whichever occurs).
        let lag = Duration::from_micros(500 * u64::from(round % 4));
        let close = call(&mut admin, p::CLIENT_CLOSE, client_args("virtlockd", id, 0));
        let close = if round % 2 == 0 {
            let signal = async {
                tokio::time::sleep(lag).await;
                d.signal(Signal::SIGUSR1)
            };
            tokio::join!(close, signal).0
        } else {
            let close = async {
                tokio::time::sleep(lag).await;
                close.await
            };
            tokio::join!(async { d.signal(Signal::SIGUSR1) }, close).1
        };
        wait_upgraded(&d, u64::from(round) + 1).await;
        let listed = lock_client_ids(&mut admin).await.contains(&id);
        match close {
            Ok(_) => {
                closed += 1;
                assert!(!listed, "round {round}: closed client {id} still listed");
                assert!(
                    c.ping().await.is_err(),
                    "round {round}: closed client still served"
                );
            }
            Err(e) => {
                refused += 1;
                assert!(
                    e.to_string().contains("upgrade is in progress"),
                    "round {round}: {e}"
                );
                assert!(listed, "round {round}: refused close lost client {id}");
                c.ping()
                    .await
                    .expect("a client whose close was refused is served");
            }
        }
    }
    eprintln!("admin close vs upgrade: {closed} closed first, {refused} refused");
}

/// The epoll instances of the daemon (its event loops').
/// What each fd of `pid` is (the targets of /proc/PID/fd), counted by kind.
fn fd_kinds(pid: u32) -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(e.path()).map_or("?".into(), |t| {
            // socket:[inode] and the like: the kind, not the instance.
            let t = t.to_string_lossy().into_owned();
            t.split(":[").next().unwrap_or_default().to_owned()
        });
        *kinds.entry(target).or_insert(0) += 1;
    }
    kinds
}

fn epoll_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:[eventpoll]")
        })
        .count()
}

/// With more than 256 clients the new image closes the old image's epoll
/// instance on a thread while it serves; upgrades in quick succession, and a
/// failed exec among them, must leave no epoll instance (nor any other fd)
/// behind.
#[tokio::test]
async fn quick_upgrades_with_many_clients_leave_no_epoll_behind() {
    let (exe, d, _, mut c) = on_a_copy_holding_a_lease().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(d.client().await);
    }
    // A connect returns once the connection is in the listen backlog; the
    // daemon holds its fd only once it accepted it: a ping each proves that,
    // before the fds are counted.
    for i in idle.iter_mut() {
        i.ping().await.unwrap();
    }
    let mut admin = Client::connect(d.admin_socket()).await.unwrap();
    admin.ping().await.unwrap();
    let (fds, epolls) = (fd_count(d.pid()), epoll_count(d.pid()));
    let kinds = fd_kinds(d.pid());
    let mut upgrades = 0;
    for round in 0..6 {
        if round == 3 {
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
            d.signal(Signal::SIGUSR1);
            wait_logged(&d, "live upgrade failed", 1, "no failure logged").await;
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
            continue;
        }
        // The next one at once: the previous image's epoll may still be open.
        d.signal(Signal::SIGUSR1);
        upgrades += 1;
        wait_upgraded_on(&mut admin, upgrades, || d.log()).await;
    }
    c.ping().await.unwrap();
    for i in idle.iter_mut().step_by(50) {
        i.ping().await.unwrap();
    }
    // The last image's close runs on a thread: give it a moment.
    let settled = crate::support::wait::within(Duration::from_secs(10), || {
        epoll_count(d.pid()) == epolls && fd_count(d.pid()) == fds
    })
    .await;
    assert!(
        settled,
        "epoll instances {} (before {epolls}), fds {} (before {fds}): {:?} (before {kinds:?})",
        epoll_count(d.pid()),
        fd_count(d.pid()),
        fd_kinds(d.pid()),
    );
}

/// Past 1024 lock clients the new image looks for the ones with a request
/// waiting on a thread, beside the rebuild, instead of before it. Requests
/// sent into the exec window from clients all over the restore order are
/// each answered, every client keeps its session and lease, and the kernel
/// locks are the same.
#[tokio::test]
async fn past_a_thousand_clients_requests_sent_during_the_exec_are_answered() {
    const CLIENTS: u32 = 1100;
    // This process holds every client's socket (a soft limit may be 1024).
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard <= 2 * u64::from(CLIENTS) {
        let reason = format!(
            "needs a hard RLIMIT_NOFILE above {}, have {hard}",
            2 * CLIENTS
        );
        crate::support::skip(
            "past_a_thousand_clients_requests_sent_during_the_exec_are_answered",
            &reason,
        );
        return;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("virtlockd.conf");
    // Debug level: the restore says which way it found waiting requests.
    std::fs::write(
        &cfg,
        format!("max_clients = {}\nlog_level = 1\n", CLIENTS + 50),
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let d = Daemon::start_in(dir, &["-f", &cfg_s]);
    let ls_path = d.base().join("ls");
    let ls = bytes(&ls_path);
    let mut clients = vec![holding(&d, &ls_path, b"c0").await];
    clients.extend(idle_holders(&d, &ls, 1..CLIENTS).await);
    let locks = kernel_locks(&d);
    assert!(locks.len() > CLIENTS as usize, "{}", locks.len());

    d.signal(Signal::SIGUSR1);
    wait_logged(&d, "state written, exec", 1, "upgrade did not start").await;
    // One client in every hundred asks for a second lease at once.
    let asking = clients
        .iter_mut()
        .enumerate()
        .skip(1)
        .step_by(100)
        .map(|(i, c)| {
            let ls = ls.clone();
            async move {
                let name = format!("during-{i}");
                tokio::time::timeout(
                    Duration::from_secs(10),
                    c.acquire(&ls, name.as_bytes(), ACQUIRE_AUTOCREATE),
                )
                .await
                .map_err(|_| format!("client {i}: no reply"))?
                .map_err(|e| format!("client {i}: {e}"))
            }
        });
    let answers = futures_util::future::join_all(asking).await;
    let asked = answers.len();
    for a in answers {
        a.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    }
    wait_upgraded(&d, 1).await;
    assert!(
        d.log().contains("polled beside the restore"),
        "the restore did not take its path for many clients:\n{}",
        d.log()
    );
    for (i, c) in clients.iter_mut().enumerate() {
        c.ping()
            .await
            .unwrap_or_else(|e| panic!("client {i} lost: {e}\n{}", d.log()));
    }
    let after = kernel_locks(&d);
    assert_eq!(after.len(), locks.len() + asked, "{}", d.log());
    assert!(locks.iter().all(|l| after.contains(l)), "a lock changed");
    // Each lease is still its owner's.
    let mut other = d.client().await;
    other.register(&owner("other", 9, 6_999_999)).await.unwrap();
    for name in ["c1", "c1099", "during-101"] {
        assert_err(
            other
                .acquire(&ls, name.as_bytes(), ACQUIRE_AUTOCREATE)
                .await,
            87,
            51,
            &format!("resource busy: Lockspace resource '{name}' is locked"),
        );
    }
}
