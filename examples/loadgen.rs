//! Load generator: N concurrent lock clients in a closed ACQUIRE/RELEASE loop.
//! Prints RPC/s, latency percentiles and the daemon's CPU time per RPC (from
//! /proc/PID/stat, all threads), the figure that matters on a host with thousands
//! of VMs.
//!
//! Against a running daemon:
//!   loadgen --socket /run/libvirt/virtlockd-sock --daemon-pid $(cat /run/virtlockd.pid)
//! Or let it start one on a tmpfs lockspace:
//!   loadgen --spawn target/release/virtlockd --clients 256 --seconds 5

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

#[derive(Parser, Debug)]
#[command(about = "Closed-loop ACQUIRE/RELEASE load against a virtlockd socket")]
struct Args {
    /// Lock socket of a running daemon.
    #[arg(long, conflicts_with = "spawn")]
    socket: Option<PathBuf>,
    /// Pid of that daemon (for CPU accounting).
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// Start this virtlockd binary on a private runtime dir instead.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// Concurrent clients (connections).
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// How long to run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Lockspace directory (default: a new directory under /dev/shm, i.e. tmpfs).
    #[arg(long)]
    lockspace: Option<PathBuf>,
    /// All clients contend for one resource instead of one resource each.
    #[arg(long)]
    hot: bool,
    /// Fraction of acquisitions that are SHARED (0.0 - 1.0).
    #[arg(long, default_value_t = 0.0)]
    shared_ratio: f64,
    /// Acquire with AUTOCREATE (create + delete a lease file per cycle).
    #[arg(long)]
    autocreate: bool,
}

struct Stats {
    rpcs: u64,
    busy: u64,
    latencies_us: Vec<u32>,
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn spawn_daemon(bin: &PathBuf, dir: &std::path::Path) -> std::io::Result<Child> {
    let child = Command::new(bin)
        .arg("--runtime-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let sock = dir.join("virtlockd-sock");
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(std::io::Error::other("daemon did not start"))
}

async fn client_loop(
    socket: PathBuf,
    idx: usize,
    args: &Args,
    lockspace: Vec<u8>,
    until: Instant,
) -> Result<Stats, virtlockd::client::ClientError> {
    let mut c = Client::connect(&socket).await?;
    c.register(&owner("loadgen", idx as u32 + 1, 5_000_000 + idx as u32))
        .await?;
    let name = if args.hot {
        b"hot".to_vec()
    } else {
        format!("res-{idx}").into_bytes()
    };
    let mut stats = Stats {
        rpcs: 1,
        busy: 0,
        latencies_us: Vec::with_capacity(1 << 16),
    };
    // Deterministic per-client shared/exclusive choice.
    let mut rng = (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while Instant::now() < until {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let shared = (rng % 10_000) as f64 / 10_000.0 < args.shared_ratio;
        let mut flags = if shared { ACQUIRE_SHARED } else { 0 };
        if args.autocreate {
            flags |= ACQUIRE_AUTOCREATE;
        }
        let t = Instant::now();
        let got = c.acquire(&lockspace, &name, flags).await;
        stats.latencies_us.push(t.elapsed().as_micros() as u32);
        stats.rpcs += 1;
        match got {
            Ok(()) => {
                let t = Instant::now();
                c.release(&lockspace, &name).await?;
                stats.latencies_us.push(t.elapsed().as_micros() as u32);
                stats.rpcs += 1;
            }
            Err(e) if e.remote().is_some_and(|r| r.code == 87) => stats.busy += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(stats)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: &'static Args = Box::leak(Box::new(Args::parse()));
    let tmp = tempfile::tempdir()?;
    let (socket, daemon_pid, mut child) = match (&args.spawn, &args.socket) {
        (Some(bin), _) => {
            let run = tmp.path().join("run");
            let child = spawn_daemon(bin, &run)?;
            (run.join("virtlockd-sock"), Some(child.id()), Some(child))
        }
        (None, Some(s)) => (s.clone(), args.daemon_pid, None),
        (None, None) => (
            PathBuf::from("/run/libvirt/virtlockd-sock"),
            args.daemon_pid,
            None,
        ),
    };
    let shm = tempfile::Builder::new()
        .prefix("loadgen")
        .tempdir_in("/dev/shm")?;
    let lockspace = args
        .lockspace
        .clone()
        .unwrap_or_else(|| shm.path().join("ls"));
    let ls_bytes = {
        use std::os::unix::ffi::OsStrExt;
        lockspace.as_os_str().as_bytes().to_vec()
    };
    if !args.autocreate {
        std::fs::create_dir_all(&lockspace)?;
        for i in 0..args.clients {
            std::fs::write(lockspace.join(format!("res-{i}")), b"")?;
        }
        std::fs::write(lockspace.join("hot"), b"")?;
    }
    Client::connect(&socket)
        .await?
        .create_lockspace(&ls_bytes)
        .await?;

    let cpu_before = daemon_pid.and_then(cpu_ticks);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.seconds);
    let local = tokio::task::LocalSet::new();
    let results = local
        .run_until(async {
            let tasks: Vec<_> = (0..args.clients)
                .map(|i| {
                    tokio::task::spawn_local(client_loop(
                        socket.clone(),
                        i,
                        args,
                        ls_bytes.clone(),
                        until,
                    ))
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await);
            }
            out
        })
        .await;
    let elapsed = started.elapsed();
    let cpu_after = daemon_pid.and_then(cpu_ticks);

    let mut rpcs = 0u64;
    let mut busy = 0u64;
    let mut lat = Vec::new();
    for r in results {
        let s = r??;
        rpcs += s.rpcs;
        busy += s.busy;
        lat.extend(s.latencies_us);
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "clients={} hot={} shared_ratio={} autocreate={} lockspace={}",
        args.clients,
        args.hot,
        args.shared_ratio,
        args.autocreate,
        lockspace.display()
    );
    println!(
        "rpcs={rpcs} busy={busy} elapsed={:.2}s rate={:.0} rpc/s p50={}us p99={}us",
        elapsed.as_secs_f64(),
        rpcs as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu_us = (b - a) as f64 / hz * 1e6;
        println!(
            "daemon_cpu={:.2}s cpu_per_rpc={:.2}us",
            cpu_us / 1e6,
            cpu_us / rpcs as f64
        );
    }
    if let Some(c) = child.as_mut() {
        c.kill()?;
        c.wait()?;
    }
    Ok(())
}
