//! Several hosts on a real distributed filesystem: one GlusterFS volume mounted
//! several times over FUSE on this machine, each mount a separate Gluster client
//! whose fcntl locks the brick arbitrates, as between hypervisors. Lock daemons
//! on different mounts of one lockspace must respect each other's leases, and a
//! daemon whose mount dies must notice that its leases are gone. The OFD locks
//! of the crash-safe lease mode cross the clients as POSIX locks do (`ofd`).
//!
//! glusterd, the brick, the mounts and their clients live in private mount, pid,
//! network and UTS namespaces (tmpfs for /run, /var/lib/glusterd and
//! /var/log/glusterfs; the host's port 24007 is never touched): killing the
//! namespace's first process ends all of them. The lock daemons enter only the
//! mount namespace (`nsenter -m`, which execs), so they are our children, by pid.
//! Needs root, /dev/fuse, unshare/nsenter and Debian's glusterfs-server and
//! glusterfs-client; says SKIPPED otherwise.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use virtlockd::client::{owner, Client};
use virtlockd::protocol::error::code;
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use crate::support::namespaced::{Impl, Namespaced, PRIVATE_MOUNTS};
use crate::support::process::quiet_success;
use crate::support::wait::{wait_upgraded, within};
use crate::support::{bytes, until, Daemon, Holder};

mod ofd;

const OURS: &str = env!("CARGO_BIN_EXE_virtlockd");
/// Bound of every wait for gluster itself.
const SETUP_PATIENCE: Duration = Duration::from_secs(60);
/// Mounts of the volume: one per "host".
const HOSTS: [&str; 4] = ["hostA", "hostB", "hostC", "hostD"];

/// Runs as the first process of the namespaces. Prints "ready" once every
/// mount is up, then waits for its stdin to close (or for its death).
const SETUP: &str = r#"
set -e
W=$1
ip link set lo up
hostname glhost
mount -t tmpfs -o mode=0755 gl-run /run
mkdir -p "$W/lib"
mount -t tmpfs -o mode=0755 gl-lib "$W/lib"
cp -a /var/lib/glusterd/. "$W/lib/"
mount --bind "$W/lib" /var/lib/glusterd
mkdir -p /var/log/glusterfs
mount -t tmpfs -o mode=0755 gl-log /var/log/glusterfs
printf '127.0.0.1 localhost\n127.0.1.1 glhost\n' > "$W/hosts"
mount --bind "$W/hosts" /etc/hosts
mkdir -p "$W/brick"
mount -t tmpfs gl-brick "$W/brick"
glusterd
i=0
until gluster --mode=script volume info >/dev/null 2>&1; do
  i=$((i+1)); [ $i -lt 400 ] || { echo "glusterd did not answer"; exit 1; }
  sleep 0.05
done
gluster --mode=script volume create v0 "glhost:$W/brick/b" force
# Without this (and the mount options below) a file unlinked by one host stays
# cached on the others, whose next acquire of that name fails with ESTALE.
gluster --mode=script volume set v0 performance.stat-prefetch off
gluster --mode=script volume start v0
shift
for m in "$@"; do
  mkdir -p "$W/$m"
  mount -t glusterfs -o entry-timeout=0,attribute-timeout=0,negative-timeout=0 glhost:/v0 "$W/$m"
done
echo ready
read _ || true
"#;

/// Whether the gluster tests can run here; the reason if not.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse missing".into());
    }
    for bin in [
        "/usr/sbin/glusterd",
        "/usr/sbin/gluster",
        "/usr/sbin/glusterfs",
    ] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} not installed (packages glusterfs-server glusterfs-client)"
            ));
        }
    }
    let probe = quiet_success(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--pid", "--fork"])
            .args(["--kill-child", "--mount-proc", "--net", "--uts", "true"]),
    );
    if !probe {
        return Some("cannot unshare mount, pid, network and UTS namespaces".into());
    }
    if !Command::new("nsenter")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Some("nsenter missing".into());
    }
    None
}

