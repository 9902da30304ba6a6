//! Measures a live upgrade (SIGUSR1 re-exec) under load: N idle clients holding
//! K leases each, plus probe clients in a closed ACQUIRE/RELEASE loop. Prints the
//! longest gap between consecutive probe replies (the pause a client sees), the
//! time from the signal to the daemon's "restored" point as seen by the probes,
//! and the number of lost replies (a reply that never comes is counted after 10 s).
//!
//!   upgrade_pause --spawn target/release/virtlockd --clients 1000 --leases 5
//!   upgrade_pause --spawn target/release/virtlockd --clients 10000 --leases 4
//!
//! Needs root for more than ~9000 clients (it raises RLIMIT_NOFILE for itself and
//! the daemon).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

#[derive(Parser, Debug)]
#[command(about = "Pause and lost replies of a live upgrade under load")]
struct Args {
    /// The virtlockd binary to start (on a private runtime dir).
    #[arg(long)]
    spawn: PathBuf,
    /// Idle clients, each holding --leases leases.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    leases: usize,
    /// Clients in a closed ACQUIRE/RELEASE loop during the upgrade.
    #[arg(long, default_value_t = 8)]
    probes: usize,
    /// Take the leases SHARED from a pool of this many resources instead of one
    /// exclusive resource each (10,000 x 4 then fits a 20,000-fd limit).
    #[arg(long)]
    shared_pool: Option<usize>,
    /// Upgrades to do (one after the other).
    #[arg(long, default_value_t = 3)]
    upgrades: usize,
    /// Time from one upgrade's signal to the next; each upgrade's figures are
    /// taken from the replies in this time less 100 ms. An upgrade must end
    /// well within it: raise it on a slow (emulated) machine.
    #[arg(long, default_value_t = 700)]
    interval_ms: u64,
}

fn raise_nofile(n: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = n.max(hard);
        if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let per_client = if args.shared_pool.is_some() {
        2
    } else {
        args.leases + 2
    };
    let need = (args.clients * per_client + 1000) as u64;
    raise_nofile(need);
    let tmp = tempfile::tempdir()?;
    let run = tmp.path().join("run");
    let conf = tmp.path().join("virtlockd.conf");
    std::fs::write(
        &conf,
        format!("max_clients = {}\n", args.clients + args.probes + 64),
    )?;
    let mut cmd = Command::new(&args.spawn);
    cmd.arg("--runtime-dir")
        .arg(&run)
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut daemon = cmd.spawn()?;
    let pid = daemon.id();
    let socket = run.join("virtlockd-sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::connect(&socket).await.is_err() {
        if Instant::now() > deadline {
            return Err("daemon did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shm = tempfile::Builder::new()
        .prefix("upgrade")
        .tempdir_in("/dev/shm")?;
    let ls = {
        use std::os::unix::ffi::OsStrExt;
        shm.path().join("ls").as_os_str().as_bytes().to_vec()
    };
    Client::connect(&socket)
        .await?
        .create_lockspace(&ls)
        .await?;

    let t = Instant::now();
    let mut idle = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let mut c = Client::connect(&socket).await?;
        c.register(&owner("idle", i as u32 + 1, 6_000_000 + i as u32))
            .await?;
        for k in 0..args.leases {
            match args.shared_pool {
                Some(pool) => {
                    let r = (i * args.leases + k) % pool.max(1);
                    c.acquire(
                        &ls,
                        format!("pool-{r}").as_bytes(),
                        ACQUIRE_AUTOCREATE | ACQUIRE_SHARED,
                    )
                    .await?
                }
                None => {
                    c.acquire(&ls, format!("c{i}-l{k}").as_bytes(), ACQUIRE_AUTOCREATE)
                        .await?
                }
            }
        }
        idle.push(c);
    }
    println!(
        "setup: {} clients x {} leases in {:.1}s",
        args.clients,
        args.leases,
        t.elapsed().as_secs_f64()
    );
    let locks_before = virtlockd::proclocks::of_pid(pid)?.len();

    let local = tokio::task::LocalSet::new();
    let stop = Arc::new(AtomicBool::new(false));
    let results = local
        .run_until(async {
            let mut probes = Vec::new();
            for p in 0..args.probes {
                let socket = socket.clone();
                let ls = ls.clone();
                let stop = stop.clone();
                probes.push(tokio::task::spawn_local(async move {
                    let mut c = Client::connect(&socket).await.expect("probe connect");
                    c.register(&owner("probe", 900 + p as u32, 7_000_000 + p as u32))
                        .await
                        .expect("probe register");
                    let name = format!("probe-{p}");
                    let mut stamps = Vec::new();
                    let mut lost = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        for acquire in [true, false] {
                            let call = async {
                                if acquire {
                                    c.acquire(&ls, name.as_bytes(), ACQUIRE_AUTOCREATE).await
                                } else {
                                    c.release(&ls, name.as_bytes()).await
                                }
                            };
                            match tokio::time::timeout(Duration::from_secs(10), call).await {
                                Ok(Ok(())) => stamps.push(Instant::now()),
                                Ok(Err(e)) => panic!("probe call failed: {e}"),
                                Err(_) => {
                                    lost += 1;
                                    return (stamps, lost);
                                }
                            }
                        }
                    }
                    (stamps, lost)
                }));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut signals = Vec::new();
            for _ in 0..args.upgrades {
                signals.push(Instant::now());
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGUSR1,
                )
                .expect("signal");
                tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
            }
            stop.store(true, Ordering::Relaxed);
            let mut out = Vec::new();
            for p in probes {
                out.push(p.await.expect("probe task"));
            }
            (signals, out)
        })
        .await;
    let (signals, probes) = results;
    let lost: u32 = probes.iter().map(|(_, l)| l).sum();
    let replies: usize = probes.iter().map(|(s, _)| s.len()).sum();
    for (n, sig) in signals.iter().enumerate() {
        let window_end = *sig + Duration::from_millis(args.interval_ms.saturating_sub(100));
        let mut worst_gap = Duration::ZERO;
        let mut first_after = Duration::MAX;
        for (stamps, _) in &probes {
            let mut prev = None::<Instant>;
            for &s in stamps.iter().filter(|s| **s <= window_end) {
                if let Some(p) = prev {
                    if s > *sig {
                        worst_gap = worst_gap.max(s - p.max(*sig));
                    }
                }
                prev = Some(s);
            }
            // The first reply that needed the new image: after the largest gap.
            if let Some(s) = stamps.iter().find(|s| **s > *sig) {
                first_after = first_after.min(*s - *sig);
            }
        }
        println!(
            "upgrade {}: longest probe wait {:.2} ms (signal -> first probe reply {:.2} ms)",
            n + 1,
            worst_gap.as_secs_f64() * 1e3,
            first_after.as_secs_f64() * 1e3
        );
    }
    let same_pid = std::path::Path::new(&format!("/proc/{pid}")).exists();
    let locks_after = virtlockd::proclocks::of_pid(pid)?.len();
    println!(
        "probe replies {replies}, lost {lost}; pid {pid} alive {same_pid}; kernel locks {locks_before} -> {locks_after}"
    );
    drop(idle);
    daemon.kill()?;
    daemon.wait()?;
    Ok(())
}
