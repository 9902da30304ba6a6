//! A crash of the lock daemon under a running QEMU guest, with the package
//! installed over Debian's libvirt (its drop-in turns crash-safe mode on for
//! libvirt's unit): SIGKILL, systemd restarts the daemon, and the guest's
//! disk stays leased. A second guest on the same disk is refused with
//! libvirt's own text, the first guest is not fenced (same QEMU, still
//! running) and destroying it frees the lease, so the second guest can start.
//! In both of the lockd plugin's lease modes: a lock on the disk itself, and
//! SHA-256-named lease files in `file_lockspace_dir` (whose lockspace only
//! the restarted daemon's recovery can bring back: libvirtd announces it once,
//! at its start).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::skip;
use crate::systemd::container::Container;

use super::{apt, libvirt_host, main_pid, start_libvirtd, GUEST_DISK};

/// `file_lockspace_dir` of the indirect mode.
const FILES: &str = "/var/lib/libvirt/lockd/files";
/// Bound of every wait on systemd, the daemon, libvirt or QEMU.
const PATIENCE: Duration = Duration::from_secs(30);

/// The two ways libvirt's lockd plugin names a disk's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A lock on byte 0 of the disk image itself.
    Direct,
    /// A lock on `FILES/<sha256 of the disk path>`.
    Indirect,
}

impl Mode {
    /// The resource name libvirt asks for, which its error texts quote.
    fn resource(self) -> String {
        match self {
            Mode::Direct => GUEST_DISK.to_owned(),
            Mode::Indirect => virtlockd::names::lease_name(GUEST_DISK.as_bytes()),
        }
    }

    /// The file the lease lock is on, inside the container.
    fn lease_file(self) -> String {
        match self {
            Mode::Direct => GUEST_DISK.to_owned(),
            Mode::Indirect => format!("{FILES}/{}", self.resource()),
        }
    }

    fn lockd_conf(self) -> String {
        match self {
            Mode::Direct => "auto_disk_leases = 1\n".to_owned(),
            Mode::Indirect => format!("auto_disk_leases = 1\nfile_lockspace_dir = \"{FILES}\"\n"),
        }
    }
}

#[test]
fn crash_guest_direct_disk_lease_survives_sigkill_of_the_lock_daemon() {
    run(
        "crash_guest_direct_disk_lease_survives_sigkill_of_the_lock_daemon",
        Mode::Direct,
    );
}

#[test]
fn crash_guest_indirect_lease_file_survives_sigkill_of_the_lock_daemon() {
    run(
        "crash_guest_indirect_lease_file_survives_sigkill_of_the_lock_daemon",
        Mode::Indirect,
    );
}

fn run(test: &str, mode: Mode) {
    if !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        return skip(test, "QEMU not installed (tests/install-deps.sh)");
    }
    let Some((c, _)) = libvirt_host(test) else {
        return;
    };
    let started = Instant::now();
    apt(&c, "install ./virtlockd-rs_current.deb");
    std::fs::write(c.path("/etc/libvirt/qemu-lockd.conf"), mode.lockd_conf())
        .expect("qemu-lockd.conf");
    // The daemon first: in indirect mode libvirtd creates its lockspace at
    // its start.
    c.exec_ok("systemctl start virtlockd.service");
    start_libvirtd(&c);
    let status = status(&c);
    assert_eq!(
        status["crash_safety"]["mode"], "active",
        "{mode:?}: the package's drop-in turns crash-safe mode on: {status}"
    );

    let qemu_a = start(&c, "guest-a");
    assert_leased(&c, mode, "guest-a started");
    assert_refused(&c, mode, "guest-b", "before the crash");

    let daemon = main_pid(&c);
    c.exec_ok("systemctl kill -s SIGKILL virtlockd.service");
    let restarted = wait_restarted(&c, daemon);
    eprintln!(
        "{test}: daemon {daemon} SIGKILLed, {restarted} ready in {:?}",
        started.elapsed()
    );
    let status = self::status(&c);
    assert_eq!(status["crash_safety"]["mode"], "active", "{status}");
    assert_eq!(status["crash_safety"]["recoveries"], 1, "{status}");
    assert_eq!(status["pid"], restarted, "{status}");

    assert_leased(&c, mode, "after the restart");
    assert_refused(&c, mode, "guest-b", "after the restart");
    assert_eq!(
        qemu_of(&c, "guest-a"),
        Some(qemu_a),
        "{mode:?}: guest-a's QEMU after the crash (fenced or replaced?)"
    );
    assert_eq!(domstate(&c, "guest-a"), "running");
    // The recovered lease still belongs to guest-a's QEMU (not to an
    // unknown owner): the journal carried the owner across the crash.
    let who: serde_json::Value =
        serde_json::from_str(&c.exec_ok(&format!("virtlockctl who {GUEST_DISK} --json")))
            .expect("who JSON");
    let lease = &who["leases"][0];
    assert_eq!(lease["status"], "held", "{mode:?}: {who}");
    assert_eq!(lease["direct"], mode == Mode::Direct, "{mode:?}: {who}");
    assert_eq!(lease["owners"][0]["pid"], qemu_a, "{mode:?}: {who}");
    assert_eq!(lease["owners"][0]["name"], "guest-a", "{mode:?}: {who}");

    // The restarted daemon knows QEMU's holder connection: its close (the
    // guest destroyed) releases the lease.
    c.exec_ok("virsh -q -c qemu:///system destroy guest-a");
    wait_for(&c, "guest-a's QEMU to be gone", || {
        !c.exec(&format!("test -d /proc/{qemu_a}")).status.success()
    });
    wait_for(&c, "the lease to be released", || {
        lease_locks(&c, mode).is_empty()
    });
    if mode == Mode::Indirect {
        assert!(
            !c.path(&mode.lease_file()).exists(),
            "lease file removed on release"
        );
    }
    let qemu_b = start(&c, "guest-b");
    assert_leased(&c, mode, "guest-b started after guest-a's destruction");
    assert_eq!(main_pid(&c), restarted, "no further restart");
    c.exec_ok("virsh -q -c qemu:///system destroy guest-b");
    wait_for(&c, "guest-b's QEMU to be gone", || {
        !c.exec(&format!("test -d /proc/{qemu_b}")).status.success()
    });
    wait_for(&c, "guest-b's lease to be released", || {
        lease_locks(&c, mode).is_empty()
    });
    eprintln!("{test}: passed in {:?}", started.elapsed());
}

