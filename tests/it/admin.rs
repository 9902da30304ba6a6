//! The admin socket: Debian's real `virt-admin` (libvirt 9.0) against our daemon,
//! every command with the output and exit status libvirt's virtlockd gives, plus
//! raw admin-protocol calls for the error paths virt-admin cannot reach.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use virtlockd::client::owner;
use virtlockd::protocol::admin::{self, procedure as p, TypedParam, Value};
use virtlockd::protocol::xdr::XdrWrite;

use crate::support::admin::{
    admin_client, admin_ready, args, call, client_args, daemon_timeout_args, flags_args,
    lock_client_ids, params_args, server_args, shut_down,
};
use crate::support::namespaced::{prerequisites, Impl, Namespaced};
use crate::support::process::outcome;
use crate::support::wait::within;
use crate::support::{assert_err, bytes, next_frame, Daemon, Holder};

/// Whether virt-admin is installed; prints the skip note if not.
fn have_virt_admin(test: &str) -> bool {
    let ok = Command::new("virt-admin")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        crate::support::skip(test, "virt-admin not installed (package libvirt-clients)");
    }
    ok
}

/// A daemon for a virt-admin test; `None` (and the skip note) without virt-admin.
fn daemon_for_virt_admin(test: &str) -> Option<Daemon> {
    have_virt_admin(test).then(Daemon::start)
}

/// Runs virt-admin against `d`; returns (exit code, stdout, stderr).
fn va(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    va_at(&d.admin_socket(), args)
}

/// Runs virt-admin against the admin socket `socket`.
fn va_at(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let uri = format!("virtlockd:///system?socket={}", socket.display());
    let out = Command::new("virt-admin")
        .arg("-c")
        .arg(uri)
        .args(args)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .expect("run virt-admin");
    outcome(out)
}

#[track_caller]
fn va_ok(d: &Daemon, args: &[&str]) -> String {
    let (code, out, err) = va(d, args);
    assert_eq!(code, 0, "virt-admin {args:?}: {err}");
    out
}

#[track_caller]
fn va_fails(d: &Daemon, args: &[&str], stderr: &str) {
    let (code, out, err) = va(d, args);
    assert_eq!(
        (code, err.as_str()),
        (1, stderr),
        "virt-admin {args:?}: {out}"
    );
}

#[tokio::test]
async fn virt_admin_server_commands_match_libvirt() {
    let Some(d) = daemon_for_virt_admin("virt_admin_server_commands_match_libvirt") else {
        return;
    };
    assert_eq!(
        va_ok(&d, &["srv-list"]),
        " Id   Name\n-----------------\n 0    admin\n 1    virtlockd\n\n"
    );
    assert!(va_ok(&d, &["version"]).contains("Running against daemon: 9.0.0\n"));
    let pool = "minWorkers     : 0\nmaxWorkers     : 0\nnWorkers       : 0\nfreeWorkers    : 0\nprioWorkers    : 0\njobQueueDepth  : 0\n\n";
    assert_eq!(va_ok(&d, &["srv-threadpool-info", "virtlockd"]), pool);
    assert_eq!(va_ok(&d, &["srv-threadpool-info", "admin"]), pool);
    va_fails(
        &d,
        &["srv-threadpool-set", "virtlockd", "--max-workers", "3"],
        "error: Unable to change server workerpool parameters\nerror: invalid argument: maxWorkers must not be switched from zero to non-zero and vice versa\n",
    );
    va_fails(
        &d,
        &["srv-threadpool-set", "virtlockd", "--min-workers", "3"],
        "error: Unable to change server workerpool parameters\nerror: invalid argument: minWorkers cannot be larger than maxWorkers\n",
    );
    va_ok(
        &d,
        &["srv-threadpool-set", "virtlockd", "--max-workers", "0"],
    );
    va_ok(
        &d,
        &["srv-threadpool-set", "virtlockd", "--priority-workers", "2"],
    );
    assert!(va_ok(&d, &["srv-threadpool-info", "virtlockd"]).contains("prioWorkers    : 2\n"));
    va_fails(
        &d,
        &["srv-threadpool-info", "nope"],
        "error: Server not found: No server named 'nope'\n",
    );

    let _a = d.client().await;
    let mut b = d.client().await;
    b.ping().await.unwrap();
    assert_eq!(
        va_ok(&d, &["srv-clients-info", "virtlockd"]),
        "nclients_max        : 1024\nnclients            : 2\nnclients_unauth_max : 1024\nnclients_unauth     : 0\n\n"
    );
    assert!(va_ok(&d, &["srv-clients-info", "admin"])
        .starts_with("nclients_max        : 5000\nnclients            : 1\n"));
    va_fails(
        &d,
        &["srv-clients-set", "virtlockd", "--max-clients", "10"],
        "error: Unable to change server's client-related configuration limits\nerror: invalid argument: The overall maximum number of clients waiting for authentication must not be less than the overall maximum number of clients\n",
    );
    va_ok(
        &d,
        &["srv-clients-set", "virtlockd", "--max-unauth-clients", "20"],
    );
    assert_eq!(
        va_ok(&d, &["srv-clients-info", "virtlockd"]),
        "nclients_max        : 1024\nnclients            : 2\nnclients_unauth_max : 20\nnclients_unauth     : 0\n\n"
    );
    va_fails(
        &d,
        &["srv-update-tls", "virtlockd"],
        "error: Unable to update server's tls related files.\nerror: internal error: no tls service found, unable to update tls files\n",
    );
    va_fails(
        &d,
        &["client-disconnect", "virtlockd", "999"],
        "error: Client not found: No client with matching ID '999'\n",
    );
    va_fails(
        &d,
        &["client-info", "nope", "1"],
        "error: Server not found: No server named 'nope'\n",
    );
    va_ok(&d, &["daemon-timeout", "--timeout", "0"]);
}

