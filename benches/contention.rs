//! Contention: many clients, each with one request in flight, fight over a
//! few leases through the real daemon's socket, for every kind of lease
//! (exclusive, shared, mixed; with and without AUTOCREATE). Reports
//! throughput, the share of ACQUIREs answered busy, p50/p99 latency, the
//! daemon's CPU time per RPC with the kernel's share of it, and how often per
//! RPC the daemon was preempted (a client woken by a reply taking its CPU); when Debian's `/usr/sbin/virtlockd` is installed
//! (and we are root), the same cases run against it and the ratios are printed.
//!
//!   cargo bench --bench contention
//!   CONTENTION_CLIENTS=256 CONTENTION_RESOURCES=8 CONTENTION_SECONDS=5 cargo bench --bench contention
//!
//! The lockspace is on tmpfs (/dev/shm), so the figures are the daemons' own
//! cost, not the disk's. For long runs and other shapes use `examples/loadgen.rs`.

#[path = "support/daemons.rs"]
mod daemons;
#[path = "support/load.rs"]
mod load;

use std::path::Path;
use std::time::Duration;

use load::{Load, Outcome};

const OURS: &str = env!("CARGO_BIN_EXE_virtlockd");

/// (name, shared ratio, AUTOCREATE)
const CASES: &[(&str, f64, bool)] = &[
    ("exclusive", 0.0, false),
    ("shared", 1.0, false),
    ("mixed", 0.5, false),
    ("exclusive+autocreate", 0.0, true),
    ("shared+autocreate", 1.0, true),
    ("mixed+autocreate", 0.5, true),
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clients = env_or("CONTENTION_CLIENTS", 64usize);
    let resources = env_or("CONTENTION_RESOURCES", 4usize).max(1);
    let seconds = env_or("CONTENTION_SECONDS", 2.0f64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "contention: {clients} clients on {resources} leases, {seconds} s per case, tmpfs lockspace, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<22} {:<8} {:>9} {:>6} {:>7} {:>7} {:>10} {:>7} {:>10}",
        "case", "daemon", "rpc/s", "busy", "p50 us", "p99 us", "cpu/rpc us", "kernel", "preempted"
    );
    let ours = daemons::ours(Path::new(OURS))?;
    let libvirt = match daemons::libvirt() {
        Ok(d) => Some(d),
        Err(why) => {
            println!("(libvirt's daemon not measured: {why})");
            None
        }
    };
    for (i, &(name, shared_ratio, autocreate)) in CASES.iter().enumerate() {
        let load = Load {
            clients,
            resources,
            shared_ratio,
            autocreate,
            duration: Duration::from_secs_f64(seconds),
        };
        let shm = tempfile::Builder::new()
            .prefix("contention")
            .tempdir_in("/dev/shm")?;
        let run =
            |d: &daemons::Spawned, who: &str| -> Result<Outcome, Box<dyn std::error::Error>> {
                let ls = shm.path().join(format!("{who}-{i}"));
                rt.block_on(load::prepare(&d.socket, &ls, &load))?;
                let o = rt.block_on(load::run(&d.socket, Some(d.pid()), &ls, &load))?;
                print_row(name, who, &o);
                Ok(o)
            };
        let a = run(&ours, "ours")?;
        if let Some(lv) = &libvirt {
            let b = run(lv, "libvirt")?;
            let cpu = match (a.cpu_per_rpc_us(), b.cpu_per_rpc_us()) {
                (Some(x), Some(y)) if x > 0.0 => format!("{:.2}x less CPU per RPC", y / x),
                _ => "CPU not measured".to_owned(),
            };
            println!(
                "{:<22} ours/libvirt: {:.2}x the throughput, {cpu}",
                "",
                a.rate() / b.rate().max(1.0)
            );
        }
    }
    Ok(())
}

fn print_row(case: &str, who: &str, o: &Outcome) {
    println!(
        "{:<22} {:<8} {:>9.0} {:>5.1}% {:>7} {:>7} {:>10} {:>7} {:>10}",
        case,
        who,
        o.rate(),
        o.busy_ratio() * 100.0,
        o.percentile_us(0.50),
        o.percentile_us(0.99),
        o.cpu_per_rpc_us()
            .map_or("-".to_owned(), |c| format!("{c:.2}")),
        o.kernel_share()
            .map_or("-".to_owned(), |k| format!("{:.0}%", k * 100.0)),
        o.preempted_per_rpc()
            .map_or("-".to_owned(), |p| format!("{p:.3}")),
    );
}
