//! Admin calls that must neither hurt a lease nor stall the lock server (a held
//! lease offered as a log file, a log output whose open blocks), libvirt's
//! limits on what admin calls carry, and admin settings across a live upgrade
//! and a reload.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use bytes::BytesMut;
use virtlockd::protocol::admin::{self, procedure as p, TypedParam, Value};
use virtlockd::protocol::xdr::XdrWrite;

use virtlockd::client::{Client, ClientError};

use crate::support::admin::{
    admin_client, admin_ready, args, call, client_args, daemon_timeout_args, flags_args,
    lock_client_ids, params_args, server_args, shut_down,
};
use crate::support::namespaced::{prerequisites, Impl, Namespaced, PRIVATE_MOUNTS};
use crate::support::wait::wait_upgraded_on;
use crate::support::{assert_err, wait_logged, Daemon, Holder};

fn outputs_args(outputs: &str) -> BytesMut {
    args(|b| {
        b.put_xdr_opt_string(Some(outputs.as_bytes()));
        b.put_xdr_u32(0);
    })
}

#[tokio::test]
async fn a_held_lease_is_refused_as_a_log_output_and_stays_locked() {
    let d = Daemon::start();
    let ls = d.base().join("ls");
    let lease = ls.join("lease");
    let _holder = Holder::start(&d, &ls, "lease", &[]).await;
    assert_eq!(d.kernel_locks_on(&lease), ["POSIX WRITE 0-0"]);
    let mut admin = admin_client(&d).await;
    assert_err(
        call(
            &mut admin,
            p::CONNECT_SET_LOGGING_OUTPUTS,
            outputs_args(&format!("1:file:{}", lease.display())),
        )
        .await,
        8,
        0,
        &format!(
            "invalid argument: cannot log to {}: the file is held as a lease",
            lease.display()
        ),
    );
    // Another change of outputs closes whatever the last one opened: had the
    // lease file been opened as a log, this close would drop its lock.
    call(
        &mut admin,
        p::CONNECT_SET_LOGGING_OUTPUTS,
        outputs_args("2:stderr"),
    )
    .await
    .unwrap();
    call(&mut admin, p::CONNECT_SET_LOGGING_OUTPUTS, outputs_args(""))
        .await
        .unwrap();
    assert_eq!(d.kernel_locks_on(&lease), ["POSIX WRITE 0-0"]);
}

#[tokio::test]
async fn a_log_output_that_blocks_on_open_stalls_no_lock_client() {
    let d = Daemon::start();
    // Opening a FIFO for writing blocks until somebody opens it for reading,
    // like an open on a hung NFS mount.
    let fifo = d.dir.path().join("log.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut admin = admin_client(&d).await;
    let outputs = format!("1:file:{}", fifo.display());
    let setting = tokio::spawn(async move {
        call(
            &mut admin,
            p::CONNECT_SET_LOGGING_OUTPUTS,
            outputs_args(&outputs),
        )
        .await
    });
    // Deliberately let time pass: the call must not finish within it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!setting.is_finished(), "the open was expected to block");
    // Meanwhile lock clients and other admin clients are served.
    let mut c = d.client().await;
    tokio::time::timeout(Duration::from_secs(3), c.create_lockspace(b""))
        .await
        .expect("lock client stalled by an admin call")
        .unwrap();
    let mut other = admin_client(&d).await;
    tokio::time::timeout(
        Duration::from_secs(3),
        call(&mut other, p::CONNECT_GET_LIB_VERSION, BytesMut::new()),
    )
    .await
    .expect("admin client stalled by another admin call")
    .unwrap();
    // A reader lets the open finish; the call then succeeds.
    let reader = nix::fcntl::open(
        std::path::Path::new(std::ffi::OsStr::from_bytes(fifo.as_os_str().as_bytes())),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), setting)
        .await
        .expect("set outputs did not finish")
        .unwrap()
        .unwrap();
    call(&mut other, p::CONNECT_SET_LOGGING_OUTPUTS, outputs_args(""))
        .await
        .unwrap();
    drop(reader);
}

