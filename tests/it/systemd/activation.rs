//! Socket activation and readiness under real systemd: nothing runs until a
//! client connects; systemd starts the daemon on the first connection to the
//! lock socket or to the admin socket, and the first call is answered.
//!
//! Readiness is ours to prove only with our `Type=notify` unit: Debian's unit
//! is `Type=simple`, for which systemd calls the daemon started once forked.

use std::time::Instant;

use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use super::setup::{lease_name, Host, Units, DAEMON_PATH, LOCKSPACE, PATIENCE};

async fn first_connection_starts_the_daemon(test: &str, units: Units) {
    let Some(h) = Host::boot_or_skip(test, units) else {
        return;
    };
    assert_eq!(h.state(), "inactive/dead");
    assert_eq!(h.main_pid(), 0);

    // Lock socket: connect, REGISTER, CREATE_LOCKSPACE, ACQUIRE.
    let t = Instant::now();
    let mut c = h.client(4_000_001).await;
    let activated = t.elapsed();
    let name = lease_name("activation");
    c.create_lockspace(LOCKSPACE.as_bytes())
        .await
        .expect("CREATE_LOCKSPACE");
    c.acquire(LOCKSPACE.as_bytes(), name.as_bytes(), ACQUIRE_AUTOCREATE)
        .await
        .expect("ACQUIRE");
    eprintln!("{test}: first call answered {activated:?} after connecting to the idle socket");
    assert_eq!(h.state(), "active/running");
    let pid = h.main_pid();
    assert_ne!(pid, 0);
    // The process systemd started is ours, and it holds the lease.
    let exe = std::fs::read_link(h.c.path(&format!("/proc/{pid}/exe"))).expect("exe");
    assert_eq!(exe, std::path::Path::new(DAEMON_PATH));
    // It raised its soft open-files limit to the hard one, which systemd
    // set from LimitNOFILE= (capped by the container's own hard limit:
    // nspawn withholds CAP_SYS_RESOURCE). Our unit's soft limit is 1024.
    let limits = std::fs::read_to_string(h.c.path(&format!("/proc/{pid}/limits"))).expect("limits");
    let nofile: Vec<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let unit_hard = match units {
        Units::Ours => 524_288,
        Units::Debian => 40_960,
    };
    assert!(
        nofile.len() == 2 && nofile[0] == nofile[1] && nofile[1] <= unit_hard && nofile[0] > 1024,
        "open files (soft, hard) = {nofile:?}:\n{limits}"
    );
    let lease_inode = h.inode(&format!("{LOCKSPACE}/{name}"));
    assert_eq!(h.locked_inodes(pid), vec![lease_inode]);
    // Our unit runs crash-safe mode (an OFD lock, kept in systemd's fd
    // store); Debian's unit does not ask for it (a POSIX lock, libvirt's).
    let kinds: Vec<String> = h
        .fd_locks(pid)
        .into_iter()
        .filter(|l| l.inode == lease_inode)
        .map(|l| l.class)
        .collect();
    let expected = match units {
        Units::Ours => "OFDLCK",
        Units::Debian => "POSIX",
    };
    assert_eq!(kinds, [expected], "{units:?}");
    c.release(LOCKSPACE.as_bytes(), name.as_bytes())
        .await
        .expect("RELEASE");
    drop(c);

    // Admin socket: after a stop, virt-admin alone starts the daemon again.
    h.c.exec_ok("systemctl stop virtlockd.service");
    assert_eq!(h.state(), "inactive/dead");
    let t = Instant::now();
    let servers =
        h.c.exec_ok("timeout --foreground 20 virt-admin -c virtlockd:///system srv-list");
    eprintln!(
        "{test}: virt-admin srv-list answered in {:?} by a daemon started through the admin socket",
        t.elapsed()
    );
    let names: Vec<&str> = servers
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 2 && f[0].parse::<u32>().is_ok()).then(|| f[1])
        })
        .collect();
    assert_eq!(names, ["admin", "virtlockd"], "srv-list:\n{servers}");
    assert_eq!(h.state(), "active/running");
    let second = h.main_pid();
    assert!(second != 0 && second != pid, "MainPID {pid} then {second}");
}

