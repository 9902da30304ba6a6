//! End to end with real libvirt and QEMU: Debian's libvirtd (QEMU driver,
//! `lock_manager = "lockd"`) starts TCG guests whose disk leases our daemon holds,
//! in both lease modes (a lock on the disk itself; SHA-256-named lease files in
//! `file_lockspace_dir`). Checks the kernel locks, libvirt's exact error texts,
//! QEMU's holder connection, and what each daemon signal does to the guests.
//! Needs root, namespaces and the libvirt/QEMU packages; SKIPPED without them.

mod sandbox;

use std::path::Path;
use std::time::Instant;

use nix::sys::signal::Signal;
use virtlockd::proclocks;

use sandbox::{missing_prerequisite, Mode, Sandbox, FILES};

#[test]
fn e2e_direct_disk_leases() {
    run("e2e_direct_disk_leases", Mode::Direct);
}

#[test]
fn e2e_indirect_sha256_lease_files() {
    run("e2e_indirect_sha256_lease_files", Mode::Indirect);
}

/// One scenario, run on a sandbox whose guests are both stopped.
type Phase = fn(&Sandbox);

fn run(test: &str, mode: Mode) {
    if let Some(reason) = missing_prerequisite() {
        crate::support::skip(test, &reason);
        return;
    }
    let started = Instant::now();
    let sb = Sandbox::new(mode);
    sb.start_lock_daemon();
    sb.start_libvirtd();
    sb.define_guests();
    let phases: [(&str, Phase); 6] = [
        ("basic", basic),
        ("suspend", suspend_resume),
        ("libvirtd restart", libvirtd_restart),
        ("SIGUSR1", live_upgrade),
        ("SIGTERM", sigterm_fences),
        ("SIGKILL", sigkill_unprotected),
    ];
    for (name, phase) in phases {
        let t = Instant::now();
        phase(&sb);
        eprintln!("{test}: {name} passed in {:.1?}", t.elapsed());
    }
    eprintln!("{test}: all phases in {:.1?}", started.elapsed());
}

/// A starts and is leased; B is refused with libvirt's text; destroying A frees
/// the lease (and in indirect mode removes the lease file); then B starts.
fn basic(sb: &Sandbox) {
    let daemon = sb.lock_daemon();
    let a = start(sb, "e2e-a");
    assert_leased_by(sb, daemon);
    let links = holder_links(a, daemon);
    assert_eq!(links.len(), 1, "QEMU's holder connection: {links:?}");
    assert_refused(sb, "e2e-b");
    assert!(alive(a), "A keeps running");
    assert_leased_by(sb, daemon);
    destroy(sb, "e2e-a");
    if sb.mode == Mode::Indirect {
        assert!(!lease_path(sb).exists(), "lease file removed on release");
    }
    start(sb, "e2e-b");
    assert_leased_by(sb, daemon);
    destroy(sb, "e2e-b");
}

/// Suspend releases, resume re-acquires (refused while B holds the disk).
fn suspend_resume(sb: &Sandbox) {
    let daemon = sb.lock_daemon();
    start(sb, "e2e-a");
    sb.virsh_ok(&["suspend", "e2e-a"]);
    wait_lease_free(sb);
    start(sb, "e2e-b");
    let err = sb.virsh_err(&["resume", "e2e-a"]);
    assert_eq!(err, busy_text("resume", "e2e-a", sb.mode), "{}", sb.logs());
    destroy(sb, "e2e-b");
    sb.virsh_ok(&["resume", "e2e-a"]);
    assert_leased_by(sb, daemon);
    assert_refused(sb, "e2e-b");
    destroy(sb, "e2e-a");
}

/// Restarting libvirtd keeps QEMU and its lease (the holder connection is QEMU's);
/// in indirect mode the new libvirtd's CREATE_LOCKSPACE must answer OK.
fn libvirtd_restart(sb: &Sandbox) {
    let daemon = sb.lock_daemon();
    let a = start(sb, "e2e-a");
    sb.stop_libvirtd();
    assert_leased_by(sb, daemon);
    sb.start_libvirtd();
    assert_eq!(qemu_of(sb, "e2e-a"), Some(a), "same QEMU after the restart");
    assert_leased_by(sb, daemon);
    assert_refused(sb, "e2e-b");
    destroy(sb, "e2e-a");
}

