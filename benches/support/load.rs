//! Closed-loop lock load over a daemon's socket, shared by the contention
//! benchmark (`benches/contention.rs`) and the long-run load generator
//! (`examples/loadgen.rs`): N clients, each with one request in flight, in an
//! ACQUIRE/RELEASE loop over a set of resources, with the daemon's CPU time
//! read from /proc so the cost per RPC can be compared between daemons.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtlockd::client::{owner, Client, ClientError};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

/// libvirt's VIR_ERR_RESOURCE_BUSY: the lease is held by another owner.
const RESOURCE_BUSY: i32 = 87;

/// What the clients do.
#[derive(Debug, Clone)]
pub struct Load {
    pub clients: usize,
    /// Client `i` uses resource `res-{i % resources}`; 1 makes every client
    /// contend for one lease, `clients` gives each client its own.
    pub resources: usize,
    /// Fraction of acquisitions that are SHARED (0.0 - 1.0).
    pub shared_ratio: f64,
    /// Acquire with AUTOCREATE (the daemon creates and deletes the lease file).
    pub autocreate: bool,
    pub duration: Duration,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rpcs: u64,
    pub acquires: u64,
    pub busy: u64,
    /// Every call's latency, sorted.
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
    /// CPU time of every thread of the daemon during the run.
    pub daemon_cpu: Option<Duration>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.rpcs as f64 / self.elapsed.as_secs_f64()
    }

    /// The share of ACQUIREs answered "busy".
    pub fn busy_ratio(&self) -> f64 {
        self.busy as f64 / self.acquires.max(1) as f64
    }

    /// The latency below which a fraction `p` of the calls were answered.
    pub fn percentile_us(&self, p: f64) -> u32 {
        let n = self.latencies_us.len();
        self.latencies_us
            .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    }

    pub fn cpu_per_rpc_us(&self) -> Option<f64> {
        self.daemon_cpu
            .map(|c| c.as_secs_f64() * 1e6 / self.rpcs.max(1) as f64)
    }
}

/// The resource names the load uses: `res-0 .. res-{n-1}`.
pub fn resource_name(i: usize) -> String {
    format!("res-{i}")
}

/// Creates the lockspace directory with its resource files (without
/// AUTOCREATE the daemon needs them to exist), and announces it to the daemon.
pub async fn prepare(socket: &Path, lockspace: &Path, load: &Load) -> Result<(), ClientError> {
    if !load.autocreate {
        std::fs::create_dir_all(lockspace)?;
        for i in 0..load.resources {
            std::fs::write(lockspace.join(resource_name(i)), b"")?;
        }
    }
    Client::connect(socket)
        .await?
        .create_lockspace(&bytes(lockspace))
        .await
}

/// Runs `load` against the daemon at `socket` (pid `daemon_pid`, for its CPU
/// time) on `lockspace`, which [`prepare`] made.
pub async fn run(
    socket: &Path,
    daemon_pid: Option<u32>,
    lockspace: &Path,
    load: &Load,
) -> Result<Outcome, ClientError> {
    let cpu_before = daemon_pid.and_then(cpu_time);
    let started = Instant::now();
    let until = started + load.duration;
    let local = tokio::task::LocalSet::new();
    let results = local
        .run_until(async {
            let tasks: Vec<_> = (0..load.clients)
                .map(|i| {
                    tokio::task::spawn_local(client_loop(
                        socket.to_path_buf(),
                        i,
                        load.clone(),
                        bytes(lockspace),
                        until,
                    ))
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await);
            }
            out
        })
        .await;
    let mut total = Outcome {
        elapsed: started.elapsed(),
        ..Outcome::default()
    };
    if let (Some(a), Some(b)) = (cpu_before, daemon_pid.and_then(cpu_time)) {
        total.daemon_cpu = Some(b.saturating_sub(a));
    }
    for r in results {
        let s = r.map_err(|e| ClientError::Protocol(format!("client task: {e}")))??;
        total.rpcs += s.rpcs;
        total.acquires += s.acquires;
        total.busy += s.busy;
        total.latencies_us.extend(s.latencies_us);
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}

async fn client_loop(
    socket: PathBuf,
    idx: usize,
    load: Load,
    lockspace: Vec<u8>,
    until: Instant,
) -> Result<Outcome, ClientError> {
    let mut c = Client::connect(&socket).await?;
    c.register(&owner("loadgen", idx as u32 + 1, 5_000_000 + idx as u32))
        .await?;
    let name = resource_name(idx % load.resources.max(1)).into_bytes();
    let mut stats = Outcome {
        rpcs: 1,
        latencies_us: Vec::with_capacity(1 << 14),
        ..Outcome::default()
    };
    // A deterministic per-client shared/exclusive sequence (xorshift).
    let mut rng = (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while Instant::now() < until {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let shared = (rng % 10_000) as f64 / 10_000.0 < load.shared_ratio;
        let mut flags = if shared { ACQUIRE_SHARED } else { 0 };
        if load.autocreate {
            flags |= ACQUIRE_AUTOCREATE;
        }
        let t = Instant::now();
        let got = c.acquire(&lockspace, &name, flags).await;
        stats.latencies_us.push(t.elapsed().as_micros() as u32);
        stats.rpcs += 1;
        stats.acquires += 1;
        match got {
            Ok(()) => {
                let t = Instant::now();
                c.release(&lockspace, &name).await?;
                stats.latencies_us.push(t.elapsed().as_micros() as u32);
                stats.rpcs += 1;
            }
            Err(e) if e.remote().is_some_and(|r| r.code == RESOURCE_BUSY) => stats.busy += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(stats)
}

/// User + system time of every thread of `pid`, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()?;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

fn bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}
