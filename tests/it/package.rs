//! The Debian package (`cargo deb`) installed, removed and upgraded under real
//! systemd, in a container with Debian's `libvirt-daemon-system`: installing
//! it switches libvirt's running virtlockd to ours in place (same pid, every
//! lease and client kept), removing it switches back, an upgrade reloads into
//! the new build, and with the service stopped only files change. The
//! package is built from the debug binaries this test run already has
//! (`cargo deb --no-build --profile dev`), so the test costs no release build.
//! `crash_guest`: a QEMU guest's lease across a crash of the daemon.

mod crash_guest;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use crate::support::skip;
use crate::systemd::container::{self, Container};

/// Where the clients' leases live inside the container.
const LOCKSPACE: &str = "/var/lib/vltest/ls";
const DISK: &str = "/var/lib/vltest/disk.img";
/// Owner pids no process in the container has: a closed connection's
/// fencing must not hit anything.
const OWNER_PIDS: [u32; 3] = [3_900_001, 3_900_002, 3_900_003];

/// The package built from this tree, and the same build with a later version.
struct Packages {
    _dir: tempfile::TempDir,
    current: PathBuf,
    newer: PathBuf,
    newer_version: String,
}

/// Builds both packages once per test process; `Err` says why it cannot.
fn packages() -> Result<&'static Packages, String> {
    static BUILT: OnceLock<Result<Packages, String>> = OnceLock::new();
    BUILT
        .get_or_init(build_packages)
        .as_ref()
        .map_err(Clone::clone)
}

fn build_packages() -> Result<Packages, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let has_cargo_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_deb {
        return Err("cargo-deb not installed (cargo install cargo-deb --locked)".to_owned());
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let newer_version = format!("{}-2", env!("CARGO_PKG_VERSION"));
    let build = |file: &str, version: Option<&str>| -> Result<PathBuf, String> {
        let started = Instant::now();
        let out_path = dir.path().join(file);
        let out = Command::new(&cargo)
            // No -dbgsym package: only the stripped one is installed here.
            .args([
                "deb",
                "--no-build",
                "--profile",
                "dev",
                "--fast",
                "--no-dbgsym",
                "-o",
            ])
            .arg(&out_path)
            .args(version.map(|v| ["--deb-version", v]).into_iter().flatten())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map_err(|e| format!("cannot run cargo deb: {e}"))?;
        assert!(
            out.status.success(),
            "cargo deb failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("package {file}: built in {:?}", started.elapsed());
        Ok(out_path)
    };
    let current = build("virtlockd-rs_current.deb", None)?;
    let newer = build("virtlockd-rs_newer.deb", Some(&newer_version))?;
    Ok(Packages {
        _dir: dir,
        current,
        newer,
        newer_version,
    })
}

/// A container with `libvirt-daemon-system` installed (prepared once per test
/// process) and both packages copied to /root, or `None` after a skip.
fn libvirt_host(test: &str) -> Option<(Container, &'static Packages)> {
    let packages = packages().map_err(|reason| skip(test, &reason)).ok()?;
    let layer = container::debian_libvirt_layer()
        .map_err(|reason| skip(test, &reason))
        .ok()?;
    let c = Container::boot_on(test, &[&layer])
        .map_err(|reason| skip(test, &reason))
        .ok()?;
    c.copy_in(&packages.current, "/root/virtlockd-rs_current.deb");
    c.copy_in(&packages.newer, "/root/virtlockd-rs_newer.deb");
    Some((c, packages))
}

/// Runs apt-get inside; returns how long it took.
#[track_caller]
fn apt(c: &Container, args: &str) -> Duration {
    let started = Instant::now();
    c.exec_ok(&format!(
        "cd /root && DEBIAN_FRONTEND=noninteractive apt-get {args} -y -q"
    ));
    started.elapsed()
}

/// The service's main pid (in the container's pid namespace).
fn main_pid(c: &Container) -> u32 {
    c.exec_ok("systemctl show -p MainPID --value virtlockd.service")
        .trim()
        .parse()
        .expect("MainPID")
}

/// Which daemon `exe` is: its `--version` line (ours names virtlockd-rs,
/// libvirt's says "(libvirt)").
fn version_of(c: &Container, exe: &str) -> String {
    c.exec_ok(&format!("{exe} --version 2>&1"))
        .trim()
        .to_owned()
}

fn is_ours(version: &str) -> bool {
    version.contains("virtlockd-rs")
}

fn is_libvirts(version: &str) -> bool {
    version.contains("(libvirt)")
}

/// The kernel locks on `file` (a path inside), as "KIND MODE PID" lines of
/// the container's /proc/locks. Matched by inode number alone: stat on the
/// overlay reports the overlay's device, /proc/locks the underlying one's,
/// while both give the underlying inode number.
fn locks_on(c: &Container, file: &str) -> Vec<String> {
    let ino = c.exec_ok(&format!("stat -c %i {file}")).trim().to_owned();
    c.exec_ok("cat /proc/locks")
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // "1: POSIX  ADVISORY  WRITE 600 00:39:10021635 0 0"
            let lock_ino = f.get(5)?.rsplit(':').next()?;
            (lock_ino == ino).then(|| format!("{} {} {}", f[1], f[3], f[4]))
        })
        .collect()
}

