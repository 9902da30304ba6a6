//! The daemon's life as an operator sees it: usage and exit codes, the config
//! file, environment precedence, `-d`, `-t`, `max_clients`, SIGHUP reload,
//! shutdown fencing, systemd socket activation and readiness notification.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use crate::support::wait::{until_blocking, wait_lock_clients_at};
use crate::support::{bytes, example, holding, next_frame, until, Daemon, Holder};

fn virtlockd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_virtlockd"));
    c.env("LIBVIRT_LOG_OUTPUTS", "1:stderr")
        .stdin(Stdio::null());
    c
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let mut code = None;
    until_blocking("daemon exit", limit, || match child.try_wait() {
        Ok(Some(st)) => {
            code = st.code();
            true
        }
        _ => false,
    });
    code
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("virtlockd.conf");
    std::fs::write(&p, text).unwrap();
    p
}

/// In a child before exec: puts `a` at fd 3 and `b` at fd 4, wherever they are
/// now (either may already sit at 3 or 4). Only async-signal-safe calls.
fn place_fds(a: i32, b: i32) {
    // SAFETY: dup/dup2 on fds this process owns.
    unsafe {
        let a = nix::libc::fcntl(a, nix::libc::F_DUPFD, 10);
        let b = nix::libc::fcntl(b, nix::libc::F_DUPFD, 10);
        nix::libc::dup2(a, 3);
        nix::libc::dup2(b, 4);
    }
}

#[test]
fn usage_and_exit_codes() {
    let out = virtlockd().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));

    let out = virtlockd().arg("-h").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "--daemon",
        "--timeout",
        "--runtime-dir",
        "Lock socket:",
        "SIGHUP",
        "LIBVIRT_DEBUG",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }

    let out = virtlockd().arg("-V").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("virtlockd "));

    for bad in ["-1", "abc", "2147484"] {
        let out = virtlockd().args(["-t", bad]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "-t {bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid value for timeout"));
    }
}

#[test]
fn config_file_errors_are_clear_and_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "max_clients = \"many\"\n");
    let out = virtlockd()
        .arg("-f")
        .arg(&cfg)
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_clients"), "{err}");

    let out = virtlockd()
        .args(["-f", "/nonexistent/virtlockd.conf", "--runtime-dir"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn libvirt_sample_config_and_unknown_keys_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "# libvirt's augeas test values\nlog_level = 3\nlog_filters=\"1:locking 4:object 4:json 4:event 1:util\"\n\
         max_clients = 1024\nadmin_max_clients = 5\nno_such_key = 1\n",
    );
    let cfg = cfg.to_string_lossy().into_owned();
    let d = Daemon::start_in(dir, &["-f", &cfg]);
    d.client().await.ping().await.unwrap();
    assert!(
        d.log().contains("no_such_key"),
        "unknown key not warned about:\n{}",
        d.log()
    );
}

#[tokio::test]
async fn shipped_sample_config_parses() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/virtlockd.conf");
    let d = Daemon::start_with(&["-f", sample]);
    d.client().await.ping().await.unwrap();
}

#[tokio::test]
async fn environment_overrides_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = dir.path().join("from-file.log");
    let from_env = dir.path().join("from-env.log");
    let cfg = write_config(
        dir.path(),
        &format!(
            "log_level = 4\nlog_outputs = \"1:file:{}\"\n",
            from_file.display()
        ),
    );
    let mut child = virtlockd()
        .arg("-f")
        .arg(&cfg)
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .env(
            "LIBVIRT_LOG_OUTPUTS",
            format!("1:file:{}", from_env.display()),
        )
        .env("LIBVIRT_DEBUG", "1")
        .spawn()
        .unwrap();
    let sock = dir.path().join("run/virtlockd-sock");
    let admin_sock = dir.path().join("run/virtlockd-admin-sock");
    until("daemon start", Duration::from_secs(10), || {
        UnixStream::connect(&sock).is_ok() && UnixStream::connect(&admin_sock).is_ok()
    })
    .await;
    let mut c = Client::connect(&sock).await.unwrap();
    c.register(&owner("vm", 1, 4_000_001)).await.unwrap();
    drop(c);
    // The daemon has handled the disconnect (and logged it) before it stops.
    wait_lock_clients_at(&admin_sock, 0, || {
        std::fs::read_to_string(&from_env).unwrap_or_default()
    })
    .await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
    let env_log = std::fs::read_to_string(&from_env).unwrap_or_default();
    assert!(
        env_log.contains("debug"),
        "LIBVIRT_DEBUG=1 should log debug lines:\n{env_log}"
    );
    assert!(!from_file.exists() || std::fs::read_to_string(&from_file).unwrap().is_empty());
}