#[tokio::test]
async fn typed_parameter_names_of_80_bytes_are_refused_like_libvirt() {
    let d = Daemon::start();
    let mut admin = admin_client(&d).await;
    let long = "x".repeat(80);
    let param = |field: &str| [TypedParam::new(field, Value::UInt(0))];
    let too_big = format!("internal error: parameter {long} too big for destination");
    for proc_ in [
        p::SERVER_SET_THREADPOOL_PARAMETERS,
        p::SERVER_SET_CLIENT_LIMITS,
    ] {
        // Checked after the server lookup...
        assert_err(
            call(&mut admin, proc_, params_args("nosuch", &param(&long), 0)).await,
            95,
            62,
            "Server not found: no server with matching name 'nosuch' found",
        );
        // ...and before the flags and the names.
        assert_err(
            call(
                &mut admin,
                proc_,
                params_args("virtlockd", &param(&long), 1),
            )
            .await,
            1,
            0,
            &too_big,
        );
        // 79 bytes fit: that name is then merely unknown.
        let fits = "y".repeat(79);
        let r = call(
            &mut admin,
            proc_,
            params_args("virtlockd", &param(&fits), 0),
        )
        .await;
        assert_err(
            r,
            74,
            0,
            &format!("argument unsupported: parameter '{fits}' not supported"),
        );
    }
}

/// The same over-long names sent to libvirt's virtlockd and to ours: the same
/// replies, field by field.
#[tokio::test]
async fn long_parameter_names_get_the_same_errors_from_libvirts_daemon_and_ours() {
    let test = "long_parameter_names_get_the_same_errors_from_libvirts_daemon_and_ours";
    if !prerequisites(test) {
        return;
    }
    let long = "x".repeat(80);
    let fits = "y".repeat(79);
    let mut replies = Vec::new();
    for which in [Impl::Libvirt, Impl::Ours] {
        let mut ns = Namespaced::start(which);
        let socket = admin_ready(&mut ns).await;
        let mut c = Client::connect(&socket).await.expect("connect");
        let mut seen = Vec::new();
        for proc_ in [
            p::SERVER_SET_THREADPOOL_PARAMETERS,
            p::SERVER_SET_CLIENT_LIMITS,
        ] {
            for (server, field, flags) in [
                ("virtlockd", &long, 0),
                ("virtlockd", &long, 1),
                ("virtlockd", &fits, 0),
                ("nosuch", &long, 0),
            ] {
                let params = [TypedParam::new(field, Value::UInt(0))];
                let r = call(&mut c, proc_, params_args(server, &params, flags)).await;
                seen.push(match r {
                    Ok(b) => format!("ok {b:?}"),
                    Err(e) => match e.remote() {
                        Some(e) => format!("{} {} {}", e.code, e.domain, e.message),
                        None => format!("not a remote error: {e}"),
                    },
                });
            }
        }
        replies.push(seen);
    }
    assert_eq!(replies[1], replies[0]);
}

/// SERVER_SET_CLIENT_LIMITS / SERVER_SET_THREADPOOL_PARAMETERS of the lock
/// server, which must succeed.
async fn set(admin: &mut Client, proc_: i32, params: &[TypedParam]) {
    call(admin, proc_, params_args("virtlockd", params, 0))
        .await
        .unwrap();
}

/// SERVER_GET_CLIENT_LIMITS / SERVER_GET_THREADPOOL_PARAMETERS as (field, value).
async fn uint_params(admin: &mut Client, proc_: i32) -> Vec<(String, u32)> {
    let reply = call(admin, proc_, server_args("virtlockd", 0))
        .await
        .unwrap();
    admin::decode_params(&reply, 64)
        .unwrap()
        .into_iter()
        .filter_map(|p| match p.value {
            Value::UInt(v) => Some((p.field, v)),
            _ => None,
        })
        .collect()
}

async fn uint_param(admin: &mut Client, proc_: i32, field: &str) -> u32 {
    let all = uint_params(admin, proc_).await;
    all.iter()
        .find(|(f, _)| f == field)
        .unwrap_or_else(|| panic!("no {field} in {all:?}"))
        .1
}

