//! The cost of crash-safe mode, under real systemd: a clone of this host
//! booted with systemd as PID 1 in a container (the test suite's container
//! module), our daemon under the shipped unit (`contrib/systemd/`), driven
//! from the host through the container's socket. Three measurements:
//!
//! 1. the daemon's CPU time per RPC with crash-safe mode on and off
//!    (`crash_safe = 0` in the container's /etc/libvirt/virtlockd.conf):
//!    256 clients in a closed ACQUIRE/RELEASE loop (`support/load.rs`), one
//!    lease each, exclusive, no AUTOCREATE, lockspace on tmpfs; rounds
//!    alternate the modes, the medians are compared (target: at most 1.3x);
//! 2. many clients holding 4 leases each in crash-safe mode (10,000 clients
//!    asked for, fewer where the fd limits do not allow it, said so), with
//!    the CPU time of the container's systemd (PID 1) per ACQUIRE at low and
//!    high lease counts: whether systemd's work grows with the leases held;
//! 3. the restart after SIGKILL with 1000 clients x 5 leases: time from the
//!    start of the restarted process (systemd's ExecMainStartTimestamp of the
//!    new main pid) to its first reply, an ACQUIRE sent on a kept connection
//!    right after the kill (target: at most 1 s).
//!
//!   cargo bench --bench crash_safe
//!   CRASH_BENCH_SECONDS=5 CRASH_BENCH_ROUNDS=3 CRASH_BENCH_MANY_CLIENTS=10000 \
//!   CRASH_BENCH_RESTARTS=3 cargo bench --bench crash_safe
//!   CRASH_BENCH_PHASES=3 cargo bench --bench crash_safe    # one measurement only
//!   CRASH_BENCH_PERF=/tmp/prof CRASH_BENCH_PHASES=1 cargo bench --bench crash_safe
//!                                        # perf record of the daemon in round 0
//!
//! Needs root and systemd-nspawn (package systemd-container); without them it
//! says why and measures nothing.

#[path = "../tests/it/systemd/container.rs"]
#[allow(dead_code)] // the test suite's prepared layers are not used here
mod container;
#[path = "support/load.rs"]
#[allow(dead_code)] // `prepare` makes the lockspace where the daemon runs; here that is inside
mod load;

/// What the container module needs from the test suite's support code.
mod support {
    #[path = "../../tests/it/support/executable.rs"]
    mod executable;
    pub use executable::copy_executable;
}

use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

use container::Container;
use load::{Load, LoadClient, Outcome};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use virtlockd::client::Client;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const DAEMON: &str = env!("CARGO_BIN_EXE_virtlockd");
const CTL: &str = env!("CARGO_BIN_EXE_virtlockctl");
const SOCKET: &str = "/run/libvirt/virtlockd-sock";
const CONF: &str = "/etc/libvirt/virtlockd.conf";
/// A tmpfs of its own inside the container, for every lockspace.
const TMPFS: &str = "/srv/vlbench";
/// fds the daemon needs besides clients and leases (listeners, journal,
/// parking sockets, logging), with room to spare.
const DAEMON_FD_RESERVE: u64 = 256;
/// Bound of every wait on the daemon or on systemd.
const PATIENCE: Duration = Duration::from_secs(60);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let seconds = env_or("CRASH_BENCH_SECONDS", 5.0f64);
    let rounds = env_or("CRASH_BENCH_ROUNDS", 3usize).max(1);
    let many = env_or("CRASH_BENCH_MANY_CLIENTS", 10_000usize);
    let restarts = env_or("CRASH_BENCH_RESTARTS", 3usize).max(1);
    println!("crash_safe: {}", machine());
    let host_fds = raise_fd_limit(many as u64 * 2);
    let c = match Container::boot("crash-safe-bench") {
        Ok(c) => c,
        Err(why) => {
            println!("crash_safe: not run: {why}");
            return Ok(());
        }
    };
    install(&c);
    println!(
        "container: {}; host fd limit of this process {host_fds}",
        c.exec_ok("systemctl --version | head -1").trim()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let phases = std::env::var("CRASH_BENCH_PHASES").unwrap_or_else(|_| "123".to_owned());
    if phases.contains('1') {
        cost_per_rpc(&c, &rt, seconds, rounds)?;
    }
    if phases.contains('2') {
        many_leases(&c, &rt, many, host_fds)?;
    }
    if phases.contains('3') {
        restart_time(&c, &rt, restarts)?;
    }
    Ok(())
}

