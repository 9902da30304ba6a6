//! Scale: does the cost of a request depend on how many clients are connected,
//! or on what the daemon did before? Daemon CPU time per RPC (closed loop, one
//! request in flight per client, one exclusive lease each, no AUTOCREATE, on
//! tmpfs) at 16, 256 and 1024 clients on fresh daemons, then at 1024 and 16
//! again after a history of other load on the same daemon: 1024 clients with
//! AUTOCREATE, 256 clients on one hot lease, 1024 with AUTOCREATE again, each
//! on a new lockspace. Our daemon and, when Debian's `/usr/sbin/virtlockd` is
//! installed (and we are root), libvirt's run each step in turn, so both see
//! the same machine; the ratios are printed at the end. Each figure also
//! says how much of that CPU was the kernel's and how often per RPC the
//! daemon was preempted.
//!
//!   cargo bench --bench scale
//!   SCALE_SECONDS=4 SCALE_HISTORY_SECONDS=10 cargo bench --bench scale

#[path = "support/daemons.rs"]
mod daemons;
#[path = "support/load.rs"]
#[allow(dead_code)] // the busy ratio is the contention benchmark's figure
mod load;

use std::path::Path;
use std::time::Duration;

use load::{Load, Outcome};

const OURS: &str = env!("CARGO_BIN_EXE_virtlockd");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One measured (or history) step.
struct Step {
    label: &'static str,
    load: Load,
    measured: bool,
}

fn plain(clients: usize, seconds: f64) -> Load {
    Load {
        clients,
        resources: clients,
        shared_ratio: 0.0,
        autocreate: false,
        duration: Duration::from_secs_f64(seconds),
    }
}

/// The steps on one daemon after its fresh 1024-client run.
fn history(seconds: f64, measure: f64) -> Vec<Step> {
    let autocreate = Load {
        autocreate: true,
        ..plain(1024, seconds)
    };
    let hot = Load {
        resources: 1,
        ..plain(256, seconds)
    };
    vec![
        Step {
            label: "history: 1024 AUTOCREATE",
            load: autocreate.clone(),
            measured: false,
        },
        Step {
            label: "history: 256 on one lease",
            load: hot,
            measured: false,
        },
        Step {
            label: "history: 1024 AUTOCREATE",
            load: autocreate,
            measured: false,
        },
        Step {
            label: "1024 after history",
            load: plain(1024, measure),
            measured: true,
        },
        Step {
            label: "16 after history",
            load: plain(16, measure),
            measured: true,
        },
    ]
}

type Daemon = (
    &'static str,
    Box<dyn Fn() -> Result<daemons::Spawned, String>>,
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = env_or("SCALE_SECONDS", 3.0f64);
    let history_seconds = env_or("SCALE_HISTORY_SECONDS", 10.0f64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "scale: daemon CPU per RPC, exclusive, no AUTOCREATE, tmpfs, {seconds} s per figure, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut daemons: Vec<Daemon> = vec![(
        "ours",
        Box::new(|| daemons::ours(Path::new(OURS)).map_err(|e| e.to_string())),
    )];
    match daemons::libvirt() {
        Ok(probe) => {
            drop(probe);
            daemons.push(("libvirt", Box::new(daemons::libvirt)));
        }
        Err(why) => println!("(libvirt's daemon not measured: {why})"),
    }
    let shm = tempfile::Builder::new()
        .prefix("scale")
        .tempdir_in("/dev/shm")?;
    let mut n = 0usize;
    let mut run = |d: &daemons::Spawned, who: &str, label: &str, load: &Load, show: bool| {
        n += 1;
        let ls = shm.path().join(format!("{who}-{n}"));
        let o: Result<Outcome, Box<dyn std::error::Error>> = (|| {
            rt.block_on(load::prepare(&d.socket, &ls, load))?;
            Ok(rt.block_on(load::run(&d.socket, Some(d.pid()), &ls, load))?)
        })();
        match o {
            Ok(o) => {
                if show {
                    println!(
                        "{label:<26} {who:<8} {:>9.0} rpc/s {:>7} us p99 {:>8} us CPU/RPC ({} kernel, {} preempted/RPC)",
                        o.rate(),
                        o.percentile_us(0.99),
                        o.cpu_per_rpc_us().map_or("-".into(), |c| format!("{c:.2}")),
                        o.kernel_share().map_or("-".into(), |k| format!("{:.0}%", k * 100.0)),
                        o.preempted_per_rpc().map_or("-".into(), |p| format!("{p:.2}")),
                    );
                }
                o.cpu_per_rpc_us()
            }
            Err(e) => {
                println!("{label:<26} {who:<8} failed: {e}");
                None
            }
        }
    };
    // figures[daemon][label]
    let mut figures: Vec<Vec<(&'static str, Option<f64>)>> = vec![Vec::new(); daemons.len()];
    for clients in [16usize, 256] {
        let label: &'static str = if clients == 16 {
            "16 fresh"
        } else {
            "256 fresh"
        };
        for (i, (who, spawn)) in daemons.iter().enumerate() {
            let d = spawn()?;
            let f = run(&d, who, label, &plain(clients, seconds), true);
            figures[i].push((label, f));
        }
    }
    // The 1024-client daemons stay up for their history, side by side.
    let mut long = Vec::new();
    for (i, (who, spawn)) in daemons.iter().enumerate() {
        let d = spawn()?;
        let f = run(&d, who, "1024 fresh", &plain(1024, seconds), true);
        figures[i].push(("1024 fresh", f));
        long.push(d);
    }
    for step in history(history_seconds, seconds) {
        for (i, (who, _)) in daemons.iter().enumerate() {
            let f = run(&long[i], who, step.label, &step.load, step.measured);
            if step.measured {
                figures[i].push((step.label, f));
            }
        }
    }
    println!();
    let get = |i: usize, label: &str| {
        figures[i]
            .iter()
            .find(|(l, _)| *l == label)
            .and_then(|(_, f)| *f)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    };
    for (i, (who, _)) in daemons.iter().enumerate() {
        println!(
            "{who:<8} 1024/16 fresh {}, 1024 after history / fresh {}, 16 after history / fresh {}",
            ratio(get(i, "1024 fresh"), get(i, "16 fresh")),
            ratio(get(i, "1024 after history"), get(i, "1024 fresh")),
            ratio(get(i, "16 after history"), get(i, "16 fresh")),
        );
    }
    if daemons.len() > 1 {
        for label in ["16 fresh", "256 fresh", "1024 fresh", "1024 after history"] {
            println!(
                "libvirt/ours CPU per RPC, {label}: {}",
                ratio(get(1, label), get(0, label))
            );
        }
    }
    Ok(())
}