#[tokio::test]
async fn admin_settings_survive_a_live_upgrade() {
    let mut d = Daemon::start();
    let mut admin = admin_client(&d).await;
    let limits = [
        TypedParam::new("nclients_max", Value::UInt(50)),
        TypedParam::new("nclients_unauth_max", Value::UInt(7)),
    ];
    set(&mut admin, p::SERVER_SET_CLIENT_LIMITS, &limits).await;
    let prio = [TypedParam::new("prioWorkers", Value::UInt(3))];
    set(&mut admin, p::SERVER_SET_THREADPOOL_PARAMETERS, &prio).await;
    // One second idle, once this connection (carried over the upgrade) closes.
    call(
        &mut admin,
        p::CONNECT_SET_DAEMON_TIMEOUT,
        daemon_timeout_args(1, 0),
    )
    .await
    .unwrap();
    d.signal(Signal::SIGUSR1);
    wait_upgraded_on(&mut admin, 1, || d.log()).await;
    let limits = uint_params(&mut admin, p::SERVER_GET_CLIENT_LIMITS).await;
    assert!(limits.contains(&("nclients_max".into(), 50)), "{limits:?}");
    assert!(
        limits.contains(&("nclients_unauth_max".into(), 7)),
        "{limits:?}"
    );
    assert_eq!(
        uint_param(
            &mut admin,
            p::SERVER_GET_THREADPOOL_PARAMETERS,
            "prioWorkers"
        )
        .await,
        3
    );
    // The timeout too: with the last client gone, the new image exits.
    drop(admin);
    d.wait_exited(Duration::from_secs(10), "idle timeout lost in the upgrade");
}

/// (nclients_max, nclients_unauth_max) of the lock server.
async fn client_limits(admin: &mut Client) -> (u32, u32) {
    (
        uint_param(admin, p::SERVER_GET_CLIENT_LIMITS, "nclients_max").await,
        uint_param(admin, p::SERVER_GET_CLIENT_LIMITS, "nclients_unauth_max").await,
    )
}

#[tokio::test]
async fn a_reload_keeps_the_unauth_limit_within_max_clients() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("virtlockd.conf");
    std::fs::write(&cfg, "max_clients = 20\n").unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let d = Daemon::start_in(dir, &["-f", &cfg_s]);
    let mut admin = admin_client(&d).await;
    let mut reloads = 0;
    let mut reload = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        kill(Pid::from_raw(d.pid() as i32), Signal::SIGHUP).unwrap();
        reloads += 1;
        reloads
    };
    assert_eq!(client_limits(&mut admin).await, (20, 20));
    // Never set apart: the unauth limit follows max_clients, as at startup.
    let n = reload("max_clients = 40\n");
    wait_logged(&d, "client limits set", n, "reload").await;
    assert_eq!(client_limits(&mut admin).await, (40, 40));
    // Lowered by the admin API: kept, but never above max_clients.
    let unauth = [TypedParam::new("nclients_unauth_max", Value::UInt(10))];
    set(&mut admin, p::SERVER_SET_CLIENT_LIMITS, &unauth).await;
    let n = reload("max_clients = 60\n");
    wait_logged(&d, "client limits set", n, "reload").await;
    assert_eq!(client_limits(&mut admin).await, (60, 10));
    let n = reload("max_clients = 4\n");
    wait_logged(&d, "client limits set", n, "reload").await;
    assert_eq!(client_limits(&mut admin).await, (4, 4));
}

/// Whether a daemon can be started in a private mount namespace; prints the
/// skip note if not.
fn can_unshare_mounts(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("needs root for a mount namespace")
    } else if Path::new("/run/nscd/socket").exists() || Path::new("/var/run/nscd/socket").exists() {
        Some("nscd would answer name lookups without reading /etc/group")
    } else if !Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        Some("cannot unshare a mount namespace")
    } else {
        None
    };
    if let Some(r) = reason {
        crate::support::skip(test, r);
    }
    reason.is_none()
}