/// The clients of libvirt's daemon: `a` holds an exclusive lease in a file
/// lockspace, `b` a direct lock on a disk, `probe` is registered and holds
/// nothing.
struct Clients {
    rt: tokio::runtime::Runtime,
    a: Client,
    b: Client,
    probe: Client,
    socket: PathBuf,
}

impl Clients {
    fn connect(c: &Container) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        c.exec_ok(&format!("mkdir -p /var/lib/vltest && echo disk > {DISK}"));
        // Through the container's root: the daemon sees root (uid 0) as peer.
        let socket = c.path("/run/libvirt/virtlockd-sock");
        let (a, b, probe) = rt.block_on(bounded("populate", async {
            let mut a = Client::connect(&socket).await.expect("connect a");
            a.register(&owner("vm-a", 1, OWNER_PIDS[0]))
                .await
                .expect("register a");
            a.create_lockspace(LOCKSPACE.as_bytes())
                .await
                .expect("lockspace");
            a.acquire(LOCKSPACE.as_bytes(), b"disk-a", ACQUIRE_AUTOCREATE)
                .await
                .expect("acquire disk-a");
            let mut b = Client::connect(&socket).await.expect("connect b");
            b.register(&owner("vm-b", 2, OWNER_PIDS[1]))
                .await
                .expect("register b");
            b.acquire(b"", DISK.as_bytes(), 0)
                .await
                .expect("acquire disk");
            let mut probe = Client::connect(&socket).await.expect("connect probe");
            probe
                .register(&owner("vm-probe", 3, OWNER_PIDS[2]))
                .await
                .expect("register probe");
            (a, b, probe)
        }));
        Self {
            rt,
            a,
            b,
            probe,
            socket,
        }
    }

    /// Every kept connection is answered, and a second owner is refused both
    /// leases (on a new connection: the listener works too).
    fn check_served(&mut self, when: &str) {
        let socket = self.socket.clone();
        let (a, b, probe) = (&mut self.a, &mut self.b, &mut self.probe);
        self.rt.block_on(bounded(when, async {
            a.ping().await.unwrap_or_else(|e| panic!("{when}: a: {e}"));
            b.ping().await.unwrap_or_else(|e| panic!("{when}: b: {e}"));
            // A real request on a kept connection: take and give back a lease.
            probe
                .acquire(LOCKSPACE.as_bytes(), b"probe", ACQUIRE_AUTOCREATE)
                .await
                .unwrap_or_else(|e| panic!("{when}: probe acquire: {e}"));
            probe
                .release(LOCKSPACE.as_bytes(), b"probe")
                .await
                .unwrap_or_else(|e| panic!("{when}: probe release: {e}"));
            let mut other = Client::connect(&socket)
                .await
                .unwrap_or_else(|e| panic!("{when}: new connection: {e}"));
            other
                .register(&owner("vm-other", 9, OWNER_PIDS[2] + 10))
                .await
                .unwrap_or_else(|e| panic!("{when}: register: {e}"));
            for (path, name) in [(LOCKSPACE, "disk-a"), ("", DISK)] {
                let refused = other.acquire(path.as_bytes(), name.as_bytes(), 0).await;
                let message = refused
                    .as_ref()
                    .err()
                    .and_then(|e| e.remote())
                    .map(|r| r.message.clone())
                    .unwrap_or_else(|| panic!("{when}: second owner of {name}: {refused:?}"));
                assert!(
                    message.contains("is locked"),
                    "{when}: second owner of {name}: {message}"
                );
            }
        }));
    }
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s"))
}