#[tokio::test]
async fn virt_admin_lists_clients_and_their_identity() {
    let Some(d) = daemon_for_virt_admin("virt_admin_lists_clients_and_their_identity") else {
        return;
    };
    let mut called = d.client().await;
    called.ping().await.unwrap();
    called.create_lockspace(b"").await.unwrap();
    let silent = d.client().await;
    let mut admin = admin_client(&d).await;
    let ids = lock_client_ids(&mut admin).await;
    // Numbered from 1 in connection order (the harness's readiness probe was 1).
    assert_eq!(ids, vec![2, 3]);
    let list = va_ok(&d, &["srv-clients-list", "virtlockd"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], " Id   Transport   Connected since");
    assert_eq!(lines.len(), 5, "{list}");
    for (line, id) in lines[2..4].iter().zip(["2", "3"]) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cols[0], cols[1]), (id, "unix"), "{line}");
        assert!(cols[3].ends_with("+0000"), "{line}");
    }

    let info = va_ok(&d, &["client-info", "virtlockd", "2"]);
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap();
    let gid = nix::unistd::getegid();
    let group = nix::unistd::Group::from_gid(gid).unwrap().unwrap();
    let expected_tail = format!(
        "transport      : unix\nreadonly       : no\nunix_user_id   : {}\nunix_user_name : {}\nunix_group_id  : {}\nunix_group_name: {}\nunix_process_id: {}\n\n",
        user.uid, user.name, gid, group.name, std::process::id()
    );
    assert!(
        info.starts_with("id             : 2\nconnection_time: "),
        "{info}"
    );
    assert!(info.ends_with(&expected_tail), "{info}");
    // libvirt builds a client's identity at its first call.
    va_fails(
        &d,
        &["client-info", "virtlockd", "3"],
        "error: failed to retrieve client identity information for client '3' connected to server 'virtlockd'\nerror: internal error: No identity information available for client\n",
    );
    drop(silent);
    // The admin server shows its own clients too (this test's raw one is id 2,
    // after the readiness probe).
    assert!(va_ok(&d, &["srv-clients-list", "admin"]).contains("\n 2    unix"));
    // ...and disconnects them like lock clients.
    assert_eq!(
        va_ok(&d, &["client-disconnect", "admin", "2"]),
        "Client '2' disconnected\n"
    );
    assert!(admin.recv_frame().await.map_or(true, |f| f.is_none()));
}