fn status(c: &Container) -> serde_json::Value {
    serde_json::from_str(&c.exec_ok("virtlockctl status --json")).expect("status JSON")
}

/// Waits until systemd has a new main pid for the service, active (READY=1
/// received: the recovery is done); returns it.
fn wait_restarted(c: &Container, old: u32) -> u32 {
    let mut pid = 0;
    wait_for(c, "systemd to restart the daemon", || {
        let out = c.exec_ok("systemctl show -p MainPID,ActiveState,SubState virtlockd.service");
        let prop = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("")
                .to_owned()
        };
        pid = prop("MainPID").parse().unwrap_or(0);
        pid != 0 && pid != old && prop("ActiveState") == "active" && prop("SubState") == "running"
    });
    pid
}

/// `virsh start`, then the pid (in the container) of the guest's QEMU.
fn start(c: &Container, name: &str) -> u32 {
    let out = virsh(c, &format!("start {name}"));
    assert!(
        out.status.success(),
        "virsh start {name}: {}\njournal:\n{}",
        String::from_utf8_lossy(&out.stderr),
        journal(c)
    );
    qemu_of(c, name).unwrap_or_else(|| panic!("no QEMU for {name}"))
}

/// Starting `name` fails with libvirt's text for a busy lease (virsh quotes
/// the daemon's error verbatim), and leaves no QEMU behind.
#[track_caller]
fn assert_refused(c: &Container, mode: Mode, name: &str, when: &str) {
    let out = virsh(c, &format!("start {name}"));
    let expected = format!(
        "error: Failed to start domain '{name}'\nerror: resource busy: Lockspace resource '{}' \
         is locked",
        mode.resource()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        expected,
        "{mode:?}, {when}: journal:\n{}",
        journal(c)
    );
    assert!(!out.status.success());
    wait_for(c, "the refused guest's QEMU to be gone", || {
        qemu_of(c, name).is_none()
    });
    assert_eq!(domstate(c, name), "shut off", "{mode:?}, {when}");
}

/// Exactly one lease lock on the lease file: the daemon's write lock on byte
/// 0, an OFD lock in crash-safe mode, whoever holds the fd (the daemon, or
/// systemd's fd store while no daemon runs).
#[track_caller]
fn assert_leased(c: &Container, mode: Mode, when: &str) {
    assert_eq!(
        lease_locks(c, mode),
        ["OFDLCK WRITE"],
        "{mode:?}, {when}: /proc/locks:\n{}",
        c.exec_ok("cat /proc/locks")
    );
}

/// The locks on byte 0 of the lease file as "KIND MODE"; QEMU's own image
/// locks are on bytes 100 and up. Matched by inode number alone (the overlay
/// reports another device than /proc/locks does).
fn lease_locks(c: &Container, mode: Mode) -> Vec<String> {
    let file = mode.lease_file();
    let Ok(meta) = std::fs::metadata(c.path(&file)) else {
        return Vec::new();
    };
    let ino = std::os::unix::fs::MetadataExt::ino(&meta).to_string();
    c.exec_ok("cat /proc/locks")
        .lines()
        .filter_map(|line| {
            // "1: OFDLCK ADVISORY  WRITE -1 00:39:10021635 0 0"
            let f: Vec<&str> = line.split_whitespace().collect();
            let lock_ino = f.get(5)?.rsplit(':').next()?;
            (lock_ino == ino && f.get(6) == Some(&"0")).then(|| format!("{} {}", f[1], f[3]))
        })
        .collect()
}

/// The pid (in the container) of the QEMU running guest `name`: libvirt's
/// pid file, checked against the process's command line.
fn qemu_of(c: &Container, name: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(c.path(&format!("/run/libvirt/qemu/{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = c.exec(&format!("tr '\\0' ' ' </proc/{pid}/cmdline"));
    String::from_utf8_lossy(&cmdline.stdout)
        .contains(&format!("guest={name},"))
        .then_some(pid)
}

fn domstate(c: &Container, name: &str) -> String {
    String::from_utf8_lossy(&virsh(c, &format!("domstate {name}")).stdout)
        .trim()
        .to_owned()
}

fn virsh(c: &Container, args: &str) -> std::process::Output {
    c.exec(&format!("virsh -q -c qemu:///system {args}"))
}

fn journal(c: &Container) -> String {
    let out =
        c.exec("journalctl -b -u virtlockd.service -u libvirtd.service --no-pager | tail -60");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` every 50 ms; panics with the journal after [`PATIENCE`].
#[track_caller]
fn wait_for(c: &Container, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\njournal:\n{}",
            journal(c)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