#[tokio::test]
async fn systemd_activation_with_our_units() {
    first_connection_starts_the_daemon("systemd_activation_with_our_units", Units::Ours).await;
}

#[tokio::test]
async fn systemd_activation_with_debian_units() {
    first_connection_starts_the_daemon("systemd_activation_with_debian_units", Units::Debian).await;
}

/// With `Type=notify`, `systemctl start` returns when the daemon said READY=1:
/// by then it must be accepting. "Accepting" is checked in the kernel: the
/// listening socket systemd passed is registered in one of the daemon's epoll
/// instances (the daemon waits for connections on it).
#[tokio::test]
async fn systemd_type_notify_is_active_once_the_daemon_accepts() {
    let test = "systemd_type_notify_is_active_once_the_daemon_accepts";
    let Some(h) = Host::boot_or_skip(test, Units::Ours) else {
        return;
    };
    let unit = h.show("virtlockd.service", &["Type", "NotifyAccess"]);
    assert_eq!(
        (unit["Type"].as_str(), unit["NotifyAccess"].as_str()),
        ("notify", "main")
    );
    // Without READY=1, start would wait for TimeoutStartSec (90 s): the
    // bound here turns that into a failure.
    let t = Instant::now();
    h.c.exec_ok(&format!(
        "timeout --foreground {} systemctl start virtlockd.service",
        PATIENCE.as_secs()
    ));
    let started = t.elapsed();
    assert_eq!(h.state(), "active/running");
    let pid = h.main_pid();
    let accepting = listener_fds_watched_by_epoll(&h, pid);
    assert!(
        accepting.0 > 0 && accepting.0 == accepting.1,
        "daemon {pid}: {} listening socket(s), {} of them watched by epoll when systemd \
         reported it active",
        accepting.0,
        accepting.1
    );
    let times = h.show(
        "virtlockd.service",
        &[
            "ExecMainStartTimestampMonotonic",
            "ActiveEnterTimestampMonotonic",
        ],
    );
    let usec = |k: &str| times[k].parse::<u64>().unwrap_or(0);
    eprintln!(
        "{test}: `systemctl start` returned in {started:?}; READY=1 came {} µs after the exec; \
         {} listening sockets, all watched by the daemon's epoll",
        usec("ActiveEnterTimestampMonotonic")
            .saturating_sub(usec("ExecMainStartTimestampMonotonic")),
        accepting.0
    );
    // And it answers at once.
    let mut c = h.client(4_000_001).await;
    c.create_lockspace(LOCKSPACE.as_bytes())
        .await
        .expect("CREATE_LOCKSPACE");
}

/// (listening sockets the daemon `pid` holds, how many of them an epoll of
/// the daemon watches), read from the container's /proc.
fn listener_fds_watched_by_epoll(h: &Host, pid: u32) -> (usize, usize) {
    let listening = listening_unix_inodes();
    let fd_dir = h.c.path(&format!("/proc/{pid}/fd"));
    let mut listeners = Vec::new();
    let mut epolls = Vec::new();
    for entry in std::fs::read_dir(&fd_dir).expect("fd dir").flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let fd = entry.file_name().to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            if listening.iter().any(|l| l == inode) {
                listeners.push(fd);
            }
        } else if target == "anon_inode:[eventpoll]" {
            epolls.push(fd);
        }
    }
    let watched: Vec<String> = epolls
        .iter()
        .filter_map(|e| std::fs::read_to_string(h.c.path(&format!("/proc/{pid}/fdinfo/{e}"))).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("tfd:"))
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    let n = listeners.len();
    (n, listeners.iter().filter(|l| watched.contains(l)).count())
}

/// Inodes of listening Unix stream sockets (flag __SO_ACCEPTCON) in this
/// network namespace, which the containers share with the host.
fn listening_unix_inodes() -> Vec<String> {
    const SO_ACCEPTCON: u32 = 0x0001_0000;
    std::fs::read_to_string("/proc/net/unix")
        .expect("/proc/net/unix")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            (flags & SO_ACCEPTCON != 0).then(|| f.get(6).map(|s| (*s).to_owned()))?
        })
        .collect()
}