#[tokio::test]
async fn client_info_waiting_on_nss_stalls_no_lock_client() {
    let test = "client_info_waiting_on_nss_stalls_no_lock_client";
    if !can_unshare_mounts(test) {
        return;
    }
    // The daemon sees a FIFO as /etc/group: a group lookup blocks in its open
    // until the test opens the write end, like a lookup waiting on a dead LDAP
    // server.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("group.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(PRIVATE_MOUNTS)
        .args(["sh", "-c"])
        .arg(r#"f=$1; bin=$2; shift 2; mount --bind "$f" /etc/group && exec "$bin" "$@""#)
        .arg("sh")
        .arg(&fifo)
        .arg(env!("CARGO_BIN_EXE_virtlockd"));
    let d = Daemon::start_command(cmd, dir, &[]);
    let mut c = d.client().await;
    c.create_lockspace(b"").await.unwrap();
    let mut admin = admin_client(&d).await;
    let id = lock_client_ids(&mut admin).await[0];
    let info = tokio::spawn(async move {
        call(
            &mut admin,
            p::CLIENT_GET_INFO,
            client_args("virtlockd", id, 0),
        )
        .await
    });
    // Deliberately let time pass: the call must not finish within it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !info.is_finished(),
        "the group lookup was expected to block"
    );
    tokio::time::timeout(Duration::from_secs(3), c.create_lockspace(b""))
        .await
        .expect("lock client stalled by client-info")
        .unwrap();
    // Opening the FIFO for writing lets the lookup go on. It is fed until the
    // reply arrives: a lookup may open (and close) the file more than once.
    let fifo = d.dir.path().join("group.fifo");
    let done = Arc::new(AtomicBool::new(false));
    let feeder = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || feed_fifo(&fifo, b"root:x:0:\n", &done))
    };
    let reply = tokio::time::timeout(Duration::from_secs(5), info).await;
    done.store(true, Ordering::Relaxed);
    let opened = feeder.join().expect("feeder thread");
    let reply = reply.expect("client-info did not finish").unwrap().unwrap();
    // What it waited on was /etc/group: a write end opens only while a reader
    // has the FIFO open.
    assert!(opened > 0, "the daemon never opened /etc/group");
    let params = admin::decode_params(&reply, 64).unwrap();
    let group = params.iter().find(|p| p.field == "unix_group_name");
    assert_eq!(
        group.map(|p| &p.value),
        Some(&Value::String("root".into())),
        "{params:?}"
    );
}

/// DAEMON_SHUTDOWN is SIGTERM's shutdown: every client is closed, so every
/// lease owner still running is fenced, PRESERVE flag or not.
#[tokio::test]
async fn daemon_shutdown_fences_every_lease_owner() {
    let mut d = Daemon::start();
    let ls = d.base().join("ls");
    let mut holder = Holder::start(&d, &ls, "held", &[]).await;
    let mut admin = admin_client(&d).await;
    shut_down(&mut admin).await;
    assert_eq!(
        holder.wait_signal(Duration::from_secs(10)).await,
        Some(libc::SIGTERM)
    );
    d.wait_exited(Duration::from_secs(10), "daemon still running");
    assert!(d.log().contains("fencing lease owner"), "{}", d.log());
}

/// Opens the FIFO for writing whenever a reader has it open, and writes
/// `line` to it, until `done`; returns how many times a reader had it open.
/// Bounded: gives up after 10 s.
///
/// The reader may close it unread: glibc's files NSS module cannot use a FIFO
/// (it seeks) and then asks the next source (nss-systemd knows root's group).
fn feed_fifo(fifo: &Path, line: &[u8], done: &AtomicBool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut readers = 0;
    while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
        // Non-blocking: fails with ENXIO while no reader has it open.
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo);
        match opened {
            Ok(mut w) => {
                readers += 1;
                // EPIPE if the reader closed it unread.
                let _ = std::io::Write::write_all(&mut w, line);
                drop(w);
                // A repeated line is harmless; a busy loop is not.
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    readers
}

/// Admin CLIENT_CLOSE naming the calling connection itself: libvirt closes it
/// without a reply, and so do we. The caller's earlier replies still arrive.
#[tokio::test]
async fn closing_the_calling_admin_connection_itself_gets_eof_not_a_reply() {
    async fn close_self(socket: &std::path::Path, probes_before: u64) -> String {
        let mut c = Client::connect(socket).await.expect("connect");
        // Ids count from 1 per server: the readiness probes came first.
        let own = probes_before + 1;
        call(&mut c, p::CONNECT_OPEN, flags_args(0))
            .await
            .expect("open");
        match call(&mut c, p::CLIENT_CLOSE, client_args("admin", own, 0)).await {
            Ok(b) => format!("reply {b:?}"),
            Err(ClientError::Closed) => "closed".to_owned(),
            Err(e) => format!("error {e}"),
        }
    }
    let d = Daemon::start();
    assert_eq!(close_self(&d.admin_socket(), 1).await, "closed");
    // The daemon goes on serving other admin clients.
    let mut other = admin_client(&d).await;
    call(&mut other, p::CONNECT_OPEN, flags_args(0))
        .await
        .expect("another admin client is served");

    let test = "closing_the_calling_admin_connection_itself_gets_eof_not_a_reply";
    if !prerequisites(test) {
        return;
    }
    let mut ns = Namespaced::start(Impl::Libvirt);
    let socket = admin_ready(&mut ns).await;
    assert_eq!(close_self(&socket, 1).await, "closed", "libvirt's daemon");
}
