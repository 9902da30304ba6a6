//! `systemctl reload virtlockd` under real systemd is a live upgrade: the same
//! main pid, every lease and every client kept, also after the binary file was
//! replaced by a new one (a package upgrade), which then runs.

use std::time::Instant;

use virtlockd::client::Client;
use virtlockd::protocol::error;
use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use super::setup::{
    busy_text, lease_name, Host, Units, DAEMON_PATH, LOCKSPACE, OUR_DAEMON, PATIENCE,
};

async fn reload_is_a_live_upgrade(test: &str, units: Units) {
    let Some(h) = Host::boot_or_skip(test, units) else {
        return;
    };
    let ls = LOCKSPACE.as_bytes();
    let names = [lease_name("reload-a"), lease_name("reload-b")];
    let mut clients: Vec<Client> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut c = h.client(4_000_001 + i as u32).await;
        c.create_lockspace(ls).await.expect("CREATE_LOCKSPACE");
        c.acquire(ls, name.as_bytes(), ACQUIRE_AUTOCREATE)
            .await
            .expect("ACQUIRE");
        clients.push(c);
    }
    // A second owner, connected throughout, that must keep finding them busy.
    let mut other = h.client(4_000_009).await;
    let pid = h.main_pid();
    // A lease whose file stays when it is released: in crash-safe mode the
    // daemon keeps its open file as a spare for the next ACQUIRE of the name
    // (one fd); none may pass through an exec untracked.
    let spare = lease_name("reload-spare");
    clients[0]
        .create_resource(ls, spare.as_bytes())
        .await
        .expect("CREATE_RESOURCE");
    let spare_inode = h.inode(&format!("{LOCKSPACE}/{spare}"));
    let spares = usize::from(h.ctl(&["status"])["crash_safety"]["mode"] == "active");
    take_and_release(&mut other, ls, &spare).await;
    assert_eq!(
        h.fds_on(pid, spare_inode),
        spares,
        "fds on a released lease's file"
    );
    let lease_inodes = h.lease_inodes(&names);
    assert_eq!(h.locked_inodes(pid), lease_inodes);
    let connected = lock_clients(&h);
    assert_eq!(
        connected.iter().map(|c| c.1).collect::<Vec<_>>(),
        [4_000_001, 4_000_002, 4_000_009]
    );
    let exe = h.c.path(&format!("/proc/{pid}/exe"));
    let exe_inode = || {
        std::fs::metadata(&exe)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect("daemon exe")
    };

    for round in ["the same file", "a replaced file"] {
        if round == "a replaced file" {
            // A package upgrade: a new file (new inode) renamed over the old.
            let before = h.inode(DAEMON_PATH);
            h.c.copy_in(std::path::Path::new(OUR_DAEMON), DAEMON_PATH);
            assert_ne!(h.inode(DAEMON_PATH), before, "the binary was not replaced");
            let running = std::fs::read_link(&exe).expect("exe link");
            assert!(
                running.to_string_lossy().ends_with("(deleted)"),
                "{running:?}"
            );
        }
        let upgrades_before = upgrade_count(&h);
        let t = Instant::now();
        h.c.exec_ok("timeout --foreground 20 systemctl reload virtlockd.service");
        let reload_returned = t.elapsed();
        // A call sent while the upgrade may still be under way is answered
        // (by the old image, or by the new one after the exec).
        let during = tokio::time::timeout(PATIENCE, clients[0].acquire(ls, names[0].as_bytes(), 0))
            .await
            .expect("a call sent during the upgrade was not answered")
            .expect_err("a lease held twice");
        assert!(
            during.to_string().contains("is locked"),
            "{round}: {during}"
        );
        // systemd 252 ends the reload job when ExecReload (kill -USR1) exits;
        // the upgrade itself finishes a moment later, in the same process.
        h.wait_for(
            "the upgraded image runs the file now at /usr/sbin/virtlockd",
            || exe_inode() == h.inode(DAEMON_PATH) && upgrade_count(&h) > upgrades_before,
        );
        let upgraded = t.elapsed();
        assert_eq!(h.main_pid(), pid, "{round}: MainPID changed");
        assert_eq!(h.state(), "active/running", "{round}");
        assert_eq!(h.locked_inodes(pid), lease_inodes, "{round}: kernel locks");
        assert_eq!(lock_clients(&h), connected, "{round}: clients");
        // Every client is still connected and served, its lease still its own.
        for (c, name) in clients.iter_mut().zip(&names) {
            let again = c
                .acquire(ls, name.as_bytes(), 0)
                .await
                .expect_err("a lease held twice");
            assert!(
                again.to_string().contains("is locked"),
                "{round}: own lease: {again}"
            );
        }
        // The spare of before the exec is gone; the next release makes a new one.
        take_and_release(&mut other, ls, &spare).await;
        assert_eq!(
            h.fds_on(pid, spare_inode),
            spares,
            "{round}: fds on a released lease's file"
        );
        // And the second owner still finds each lease busy.
        for name in &names {
            crate::support::assert_err(
                other.acquire(ls, name.as_bytes(), 0).await,
                error::code::RESOURCE_BUSY,
                error::domain::LOCKSPACE,
                &busy_text(name),
            );
        }
        eprintln!(
            "{test}: reload with {round}: `systemctl reload` returned in {reload_returned:?}, \
             upgrade done within {upgraded:?}; pid {pid} kept, 2 leases and 3 clients kept"
        );
    }
    // The leases are released through the connections that survived both
    // upgrades.
    for (c, name) in clients.iter_mut().zip(&names) {
        c.release(ls, name.as_bytes()).await.expect("RELEASE");
    }
    assert_eq!(h.locked_inodes(pid), Vec::<u64>::new());
}

async fn take_and_release(c: &mut Client, ls: &[u8], name: &str) {
    c.acquire(ls, name.as_bytes(), 0).await.expect("ACQUIRE");
    c.release(ls, name.as_bytes()).await.expect("RELEASE");
}

/// The daemon's live-upgrade count.
fn upgrade_count(h: &Host) -> u64 {
    h.ctl(&["status"])["live_upgrades"]
        .as_u64()
        .expect("live_upgrades")
}

/// (id, owner pid) of every lock-server client.
fn lock_clients(h: &Host) -> Vec<(u64, u64)> {
    let clients = h.ctl(&["clients"]);
    let mut ids: Vec<(u64, u64)> = clients["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter(|c| c["server"] == "virtlockd")
        .map(|c| {
            (
                c["id"].as_u64().unwrap_or(0),
                c["owner"]["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn systemd_reload_is_a_live_upgrade_with_our_units() {
    reload_is_a_live_upgrade(
        "systemd_reload_is_a_live_upgrade_with_our_units",
        Units::Ours,
    )
    .await;
}

#[tokio::test]
async fn systemd_reload_is_a_live_upgrade_with_debian_units() {
    reload_is_a_live_upgrade(
        "systemd_reload_is_a_live_upgrade_with_debian_units",
        Units::Debian,
    )
    .await;
}