/// SIGUSR1: same daemon pid, lease and QEMU's holder connection kept; the
/// re-exec'ed daemon still knows the holder (destroy releases).
fn live_upgrade(sb: &Sandbox) {
    let daemon = sb.lock_daemon();
    let a = start(sb, "e2e-a");
    let links = holder_links(a, daemon);
    assert_eq!(links.len(), 1, "QEMU's holder connection: {links:?}");
    let upgrades = upgrades_logged(sb);
    sb.signal(daemon, Signal::SIGUSR1);
    sb.wait_for("the live upgrade", || {
        upgrades_logged(sb) == upgrades + 1 && sb.socket_accepts()
    });
    assert_eq!(sb.lock_daemon(), daemon, "same pid after the upgrade");
    assert_eq!(holder_links(a, daemon), links, "holder connection kept");
    assert_leased_by(sb, daemon);
    assert_refused(sb, "e2e-b");
    destroy(sb, "e2e-a");
    start(sb, "e2e-b");
    destroy(sb, "e2e-b");
}

/// SIGTERM (libvirt's behaviour, kept): the daemon closes every client, and a
/// lease owner's own connection closing fences it: QEMU is killed.
fn sigterm_fences(sb: &Sandbox) {
    let daemon = sb.lock_daemon();
    let a = start(sb, "e2e-a");
    sb.signal(daemon, Signal::SIGTERM);
    sb.wait_for("the lock daemon to exit", || !alive(daemon));
    sb.wait_for("A's QEMU to be fenced", || !alive(a));
    sb.wait_for("libvirt to see A stopped", || {
        domstate(sb, "e2e-a") == "shut off"
    });
    assert!(lease_free(sb), "no lock left on the lease file");
    if sb.mode == Mode::Indirect {
        assert!(!lease_path(sb).exists(), "lease file removed at shutdown");
    }
    restart_lock_daemon(sb);
    start(sb, "e2e-a");
    destroy(sb, "e2e-a");
}

/// SIGKILL: the kernel drops the daemon's locks and the guest runs on,
/// unprotected; libvirt cannot start guests until a daemon is back, and the new
/// daemon knows nothing of the old leases (so B starts next to A).
fn sigkill_unprotected(sb: &Sandbox) {
    let daemon = sb.lock_daemon();
    let a = start(sb, "e2e-a");
    sb.signal(daemon, Signal::SIGKILL);
    sb.wait_for("the lock daemon to die", || !alive(daemon));
    // The kernel drops the lock when the last of the daemon's threads has
    // exited, which may come just after its main thread shows as a zombie.
    wait_lease_free(sb);
    let err = sb.virsh_err(&["start", "e2e-b"]);
    let refused = "error: Failed to start domain 'e2e-b'\nerror: internal error: Process exited \
                   prior to exec: libvirt: XML-RPC error : Failed to connect socket to \
                   '/run/libvirt/virtlockd-sock': Connection refused";
    assert_eq!(err, refused, "{}", sb.logs());
    assert!(alive(a), "A runs on without its lease");
    sb.start_lock_daemon();
    if sb.mode == Mode::Indirect {
        let err = sb.virsh_err(&["start", "e2e-b"]);
        let gone = format!(
            "error: Failed to start domain 'e2e-b'\nerror: internal error: Lockspace for path \
             {FILES} does not exist"
        );
        assert_eq!(err, gone, "{}", sb.logs());
        sb.stop_libvirtd();
        sb.start_libvirtd();
    }
    let b = start(sb, "e2e-b");
    assert!(alive(a) && alive(b), "both guests run on the same disk");
    destroy(sb, "e2e-b");
    destroy(sb, "e2e-a");
}

/// After a stop, starts our daemon again, and in indirect mode libvirtd too
/// (its lockspace lived only in the old daemon).
fn restart_lock_daemon(sb: &Sandbox) {
    sb.start_lock_daemon();
    if sb.mode == Mode::Indirect {
        sb.stop_libvirtd();
        sb.start_libvirtd();
    }
}

