//! `virtlockctl` against the real daemon with real leases: direct, in a file
//! lockspace under SHA-256 names, and shared by several owners; and what it
//! shows surviving a live upgrade.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use virtlockd::client::{owner, Client};
use virtlockd::names::lease_name;
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

use crate::support::ctl::{ctl, ctl_json};
use crate::support::{bytes, until, Daemon};

fn now() -> i64 {
    virtlockd::clock::now_epoch_seconds()
}

struct Setup {
    direct: std::path::PathBuf,
    files: std::path::PathBuf,
    hashed_disk: &'static str,
    shared_disk: &'static str,
    clients: Vec<Client>,
}

/// Three owners: vm-a holds a disk directly, vm-b holds one disk in the file
/// lockspace and shares another with vm-c.
async fn populate(d: &Daemon) -> Setup {
    let base = d.base();
    let direct = base.join("disk-a.img");
    std::fs::write(&direct, b"").unwrap();
    let files = base.join("files");
    let hashed_disk = "/var/lib/libvirt/images/b.qcow2";
    let shared_disk = "/srv/shared.img";
    let mut a = d.client().await;
    a.register(&owner("vm-a", 1, 4_000_101)).await.unwrap();
    a.acquire(b"", &bytes(&direct), 0).await.unwrap();
    let mut b = d.client().await;
    b.create_lockspace(&bytes(&files)).await.unwrap();
    b.register(&owner("vm-b", 2, 4_000_102)).await.unwrap();
    b.acquire(
        &bytes(&files),
        lease_name(hashed_disk.as_bytes()).as_bytes(),
        ACQUIRE_AUTOCREATE,
    )
    .await
    .unwrap();
    let shared = lease_name(shared_disk.as_bytes());
    b.acquire(
        &bytes(&files),
        shared.as_bytes(),
        ACQUIRE_SHARED | ACQUIRE_AUTOCREATE,
    )
    .await
    .unwrap();
    let mut c = d.client().await;
    c.register(&owner("vm-c", 3, 4_000_103)).await.unwrap();
    c.acquire(
        &bytes(&files),
        shared.as_bytes(),
        ACQUIRE_SHARED | ACQUIRE_AUTOCREATE,
    )
    .await
    .unwrap();
    c.restrict().await.unwrap();
    Setup {
        direct,
        files,
        hashed_disk,
        shared_disk,
        clients: vec![a, b, c],
    }
}

