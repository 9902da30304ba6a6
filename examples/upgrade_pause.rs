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
//!
//! Then, for each upgrade, where the daemon's time went, from its own debug
//! log (only the upgrade's modules log at debug level): the old image until
//! the exec (pause and quiesce, freeze of the lockspaces, snapshot written),
//! the exec until `main`, reading the state, and rebuilding until clients are
//! served again; and when the last idle client was back.

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
    // The runtime directory on tmpfs, as /run is: the snapshot is written
    // and read there while every client waits.
    let tmp = tempfile::Builder::new()
        .prefix("upgrade-run")
        .tempdir_in("/dev/shm")?;
    let run = tmp.path().join("run");
    let conf = tmp.path().join("virtlockd.conf");
    std::fs::write(
        &conf,
        format!("max_clients = {}\n", args.clients + args.probes + 64),
    )?;
    let log_path = tmp.path().join("daemon.log");
    let mut cmd = Command::new(&args.spawn);
    cmd.arg("--runtime-dir")
        .arg(&run)
        .arg("-f")
        .arg(&conf)
        // The upgrade's own timing lines only: a debug line per request
        // would be measured too.
        .env("LIBVIRT_LOG_OUTPUTS", "1:stderr")
        .env(
            "LIBVIRT_LOG_FILTERS",
            "1:handoff 1:virtlockd::daemon 1:restore 1:actors::lockspace: 3:virtlockd 4:actix 4:tokio",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?);
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
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    for (n, line) in where_the_time_went(&log).iter().enumerate() {
        println!("upgrade {} in the daemon: {line}", n + 1);
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

/// The value of `key=` on `line`, as a number.
fn field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let value = line[at..].split([' ', 'm']).next()?;
    value.parse().ok()
}

/// One line per live upgrade from the daemon's debug log: its phases in the
/// old image (`live upgrade timing`, milliseconds each, until the line with
/// `exec_at_us`), then from the exec: `main` (`main_at_us`), the state read
/// (`state_read_ms`), clients served again (`restored ... at_us`) and the
/// last one rebuilt (`every client restored ... at_us`).
fn where_the_time_went(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut phases = String::new();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        if line.contains("live upgrade timing") {
            phases = line.split("phases=").nth(1).unwrap_or_default().into();
            continue;
        }
        let (Some(exec), Some(before)) = (field(line, "exec_at_us"), field(line, "ms")) else {
            continue;
        };
        let (mut main, mut read, mut served, mut all) = (None, None, None, None);
        let mut restore = String::new();
        while let Some(next) = lines.peek() {
            if next.contains("exec_at_us") || next.contains("live upgrade timing") {
                break;
            }
            if let Some(m) = field(next, "main_at_us") {
                main = Some(m);
                read = field(next, "state_read_ms");
            } else if next.contains("restore timing") {
                // From the restore's start (the state read): the supervisor
                // entered it, queued the clients, and the lease tables' thread
                // ended.
                restore = format!(
                    " (clients queued at {}, lease tables at {} ms)",
                    field(next, "clients_ms").map_or("?".into(), |v| format!("{v:.2}")),
                    field(next, "leases_ms").map_or("?".into(), |v| format!("{v:.2}")),
                );
            } else if next.contains(" restored restore_ms=") {
                served = field(next, "at_us");
            } else if next.contains("every client restored") {
                all = field(next, "at_us");
            }
            lines.next();
        }
        let after = |t: Option<f64>| t.map_or("?".into(), |t| format!("{:.2}", (t - exec) / 1e3));
        let rebuild = match (main, read, served) {
            (Some(m), Some(r), Some(s)) => format!("{:.2}", (s - m) / 1e3 - r),
            _ => "?".into(),
        };
        out.push(format!(
            "{before:.2} ms until the exec ({phases}); exec to main {} ms, state read {} ms, \
             rebuild {rebuild} ms{restore}: serving {} ms after the exec, every idle client back at {} ms",
            after(main),
            read.map_or("?".into(), |r| format!("{r:.2}")),
            after(served),
            after(all),
        ));
    }
    out
}
