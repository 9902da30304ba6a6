//! Admin calls that must neither hurt a lease nor stall the lock server: a held
//! lease offered as a log file, and a log output whose open blocks.

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use bytes::BytesMut;
use virtlockd::protocol::admin::procedure as p;
use virtlockd::protocol::xdr::XdrWrite;

use crate::admin::{admin_client, args, call, expect_err, start};
use crate::harness::Holder;

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
