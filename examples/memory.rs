//! The daemon's memory per idle client and per held lease: starts a daemon,
//! connects N clients that register and take K leases each (exclusive, on
//! files of a tmpfs lockspace), then E more each, and reads the daemon's VmRSS
//! at every step; then all clients leave and, after a second identical round,
//! leave again, to show what stays behind.
//!
//!   memory --spawn target/release/virtlockd --clients 1000 --leases 5
//!
//! Needs root for more than ~3000 clients (it raises RLIMIT_NOFILE for itself
//! and so for the daemon it starts).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use virtlockd::client::{owner, Client, ClientError};

#[derive(Parser, Debug)]
#[command(about = "RSS of a virtlockd per idle client and per held lease")]
struct Args {
    /// The virtlockd binary to start.
    #[arg(long)]
    spawn: PathBuf,
    /// Clients (connections), each registered as an owner of its own.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Leases each client takes first.
    #[arg(long, default_value_t = 5)]
    leases: usize,
    /// Leases each client takes on top, to measure the cost of one more lease.
    #[arg(long, default_value_t = 5)]
    extra: usize,
    /// Rounds of connect + leave (the second shows whether memory grows).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// Stops the daemon when the tool ends, also on error: SIGTERM first, so
/// that a daemon run under a heap profiler writes its profile.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// VmRSS of `pid` in kB.
fn rss_kb(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS"))
}

/// RSS once it has not changed for a moment (the daemon has caught up).
async fn settled_rss(pid: u32) -> std::io::Result<u64> {
    let mut last = rss_kb(pid)?;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_kb(pid)?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

fn lease_name(client: usize, lease: usize) -> Vec<u8> {
    format!("c{client}-l{lease}").into_bytes()
}

fn bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

/// Number of connections the daemon has open (its fds that are sockets).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            })
            .count()
    })
}

/// Takes (or releases) leases `from..to` of every client, a few clients at a time.
async fn take(
    clients: &mut [Client],
    ls: &[u8],
    from: usize,
    to: usize,
    release: bool,
) -> Result<(), ClientError> {
    for chunk in clients.chunks_mut(64).enumerate() {
        let (c0, chunk) = chunk;
        let calls = chunk.iter_mut().enumerate().map(|(k, c)| async move {
            for j in from..to {
                let name = lease_name(c0 * 64 + k, j);
                if release {
                    c.release(ls, &name).await?;
                } else {
                    c.acquire(ls, &name, 0).await?;
                }
            }
            Ok::<(), ClientError>(())
        });
        for r in futures_util::future::join_all(calls).await {
            r?;
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let leases = args.leases + args.extra;
    raise_nofile((args.clients * (leases + 2) + 1000) as u64);

    let tmp = tempfile::tempdir()?;
    let conf = tmp.path().join("virtlockd.conf");
    std::fs::write(&conf, format!("max_clients = {}\n", args.clients + 64))?;
    let shm = tempfile::Builder::new()
        .prefix("memory")
        .tempdir_in("/dev/shm")?;
    let lockspace = shm.path().join("ls");
    std::fs::create_dir(&lockspace)?;
    for i in 0..args.clients {
        for j in 0..leases {
            std::fs::write(
                lockspace.join(String::from_utf8_lossy(&lease_name(i, j)).as_ref()),
                b"",
            )?;
        }
    }
    let runtime = tmp.path().join("run");
    let daemon = Daemon(
        Command::new(&args.spawn)
            .arg("--runtime-dir")
            .arg(&runtime)
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?,
    );
    let pid = daemon.0.id();
    let socket = runtime.join("virtlockd-sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if Instant::now() > deadline {
            return Err("daemon did not start accepting".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ls = bytes(&lockspace);
    Client::connect(&socket)
        .await?
        .create_lockspace(&ls)
        .await?;
    let idle = settled_rss(pid).await?;
    println!(
        "clients={} leases={} extra={} daemon_rss_idle={idle}kB",
        args.clients, args.leases, args.extra
    );

    let n = args.clients as f64;
    for round in 1..=args.rounds {
        let base = settled_rss(pid).await?;
        let mut clients = Vec::with_capacity(args.clients);
        for i in 0..args.clients {
            let mut c = Client::connect(&socket).await?;
            c.register(&owner("memory", i as u32 + 1, 7_000_000 + i as u32))
                .await?;
            clients.push(c);
        }
        let registered = settled_rss(pid).await?;
        take(&mut clients, &ls, 0, args.leases, false).await?;
        let held = settled_rss(pid).await?;
        take(&mut clients, &ls, args.leases, leases, false).await?;
        let more = settled_rss(pid).await?;
        // The owners are not the clients' own pids, so leaving would not
        // release their leases (spec 5.3): they release them first.
        take(&mut clients, &ls, 0, leases, true).await?;
        drop(clients);
        // Wait until the daemon has closed every client connection.
        let deadline = Instant::now() + Duration::from_secs(30);
        while open_sockets(pid) > 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = settled_rss(pid).await?;
        let kb = |a: u64, b: u64, per: f64| (b as f64 - a as f64) / per;
        println!(
            "round {round}: rss before={base}kB registered={registered}kB with_{}_leases={held}kB with_{leases}_leases={more}kB after_leave={left}kB",
            args.leases
        );
        println!(
            "round {round}: per registered client={:.2}kB per client with {} leases={:.2}kB per additional lease={:.3}kB kept after leave={}kB",
            kb(base, registered, n),
            args.leases,
            kb(base, held, n),
            kb(held, more, n * args.extra.max(1) as f64),
            left as i64 - base as i64
        );
    }
    Ok(())
}