#[tokio::test]
async fn daemon_mode_returns_when_ready_and_reports_failure() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let daemonize = || {
        virtlockd()
            .arg("-d")
            .arg("--runtime-dir")
            .arg(&run)
            .output()
            .unwrap()
    };
    let out = daemonize();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ready means accepting, at once.
    let mut c = Client::connect(run.join("virtlockd-sock")).await.unwrap();
    c.ping().await.unwrap();
    let pid: i32 = std::fs::read_to_string(run.join("virtlockd.pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(pid as u32, std::process::id());

    let out = daemonize();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "error: Unable to obtain pidfile. Check /var/log/messages or run without --daemon"
        ),
        "{err}"
    );
    c.ping().await.unwrap();

    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    until("daemon exit", Duration::from_secs(10), || {
        kill(Pid::from_raw(pid), None).is_err()
    })
    .await;
    assert!(!run.join("virtlockd.pid").exists());
}

#[tokio::test]
async fn timeout_exits_when_idle_but_never_while_a_lock_is_held() {
    let mut d = Daemon::start_with(&["--timeout=1"]);
    let ls = d.base().join("ls");
    drop(holding(&d, &ls, b"r").await);
    // No client connected, one lease held (its owner lives elsewhere).
    // Deliberately let three idle timeouts pass: the daemon must outlive them.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        d.alive(),
        "libvirt drops held locks on timeout; we must not"
    );
    assert_eq!(d.kernel_locks_on(&ls.join("r")), ["POSIX WRITE 0-0"]);
    let mut c = d.client().await;
    c.register(&owner("vm", 1, 4_000_001)).await.unwrap();
    c.release(&bytes(&ls), b"r").await.unwrap();
    drop(c);
    d.wait_exited(Duration::from_secs(6), "idle daemon did not time out");
}

/// A call on a connection still queued in the backlog gets no answer. With a
/// short `limit`, deliberately a wait for nothing: no answer may come within it.
async fn answered_within(c: &mut Client, limit: Duration) -> bool {
    tokio::time::timeout(limit, c.ping()).await.is_ok()
}

#[tokio::test]
async fn max_clients_queues_in_the_backlog_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "max_clients = 2\n");
    let cfg_s = cfg.to_string_lossy().into_owned();
    let d = Daemon::start_in(dir, &["-f", &cfg_s]);
    let mut a = d.client().await;
    let mut b = d.client().await;
    assert!(answered_within(&mut a, Duration::from_secs(2)).await);
    assert!(answered_within(&mut b, Duration::from_secs(2)).await);
    let mut queued = d.client().await; // connect() succeeds: the kernel queues it
    assert!(!answered_within(&mut queued, Duration::from_millis(300)).await);
    drop(a);
    // Its PING is still in the socket; the PONG arrives once it is accepted.
    let pong = next_frame(&mut queued, "queued client never accepted").await;
    assert!(pong.is_some());
    assert!(d.log().contains("client limit reached"));

    // SIGHUP re-reads max_clients: raising it admits the next one at once.
    let mut waiting = d.client().await;
    assert!(!answered_within(&mut waiting, Duration::from_millis(300)).await);
    std::fs::write(&cfg, "max_clients = 5\n").unwrap();
    kill(Pid::from_raw(d.pid() as i32), Signal::SIGHUP).unwrap();
    let pong = next_frame(
        &mut waiting,
        "raised limit did not admit the waiting client",
    )
    .await;
    assert!(pong.is_some());
}