/// `virsh start`, then the host pid of the guest's QEMU.
fn start(sb: &Sandbox, name: &str) -> u32 {
    sb.virsh_ok(&["start", name]);
    qemu_of(sb, name).unwrap_or_else(|| panic!("no QEMU for {name}\n{}", sb.logs()))
}

/// `virsh destroy`, then waits until the lease is free.
fn destroy(sb: &Sandbox, name: &str) {
    let qemu = qemu_of(sb, name);
    sb.virsh_ok(&["destroy", name]);
    if let Some(pid) = qemu {
        sb.wait_for("QEMU to be gone", || !alive(pid));
    }
    wait_lease_free(sb);
}

/// Starting `name` fails with the daemon's busy text, and leaves no QEMU.
fn assert_refused(sb: &Sandbox, name: &str) {
    let err = sb.virsh_err(&["start", name]);
    assert_eq!(err, busy_text("start", name, sb.mode), "{}", sb.logs());
    sb.wait_for("the refused guest's QEMU to be gone", || {
        qemu_of(sb, name).is_none()
    });
    assert_eq!(domstate(sb, name), "shut off");
}

/// virsh's text when the lock daemon answers busy (libvirt 9.0, real virtlockd).
fn busy_text(verb: &str, name: &str, mode: Mode) -> String {
    format!(
        "error: Failed to {verb} domain '{name}'\nerror: resource busy: Lockspace resource '{}' \
         is locked",
        mode.resource()
    )
}

fn domstate(sb: &Sandbox, name: &str) -> String {
    let out = sb.virsh(&["domstate", name]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn lease_path(sb: &Sandbox) -> std::path::PathBuf {
    sb.inside(&sb.mode.lease_file())
}

/// Exactly one POSIX write lock on byte 0 of the lease file, held by `daemon`,
/// and nobody else's.
#[track_caller]
fn assert_leased_by(sb: &Sandbox, daemon: u32) {
    let path = lease_path(sb);
    let locks: Vec<String> = posix_locks(&path)
        .iter()
        .map(|l| {
            format!(
                "{} {} {}-{:?} pid {}",
                l.kind, l.mode, l.start, l.end, l.pid
            )
        })
        .collect();
    assert_eq!(
        locks,
        [format!("POSIX WRITE 0-Some(0) pid {daemon}")],
        "{} ({:?})\n{}",
        path.display(),
        sb.mode,
        sb.logs()
    );
}

/// The POSIX (lock-daemon) locks on `path`; QEMU's own image locks are OFD locks.
fn posix_locks(path: &Path) -> Vec<proclocks::KernelLock> {
    proclocks::on(path)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.kind == "POSIX")
        .collect()
}

fn lease_free(sb: &Sandbox) -> bool {
    posix_locks(&lease_path(sb)).is_empty()
}

fn wait_lease_free(sb: &Sandbox) {
    sb.wait_for("the lease to be released", || lease_free(sb));
}

/// Host pid of the QEMU running guest `name`.
fn qemu_of(sb: &Sandbox, name: &str) -> Option<u32> {
    let tag = format!("guest={name},");
    sb.pids("qemu-system-x86").into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&tag))
    })
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// How many live upgrades our daemon has logged.
fn upgrades_logged(sb: &Sandbox) -> usize {
    std::fs::read_to_string(sb.dir.path().join("virtlockd.log"))
        .unwrap_or_default()
        .matches("restoring after live upgrade")
        .count()
}

/// The connections between QEMU `qemu` and the daemon `daemon`, as pairs of
/// (daemon-side, QEMU-side) socket inodes: `ss -x` names each socket's peer.
fn holder_links(qemu: u32, daemon: u32) -> Vec<(u64, u64)> {
    let qemu_sockets = socket_inodes(qemu);
    let out = std::process::Command::new("ss")
        .args(["-xpH"])
        .output()
        .expect("run ss");
    let tag = format!("pid={daemon},");
    let mut links: Vec<(u64, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| {
            // Netid State Recv-Q Send-Q Local Port Peer Port Process
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(5)?.parse().ok()?, f.get(7)?.parse().ok()?))
        })
        .filter(|(_, peer)| qemu_sockets.contains(peer))
        .collect();
    links.sort();
    links
}

fn socket_inodes(pid: u32) -> Vec<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten();
    fds.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .to_owned();
            l.parse().ok()
        })
        .collect()
}
