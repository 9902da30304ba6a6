//! Closed-loop lock load over a daemon's socket, shared by the contention
//! benchmark (`benches/contention.rs`) and the long-run load generator
//! (`examples/loadgen.rs`): N clients, each with one request in flight, in an
//! ACQUIRE/RELEASE loop over a set of resources, with the daemon's CPU time
//! read from /proc so the cost per RPC can be compared between daemons.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio_util::codec::{Decoder, Encoder};
use virtlockd::client::{check_reply, owner, Client, ClientError};
use virtlockd::protocol::lock::{LockCall, ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};
use virtlockd::protocol::FrameCodec;

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
    /// The part of it spent in the kernel.
    pub daemon_kernel: Option<Duration>,
    /// Times a thread of the daemon was preempted during the run.
    pub daemon_preempted: Option<u64>,
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

    /// The kernel's share of the daemon's CPU time.
    pub fn kernel_share(&self) -> Option<f64> {
        match (self.daemon_kernel, self.daemon_cpu) {
            (Some(k), Some(c)) if !c.is_zero() => Some(k.as_secs_f64() / c.as_secs_f64()),
            _ => None,
        }
    }

    /// Involuntary context switches of the daemon per RPC: a client woken by
    /// a reply taking the daemon's CPU.
    pub fn preempted_per_rpc(&self) -> Option<f64> {
        self.daemon_preempted
            .map(|n| n as f64 / self.rpcs.max(1) as f64)
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
///
/// Every client connects and registers first; the measured window (wall clock
/// and the daemon's CPU time) starts once all of them have, so that a run with
/// many clients measures the ACQUIRE/RELEASE loop, not the connection setup.
pub async fn run(
    socket: &Path,
    daemon_pid: Option<u32>,
    lockspace: &Path,
    load: &Load,
) -> Result<Outcome, ClientError> {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let connecting: Vec<_> = (0..load.clients)
                .map(|i| tokio::task::spawn_local(connect(socket.to_path_buf(), i)))
                .collect();
            let mut clients = Vec::with_capacity(connecting.len());
            for t in connecting {
                clients.push(join(t.await)?);
            }
            let cpu_before = daemon_pid.and_then(cpu_time);
            let preempted_before = daemon_pid.and_then(preemptions);
            let started = Instant::now();
            let until = started + load.duration;
            let looping: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    tokio::task::spawn_local(client_loop(
                        c,
                        i,
                        load.clone(),
                        bytes(lockspace),
                        until,
                    ))
                })
                .collect();
            let mut total = Outcome::default();
            for t in looping {
                let s = join(t.await)?;
                total.rpcs += s.rpcs;
                total.acquires += s.acquires;
                total.busy += s.busy;
                total.latencies_us.extend(s.latencies_us);
            }
            total.elapsed = started.elapsed();
            if let (Some(a), Some(b)) = (cpu_before, daemon_pid.and_then(cpu_time)) {
                total.daemon_cpu = Some(b.total().saturating_sub(a.total()));
                total.daemon_kernel = Some(b.kernel.saturating_sub(a.kernel));
            }
            if let (Some(a), Some(b)) = (preempted_before, daemon_pid.and_then(preemptions)) {
                total.daemon_preempted = Some(b.saturating_sub(a));
            }
            total.latencies_us.sort_unstable();
            Ok(total)
        })
        .await
}

fn join<T>(r: Result<Result<T, ClientError>, tokio::task::JoinError>) -> Result<T, ClientError> {
    r.map_err(|e| ClientError::Protocol(format!("client task: {e}")))?
}

/// Client `idx` connected and registered (outside the measured window).
pub async fn connect(socket: PathBuf, idx: usize) -> Result<LoadClient, ClientError> {
    let mut c = LoadClient::connect(&socket).await?;
    c.call(&LockCall::Register {
        owner: owner("loadgen", idx as u32 + 1, 5_000_000 + idx as u32),
        flags: 0,
    })
    .await?;
    Ok(c)
}