#[tokio::test]
async fn virt_admin_changes_logging_live() {
    let Some(d) = daemon_for_virt_admin("virt_admin_changes_logging_live") else {
        return;
    };
    assert_eq!(va_ok(&d, &["daemon-log-filters"]), " Logging filters: \n\n");
    va_ok(&d, &["daemon-log-filters", "--filters", "1:rpc 3:util.foo"]);
    assert_eq!(
        va_ok(&d, &["daemon-log-filters"]),
        " Logging filters: 1:*rpc* 3:*util.foo* \n\n"
    );
    va_ok(&d, &["daemon-log-filters", "--filters", ""]);
    assert_eq!(va_ok(&d, &["daemon-log-filters"]), " Logging filters: \n\n");
    va_fails(
        &d,
        &["daemon-log-filters", "--filters", "bogus"],
        "error: Unable to change daemon logging settings\nerror: invalid argument: Malformed format for filter 'bogus'\n",
    );

    let file = d.dir.path().join("admin-set.log");
    let outputs = format!("1:stderr 1:file:{}", file.display());
    va_ok(&d, &["daemon-log-outputs", "--outputs", &outputs]);
    assert_eq!(
        va_ok(&d, &["daemon-log-outputs"]),
        format!(" Logging outputs: {outputs}\n\n")
    );
    // The new output is in effect: a connection's debug lines (let through by
    // a filter) reach the file.
    va_ok(&d, &["daemon-log-filters", "--filters", "1:connection"]);
    let mut c = d.client().await;
    c.create_lockspace(b"").await.unwrap();
    drop(c);
    let logged = within(Duration::from_secs(5), || {
        !std::fs::read_to_string(&file)
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    assert!(logged, "nothing logged to {}", file.display());
    va_fails(
        &d,
        &["daemon-log-outputs", "--outputs", "9:foo"],
        "error: Unable to change daemon logging settings\nerror: invalid argument: Invalid log priority '9' for log output '9:foo'\n",
    );
    va_ok(&d, &["daemon-log-outputs", "--outputs", ""]);
    assert_eq!(
        va_ok(&d, &["daemon-log-outputs"]),
        " Logging outputs: 2:stderr\n\n"
    );
}

#[tokio::test]
async fn client_disconnect_is_a_hang_up_release_and_fencing_for_an_owner() {
    let Some(d) =
        daemon_for_virt_admin("client_disconnect_is_a_hang_up_release_and_fencing_for_an_owner")
    else {
        return;
    };
    let disks = d.base();
    let own = disks.join("own.img");
    let foreign = disks.join("foreign.img");
    std::fs::write(&own, b"").unwrap();
    std::fs::write(&foreign, b"").unwrap();

    // QEMU's own connection: registered with its own pid.
    let mut holder = Holder::start(&d, std::path::Path::new(""), own.to_str().unwrap(), &[]).await;
    let holder_pid = holder.child.id().unwrap() as i32;
    // libvirtd's kind: registers a pid that is not its own.
    let mut libvirtd = d.client().await;
    libvirtd
        .register(&owner("vm2", 2, 4_000_002))
        .await
        .unwrap();
    libvirtd.acquire(b"", &bytes(&foreign), 0).await.unwrap();

    let mut admin = admin_client(&d).await;
    let ids = lock_client_ids(&mut admin).await;
    assert_eq!(ids.len(), 2);
    let info = call(
        &mut admin,
        p::CLIENT_GET_INFO,
        client_args("virtlockd", ids[0], 0),
    )
    .await
    .unwrap();
    let params = admin::decode_params(&info, 64).unwrap();
    assert!(params.contains(&TypedParam::new("unix_process_id", Value::Int(holder_pid))));

    let (foreign_id, own_id) = (ids[1].to_string(), ids[0].to_string());
    assert_eq!(
        va_ok(&d, &["client-disconnect", "virtlockd", &foreign_id]),
        format!("Client '{foreign_id}' disconnected\n")
    );
    // A foreign-pid registration releases nothing.
    assert!(libvirtd.ping().await.is_err());
    assert_eq!(d.kernel_locks_on(&foreign), ["POSIX WRITE 0-0"]);

    assert_eq!(
        va_ok(&d, &["client-disconnect", "virtlockd", &own_id]),
        format!("Client '{own_id}' disconnected\n")
    );
    // The owner's connection: its lease is released and the owner is fenced.
    let status = holder.wait(Duration::from_secs(10)).await;
    assert!(!status.success(), "owner not fenced: {status:?}");
    let released = within(Duration::from_secs(5), || {
        d.kernel_locks_on(&own).is_empty()
    })
    .await;
    assert!(released, "lease not released");
    assert_eq!(lock_client_ids(&mut admin).await, Vec::<u64>::new());
}

#[tokio::test]
async fn lowering_max_clients_suspends_accept_and_raising_it_resumes() {
    let Some(d) =
        daemon_for_virt_admin("lowering_max_clients_suspends_accept_and_raising_it_resumes")
    else {
        return;
    };
    let mut a = d.client().await;
    a.ping().await.unwrap();
    va_ok(
        &d,
        &[
            "srv-clients-set",
            "virtlockd",
            "--max-clients",
            "1",
            "--max-unauth-clients",
            "1",
        ],
    );
    let mut queued = d.client().await;
    // Deliberately a wait for nothing: no answer may come within it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), queued.ping())
            .await
            .is_err()
    );
    assert!(va_ok(&d, &["srv-clients-info", "virtlockd"])
        .starts_with("nclients_max        : 1\nnclients            : 1\n"));
    va_ok(&d, &["srv-clients-set", "virtlockd", "--max-clients", "5"]);
    let pong = next_frame(&mut queued, "raised limit did not admit the waiting client").await;
    assert!(pong.is_some());
}

#[tokio::test]
async fn raw_admin_calls_get_libvirts_errors() {
    let d = Daemon::start();
    let mut c = admin_client(&d).await;
    assert_err(
        call(&mut c, p::CONNECT_OPEN, flags_args(1)).await,
        8,
        62,
        "unsupported flags (0x1) in function adminDispatchConnectOpen",
    );
    call(&mut c, p::CONNECT_OPEN, flags_args(0)).await.unwrap();
    let v = call(&mut c, p::CONNECT_GET_LIB_VERSION, BytesMut::new())
        .await
        .unwrap();
    assert_eq!(&v[..], &9_000_000u64.to_be_bytes());
    // need_results = 0: no names, but the count.
    let r = call(
        &mut c,
        p::CONNECT_LIST_SERVERS,
        args(|b| {
            b.put_xdr_u32(0);
            b.put_xdr_u32(0);
        }),
    )
    .await
    .unwrap();
    assert_eq!(&r[..], &[0, 0, 0, 0, 0, 0, 0, 2]);
    assert_err(
        call(
            &mut c,
            p::CONNECT_LIST_SERVERS,
            args(|b| {
                b.put_xdr_u32(1);
                b.put_xdr_u32(4);
            }),
        )
        .await,
        8,
        62,
        "unsupported flags (0x4) in function adminConnectListServers",
    );
    // libvirt 9.0 accepts any flags on server lookup.
    call(&mut c, p::CONNECT_LOOKUP_SERVER, server_args("admin", 7))
        .await
        .unwrap();

    // Two texts for an unknown server or client, depending on the procedure.
    let lookup_77 = args(|b| {
        b.put_xdr_string(b"admin");
        b.put_xdr_u64(77);
        b.put_xdr_u32(0);
    });
    let no_server_rpc = "Server not found: No server named 'x'";
    let no_server_admin = "Server not found: no server with matching name 'x' found";
    let rows = [
        (
            p::SERVER_GET_THREADPOOL_PARAMETERS,
            server_args("x", 0),
            95,
            7,
            no_server_rpc,
        ),
        (
            p::SERVER_SET_THREADPOOL_PARAMETERS,
            params_args("x", &[], 0),
            95,
            62,
            no_server_admin,
        ),
        (
            p::SERVER_SET_CLIENT_LIMITS,
            params_args("x", &[], 0),
            95,
            62,
            no_server_admin,
        ),
        (
            p::CLIENT_GET_INFO,
            client_args("x", 1, 0),
            95,
            62,
            no_server_admin,
        ),
        (
            p::CLIENT_GET_INFO,
            client_args("virtlockd", 9, 0),
            96,
            62,
            "Client not found: no client with matching id '9' found",
        ),
        (
            p::CLIENT_CLOSE,
            client_args("virtlockd", 9, 0),
            96,
            7,
            "Client not found: No client with matching ID '9'",
        ),
        (
            p::SERVER_LOOKUP_CLIENT,
            lookup_77,
            96,
            7,
            "Client not found: No client with matching ID '77'",
        ),
    ];
    for (procedure, call_args, code, domain, message) in rows {
        assert_err(
            call(&mut c, procedure, call_args).await,
            code,
            domain,
            message,
        );
    }

    // Typed parameters: libvirt's validation, domain 0.
    let set = |ps: &[TypedParam]| params_args("virtlockd", ps, 0);
    assert_err(
        call(
            &mut c,
            p::SERVER_SET_THREADPOOL_PARAMETERS,
            set(&[TypedParam::new("nWorkers", Value::UInt(1))]),
        )
        .await,
        74,
        0,
        "argument unsupported: parameter 'nWorkers' not supported",
    );
    assert_err(
        call(
            &mut c,
            p::SERVER_SET_THREADPOOL_PARAMETERS,
            set(&[TypedParam::new("maxWorkers", Value::Int(0))]),
        )
        .await,
        8,
        0,
        "invalid argument: invalid type 'int' for parameter 'maxWorkers', expected 'uint'",
    );
    assert_err(
        call(
            &mut c,
            p::SERVER_SET_CLIENT_LIMITS,
            set(&[
                TypedParam::new("nclients_max", Value::UInt(9)),
                TypedParam::new("nclients_max", Value::UInt(9)),
            ]),
        )
        .await,
        8,
        0,
        "invalid argument: parameter 'nclients_max' occurs multiple times",
    );
    assert_err(
        call(&mut c, p::SERVER_SET_CLIENT_LIMITS, set(&[TypedParam::new("nclients_max", Value::UInt(9))])).await,
        8,
        7,
        "invalid argument: The overall maximum number of clients waiting for authentication must not be less than the overall maximum number of clients",
    );
    assert_err(
        call(
            &mut c,
            p::SERVER_UPDATE_TLS_FILES,
            server_args("virtlockd", 0),
        )
        .await,
        1,
        7,
        "internal error: no tls service found, unable to update tls files",
    );
    // Log filters: none set is an absent string with count 0.
    let r = call(&mut c, p::CONNECT_GET_LOGGING_FILTERS, flags_args(0))
        .await
        .unwrap();
    assert_eq!(&r[..], &[0; 8]);
    assert_err(
        call(
            &mut c,
            p::CONNECT_SET_DAEMON_TIMEOUT,
            daemon_timeout_args(5, 1),
        )
        .await,
        8,
        62,
        "unsupported flags (0x1) in function adminConnectSetDaemonTimeout",
    );
    assert_err(
        call(&mut c, 21, BytesMut::new()).await,
        39,
        7,
        "unknown procedure: 21",
    );
    assert_err(
        call(&mut c, p::CONNECT_OPEN, BytesMut::new()).await,
        39,
        7,
        "Unable to decode message payload",
    );
    // CONNECT_CLOSE: answered, then the connection is closed.
    call(&mut c, p::CONNECT_CLOSE, BytesMut::new())
        .await
        .unwrap();
    assert!(c.recv_frame().await.map_or(true, |f| f.is_none()));
}

#[tokio::test]
async fn daemon_shutdown_over_the_admin_socket_exits_cleanly() {
    let mut d = Daemon::start();
    let mut c = admin_client(&d).await;
    assert_err(
        call(&mut c, p::CONNECT_DAEMON_SHUTDOWN, flags_args(2)).await,
        8,
        62,
        "unsupported flags (0x2) in function adminConnectDaemonShutdown",
    );
    shut_down(&mut c).await;
    d.wait_exited(Duration::from_secs(10), "daemon still running");
    assert!(!d.admin_socket().exists());
}

#[tokio::test]
async fn daemon_timeout_set_over_the_admin_socket_shuts_an_idle_daemon_down() {
    let mut d = Daemon::start();
    {
        let mut c = admin_client(&d).await;
        call(
            &mut c,
            p::CONNECT_SET_DAEMON_TIMEOUT,
            daemon_timeout_args(1, 0),
        )
        .await
        .unwrap();
    }
    d.wait_exited(Duration::from_secs(10), "idle daemon did not time out");
}

/// The same virt-admin session against libvirt's virtlockd and ours, both with
/// libvirt's paths and the same config: every output and exit status equal.
#[tokio::test]
async fn virt_admin_prints_the_same_for_libvirts_daemon_and_ours() {
    let test = "virt_admin_prints_the_same_for_libvirts_daemon_and_ours";
    if !have_virt_admin(test) || !prerequisites(test) {
        return;
    }
    let session: &[&[&str]] = &[
        &["version"],
        &["srv-threadpool-info", "virtlockd"],
        &["srv-threadpool-info", "admin"],
        &["srv-threadpool-info", "nope"],
        &["srv-threadpool-set", "virtlockd", "--max-workers", "3"],
        &["srv-threadpool-set", "virtlockd", "--min-workers", "3"],
        &["srv-threadpool-set", "virtlockd", "--priority-workers", "2"],
        &["srv-threadpool-info", "virtlockd"],
        &["srv-clients-info", "virtlockd"],
        &["srv-clients-info", "admin"],
        &["srv-clients-set", "virtlockd", "--max-clients", "10"],
        &["srv-clients-set", "virtlockd", "--max-unauth-clients", "20"],
        &["srv-clients-info", "virtlockd"],
        &["srv-clients-set", "nope", "--max-clients", "3"],
        &["srv-clients-list", "virtlockd"],
        &["srv-update-tls", "virtlockd"],
        &["srv-update-tls", "nope"],
        &["client-disconnect", "virtlockd", "999"],
        &["client-info", "nope", "1"],
        &["client-info", "virtlockd", "999"],
        &["daemon-log-filters"],
        &["daemon-log-filters", "--filters", "1:rpc 3:util.foo"],
        &["daemon-log-filters"],
        &["daemon-log-filters", "--filters", "bogus"],
        &["daemon-log-filters", "--filters", ""],
        &["daemon-log-filters"],
        &["daemon-log-outputs"],
        &["daemon-log-outputs", "--outputs", "9:foo"],
        &["daemon-timeout", "--timeout", "0"],
    ];
    let mut transcripts = Vec::new();
    for which in [Impl::Libvirt, Impl::Ours] {
        let mut ns = Namespaced::start(which);
        let socket = admin_ready(&mut ns).await;
        let mut lines = Vec::new();
        for cmd in session {
            let (code, out, err) = va_at(&socket, cmd);
            // The log file is in each daemon's own temporary directory.
            let log_dir = ns.dir.path().display().to_string();
            lines.push(format!(
                "$ {cmd:?}\n{code}\n{}{}",
                out.replace(&log_dir, "$DIR"),
                err.replace(&log_dir, "$DIR")
            ));
        }
        // srv-list: the order is libvirt's hash order, not stable between starts.
        let (code, out, _) = va_at(&socket, &["srv-list"]);
        let mut rows: Vec<String> = out
            .lines()
            .skip(2)
            .filter(|l| !l.is_empty())
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
            .collect();
        rows.sort();
        lines.push(format!("$ srv-list\n{code}\n{rows:?}"));
        transcripts.push(lines);
    }
    assert_eq!(transcripts[0].len(), session.len() + 1);
    assert_eq!(transcripts[1].len(), session.len() + 1);
    for (theirs, ours) in transcripts[0].iter().zip(&transcripts[1]) {
        assert_eq!(ours, theirs);
    }
}