/// What must hold after every switch: the same daemon process, running
/// `expect_ours` or libvirt's binary from /usr/sbin/virtlockd (not a deleted
/// file), with the same kernel locks, answering every kept client.
#[track_caller]
fn assert_switched(
    c: &Container,
    clients: &mut Clients,
    pid: u32,
    locks: &[Vec<String>; 2],
    expect_ours: bool,
    when: &str,
) {
    assert_eq!(main_pid(c), pid, "{when}: MainPID");
    // The reload that switched it only sent SIGUSR1: until the exec is done,
    // the process still runs the diverted or replaced file.
    let exe = || c.exec_ok(&format!("readlink /proc/{pid}/exe"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while exe().trim() != "/usr/sbin/virtlockd" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(exe().trim(), "/usr/sbin/virtlockd", "{when}: exe");
    let running = version_of(c, &format!("/proc/{pid}/exe"));
    let installed = version_of(c, "/usr/sbin/virtlockd");
    if expect_ours {
        assert!(is_ours(&running), "{when}: runs {running}");
        assert!(
            is_ours(&installed),
            "{when}: /usr/sbin/virtlockd is {installed}"
        );
    } else {
        assert!(is_libvirts(&running), "{when}: runs {running}");
        assert!(
            is_libvirts(&installed),
            "{when}: /usr/sbin/virtlockd is {installed}"
        );
    }
    assert_eq!(
        [
            locks_on(c, &format!("{LOCKSPACE}/disk-a")),
            locks_on(c, DISK)
        ],
        *locks,
        "{when}: kernel locks; /proc/locks:\n{}\nfiles: {}",
        c.exec_ok("cat /proc/locks"),
        c.exec_ok(&format!("stat -c '%D %i %n' {LOCKSPACE}/disk-a {DISK}")),
    );
    clients.check_served(when);
}

#[test]
fn package_switches_libvirts_running_daemon_live_on_install_back_on_removal_and_upgrades_in_place()
{
    let test = "package_switches_libvirts_running_daemon_live_on_install_back_on_removal_and_upgrades_in_place";
    let Some((c, packages)) = libvirt_host(test) else {
        return;
    };
    c.exec_ok("systemctl start virtlockd.service");
    let pid = main_pid(&c);
    assert!(pid > 0, "virtlockd.service has no main pid");
    assert!(is_libvirts(&version_of(&c, &format!("/proc/{pid}/exe"))));
    let libvirt_type = c.exec_ok("systemctl show -p Type --value virtlockd.service");
    let mut clients = Clients::connect(&c);
    let held = format!("POSIX WRITE {pid}");
    let locks = [vec![held.clone()], vec![held]];
    assert_switched(&c, &mut clients, pid, &locks, false, "before installing");

    let took = apt(&c, "install ./virtlockd-rs_current.deb");
    eprintln!("{test}: install (live switch to ours) took {took:?}");
    assert_switched(&c, &mut clients, pid, &locks, true, "after installing");
    assert_eq!(
        c.exec_ok("systemctl show -p Type --value virtlockd.service")
            .trim(),
        "notify",
        "the drop-in applies to libvirt's unit"
    );
    // libvirt's binary is kept, diverted, for the way back.
    assert!(is_libvirts(&version_of(&c, "/usr/sbin/virtlockd.libvirt")));
    assert!(c.exec_ok("dpkg-divert --list virtlockd-rs").contains(
        "diversion of /usr/sbin/virtlockd to /usr/sbin/virtlockd.libvirt by virtlockd-rs"
    ));
    // Only ours answers virtlockctl's inspection program.
    let status: serde_json::Value =
        serde_json::from_str(&c.exec_ok("virtlockctl status --json")).expect("status JSON");
    assert_eq!(status["pid"], pid, "{status}");
    assert_eq!(status["leases"], 2, "{status}");

    let took = apt(&c, "remove virtlockd-rs");
    eprintln!("{test}: remove (live switch back to libvirt's) took {took:?}");
    assert_switched(&c, &mut clients, pid, &locks, false, "after removing");
    assert_eq!(
        c.exec_ok("dpkg-divert --list virtlockd-rs").trim(),
        "",
        "diversions left after removal"
    );
    assert!(c
        .exec_ok("dpkg -S /usr/sbin/virtlockd")
        .starts_with("libvirt-daemon:"));
    assert_eq!(
        c.exec_ok("systemctl show -p Type --value virtlockd.service"),
        libvirt_type,
        "libvirt's unit as it was"
    );

    apt(&c, "install ./virtlockd-rs_current.deb");
    assert_switched(
        &c,
        &mut clients,
        pid,
        &locks,
        true,
        "after installing again",
    );
    let upgrades_before = live_upgrades(&c);
    let took = apt(&c, "install ./virtlockd-rs_newer.deb");
    eprintln!("{test}: upgrade (reload into the new build) took {took:?}");
    // `systemctl reload` only sends SIGUSR1, so apt may return while the exec
    // is still under way: it is done within moments. Then the daemon runs the
    // new file (the inode dpkg installed) after one more live upgrade.
    let installed = c.exec_ok("stat -c %i /usr/sbin/virtlockd");
    let running = || c.exec_ok(&format!("stat -L -c %i /proc/{pid}/exe"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (running() != installed || live_upgrades(&c) != upgrades_before + 1)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(running(), installed, "the daemon runs the upgraded binary");
    assert_eq!(live_upgrades(&c), upgrades_before + 1);
    assert_switched(&c, &mut clients, pid, &locks, true, "after upgrading");
    assert_eq!(
        c.exec_ok("dpkg-query -W -f '${Version}' virtlockd-rs"),
        packages.newer_version
    );
}

fn live_upgrades(c: &Container) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&c.exec_ok("virtlockctl status --json")).expect("status JSON");
    status["live_upgrades"].as_u64().expect("live_upgrades")
}

#[test]
fn package_with_the_service_stopped_changes_files_only() {
    let test = "package_with_the_service_stopped_changes_files_only";
    let Some((c, _)) = libvirt_host(test) else {
        return;
    };
    c.exec_ok("systemctl stop virtlockd.socket virtlockd-admin.socket virtlockd.service");
    let stopped = |when: &str| {
        let state = c.exec("systemctl is-active virtlockd.service virtlockd.socket");
        assert_eq!(
            String::from_utf8_lossy(&state.stdout)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["inactive", "inactive"],
            "{when}"
        );
        assert!(
            !c.exec("pgrep -x virtlockd").status.success(),
            "{when}: a virtlockd runs"
        );
    };
    stopped("before installing");
    apt(&c, "install ./virtlockd-rs_current.deb");
    stopped("after installing");
    assert!(is_ours(&version_of(&c, "/usr/sbin/virtlockd")));
    assert!(is_libvirts(&version_of(&c, "/usr/sbin/virtlockd.libvirt")));
    apt(&c, "remove virtlockd-rs");
    stopped("after removing");
    assert!(is_libvirts(&version_of(&c, "/usr/sbin/virtlockd")));
    assert!(!c.path("/usr/sbin/virtlockd.libvirt").exists());
}

/// Without libvirt-daemon-system (libvirt's binary only, as on this host),
/// the package brings its own units: socket-activated, Type=notify, ours.
#[test]
fn package_without_libvirts_units_installs_and_removes_its_own() {
    let test = "package_without_libvirts_units_installs_and_removes_its_own";
    let packages = match packages() {
        Ok(p) => p,
        Err(reason) => return skip(test, &reason),
    };
    let c = match Container::boot(test) {
        Ok(c) => c,
        Err(reason) => return skip(test, &reason),
    };
    if c.path("/lib/systemd/system/virtlockd.service").exists() {
        return skip(test, "libvirt-daemon-system is installed on this host");
    }
    c.copy_in(&packages.current, "/root/virtlockd-rs_current.deb");
    apt(&c, "install ./virtlockd-rs_current.deb");
    assert_eq!(
        c.exec_ok("readlink /etc/systemd/system/virtlockd.service")
            .trim(),
        "/usr/lib/virtlockd-rs/systemd/virtlockd.service"
    );
    assert_eq!(
        c.exec_ok("systemctl is-active virtlockd.socket virtlockd-admin.socket")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["active", "active"]
    );
    // The first client starts the daemon through the socket.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let socket = c.path("/run/libvirt/virtlockd-sock");
    rt.block_on(bounded("first client", async {
        let mut client = Client::connect(&socket).await.expect("connect");
        client
            .register(&owner("vm", 1, OWNER_PIDS[0]))
            .await
            .expect("register");
    }));
    c.exec_ok("systemctl is-active virtlockd.service");
    assert_eq!(
        c.exec_ok("systemctl show -p Type --value virtlockd.service")
            .trim(),
        "notify"
    );
    let pid = main_pid(&c);
    assert!(is_ours(&version_of(&c, &format!("/proc/{pid}/exe"))));
    c.exec_ok("systemctl stop virtlockd.service virtlockd.socket virtlockd-admin.socket");
    apt(&c, "remove virtlockd-rs");
    for link in [
        "virtlockd.service",
        "virtlockd.socket",
        "virtlockd-admin.socket",
        "sockets.target.wants/virtlockd.socket",
        "sockets.target.wants/virtlockd-admin.socket",
    ] {
        let path = c.path(&format!("/etc/systemd/system/{link}"));
        assert!(path.symlink_metadata().is_err(), "{link} left behind");
    }
    assert!(is_libvirts(&version_of(&c, "/usr/sbin/virtlockd")));
    assert_eq!(c.exec_ok("dpkg-divert --list virtlockd-rs").trim(), "");
}

/// lintian finds no error and no warning in the package.
#[test]
fn package_passes_lintian() {
    let test = "package_passes_lintian";
    let packages = match packages() {
        Ok(p) => p,
        Err(reason) => return skip(test, &reason),
    };
    if !Path::new("/usr/bin/lintian").exists() {
        return skip(test, "lintian not installed (tests/install-deps.sh)");
    }
    let started = Instant::now();
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(&packages.current)
        .output()
        .expect("run lintian");
    eprintln!("{test}: lintian took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "lintian:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The guests' shared disk: leased directly (its path is the lease name).
const GUEST_DISK: &str = "/var/lib/libvirt/images/guest.img";

/// Starts libvirtd inside with two guests defined on one disk. The container
/// module masks libvirtd because, sharing the host's network, it would start
/// its default network there: its autostart link is removed first.
fn start_libvirtd(c: &Container) {
    std::fs::write(
        c.path("/etc/libvirt/qemu.conf"),
        crate::support::guest::QEMU_CONF,
    )
    .expect("qemu.conf");
    for name in ["guest-a", "guest-b"] {
        std::fs::write(
            c.path(&format!("/root/{name}.xml")),
            crate::support::guest::tcg_guest_xml(name, GUEST_DISK),
        )
        .expect("domain");
    }
    c.exec_ok(&format!(
        "rm -f /etc/libvirt/qemu/networks/autostart/*.xml && \
         cd /etc/systemd/system && rm -f libvirtd.service libvirtd.socket libvirtd-ro.socket \
            libvirtd-admin.socket libvirtd-tcp.socket libvirtd-tls.socket && \
         systemctl daemon-reload && systemctl start libvirtd.service && \
         mkdir -p /var/lib/libvirt/images && truncate -s 16M {GUEST_DISK} && \
         virsh -q -c qemu:///system define /root/guest-a.xml && \
         virsh -q -c qemu:///system define /root/guest-b.xml"
    ));
}

fn virsh(c: &Container, args: &str) -> std::process::Output {
    c.exec(&format!("virsh -q -c qemu:///system {args} 2>&1"))
}

/// `name` cannot start: the disk's lease is held (by the other guest).
#[track_caller]
fn assert_guest_refused(c: &Container, name: &str, when: &str) {
    let out = virsh(c, &format!("start {name}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && text.contains(&format!("Lockspace resource '{GUEST_DISK}' is locked")),
        "{when}: {name} was not refused by the lock daemon: {text}"
    );
}

/// A real QEMU guest started by libvirtd holds its disk lease through
/// libvirt's virtlockd; installing the package keeps it across the switch to
/// ours, which then refuses a second guest, frees the lease when the guest is
/// destroyed and leases the disk to the next one; removing the package hands
/// that lease back to libvirt's daemon the same way.
#[test]
fn package_switches_keep_a_qemu_guests_disk_lease() {
    let test = "package_switches_keep_a_qemu_guests_disk_lease";
    if !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        return skip(test, "QEMU not installed (tests/install-deps.sh)");
    }
    let Some((c, _)) = libvirt_host(test) else {
        return;
    };
    start_libvirtd(&c);
    c.exec_ok("systemctl start virtlockd.service");
    let pid = main_pid(&c);
    let held = vec![format!("POSIX WRITE {pid}")];
    // The daemon's lease lock; QEMU's own image locks (OFD) are not its business.
    let lease_locks = || -> Vec<String> {
        locks_on(&c, GUEST_DISK)
            .into_iter()
            .filter(|l| l.starts_with("POSIX"))
            .collect()
    };
    let guest_running = |name: &str| {
        String::from_utf8_lossy(&virsh(&c, &format!("domstate {name}")).stdout).trim() == "running"
    };
    c.exec_ok("virsh -q -c qemu:///system start guest-a");
    assert_eq!(lease_locks(), held, "guest-a's lease, libvirt's daemon");
    assert_guest_refused(&c, "guest-b", "libvirt's daemon");

    let took = apt(&c, "install ./virtlockd-rs_current.deb");
    eprintln!("{test}: install with a guest running took {took:?}");
    assert_eq!(main_pid(&c), pid);
    assert!(is_ours(&version_of(&c, &format!("/proc/{pid}/exe"))));
    assert!(guest_running("guest-a"));
    assert_eq!(lease_locks(), held, "guest-a's lease after installing");
    assert_guest_refused(&c, "guest-b", "ours");
    let who = c.exec_ok(&format!("virtlockctl who {GUEST_DISK}"));
    assert!(who.contains("held"), "{who}");
    c.exec_ok("virsh -q -c qemu:///system destroy guest-a");
    c.exec_ok("virsh -q -c qemu:///system start guest-b");
    assert_eq!(lease_locks(), held, "guest-b's lease, ours");

    let took = apt(&c, "remove virtlockd-rs");
    eprintln!("{test}: remove with a guest running took {took:?}");
    assert_eq!(main_pid(&c), pid);
    assert!(is_libvirts(&version_of(&c, &format!("/proc/{pid}/exe"))));
    assert!(guest_running("guest-b"));
    assert_eq!(lease_locks(), held, "guest-b's lease after removing");
    assert_guest_refused(&c, "guest-a", "libvirt's daemon again");
    c.exec_ok("virsh -q -c qemu:///system destroy guest-b");
    c.exec_ok("virsh -q -c qemu:///system start guest-a");
    assert!(guest_running("guest-a"));
}