/// One volume, mounted once per entry of [`HOSTS`] under `dir`.
struct Gluster {
    /// `unshare`; its death kills the namespace's first process, and so all.
    ns: Child,
    /// The namespace's first process (host pid), for `nsenter`.
    init: u32,
    dir: tempfile::TempDir,
}

impl Gluster {
    fn start() -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = Instant::now();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--pid", "--fork"])
            .args(["--kill-child", "--mount-proc", "--net", "--uts", "--"])
            .args(["sh", "-c", SETUP, "sh"])
            .arg(dir.path())
            .args(HOSTS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("setup.log")).expect("log"));
        // SAFETY: prctl only, between fork and exec. If this test process dies
        // without unwinding, unshare (and with it the namespace) dies too.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut ns = cmd.spawn().expect("spawn unshare");
        let stdout = ns.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut out = Vec::new();
        loop {
            match rx.recv_timeout(SETUP_PATIENCE.saturating_sub(t0.elapsed())) {
                Ok(l) if l == "ready" => break,
                Ok(l) => out.push(l),
                Err(_) => {
                    let _ = ns.kill();
                    let _ = ns.wait();
                    panic!(
                        "gluster set-up failed after {:?}:\n{}\n{}",
                        t0.elapsed(),
                        out.join("\n"),
                        std::fs::read_to_string(dir.path().join("setup.log")).unwrap_or_default()
                    );
                }
            }
        }
        let children = format!("/proc/{}/task/{}/children", ns.id(), ns.id());
        let init = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
            .expect("namespace init pid");
        eprintln!(
            "gluster volume with {} mounts ready in {:?}",
            HOSTS.len(),
            t0.elapsed()
        );
        Self { ns, init, dir }
    }

    /// Where host `h` mounts the volume (seen inside the mount namespace only).
    fn mount(&self, h: &str) -> PathBuf {
        self.dir.path().join(h)
    }

    /// The command prefix that runs a program with the volume's mounts: into
    /// the mount namespace, then into a private copy of it whose /proc shows
    /// this machine's processes again (the namespace's own /proc shows only
    /// gluster's pid namespace, where clients' pids cannot be found). Every
    /// step execs, so the program keeps the spawned pid.
    fn enter_args(&self) -> Vec<String> {
        let init = self.init.to_string();
        let nsenter = ["nsenter", "-t", &init, "-m", "--", "unshare"];
        let shell = ["sh", "-c", r#"mount -t proc proc /proc && exec "$0" "$@""#];
        nsenter
            .into_iter()
            .chain(PRIVATE_MOUNTS)
            .chain(shell)
            .map(str::to_owned)
            .collect()
    }

    /// `program` run through [`Gluster::enter_args`].
    fn enter(&self, program: &str) -> Command {
        let args = self.enter_args();
        let mut c = Command::new(&args[0]);
        c.args(&args[1..]).arg(program);
        c
    }

    /// One of our daemons on host `h` (only its mount namespace differs).
    fn ours(&self, conf: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("virtlockd.conf");
        std::fs::write(&path, conf).expect("config");
        let f = path.to_str().expect("utf-8 path").to_owned();
        Daemon::start_command(self.enter(OURS), dir, &["-f", &f])
    }

    /// libvirt's daemon, in its own mount namespace (private /run) below ours.
    fn libvirt(&self) -> Option<Namespaced> {
        if !Path::new("/usr/sbin/virtlockd").exists() {
            return None;
        }
        let args = self.enter_args();
        let enter: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        Some(Namespaced::start_entered(Impl::Libvirt, &enter))
    }

    /// Kills host `h`'s Gluster client (its FUSE process), as a dead or evicted
    /// host looks to the brick: its locks are freed, its mount fails every call.
    fn kill_client(&self, h: &str) {
        let mnt = self.mount(h);
        let want = mnt.as_os_str().as_encoded_bytes();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .collect();
            if args.first().is_some_and(|a| a.ends_with(b"glusterfs")) && args.last() == Some(&want)
            {
                kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill gluster client");
                return;
            }
        }
        panic!("no gluster client for {}", mnt.display());
    }
}

