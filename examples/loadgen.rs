//! Load generator for long runs: N concurrent lock clients in a closed
//! ACQUIRE/RELEASE loop. Prints RPC/s, latency percentiles and the daemon's CPU
//! time per RPC (from /proc/PID/stat, all threads), the figure that matters on
//! a host with thousands of VMs. `benches/contention.rs` drives the same loop
//! (`benches/support/load.rs`) over a fixed matrix of contention cases.
//!
//! Against a running daemon:
//!   loadgen --socket /run/libvirt/virtlockd-sock --daemon-pid $(cat /run/virtlockd.pid)
//! Or let it start one on a tmpfs lockspace:
//!   loadgen --spawn target/release/virtlockd --clients 256 --seconds 5

#[path = "../benches/support/daemons.rs"]
#[allow(dead_code)] // libvirt's daemon is started by the benchmark only
mod daemons;
#[path = "../benches/support/load.rs"]
mod load;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let spawned = args.spawn.as_deref().map(daemons::ours).transpose()?;
    let (socket, daemon_pid) = match (&spawned, &args.socket) {
        (Some(d), _) => (d.socket.clone(), Some(d.pid())),
        (None, Some(s)) => (s.clone(), args.daemon_pid),
        (None, None) => (
            PathBuf::from("/run/libvirt/virtlockd-sock"),
            args.daemon_pid,
        ),
    };
    let shm = tempfile::Builder::new()
        .prefix("loadgen")
        .tempdir_in("/dev/shm")?;
    let lockspace = args
        .lockspace
        .clone()
        .unwrap_or_else(|| shm.path().join("ls"));
    let load = load::Load {
        clients: args.clients,
        resources: if args.hot { 1 } else { args.clients },
        shared_ratio: args.shared_ratio,
        autocreate: args.autocreate,
        duration: Duration::from_secs_f64(args.seconds),
    };
    load::prepare(&socket, &lockspace, &load).await?;
    let o = load::run(&socket, daemon_pid, &lockspace, &load).await?;
    println!(
        "clients={} hot={} shared_ratio={} autocreate={} lockspace={}",
        args.clients,
        args.hot,
        args.shared_ratio,
        args.autocreate,
        lockspace.display()
    );
    println!(
        "rpcs={} busy={} ({:.1}% of acquires) elapsed={:.2}s rate={:.0} rpc/s p50={}us p99={}us",
        o.rpcs,
        o.busy,
        o.busy_ratio() * 100.0,
        o.elapsed.as_secs_f64(),
        o.rate(),
        o.percentile_us(0.50),
        o.percentile_us(0.99)
    );
    if let (Some(cpu), Some(per)) = (o.daemon_cpu, o.cpu_per_rpc_us()) {
        println!(
            "daemon_cpu={:.2}s cpu_per_rpc={per:.2}us kernel={} preempted_per_rpc={}",
            cpu.as_secs_f64(),
            o.kernel_share()
                .map_or("-".into(), |k| format!("{:.0}%", k * 100.0)),
            o.preempted_per_rpc()
                .map_or("-".into(), |p| format!("{p:.3}")),
        );
    }
    Ok(())
}