/// A lock client that waits for replies only, as libvirt's does (its event
/// loop polls a client socket for output only while a request is unsent).
/// A tokio stream is registered in epoll for writability too, so every
/// request the daemon reads (freeing space in the client's send queue) would
/// run the load generator's epoll callback and wake it, inside the daemon's
/// recv() and so on the daemon's CPU time: with many clients that wake-up
/// was a tenth of what the daemon was charged per RPC.
pub struct LoadClient {
    socket: AsyncFd<UnixStream>,
    received: BytesMut,
    sending: BytesMut,
    serial: u32,
}

impl LoadClient {
    async fn connect(path: &Path) -> Result<Self, ClientError> {
        // Like libvirt's blocking connect(): while the daemon's listen
        // backlog is full, keep trying.
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match tokio::net::UnixStream::connect(path).await {
                Ok(s) => break s.into_std()?,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err(e) => return Err(e.into()),
            }
        };
        // SAFETY: the AsyncFd owns the stream, so the fd is deregistered
        // before it is closed.
        let socket = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self {
            socket,
            received: BytesMut::with_capacity(4096),
            sending: BytesMut::with_capacity(256),
            serial: 0,
        })
    }

    async fn call(&mut self, call: &LockCall) -> Result<(), ClientError> {
        let frame = virtlockd::client::call_frame(call, self.serial);
        let header = frame.header;
        self.serial = self.serial.wrapping_add(1);
        FrameCodec.encode(frame, &mut self.sending)?;
        while !self.sending.is_empty() {
            match self.socket.get_ref().write(&self.sending) {
                Ok(n) => drop(self.sending.split_to(n)),
                // A request is far smaller than the socket buffer; a full
                // one means the daemon is not reading: let it catch up.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_micros(100)).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            if let Some(reply) = FrameCodec.decode(&mut self.received)? {
                return check_reply(&header, &reply);
            }
            let mut ready = self.socket.readable().await?;
            self.received.reserve(4096);
            let read = ready.try_io(|s| {
                let spare = self.received.spare_capacity_mut();
                // SAFETY: read() only writes initialised bytes into the spare
                // capacity, and set_len below covers exactly those.
                let buf = unsafe {
                    std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), spare.len())
                };
                let n = s.get_ref().read(buf)?;
                unsafe { self.received.set_len(self.received.len() + n) };
                Ok(n)
            });
            match read {
                Ok(Ok(0)) => return Err(ClientError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => {}
            }
        }
    }

    pub async fn acquire(
        &mut self,
        path: &[u8],
        name: &[u8],
        flags: u32,
    ) -> Result<(), ClientError> {
        self.call(&LockCall::Acquire {
            path: path.to_vec().into(),
            name: name.to_vec().into(),
            flags,
        })
        .await
    }

    async fn release(&mut self, path: &[u8], name: &[u8]) -> Result<(), ClientError> {
        self.call(&LockCall::Release {
            path: path.to_vec().into(),
            name: name.to_vec().into(),
            flags: 0,
        })
        .await
    }
}

async fn client_loop(
    mut c: LoadClient,
    idx: usize,
    load: Load,
    lockspace: Vec<u8>,
    until: Instant,
) -> Result<Outcome, ClientError> {
    let name = resource_name(idx % load.resources.max(1)).into_bytes();
    let mut stats = Outcome {
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

/// CPU time of every thread of a process.
#[derive(Clone, Copy, Debug)]
pub struct CpuTime {
    pub user: Duration,
    pub kernel: Duration,
}

impl CpuTime {
    pub fn total(&self) -> Duration {
        self.user + self.kernel
    }
}

/// User and system time of every thread of `pid`, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()? as f64;
    let ticks = |i: usize| -> Option<Duration> {
        Some(Duration::from_secs_f64(
            f.get(i)?.parse::<u64>().ok()? as f64 / hz,
        ))
    };
    Some(CpuTime {
        user: ticks(11)?,
        kernel: ticks(12)?,
    })
}

/// Involuntary context switches of every thread of `pid` so far.
pub fn preemptions(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut n = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).ok()?;
        n += status
            .lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
            .trim()
            .parse::<u64>()
            .ok()?;
    }
    Some(n)
}

fn bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}
