//! Admin calls that must neither hurt a lease nor stall the lock server (a held
//! lease offered as a log file, a log output whose open blocks), and libvirt's
//! limits on what admin calls carry.

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use bytes::BytesMut;
use virtlockd::protocol::admin::{procedure as p, TypedParam, Value};
use virtlockd::protocol::xdr::XdrWrite;

use virtlockd::client::Client;

use crate::admin::{admin_client, admin_ready, args, call, expect_err, params_args, start};
use crate::harness::Holder;
use crate::namespaced::{prerequisites, Impl, Namespaced};

fn outputs_args(outputs: &str) -> BytesMut {
    args(|b| {
        b.put_xdr_opt_string(Some(outputs.as_bytes()));
        b.put_xdr_u32(0);
    })
}

#[tokio::test]
async fn a_held_lease_is_refused_as_a_log_output_and_stays_locked() {
    let d = start().await;
    let ls = d.base().join("ls");
    let lease = ls.join("lease");
    let _holder = Holder::start(&d, &ls, "lease", &[]).await;
    assert_eq!(d.kernel_locks_on(&lease), ["POSIX WRITE 0-0"]);
    let mut admin = admin_client(&d).await;
    expect_err(
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
    let d = start().await;
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
    let d = start().await;
    let mut admin = admin_client(&d).await;
    let long = "x".repeat(80);
    let param = |field: &str| [TypedParam::new(field, Value::UInt(0))];
    let too_big = format!("internal error: parameter {long} too big for destination");
    for proc_ in [
        p::SERVER_SET_THREADPOOL_PARAMETERS,
        p::SERVER_SET_CLIENT_LIMITS,
    ] {
        // Checked after the server lookup...
        expect_err(
            call(&mut admin, proc_, params_args("nosuch", &param(&long), 0)).await,
            95,
            62,
            "Server not found: no server with matching name 'nosuch' found",
        );
        // ...and before the flags and the names.
        expect_err(
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
        expect_err(
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
