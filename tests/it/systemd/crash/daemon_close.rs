//! A connection the daemon closes looks closed to its peer at once, although
//! a reference to its socket stays parked in the crash-safe store: here the
//! administrator closes a lock client (`virt-admin client-disconnect`), and
//! the client reads the end of the stream within a second and can no longer
//! write to it, with the usual
//! disconnect semantics (a connection that registered another pid releases
//! nothing). A crash afterwards does not bring the connection back.

use std::time::Duration;

use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use super::ledger::Res;
use super::rig::{CrashHost, LS_A};
use crate::systemd::setup::ADMIN_SOCKET;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_safe_connection_closed_by_the_daemon_ends_at_once() {
    let test = "crash_safe_connection_closed_by_the_daemon_ends_at_once";
    let Some(ch) = CrashHost::boot_or_skip(test, false) else {
        return;
    };
    let owner = 4_000_500;
    let mut c = ch.connect(owner).await.expect("connect");
    c.create_lockspace(LS_A.as_bytes())
        .await
        .expect("CREATE_LOCKSPACE");
    let lease = Res::in_dir(LS_A, "closed", ACQUIRE_AUTOCREATE);
    lease.acquire(&mut c).await.expect("ACQUIRE");
    let clients = ch.ctl(&["clients"]);
    let id = clients["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .find(|c| c["server"] == "virtlockd" && c["owner"]["pid"] == owner)
        .and_then(|c| c["id"].as_u64())
        .unwrap_or_else(|| panic!("client of owner {owner} in {clients}"));

    let out = std::process::Command::new("virt-admin")
        .arg("-c")
        .arg(format!(
            "virtlockd:///system?socket={}",
            ch.c.path(ADMIN_SOCKET).display()
        ))
        .args(["client-disconnect", "virtlockd", &id.to_string()])
        .output()
        .expect("run virt-admin");
    assert!(out.status.success(), "virt-admin: {out:?}");
    let end = tokio::time::timeout(Duration::from_secs(1), c.recv_frame()).await;
    assert!(
        matches!(end, Ok(Ok(None)) | Ok(Err(_))),
        "the closed client did not see its connection end within 1 s: {end:?}"
    );
    // Both ways: what it still sends is refused (EPIPE), not queued for a
    // socket nobody reads.
    let sent = c.send_raw(&[0, 0, 0, 28]).await;
    assert!(
        sent.is_err(),
        "a write to the connection the daemon closed was accepted"
    );
    assert!(
        !ch.lock_client_owners().contains(&u64::from(owner)),
        "{}",
        ch.ctl(&["clients"])
    );
    // Another pid's registration: closing releases nothing.
    let listed = ch.listed();
    assert!(
        listed.contains_key(&(Some(LS_A.to_owned()), "closed".to_owned())),
        "{listed:?}"
    );

    // The closed connection stays closed across a crash.
    ch.kill_daemon();
    ch.wait_restarted(1);
    assert!(
        !ch.lock_client_owners().contains(&u64::from(owner)),
        "{}",
        ch.ctl(&["clients"])
    );
    eprintln!("{test}: client {id} closed by the daemon saw the end at once");
}