/// The machine the figures come from: CPU, cores, memory, kernel, load.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease");
    let load = read("/proc/loadavg");
    format!(
        "{cpu}, {} CPUs, {mem_gib:.0} GiB, Linux {}, load average {} at start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Raises this process's fd limit towards `wanted` (its clients' sockets);
/// returns the soft limit it got. Past the hard limit only with
/// CAP_SYS_RESOURCE.
fn raise_fd_limit(wanted: u64) -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if wanted > hard && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return wanted;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Our daemon, virtlockctl and our units inside; the sockets listening; a
/// tmpfs for the lockspaces.
fn install(c: &Container) {
    c.copy_in(Path::new(DAEMON), "/usr/sbin/virtlockd");
    c.copy_in(Path::new(CTL), "/usr/bin/virtlockctl");
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    for unit in [
        "virtlockd.socket",
        "virtlockd-admin.socket",
        "virtlockd.service",
    ] {
        c.copy_in(&contrib.join(unit), &format!("/etc/systemd/system/{unit}"));
    }
    write_conf(c, true);
    c.exec_ok(&format!(
        "mkdir -p {TMPFS} && mount -t tmpfs -o mode=0755 vlbench {TMPFS} && \
         systemctl daemon-reload && \
         systemctl enable --now virtlockd.socket virtlockd-admin.socket"
    ));
}

/// The container's virtlockd.conf: clients enough for the many-leases case;
/// `crash_safe = 0` for plain mode (the unit asks for crash-safe mode).
fn write_conf(c: &Container, crash_safe: bool) {
    let mut conf = "max_clients = 100000\n".to_owned();
    if !crash_safe {
        conf.push_str("crash_safe = 0\n");
    }
    std::fs::write(c.path(CONF), conf).expect("virtlockd.conf");
}

/// The running daemon: its pid inside the container and on the host.
struct Daemon {
    inner: u32,
    host: u32,
}

/// (Re)starts the service in the given mode, fresh (a stop empties the
/// crash-safe store), and checks that the mode is the one asked for.
fn restart_in_mode(c: &Container, crash_safe: bool) -> Daemon {
    write_conf(c, crash_safe);
    c.exec_ok("systemctl restart virtlockd.service");
    let d = running_daemon(c);
    let status = status(c);
    let mode = status["crash_safety"]["mode"].as_str().unwrap_or("?");
    let expected = if crash_safe { "active" } else { "off" };
    assert_eq!(mode, expected, "crash-safe mode: {status}");
    let recovered = status["crash_safety"]["recoveries"].as_u64().unwrap_or(0);
    if recovered != 0 {
        // A stop is meant to empty the store; systemd keeps the store across
        // a restart, so a store left behind is taken for a crash's.
        println!(
            "note: after `systemctl restart` the new daemon reports {recovered} recoveries and \
             {} lockspaces: it recovered its predecessor's store",
            status["lockspaces"]
        );
    }
    d
}

/// The tail of this boot's journal of the service.
fn journal(c: &Container) -> String {
    let out = c.exec("journalctl -b -u virtlockd.service --no-pager | tail -80");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(c: &Container) -> serde_json::Value {
    serde_json::from_str(&c.exec_ok("virtlockctl status --json")).expect("status JSON")
}

/// Properties of virtlockd.service.
fn show(c: &Container, props: &str) -> Vec<(String, String)> {
    c.exec_ok(&format!("systemctl show -p {props} virtlockd.service"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn prop(props: &[(String, String)], key: &str) -> String {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Waits until the service is active with a main pid other than `not`.
fn wait_active(c: &Container, not: u32) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p = show(c, "MainPID,ActiveState");
        let pid: u32 = prop(&p, "MainPID").parse().unwrap_or(0);
        if pid != 0 && pid != not && prop(&p, "ActiveState") == "active" {
            return pid;
        }
        assert!(Instant::now() < deadline, "virtlockd.service not active");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn running_daemon(c: &Container) -> Daemon {
    let inner = wait_active(c, 0);
    Daemon {
        inner,
        host: host_pid(c, inner).expect("the daemon's host pid"),
    }
}

/// The host pid of the container's process `inner` (NSpid's last field, in
/// the pid namespace of the container's PID 1).
fn host_pid(c: &Container, inner: u32) -> Option<u32> {
    let ns = std::fs::read_link(format!("/proc/{}/ns/pid", c.init_pid())).ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let last = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .last()?
            .parse::<u32>()
            .ok()?;
        (last == inner && std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()? == ns)
            .then_some(pid)
    })
}

/// CPU time of every thread of `pid` in nanoseconds (the scheduler's
/// accounting: finer than the clock ticks of /proc/PID/stat).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CLOCK_MONOTONIC in microseconds, systemd's clock for its monotonic
/// timestamps (the container shares the host's).
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// A lockspace inside the container with `files` resource files
/// (`res-0`...), announced to the daemon; returns its path inside.
fn lockspace(
    c: &Container,
    rt: &tokio::runtime::Runtime,
    name: &str,
    files: usize,
) -> Result<String> {
    let inside = format!("{TMPFS}/{name}");
    let dir = c.path(&inside);
    std::fs::create_dir_all(&dir)?;
    for i in 0..files {
        std::fs::write(dir.join(load::resource_name(i)), b"")?;
    }
    rt.block_on(async {
        Client::connect(c.path(SOCKET))
            .await?
            .create_lockspace(inside.as_bytes())
            .await
    })?;
    Ok(inside)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Daemon CPU per RPC, crash-safe vs plain, in alternating rounds.
fn cost_per_rpc(
    c: &Container,
    rt: &tokio::runtime::Runtime,
    seconds: f64,
    rounds: usize,
) -> Result<()> {
    let clients = 256;
    println!(
        "\n1. daemon CPU per RPC: {clients} clients, one lease each, exclusive, no AUTOCREATE, \
         closed loop, tmpfs lockspace, {seconds} s per run, {rounds} rounds"
    );
    println!(
        "{:<6} {:<11} {:>9} {:>7} {:>7} {:>11} {:>12}",
        "round", "mode", "rpc/s", "p50 us", "p99 us", "cpu/rpc us", "PID 1 cpu ms"
    );
    let load = Load {
        clients,
        resources: clients,
        shared_ratio: 0.0,
        autocreate: false,
        duration: Duration::from_secs_f64(seconds),
    };
    let mut per_rpc = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (m, crash_safe) in [true, false].into_iter().enumerate() {
            let daemon = restart_in_mode(c, crash_safe);
            let ls = lockspace(c, rt, &format!("cost-{round}-{m}"), clients)?;
            let mode = if crash_safe { "crash-safe" } else { "plain" };
            let profiler = (round == 0).then(|| profile(daemon.host, mode)).flatten();
            let pid1 = cpu_ns(c.init_pid());
            let o: Outcome = rt.block_on(load::run(
                &c.path(SOCKET),
                Some(daemon.host),
                Path::new(&ls),
                &load,
            ))?;
            if let Some(p) = profiler {
                p.finish();
            }
            let pid1_ms = (cpu_ns(c.init_pid()) - pid1) as f64 / 1e6;
            assert_eq!(o.busy, 0, "every client has a lease of its own");
            let cpu = o
                .cpu_per_rpc_us()
                .ok_or("the daemon's CPU time is unreadable")?;
            per_rpc[m].push(cpu);
            println!(
                "{:<6} {:<11} {:>9.0} {:>7} {:>7} {:>11.2} {:>12.1}",
                round,
                mode,
                o.rate(),
                o.percentile_us(0.50),
                o.percentile_us(0.99),
                cpu,
                pid1_ms
            );
        }
    }
    let safe = median(&mut per_rpc[0]);
    let plain = median(&mut per_rpc[1]);
    let ratio = safe / plain;
    println!(
        "median daemon CPU per RPC: crash-safe {safe:.2} us, plain {plain:.2} us: {ratio:.2}x \
         (target at most 1.3x: {})",
        if ratio <= 1.3 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// `perf record` of the daemon, while CRASH_BENCH_PERF names a directory.
struct Profiler {
    perf: std::process::Child,
    data: std::path::PathBuf,
}

/// Starts `perf record -g` on `pid` into `$CRASH_BENCH_PERF/<mode>.data`.
fn profile(pid: u32, mode: &str) -> Option<Profiler> {
    let dir = std::path::PathBuf::from(std::env::var_os("CRASH_BENCH_PERF")?);
    let data = dir.join(format!("{mode}.data"));
    let perf = std::process::Command::new("perf")
        .args(["record", "-q", "-F", "499", "--call-graph", "dwarf,16384"])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| println!("(perf not run: {e})"))
        .ok()?;
    Some(Profiler { perf, data })
}

impl Profiler {
    /// Stops the recording (SIGINT, as perf expects) and waits for it.
    fn finish(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.perf.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.perf.wait();
        println!(
            "(profile of the daemon: perf report -i {})",
            self.data.display()
        );
    }
}

/// The open-file limit (soft) of a host process.
fn fd_limit_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(1024)
}

/// Connects and registers `n` clients, 256 at a time.
async fn connect_clients(socket: &Path, n: usize) -> Result<Vec<LoadClient>> {
    let mut clients = Vec::with_capacity(n);
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            for start in (0..n).step_by(256) {
                let batch: Vec<_> = (start..n.min(start + 256))
                    .map(|i| tokio::task::spawn_local(load::connect(socket.to_path_buf(), i)))
                    .collect();
                for t in batch {
                    clients.push(t.await??);
                }
            }
            Ok::<_, Box<dyn Error>>(())
        })
        .await?;
    Ok(clients)
}

/// Every client of `batch` (index `first` on) takes its `per_client` leases,
/// the clients side by side, each one ACQUIRE at a time.
async fn acquire_all(
    batch: &mut [LoadClient],
    first: usize,
    per_client: usize,
    lockspace: &str,
) -> Result<()> {
    let ls = lockspace.as_bytes();
    let calls = batch.iter_mut().enumerate().map(|(i, client)| async move {
        for k in 0..per_client {
            let name = load::resource_name((first + i) * per_client + k);
            client.acquire(ls, name.as_bytes(), 0).await?;
        }
        Ok::<_, virtlockd::client::ClientError>(())
    });
    for r in futures_util::future::join_all(calls).await {
        r?;
    }
    Ok(())
}

/// Many clients with 4 leases each: PID 1's CPU per ACQUIRE as the leases
/// held grow.
fn many_leases(
    c: &Container,
    rt: &tokio::runtime::Runtime,
    wanted: usize,
    host_fds: u64,
) -> Result<()> {
    const PER_CLIENT: usize = 4;
    const STEPS: usize = 10;
    let daemon = restart_in_mode(c, true);
    let daemon_fds = fd_limit_of(daemon.host);
    // The daemon holds one fd per client and per lease.
    let by_daemon =
        (daemon_fds.saturating_sub(DAEMON_FD_RESERVE) / (1 + PER_CLIENT as u64)) as usize;
    let by_host = host_fds.saturating_sub(DAEMON_FD_RESERVE) as usize;
    let n = wanted.min(by_daemon).min(by_host);
    println!(
        "\n2. {n} clients x {PER_CLIENT} leases, crash-safe mode (asked for {wanted}; the daemon's fd \
         limit is {daemon_fds}, this process's {host_fds}{})",
        if n < wanted {
            ": the largest count both allow"
        } else {
            ""
        }
    );
    let ls = lockspace(c, rt, "many", n * PER_CLIENT)?;
    let socket = c.path(SOCKET);
    let started = Instant::now();
    let mut clients = rt.block_on(connect_clients(&socket, n))?;
    println!("connected and registered in {:.1?}", started.elapsed());
    println!(
        "{:>13} {:>9} {:>9} {:>12} {:>14} {:>14}",
        "leases held", "acquires", "acq/s", "daemon us/acq", "PID 1 us/acq", "PID 1 cpu ms"
    );
    let step = n.div_ceil(STEPS).max(1);
    // (PID 1's CPU ns, ACQUIREs) per step.
    let mut pid1_steps = Vec::new();
    for first in (0..n).step_by(step) {
        let end = n.min(first + step);
        let acquires = (end - first) * PER_CLIENT;
        let (pid1, own, t) = (cpu_ns(c.init_pid()), cpu_ns(daemon.host), Instant::now());
        rt.block_on(acquire_all(
            &mut clients[first..end],
            first,
            PER_CLIENT,
            &ls,
        ))?;
        let elapsed = t.elapsed();
        let pid1 = cpu_ns(c.init_pid()) - pid1;
        let own = cpu_ns(daemon.host) - own;
        let per = pid1 as f64 / 1e3 / acquires as f64;
        pid1_steps.push((pid1, acquires));
        println!(
            "{:>6}-{:<6} {:>9} {:>9.0} {:>12.2} {:>14.3} {:>14.2}",
            first * PER_CLIENT,
            end * PER_CLIENT,
            acquires,
            acquires as f64 / elapsed.as_secs_f64(),
            own as f64 / 1e3 / acquires as f64,
            per,
            pid1 as f64 / 1e6
        );
    }
    let status = status(c);
    println!(
        "daemon: {} lock clients, {} leases, crash safety {}",
        status["lock_clients"], status["leases"], status["crash_safety"]
    );
    let fdstore = prop(&show(c, "NFileDescriptorStore"), "NFileDescriptorStore");
    println!("fds in systemd's store for the unit: {fdstore}");
    // Per ACQUIRE over the lower and the upper half of the lease counts: a
    // compaction (a new generation stored in PID 1) falls in one step or
    // another, so single steps are too noisy to compare.
    let half = pid1_steps.len() / 2;
    let per = |steps: &[(u64, usize)]| {
        let ns: u64 = steps.iter().map(|s| s.0).sum();
        let acquires: usize = steps.iter().map(|s| s.1).sum();
        ns as f64 / 1e3 / acquires.max(1) as f64
    };
    let (low, high) = (per(&pid1_steps[..half]), per(&pid1_steps[half..]));
    println!(
        "PID 1 CPU per ACQUIRE: {low:.3} us with 0-{} leases held, {high:.3} us with {}-{} ({})",
        half * step * PER_CLIENT,
        half * step * PER_CLIENT,
        n * PER_CLIENT,
        if high <= low * 1.5 + 0.05 {
            "no growth with the leases held"
        } else {
            "GROWS with the leases held"
        }
    );
    drop(clients);
    Ok(())
}

/// SIGKILL with 1000 clients x 5 leases: from the start of the restarted
/// process to its first reply.
fn restart_time(c: &Container, rt: &tokio::runtime::Runtime, restarts: usize) -> Result<()> {
    const CLIENTS: usize = 1000;
    const PER_CLIENT: usize = 5;
    let mut daemon = restart_in_mode(c, true);
    let ls = lockspace(c, rt, "restart", CLIENTS * PER_CLIENT + restarts)?;
    let socket = c.path(SOCKET);
    let mut clients = rt.block_on(connect_clients(&socket, CLIENTS))?;
    rt.block_on(acquire_all(&mut clients, 0, PER_CLIENT, &ls))?;
    println!(
        "\n3. restart after SIGKILL, {CLIENTS} clients x {PER_CLIENT} leases, crash-safe mode \
         (SIGKILL from the host to the main pid; the first reply is an ACQUIRE sent on a kept \
         connection right after the kill)"
    );
    println!(
        "{:<8} {:>22} {:>22} {:>18}",
        "restart", "start -> first reply", "kill -> first reply", "leases after"
    );
    let mut worst = Duration::ZERO;
    let recoveries_before = status(c)["crash_safety"]["recoveries"]
        .as_u64()
        .unwrap_or(0);
    for k in 0..restarts {
        let old = daemon.inner;
        let killed_at = monotonic_us();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.host as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        // A SIGKILLed process runs no more user code once kill() returns:
        // the request below is read by the restarted daemon only.
        let probe = load::resource_name(CLIENTS * PER_CLIENT + k);
        let client = &mut clients[k * 7 % CLIENTS];
        rt.block_on(async {
            tokio::time::timeout(PATIENCE, client.acquire(ls.as_bytes(), probe.as_bytes(), 0)).await
        })
        .map_err(|_| "no reply from the restarted daemon")??;
        let replied_at = monotonic_us();
        let new = wait_active(c, old);
        let started_at: u64 = prop(
            &show(c, "ExecMainStartTimestampMonotonic"),
            "ExecMainStartTimestampMonotonic",
        )
        .parse()
        .map_err(|_| "no ExecMainStartTimestampMonotonic")?;
        daemon = Daemon {
            inner: new,
            host: host_pid(c, new).ok_or("the restarted daemon's host pid")?,
        };
        let status = status(c);
        assert_eq!(
            status["crash_safety"]["recoveries"],
            recoveries_before + k as u64 + 1,
            "{status}\njournal:\n{}",
            journal(c)
        );
        let start_to_reply = Duration::from_micros(replied_at.saturating_sub(started_at));
        worst = worst.max(start_to_reply);
        println!(
            "{:<8} {:>22} {:>22} {:>18}",
            k + 1,
            format!("{start_to_reply:.1?}"),
            format!("{:.1?}", Duration::from_micros(replied_at - killed_at)),
            status["leases"]
        );
    }
    println!(
        "worst start -> first reply: {worst:.1?} (target at most 1 s: {})",
        if worst <= Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
    drop(clients);
    Ok(())
}