#[tokio::test]
async fn shutdown_fences_lease_holders_and_frees_every_lease() {
    let mut d = Daemon::start();
    let ls = d.base().join("ls");
    // A QEMU-like holder: its own connection, registered with its own pid.
    let mut holder = Holder::start(&d, &ls, "held", &[]).await;
    // And a lease of a foreign owner on a libvirtd-style connection.
    let mut c = d.client().await;
    c.register(&owner("vm2", 2, 4_000_002)).await.unwrap();
    c.acquire(&bytes(&ls), b"other", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();

    assert_eq!(d.stop_with(Signal::SIGTERM), Some(0));
    assert_eq!(
        holder.wait_signal(Duration::from_secs(5)).await,
        Some(libc::SIGTERM)
    );
    assert!(!ls.join("held").exists() && !ls.join("other").exists());
    let log = d.log();
    assert!(log.contains("fencing lease owner"), "{log}");
    assert!(log.contains("lease released"), "{log}");
}

/// The daemon started as systemd starts it: `a` at fd 3 and `b` at fd 4 with
/// LISTEN_PID (its own pid: the shell execs it), LISTEN_FDS=2 and `names`.
fn activated(run: &Path, names: &str, a: &UnixListener, b: &UnixListener) -> Command {
    let (afd, bfd) = (a.as_raw_fd(), b.as_raw_fd());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" --runtime-dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_virtlockd"))
        .arg(run)
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", names)
        .env("LIBVIRT_LOG_OUTPUTS", "1:stderr")
        .stdin(Stdio::null());
    // SAFETY: only async-signal-safe fcntl/dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            place_fds(afd, bfd);
            Ok(())
        });
    }
    cmd
}

#[tokio::test]
async fn socket_activation_uses_the_passed_sockets_and_notifies_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("activated-sock");
    let admin_path = dir.path().join("activated-admin-sock");
    let lock = UnixListener::bind(&lock_path).unwrap();
    let admin = UnixListener::bind(&admin_path).unwrap();
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = activated(
        &dir.path().join("run"),
        "virtlockd.socket:virtlockd-admin.socket",
        &lock,
        &admin,
    );
    cmd.env("NOTIFY_SOCKET", &notify_path);
    let mut child = cmd.spawn().unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY=1 not received");
    assert_eq!(&buf[..n], b"READY=1");

    let mut c = Client::connect(&lock_path).await.unwrap();
    c.register(&owner("vm", 1, 4_000_001)).await.unwrap();
    assert!(
        !dir.path().join("run/virtlockd-sock").exists(),
        "must not bind its own"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let n = notify.recv(&mut buf).expect("STOPPING=1 not received");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
    assert!(
        lock_path.exists() && admin_path.exists(),
        "activated sockets are systemd's"
    );
}

#[test]
fn unclaimed_activation_fds_are_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let lock = UnixListener::bind(dir.path().join("s1")).unwrap();
    let other = UnixListener::bind(dir.path().join("s2")).unwrap();
    let mut cmd = activated(
        &dir.path().join("run"),
        "virtlockd.socket:something-else.socket",
        &lock,
        &other,
    );
    cmd.stderr(Stdio::piped());
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unclaimed"));
}

#[tokio::test]
async fn open_files_soft_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" --runtime-dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_virtlockd"))
        .arg(&run)
        .env("LIBVIRT_LOG_OUTPUTS", "1:stderr")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    until("daemon start", Duration::from_secs(10), || {
        UnixStream::connect(run.join("virtlockd-sock")).is_ok()
    })
    .await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    wait_exit(&mut child, Duration::from_secs(10));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[3], f[4], "soft limit not raised: {line}");
    assert_ne!(f[3], "256", "{line}");
}

#[tokio::test]
async fn clients_of_another_uid_are_disconnected() {
    if !nix::unistd::geteuid().is_root() {
        crate::support::skip(
            "clients_of_another_uid_are_disconnected",
            "needs root to switch uid",
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    // Let another uid reach the socket: only the daemon's own check remains.
    for p in [
        d.dir.path().to_path_buf(),
        d.dir.path().join("run"),
        d.socket(),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    // A copy the other uid can execute wherever the checkout lives.
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.path().join("lease_holder");
    crate::support::copy_executable(&example("lease_holder"), &bin);
    let out = Command::new(&bin)
        .arg(d.socket())
        .arg("/tmp")
        .arg("x")
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connection closed") || err.contains("reset") || err.contains("Broken pipe"),
        "{err}"
    );
    assert!(
        d.log().contains("Disallowing client with uid 65534"),
        "{}",
        d.log()
    );
    d.client().await.ping().await.unwrap();
}
