//! Heavy tests, in their own test binary so that they never run beside the
//! latency-bounded tests of `tests/it` (test binaries run one after another).

/// The integration tests' support module; this binary uses a few of its helpers.
#[path = "it/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use support::{assert_err, bytes};

/// libvirt's reader refuses a state over 10 MiB (about 3000 leases with long
/// paths) and its daemon then exits, dropping every lock. Ours has no limit but
/// memory: 100,000 leases, with paths long enough that the state is far over
/// 10 MiB.
#[tokio::test]
async fn huge_state_survives_an_upgrade() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, mut hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if setrlimit(Resource::RLIMIT_NOFILE, hard, 150_000).is_ok() {
        hard = 150_000;
    }
    // One fd per leased file: where the fd limit allows fewer than 100,000
    // files, the first `shared` files are held SHARED by all 8 owners, so the
    // daemon still holds 100,000 leases (owner entries).
    const LEASES: usize = 100_000;
    const OWNERS: usize = 8;
    let files = LEASES.min(hard.saturating_sub(2_000) as usize);
    let shared = (LEASES - files).div_ceil(OWNERS - 1);
    assert!(shared <= files, "fd limit {hard} too low for this test");
    if files < LEASES {
        eprintln!(
            "NOTE huge_state_survives_an_upgrade: fd hard limit {hard}: {LEASES} leases on {files} files ({shared} shared by {OWNERS} owners)"
        );
    }
    let leases = files;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_virtlockd"));
    // Warnings only: a debug line per lease would make the log huge.
    let mut child = support::daemon::verbose_in(&mut daemon, &run)
        .env("LIBVIRT_LOG_OUTPUTS", "2:stderr")
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let socket = run.join("virtlockd-sock");
    let admin_socket = run.join("virtlockd-admin-sock");
    support::until("daemon start", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
            && std::os::unix::net::UnixStream::connect(&admin_socket).is_ok()
    })
    .await;
    // A lockspace path of about 3.4 KB: every lease's path carries it.
    let shm = tempfile::Builder::new()
        .prefix("vl-huge")
        .tempdir_in("/dev/shm")
        .unwrap();
    let mut deep = shm.path().to_path_buf();
    for level in 0..16 {
        deep.push(format!("{level:02}{}", "d".repeat(200)));
    }
    let ls = bytes(&deep);
    Client::connect(&socket)
        .await
        .unwrap()
        .create_lockspace(&ls)
        .await
        .unwrap();
    let workers: Vec<_> = (0..OWNERS)
        .map(|w| {
            let (socket, ls) = (socket.clone(), ls.clone());
            tokio::spawn(async move {
                let mut c = Client::connect(&socket).await.unwrap();
                c.register(&owner("bulk", w as u32 + 1, 4_200_000 + w as u32))
                    .await
                    .unwrap();
                let mut held = 0;
                for i in 0..shared {
                    c.acquire(
                        &ls,
                        format!("l{i}").as_bytes(),
                        ACQUIRE_SHARED | ACQUIRE_AUTOCREATE,
                    )
                    .await
                    .unwrap();
                    held += 1;
                }
                for i in (shared + w..files).step_by(OWNERS) {
                    c.acquire(&ls, format!("l{i}").as_bytes(), ACQUIRE_AUTOCREATE)
                        .await
                        .unwrap();
                    held += 1;
                }
                (c, held)
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut total = 0;
    for w in workers {
        let (c, held) = w.await.unwrap();
        total += held;
        clients.push(c);
    }
    assert!(total >= LEASES, "{total} leases held");
    let state_bytes = leases * (2 * deep.as_os_str().len() + 64);
    assert!(state_bytes > 10 << 20, "state only {state_bytes} bytes");
    let count = || {
        virtlockd::proclocks::of_pid(pid)
            .unwrap()
            .iter()
            .filter(|l| l.start == 0 && l.end == Some(0))
            .count()
    };
    assert_eq!(count(), leases + 1, "leases + pid file");
    let mut admin = Client::connect(&admin_socket).await.unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).unwrap();
    let logf = dir.path().join("log");
    support::wait::wait_upgraded_within(&mut admin, 1, Duration::from_secs(60), || {
        format!(
            "upgrade with {leases} leases did not finish:\n{}",
            std::fs::read_to_string(&logf).unwrap_or_default()
        )
    })
    .await;
    clients[0].ping().await.unwrap();
    assert_eq!(count(), leases + 1, "every lease kept");
    let mut probe = Client::connect(&socket).await.unwrap();
    probe
        .register(&owner("probe", 99, 4_299_999))
        .await
        .unwrap();
    assert_err(
        probe.acquire(&ls, b"l0", ACQUIRE_AUTOCREATE).await,
        87,
        51,
        "resource busy: Lockspace resource 'l0' is locked",
    );
    let last = format!("l{}", leases - 1);
    assert_err(
        probe
            .acquire(&ls, last.as_bytes(), ACQUIRE_AUTOCREATE)
            .await,
        87,
        51,
        &format!("resource busy: Lockspace resource '{last}' is locked"),
    );
    let _ = child.kill();
    let _ = child.wait();
}