fn owner_names(lease: &Value) -> Vec<String> {
    let mut v: Vec<String> = lease["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn locks_who_clients_status_with_direct_file_and_shared_leases() {
    let d = Daemon::start();
    let t0 = now();
    let s = populate(&d).await;
    let files = s.files.to_str().unwrap();

    let locks = ctl_json(&d, &["locks"]);
    let leases = locks["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 3, "{locks:#}");
    let direct = &leases[0];
    assert_eq!(direct["direct"], true);
    assert_eq!(direct["lockspace"], Value::Null);
    assert_eq!(direct["name"], s.direct.to_str().unwrap());
    assert_eq!(direct["path"], s.direct.to_str().unwrap());
    assert_eq!(
        (direct["mode"].as_str(), direct["autocreate"].as_bool()),
        (Some("exclusive"), Some(false))
    );
    assert_eq!(direct["status"], "held");
    let o = &direct["owners"][0];
    assert_eq!(
        (
            o["pid"].as_i64(),
            o["name"].as_str(),
            o["domain_id"].as_u64()
        ),
        (Some(4_000_101), Some("vm-a"), Some(1))
    );
    let uuid = virtlockd::names::uuid_string(&owner("vm-a", 1, 4_000_101).uuid);
    assert_eq!(o["uuid"], uuid.as_str());
    let at = direct["acquired_at"].as_i64().unwrap();
    assert!(at >= t0 && at <= now(), "{at} not in [{t0}, now]");
    let shared_name = lease_name(s.shared_disk.as_bytes());
    let shared = leases
        .iter()
        .find(|l| l["name"] == shared_name.as_str())
        .unwrap();
    assert_eq!(
        (shared["lockspace"].as_str(), shared["direct"].as_bool()),
        (Some(files), Some(false))
    );
    assert_eq!(shared["path"], format!("{files}/{shared_name}").as_str());
    assert_eq!(
        (shared["mode"].as_str(), shared["autocreate"].as_bool()),
        (Some("shared"), Some(true))
    );
    assert_eq!(owner_names(shared), ["vm-b", "vm-c"]);

    // Human table: one line per lease, owners named.
    let (code, table, _) = ctl(&d, &["locks"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("LOCKSPACE"), "{table}");
    assert!(
        table.contains("(direct)") && table.contains("vm-a (") && table.contains("shared"),
        "{table}"
    );

    // Filters.
    let only = |args: &[&str]| ctl_json(&d, args)["leases"].as_array().unwrap().len();
    assert_eq!(only(&["locks", "--owner", "4000103"]), 1);
    assert_eq!(only(&["locks", "--owner", "4000102"]), 2);
    assert_eq!(only(&["locks", "--lockspace", "direct"]), 1);
    assert_eq!(only(&["locks", "--lockspace", files]), 2);

    // who: a disk path, held directly or under its SHA-256 name.
    let (code, out, _) = ctl(&d, &["who", s.direct.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("direct lease, exclusive since") && out.contains("owner: vm-a"),
        "{out}"
    );
    let who = ctl_json(&d, &["who", s.hashed_disk]);
    assert_eq!(
        who["leases"][0]["name"],
        lease_name(s.hashed_disk.as_bytes()).as_str()
    );
    assert_eq!(owner_names(&who["leases"][0]), ["vm-b"]);
    let who = ctl_json(&d, &["who", s.shared_disk]);
    assert_eq!(owner_names(&who["leases"][0]), ["vm-b", "vm-c"]);
    let (code, out, _) = ctl(&d, &["who", "/not/locked.img"]);
    assert_eq!(
        (code, out.as_str()),
        (1, "/not/locked.img: no lease held\n")
    );

    // clients: owners, restriction and leases per connection.
    let clients = ctl_json(&d, &["clients"]);
    let lock: Vec<&Value> = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["server"] == "virtlockd")
        .collect();
    assert_eq!(lock.len(), 3, "{clients:#}");
    let row = |name: &str| *lock.iter().find(|c| c["owner"]["name"] == name).unwrap();
    assert_eq!(
        (
            row("vm-a")["leases"].as_u64(),
            row("vm-a")["restricted"].as_bool()
        ),
        (Some(1), Some(false))
    );
    assert_eq!(row("vm-b")["leases"].as_u64(), Some(2));
    assert_eq!(
        (
            row("vm-c")["leases"].as_u64(),
            row("vm-c")["restricted"].as_bool()
        ),
        (Some(1), Some(true))
    );
    assert_eq!(row("vm-a")["pid"].as_i64(), Some(std::process::id() as i64));
    let (_, table, _) = ctl(&d, &["clients"]);
    assert!(
        table.starts_with("SERVER") && table.contains("vm-c ("),
        "{table}"
    );

    let status = ctl_json(&d, &["status"]);
    assert_eq!(status["pid"].as_u64(), Some(d.pid() as u64));
    assert_eq!(
        (status["leases"].as_u64(), status["lockspaces"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        (
            status["lock_clients"].as_u64(),
            status["live_upgrades"].as_u64()
        ),
        (Some(3), Some(0))
    );
    assert_eq!(status["libvirt_version"], "9.0.0");
    // Started outside a service manager, without crash_safe or
    // VIRTLOCKD_CRASH_SAFE: crash-safe mode is off, and nothing is stored.
    assert_eq!(
        status["crash_safety"],
        serde_json::json!({
            "mode": "off",
            "reason": null,
            "parked_fds": 0,
            "journal_bytes": 0,
            "generation": 0,
            "recoveries": 0,
        }),
        "{status:#}"
    );
    let (_, text, _) = ctl(&d, &["status"]);
    assert!(text.contains("leases        : 3\n"), "{text}");
    assert!(text.contains("\ncrash safety  : off\n"), "{text}");

    // Releasing shows at once.
    drop(s.clients);
    // Foreign-pid owners keep their leases after a disconnect, as with libvirt.
    until("clients gone", Duration::from_secs(5), || {
        ctl_json(&d, &["clients"])["clients"]
            .as_array()
            .unwrap()
            .len()
            <= 1
    })
    .await;
    assert_eq!(ctl_json(&d, &["status"])["leases"].as_u64(), Some(3));
}

#[tokio::test]
async fn clients_ids_times_owners_and_acquired_at_survive_a_live_upgrade() {
    let d = Daemon::start();
    let s = populate(&d).await;
    let clients_before = ctl_json(&d, &["clients"]);
    let locks_before = ctl_json(&d, &["locks"]);
    let started = ctl_json(&d, &["status"])["started_at"].clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, _) = ctl(&d, &["status", "--json"]);
        if code == 0 {
            let v: Value = serde_json::from_str(&out).unwrap();
            if v["live_upgrades"] == 1 {
                assert_eq!(v["started_at"], started);
                break;
            }
        }
        assert!(Instant::now() < deadline, "upgrade not done:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ctl_json(&d, &["locks"]), locks_before);
    // The admin connection of the query itself is new; the lock clients are not.
    let lock_rows = |v: &Value| -> Vec<Value> {
        v["clients"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["server"] == "virtlockd")
            .cloned()
            .collect()
    };
    assert_eq!(
        lock_rows(&ctl_json(&d, &["clients"])),
        lock_rows(&clients_before)
    );
    drop(s);
}

#[test]
fn check_says_whether_locks_reach_other_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_virtlockctl"))
        .args(["check", "--json"])
        .arg(dir.path())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // A temporary directory is on a local filesystem (tmpfs, ext4, overlay...).
    assert_eq!(v["reach"], "this-host-only", "{v:#}");
    assert_eq!(out.status.code(), Some(2));
    assert!(v["fstype"].is_string() && v["reason"].is_string());
    let text = Command::new(env!("CARGO_BIN_EXE_virtlockctl"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout)
        .contains("WARNING: leases here do not protect disks shared with other hosts"));
    let missing = Command::new(env!("CARGO_BIN_EXE_virtlockctl"))
        .arg("check")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn no_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none");
    let out = Command::new(env!("CARGO_BIN_EXE_virtlockctl"))
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "virtlockctl: cannot connect to {}",
            sock.display()
        )),
        "{err}"
    );
}