impl Drop for Gluster {
    fn drop(&mut self) {
        // By pid: --kill-child then kills the namespace's first process, and the
        // kernel every other process of the pid namespace.
        let _ = self.ns.kill();
        let _ = self.ns.wait();
    }
}

fn busy(r: Result<(), virtlockd::client::ClientError>, what: &str) {
    match r {
        Err(e) if e.remote().is_some_and(|e| e.code == code::RESOURCE_BUSY) => {}
        other => panic!("{what}: expected busy, got {other:?}"),
    }
}

/// Two hosts `a` and `b` (clients of two daemons on two mounts of the same
/// lockspace) see each other's leases. `la`/`lb` are the lockspace as each
/// host names it.
async fn across_hosts(a: &mut Client, la: &[u8], b: &mut Client, lb: &[u8], tag: &str) {
    // Busy across hosts, both ways; release lets the other in at once (the
    // file was unlinked by the releasing host: no ESTALE on the other).
    for round in 0..5 {
        let name = format!("{tag}-disk");
        let (x, lx, y, ly) = if round % 2 == 0 {
            (&mut *a, la, &mut *b, lb)
        } else {
            (&mut *b, lb, &mut *a, la)
        };
        x.acquire(lx, name.as_bytes(), ACQUIRE_AUTOCREATE)
            .await
            .unwrap_or_else(|e| panic!("{tag} round {round}: acquire: {e}"));
        busy(
            y.acquire(ly, name.as_bytes(), ACQUIRE_AUTOCREATE).await,
            &format!("{tag} round {round}: other host"),
        );
        x.release(lx, name.as_bytes()).await.unwrap();
        y.acquire(ly, name.as_bytes(), ACQUIRE_AUTOCREATE)
            .await
            .unwrap_or_else(|e| panic!("{tag} round {round}: after release: {e}"));
        y.release(ly, name.as_bytes()).await.unwrap();
    }
    // Shared leases coexist, and keep an exclusive one out.
    let shared = format!("{tag}-shared");
    a.acquire(la, shared.as_bytes(), ACQUIRE_SHARED | ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    b.acquire(lb, shared.as_bytes(), ACQUIRE_SHARED | ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    a.release(la, shared.as_bytes()).await.unwrap();
    let excl = format!("{tag}-excl");
    a.create_resource(la, excl.as_bytes()).await.unwrap();
    b.acquire(lb, excl.as_bytes(), ACQUIRE_SHARED)
        .await
        .unwrap();
    busy(
        a.acquire(la, excl.as_bytes(), 0).await,
        "exclusive vs shared",
    );
    b.release(lb, shared.as_bytes()).await.unwrap();
    b.release(lb, excl.as_bytes()).await.unwrap();
    a.acquire(la, excl.as_bytes(), 0).await.unwrap();
    a.release(la, excl.as_bytes()).await.unwrap();
}

/// A client of host `a` holds `name`; the daemon is killed (SIGKILL); host `b`
/// gets the lease at once.
async fn death_frees(b: &mut Client, lb: &[u8], name: &str, kill_a: impl FnOnce()) {
    busy(
        b.acquire(lb, name.as_bytes(), ACQUIRE_AUTOCREATE).await,
        "held by the daemon about to die",
    );
    kill_a();
    let t0 = Instant::now();
    loop {
        match b.acquire(lb, name.as_bytes(), ACQUIRE_AUTOCREATE).await {
            Ok(()) => break,
            Err(e) if t0.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("lease not freed by the daemon's death: {e}"),
        }
    }
    eprintln!("{name}: freed {:?} after SIGKILL", t0.elapsed());
    b.release(lb, name.as_bytes()).await.unwrap();
}

async fn registered(socket: &Path, name: &str, n: u32) -> Client {
    let mut c = Client::connect(socket).await.expect("connect");
    c.register(&owner(name, n, 4_000_000 + n)).await.unwrap();
    c
}

#[tokio::test]
async fn several_hosts_on_one_glusterfs_volume() {
    if let Some(why) = missing_prerequisite() {
        crate::support::skip("several_hosts_on_one_glusterfs_volume", &why);
        return;
    }
    let t0 = Instant::now();
    let g = Gluster::start();
    let ls = |h: &str| bytes(&g.mount(h).join("lockspace"));
    let quiet = "log_level = 3\n";

    // Host B: one of our daemons, the other side of every scenario.
    let db = g.ours(quiet);
    let mut b = registered(&db.socket(), "b", 2).await;
    b.create_lockspace(&ls("hostB")).await.unwrap();

    // 1. Ours against ours.
    let t = Instant::now();
    let mut da = g.ours(quiet);
    let mut a = registered(&da.socket(), "a", 1).await;
    a.create_lockspace(&ls("hostA")).await.unwrap();
    across_hosts(&mut a, &ls("hostA"), &mut b, &ls("hostB"), "ours").await;
    a.acquire(&ls("hostA"), b"ours-killed", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    death_frees(&mut b, &ls("hostB"), "ours-killed", || {
        da.stop_with(Signal::SIGKILL);
    })
    .await;
    eprintln!("ours vs ours: {:?}", t.elapsed());

    // 2. libvirt's daemon as host A.
    let t = Instant::now();
    match g.libvirt() {
        None => crate::support::skip(
            "several_hosts_on_one_glusterfs_volume (libvirt's daemon as host A)",
            "/usr/sbin/virtlockd missing (package libvirt-daemon)",
        ),
        Some(lv) => {
            let socket = lv.socket();
            let started = within(Duration::from_secs(10), || {
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            })
            .await;
            assert!(started, "libvirt's daemon did not start:\n{}", lv.log());
            let mut l = Client::connect(&socket).await.expect("connect");
            if let Err(e) = l.register(&owner("lv", 3, 4_000_003)).await {
                panic!("libvirt's daemon: {e}\n{}", lv.log());
            }
            l.create_lockspace(&ls("hostA")).await.unwrap();
            across_hosts(&mut l, &ls("hostA"), &mut b, &ls("hostB"), "libvirt").await;
            l.acquire(&ls("hostA"), b"libvirt-killed", ACQUIRE_AUTOCREATE)
                .await
                .unwrap();
            let pid = lv.pid();
            death_frees(&mut b, &ls("hostB"), "libvirt-killed", || {
                kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill libvirt's daemon");
            })
            .await;
            drop(lv);
            eprintln!("libvirt vs ours: {:?}", t.elapsed());
        }
    }

    // 3. Host C's client dies under a VM's lease: host B takes it, daemon C
    //    fences the VM and keeps serving its other lockspaces.
    lost_lease_fences_its_owner(&g, &mut b, &ls("hostB")).await;
    // 4. Host D's client dies with `log`: nobody is fenced, the loss survives a
    //    live upgrade, and the owner's release then succeeds.
    lost_lease_logged_across_an_upgrade(&g, &mut b, &ls("hostB")).await;
    eprintln!("gluster scenarios done in {:?}", t0.elapsed());
}

async fn lost_lease_fences_its_owner(g: &Gluster, b: &mut Client, lb: &[u8]) {
    let t = Instant::now();
    let dc = g.ours("log_level = 3\nlease_check_interval = 1\nlease_loss_action = \"fence\"\n");
    let lc = g.mount("hostC").join("lockspace");
    let mut vm = Holder::start(&dc, &lc, "vm-disk", &["--linger", "60000"]).await;
    let vm_pid = vm.child.id().expect("holder pid");
    // Owners no connection of their own vouches for: a real process (this
    // one's child, so that a wrong fencing shows) and a made-up pid, both
    // registered by connections of this test process.
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
    let mut by_proxy = Client::connect(dc.socket()).await.unwrap();
    by_proxy
        .register(&owner("proxied", 7, sleeper.id()))
        .await
        .unwrap();
    by_proxy
        .acquire(&bytes(&lc), b"proxied-disk", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    let mut fake = registered(&dc.socket(), "fake", 8).await;
    fake.acquire(&bytes(&lc), b"fake-disk", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    // The owner's connection is vouched for after a live upgrade as before it.
    dc.signal(Signal::SIGUSR1);
    wait_upgraded(&dc, 1).await;
    busy(
        b.acquire(lb, b"vm-disk", ACQUIRE_AUTOCREATE).await,
        "held through host C",
    );
    // Daemon C's other lockspace (local), used all along.
    let local = dc.base().join("local");
    let mut other = registered(&dc.socket(), "other", 4).await;
    other.create_lockspace(&bytes(&local)).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let served = tokio::spawn(async move {
        let (mut n, mut worst) = (0u32, Duration::ZERO);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            other
                .acquire(&bytes(&local), b"r", ACQUIRE_AUTOCREATE)
                .await
                .unwrap();
            other.release(&bytes(&local), b"r").await.unwrap();
            worst = worst.max(t.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (n, worst)
    });

    g.kill_client("hostC");
    let killed = Instant::now();
    let t_b = loop {
        match b.acquire(lb, b"vm-disk", ACQUIRE_AUTOCREATE).await {
            Ok(()) => break killed.elapsed(),
            Err(_) if killed.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("host B cannot take the lease of dead host C: {e}"),
        }
    };
    // Polled: waiting on the child would close its stdin, which makes it close
    // its connection (and be fenced for that instead).
    let status = loop {
        if let Some(s) = vm.child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "owner not fenced:\n{}",
            dc.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let fenced = killed.elapsed();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "{status:?}\n{}",
        dc.log()
    );
    // A filesystem error is a loss at its second check in a row: two or
    // three check intervals (1 s each).
    assert!(fenced < Duration::from_secs(4), "fenced after {fenced:?}");
    let log = dc.log();
    let line = log
        .lines()
        .find(|l| l.contains("lease lost") && l.contains("vm-disk"))
        .unwrap_or_else(|| panic!("no loss logged:\n{log}"));
    for want in [
        "lockspace".to_owned(),
        "vm-disk".to_owned(),
        "lease-holder".to_owned(),
        // examples/lease_holder registers as `owner("lease-holder", 1, pid)`.
        format!("00000001-0000-0000-0000-{vm_pid:012x}"),
        format!("pid={vm_pid}"),
        "Transport endpoint is not connected".to_owned(),
    ] {
        assert!(line.contains(&want), "`{want}` missing in: {line}");
    }
    assert!(line.contains("error") || line.contains("ERROR"), "{line}");
    // The first failing check was only a warning.
    assert!(log.contains("lease check failed"), "{log}");
    // The unverified owners' losses are logged, and they are left alone.
    for (disk, pid) in [("proxied-disk", sleeper.id()), ("fake-disk", 4_000_008)] {
        assert!(
            log.lines()
                .any(|l| l.contains("lease lost") && l.contains(disk)),
            "loss of {disk} not logged:\n{log}"
        );
        let refused = log
            .lines()
            .find(|l| l.contains("owner not verified") && l.contains(&format!("pid={pid}")))
            .unwrap_or_else(|| panic!("pid {pid} not refused:\n{log}"));
        assert!(
            refused.contains("error") || refused.contains("ERROR"),
            "{refused}"
        );
        assert!(
            !log.lines()
                .any(|l| l.contains("fencing lease owner") && l.contains(&format!("pid={pid}"))),
            "pid {pid} fenced:\n{log}"
        );
    }
    assert!(
        matches!(sleeper.try_wait(), Ok(None)),
        "unverified owner fenced"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    drop((by_proxy, fake));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, worst) = served.await.unwrap();
    assert!(n > 20, "only {n} round trips on the local lockspace");
    assert!(
        worst < crate::support::UNSTALLED,
        "worst local round trip {worst:?}"
    );
    b.release(lb, b"vm-disk").await.unwrap();
    eprintln!(
        "loss with fence: B in {t_b:?}, owner fenced {fenced:?} after the client died; \
         {n} local round trips meanwhile, worst {worst:?}; {:?} in all",
        t.elapsed()
    );
}

async fn lost_lease_logged_across_an_upgrade(g: &Gluster, b: &mut Client, lb: &[u8]) {
    let t = Instant::now();
    let dd = g.ours("log_level = 3\nlease_check_interval = 1\nlease_loss_action = \"log\"\n");
    let ld = bytes(&g.mount("hostD").join("lockspace"));
    // A real process as owner (this one's child, so that a wrong fencing shows).
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
    let mut vm = Client::connect(dd.socket()).await.unwrap();
    vm.register(&owner("vm-d", 5, sleeper.id())).await.unwrap();
    vm.create_lockspace(&ld).await.unwrap();
    vm.acquire(&ld, b"vm-d-disk", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    g.kill_client("hostD");
    let killed = Instant::now();
    // The log is where a loss is reported the moment it is noticed.
    until("loss logged", Duration::from_secs(4), || {
        dd.log().contains("lease lost")
    })
    .await;
    let seen = killed.elapsed();
    assert_lost_in_virtlockctl(&dd, "Transport endpoint is not connected");
    b.acquire(lb, b"vm-d-disk", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    // Nobody else in daemon D gets the lost name.
    let mut other = registered(&dd.socket(), "other-d", 6).await;
    busy(
        other.acquire(&ld, b"vm-d-disk", ACQUIRE_AUTOCREATE).await,
        "lost lease, other owner",
    );
    // The loss survives a live upgrade.
    dd.signal(Signal::SIGUSR1);
    wait_upgraded(&dd, 1).await;
    busy(
        other.acquire(&ld, b"vm-d-disk", ACQUIRE_AUTOCREATE).await,
        "lost lease after the upgrade",
    );
    // With its real cause, not just "lost before a live upgrade".
    assert_lost_in_virtlockctl(&dd, "Transport endpoint is not connected");
    vm.release(&ld, b"vm-d-disk").await.unwrap();
    assert!(dd.log().contains("lost lease released"), "{}", dd.log());
    // `log`: the owner was left running.
    assert!(matches!(sleeper.try_wait(), Ok(None)), "owner was fenced");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    b.release(lb, b"vm-d-disk").await.unwrap();
    eprintln!(
        "loss with log: logged {seen:?} after the client died; {:?} in all",
        t.elapsed()
    );
}

/// `virtlockctl locks` lists the lost lease as lost, with the reason.
#[track_caller]
fn assert_lost_in_virtlockctl(d: &Daemon, reason: &str) {
    let all = crate::support::ctl::ctl_json(d, &["locks"]);
    let lease = all["leases"]
        .as_array()
        .and_then(|v| v.iter().find(|l| l["name"] == "vm-d-disk"))
        .unwrap_or_else(|| panic!("lost lease not listed: {all}"));
    assert_eq!(lease["status"], "lost", "{lease}");
    let why = lease["status_reason"].as_str().unwrap_or_default();
    assert!(why.contains(reason), "reason `{why}` lacks `{reason}`");
    assert!(
        lease["status_since"].as_i64().is_some_and(|t| t > 0),
        "{lease}"
    );
}
