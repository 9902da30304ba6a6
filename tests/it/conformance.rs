//! Lock-protocol conformance against the real daemon: every error a lock client can
//! receive (spec §2.6-§2.7, all fields), procedure semantics (spec §3, §6), libvirt's
//! virlockspacetest scenarios (spec §11.1), the recommended scenarios of spec §11.5 and
//! the observed S01-S11 tables, with our deliberate fixes (name checks, NEW on a file).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use virtlockd::client::{owner, ClientError};
use virtlockd::proclocks;
use virtlockd::protocol::lock::{LockCall, ACQUIRE_AUTOCREATE as AUTO, ACQUIRE_SHARED as SHARED};
use virtlockd::protocol::RemoteError;

use crate::support::wait::wait_lock_clients;
use crate::support::{bytes, describe, lockspace, registered, Daemon};

/// Fake owner pids: no such processes exist, and none is the test runner's pid.
const PID_A: u32 = 4_000_001;
const PID_B: u32 = 4_000_002;
const PID_C: u32 = 4_000_003;

const WRITE: &str = "POSIX WRITE 0-0";
const READ: &str = "POSIX READ 0-0";

// ---------------------------------------------------------------------------------
// Expected errors, field for field (spec §2.6).

/// libvirt's "with info" template of an error code (spec §2.7).
fn template_of(code: i32) -> &'static str {
    match code {
        1 => "internal error: %s",
        8 => "invalid argument: %s",
        29 => "operation forbidden: %s",
        55 => "Requested operation is not valid: %s",
        87 => "resource busy: %s",
        other => panic!("no template for code {other} in these tests"),
    }
}

/// A `virReportError` error: str1 = template, str2 = detail, int1 = int2 = -1.
fn generic(code: i32, domain: i32, message: &str) -> RemoteError {
    let template = template_of(code);
    let detail = message
        .strip_prefix(template.trim_end_matches("%s"))
        .unwrap_or_else(|| panic!("`{message}` does not start like `{template}`"));
    RemoteError {
        code,
        domain,
        message: message.to_owned(),
        str1: Some(template.to_owned()),
        str2: Some(detail.to_owned()),
        int1: -1,
        int2: -1,
    }
}

/// A `virReportSystemError` error: code 38, str1 "%s", str2 = message, int1 = errno.
fn system(domain: i32, errno: i32, message: &str) -> RemoteError {
    RemoteError {
        code: 38,
        domain,
        message: message.to_owned(),
        str1: Some("%s".to_owned()),
        str2: Some(message.to_owned()),
        int1: errno,
        int2: -1,
    }
}

/// A `virCheckFlags` error: code 8 domain 7, str1 = function, str2 "flags", ints 0.
fn bad_flags(bits: &str, function: &str) -> RemoteError {
    RemoteError {
        code: 8,
        domain: 7,
        message: format!("unsupported flags ({bits}) in function {function}"),
        str1: Some(function.to_owned()),
        str2: Some("flags".to_owned()),
        int1: 0,
        int2: 0,
    }
}

fn busy(name: &str) -> RemoteError {
    generic(
        87,
        51,
        &format!("resource busy: Lockspace resource '{name}' is locked"),
    )
}

fn not_locked(name: &str) -> RemoteError {
    generic(
        87,
        51,
        &format!("resource busy: Lockspace resource '{name}' is not locked"),
    )
}

fn not_owner(pid: u32) -> RemoteError {
    generic(
        1,
        51,
        &format!("internal error: owner {pid} does not hold the resource lock"),
    )
}

fn not_registered() -> RemoteError {
    generic(
        55,
        7,
        "Requested operation is not valid: lock owner details have not been registered",
    )
}

fn restricted() -> RemoteError {
    generic(
        29,
        7,
        "operation forbidden: lock manager connection has been restricted",
    )
}

fn no_lockspace(path: &Path) -> RemoteError {
    generic(
        1,
        7,
        &format!(
            "internal error: Lockspace for path {} does not exist",
            path.display()
        ),
    )
}

fn not_a_directory(path: &Path) -> RemoteError {
    generic(
        1,
        51,
        &format!(
            "internal error: Lockspace location {} exists, but is not a directory",
            path.display()
        ),
    )
}

fn invalid_name(name: &str, dir: &Path) -> RemoteError {
    generic(
        8,
        51,
        &format!(
            "invalid argument: resource name '{name}' is not valid in lockspace '{}'",
            dir.display()
        ),
    )
}

/// Asserts that `r` is an error reply equal to `want` in every field.
#[track_caller]
fn expect(r: Result<(), ClientError>, want: RemoteError) {
    match r {
        Ok(()) => panic!("expected `{}`, got OK", want.message),
        Err(e) => {
            let got = e
                .remote()
                .unwrap_or_else(|| panic!("expected `{}`, got {e}", want.message));
            assert_eq!(got, &want);
        }
    }
}

// ---------------------------------------------------------------------------------
// Helpers.

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn inode(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

/// Kernel locks of the daemon on an inode (works after the file was unlinked).
fn locks_on_inode(d: &Daemon, ino: u64) -> Vec<String> {
    proclocks::of_pid(d.pid())
        .unwrap()
        .iter()
        .filter(|l| l.inode == ino)
        .map(describe)
        .collect()
}

fn acquire_call(ls: &Path, name: &[u8], flags: u32) -> LockCall {
    LockCall::Acquire {
        path: bytes(ls).into(),
        name: name.to_vec().into(),
        flags,
    }
}

// ---------------------------------------------------------------------------------
// Spec §2.7 / §3.3: flags, restriction, registration.

#[tokio::test]
async fn unsupported_flags_are_refused_by_every_procedure_before_anything_else() {
    let d = Daemon::start();
    let ls = d.base().join("ls");
    let p = bytes(&ls);
    let n = b"r".to_vec();
    let reg = |flags| LockCall::Register {
        owner: owner("vm", 1, PID_A),
        flags,
    };
    let cases: Vec<(LockCall, &str, &str)> = vec![
        (reg(1), "0x1", "virLockSpaceProtocolDispatchRegister"),
        (
            reg(u32::MAX),
            "0xffffffff",
            "virLockSpaceProtocolDispatchRegister",
        ),
        (
            LockCall::Restrict { flags: 1 },
            "0x1",
            "virLockSpaceProtocolDispatchRestrict",
        ),
        (
            LockCall::Restrict { flags: u32::MAX },
            "0xffffffff",
            "virLockSpaceProtocolDispatchRestrict",
        ),
        (
            LockCall::New {
                path: p.clone().into(),
                flags: 1,
            },
            "0x1",
            "virLockSpaceProtocolDispatchNew",
        ),
        (
            LockCall::New {
                path: p.clone().into(),
                flags: u32::MAX,
            },
            "0xffffffff",
            "virLockSpaceProtocolDispatchNew",
        ),
        (
            LockCall::CreateResource {
                path: p.clone().into(),
                name: n.clone().into(),
                flags: 1,
            },
            "0x1",
            "virLockSpaceProtocolDispatchCreateResource",
        ),
        (
            LockCall::CreateResource {
                path: p.clone().into(),
                name: n.clone().into(),
                flags: u32::MAX,
            },
            "0xffffffff",
            "virLockSpaceProtocolDispatchCreateResource",
        ),
        (
            LockCall::DeleteResource {
                path: p.clone().into(),
                name: n.clone().into(),
                flags: 1,
            },
            "0x1",
            "virLockSpaceProtocolDispatchDeleteResource",
        ),
        (
            LockCall::DeleteResource {
                path: p.clone().into(),
                name: n.clone().into(),
                flags: u32::MAX,
            },
            "0xffffffff",
            "virLockSpaceProtocolDispatchDeleteResource",
        ),
        (
            acquire_call(&ls, &n, 4),
            "0x4",
            "virLockSpaceProtocolDispatchAcquireResource",
        ),
        (
            acquire_call(&ls, &n, 7),
            "0x4",
            "virLockSpaceProtocolDispatchAcquireResource",
        ),
        (
            acquire_call(&ls, &n, u32::MAX),
            "0xfffffffc",
            "virLockSpaceProtocolDispatchAcquireResource",
        ),
        (
            LockCall::Release {
                path: p.clone().into(),
                name: n.clone().into(),
                flags: 1,
            },
            "0x1",
            "virLockSpaceProtocolDispatchReleaseResource",
        ),
        (
            LockCall::Release {
                path: p.clone().into(),
                name: n.clone().into(),
                flags: 2,
            },
            "0x2",
            "virLockSpaceProtocolDispatchReleaseResource",
        ),
        (
            LockCall::Release {
                path: p.clone().into(),
                name: n.clone().into(),
                flags: u32::MAX,
            },
            "0xffffffff",
            "virLockSpaceProtocolDispatchReleaseResource",
        ),
    ];
    // Unregistered, and the lockspace does not exist: the flags check comes first.
    let mut c = d.client().await;
    for (call, bits, function) in &cases {
        expect(c.call(call).await, bad_flags(bits, function));
    }
    // Nothing happened: no lockspace was made, the REGISTER with flags did not register.
    assert!(!ls.exists());
    expect(c.acquire(&p, b"r", 0).await, not_registered());
    // Registered, lockspace present: same answers.
    c.register(&owner("vm", 1, PID_A)).await.unwrap();
    c.create_lockspace(&p).await.unwrap();
    for (call, bits, function) in &cases {
        expect(c.call(call).await, bad_flags(bits, function));
    }
    assert!(!ls.join("r").exists());
    // Every combination of the allowed ACQUIRE flags works.
    c.create_resource(&p, b"ok").await.unwrap();
    for flags in [0, SHARED, AUTO, SHARED | AUTO] {
        c.acquire(&p, b"ok", flags).await.unwrap();
        c.release(&p, b"ok").await.unwrap();
    }
    assert!(!ls.join("ok").exists());
}

#[tokio::test]
async fn unregistered_connection_may_only_create_lockspaces() {
    // S01, spec §11.5 item 1.
    let d = Daemon::start();
    let ls = d.base().join("ls");
    let p = bytes(&ls);
    let mut c = d.client().await;
    expect(c.restrict().await, not_registered());
    expect(c.new_lockspace(&p).await, not_registered());
    assert!(!ls.exists(), "a refused NEW creates nothing");
    expect(c.create_resource(&p, b"r").await, not_registered());
    expect(c.delete_resource(&p, b"r").await, not_registered());
    expect(c.acquire(&p, b"r", AUTO).await, not_registered());
    expect(c.acquire(&p, b"r", 0).await, not_registered());
    expect(c.release(&p, b"r").await, not_registered());
    // Default lockspace too.
    expect(
        c.acquire(b"", b"/nonexistent", AUTO).await,
        not_registered(),
    );
    c.create_lockspace(&p).await.unwrap();
    assert!(ls.is_dir());
    assert_eq!(mode(&ls), 0o700);
    // Still unregistered after CREATE_LOCKSPACE; the lockspace now exists.
    expect(c.acquire(&p, b"r", AUTO).await, not_registered());
    expect(c.create_resource(&p, b"r").await, not_registered());
    assert!(!ls.join("r").exists());
}

#[tokio::test]
async fn register_with_id_zero_is_refused_and_changes_nothing() {
    // S02, spec §11.5 item 2.
    let d = Daemon::start();
    let mut c = d.client().await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    expect(c.register(&owner("vm", 0, PID_A)).await, not_registered());
    expect(c.acquire(&p, b"r", AUTO).await, not_registered());
    // A failed REGISTER after a good one keeps the previous owner.
    c.register(&owner("vm", 1, PID_A)).await.unwrap();
    c.acquire(&p, b"r", AUTO).await.unwrap();
    expect(
        c.register(&owner("other", 0, PID_B)).await,
        not_registered(),
    );
    c.release(&p, b"r").await.unwrap();
}

#[tokio::test]
async fn reregister_overwrites_the_owner() {
    // S02: re-REGISTER is allowed and replaces name, uuid, id and pid.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    c.acquire(&p, b"x", AUTO).await.unwrap();
    c.register(&owner("vm2", 7, PID_B)).await.unwrap();
    // Now the connection acts for PID_B.
    expect(c.release(&p, b"x").await, not_owner(PID_B));
    c.acquire(&p, b"y", AUTO).await.unwrap();
    // Empty name accepted.
    c.register(&owner("", 9, PID_A)).await.unwrap();
    c.release(&p, b"x").await.unwrap();
    expect(c.release(&p, b"y").await, not_owner(PID_A));
    c.register(&owner("vm2", 7, PID_B)).await.unwrap();
    c.release(&p, b"y").await.unwrap();
    assert!(!ls.join("x").exists());
    assert!(!ls.join("y").exists());
}

#[tokio::test]
async fn register_pid_zero_is_accepted_and_usable() {
    // S02: pid 0 is not validated. Everything is released before the connection
    // closes, so nothing could ever be fenced.
    let d = Daemon::start();
    let mut c = d.client().await;
    c.register(&owner("vm", 1, 0)).await.unwrap();
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    c.acquire(&p, b"z", AUTO).await.unwrap();
    assert_eq!(d.kernel_locks_on(&ls.join("z")), [WRITE]);
    let mut other = registered(&d, PID_A).await;
    expect(other.acquire(&p, b"z", AUTO).await, busy("z"));
    expect(other.release(&p, b"z").await, not_owner(PID_A));
    c.release(&p, b"z").await.unwrap();
    assert!(!ls.join("z").exists());
}

#[tokio::test]
async fn restricted_connection_refuses_everything_but_checks_flags_first() {
    // S10, spec §11.5 item 3.
    let d = Daemon::start();
    let mut a = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut a, "ls").await;
    let p = bytes(&ls);
    a.acquire(&p, b"rr", AUTO).await.unwrap();
    a.restrict().await.unwrap();
    expect(a.restrict().await, restricted());
    expect(a.register(&owner("vm", 1, PID_A)).await, restricted());
    expect(
        a.new_lockspace(&bytes(&d.base().join("n"))).await,
        restricted(),
    );
    expect(a.create_lockspace(&p).await, restricted());
    expect(a.create_lockspace(b"").await, restricted());
    expect(a.create_resource(&p, b"c").await, restricted());
    expect(a.delete_resource(&p, b"rr").await, restricted());
    expect(a.acquire(&p, b"q", AUTO).await, restricted());
    expect(a.release(&p, b"rr").await, restricted());
    // The flags check runs before the restriction check.
    expect(
        a.call(&acquire_call(&ls, b"rr", 4)).await,
        bad_flags("0x4", "virLockSpaceProtocolDispatchAcquireResource"),
    );
    expect(
        a.call(&LockCall::Restrict { flags: 1 }).await,
        bad_flags("0x1", "virLockSpaceProtocolDispatchRestrict"),
    );
    assert!(!d.base().join("n").exists());
    assert!(!ls.join("c").exists());
    assert!(!ls.join("q").exists());
    // The restricted connection (fake owner pid) closes: its lease stays.
    drop(a);
    wait_lock_clients(&d, 0).await;
    let mut b = registered(&d, PID_B).await;
    expect(b.acquire(&p, b"rr", AUTO).await, busy("rr"));
    assert_eq!(d.kernel_locks_on(&ls.join("rr")), [WRITE]);
    // Another connection registered as the same owner pid releases it.
    let mut again = registered(&d, PID_A).await;
    again.release(&p, b"rr").await.unwrap();
    assert!(!ls.join("rr").exists());
    b.acquire(&p, b"rr", AUTO).await.unwrap();
    b.release(&p, b"rr").await.unwrap();
}

// ---------------------------------------------------------------------------------
// Lockspaces: NEW, CREATE_LOCKSPACE, lookups.

#[tokio::test]
async fn new_refuses_the_default_and_existing_lockspaces() {
    // S03, spec §11.5 item 7.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    expect(
        c.new_lockspace(b"").await,
        generic(
            55,
            7,
            "Requested operation is not valid: the default lockspace already exists",
        ),
    );
    let n1 = d.base().join("new1");
    c.new_lockspace(&bytes(&n1)).await.unwrap();
    assert!(n1.is_dir());
    assert_eq!(mode(&n1), 0o700);
    let exists = |p: &Path| {
        generic(
            1,
            7,
            &format!(
                "internal error: Lockspace for path {} already exists",
                p.display()
            ),
        )
    };
    expect(c.new_lockspace(&bytes(&n1)).await, exists(&n1));
    let ls = lockspace(&d, &mut c, "ls").await;
    expect(c.new_lockspace(&bytes(&ls)).await, exists(&ls));
    // CREATE_LOCKSPACE on a NEW lockspace is the idempotent OK.
    c.create_lockspace(&bytes(&n1)).await.unwrap();
    c.acquire(&bytes(&n1), b"r", AUTO).await.unwrap();
    assert!(n1.join("r").exists());
    c.release(&bytes(&n1), b"r").await.unwrap();
    assert!(!n1.join("r").exists());
}

#[tokio::test]
async fn new_on_a_file_reports_the_creation_error_and_stores_nothing() {
    // Deliberate fix 2 (the real daemon replies OK and stores a broken entry: S14).
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let file = d.base().join("afile");
    std::fs::write(&file, b"data").unwrap();
    let p = bytes(&file);
    expect(c.new_lockspace(&p).await, not_a_directory(&file));
    expect(c.acquire(&p, b"r", AUTO).await, no_lockspace(&file));
    expect(c.create_lockspace(&p).await, not_a_directory(&file));
    expect(c.new_lockspace(&p).await, not_a_directory(&file));
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    // The real daemon stored a broken entry here and later crashed (S14, S15).
    drop(c);
    wait_lock_clients(&d, 0).await;
    let mut c = registered(&d, PID_B).await;
    c.ping().await.unwrap();
    let ls = lockspace(&d, &mut c, "ls").await;
    c.acquire(&bytes(&ls), b"r", AUTO).await.unwrap();
    c.release(&bytes(&ls), b"r").await.unwrap();
}

#[tokio::test]
async fn unknown_lockspace_is_reported_by_every_resource_procedure() {
    // S03, spec §11.5 item 5.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let nope = d.base().join("nope");
    let p = bytes(&nope);
    expect(c.acquire(&p, b"r", AUTO).await, no_lockspace(&nope));
    expect(c.acquire(&p, b"r", SHARED).await, no_lockspace(&nope));
    expect(c.release(&p, b"r").await, no_lockspace(&nope));
    expect(c.create_resource(&p, b"r").await, no_lockspace(&nope));
    expect(c.delete_resource(&p, b"r").await, no_lockspace(&nope));
    assert!(!nope.exists());
    // Keys are exact strings: an existing directory that was never made a
    // lockspace, or a lockspace spelled with a trailing slash, is unknown.
    let ls = lockspace(&d, &mut c, "ls").await;
    let slash = PathBuf::from(format!("{}/", ls.display()));
    expect(
        c.acquire(&bytes(&slash), b"r", AUTO).await,
        no_lockspace(&slash),
    );
    let plain_dir = d.base().join("plain");
    std::fs::create_dir(&plain_dir).unwrap();
    expect(
        c.create_resource(&bytes(&plain_dir), b"r").await,
        no_lockspace(&plain_dir),
    );
}

#[tokio::test]
async fn create_lockspace_is_idempotent_nested_and_keyed_by_exact_path() {
    // S03, spec §11.5 item 6.
    let d = Daemon::start();
    let mut c = d.client().await;
    let ls = lockspace(&d, &mut c, "ls").await;
    c.create_lockspace(&bytes(&ls)).await.unwrap();
    c.create_lockspace(b"").await.unwrap();
    c.create_lockspace(b"").await.unwrap();
    // Nested missing parents: mkdir -p, each 0700.
    let nested = d.base().join("p1/p2/p3");
    c.create_lockspace(&bytes(&nested)).await.unwrap();
    assert!(nested.is_dir());
    assert_eq!(mode(&d.base().join("p1")), 0o700);
    assert_eq!(mode(&d.base().join("p1/p2")), 0o700);
    assert_eq!(mode(&nested), 0o700);
    // An existing directory becomes a lockspace; its mode is left alone.
    let pre = d.base().join("pre");
    std::fs::create_dir(&pre).unwrap();
    std::fs::set_permissions(&pre, std::fs::Permissions::from_mode(0o755)).unwrap();
    c.create_lockspace(&bytes(&pre)).await.unwrap();
    assert_eq!(mode(&pre), 0o755);
    // Trailing slash: another key, same directory.
    let slash = format!("{}/", ls.display());
    c.create_lockspace(slash.as_bytes()).await.unwrap();
    c.register(&owner("vm", 1, PID_A)).await.unwrap();
    c.acquire(slash.as_bytes(), b"slashres", AUTO)
        .await
        .unwrap();
    let names: Vec<_> = std::fs::read_dir(&ls)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["slashres"]);
    assert_eq!(d.kernel_locks_on(&ls.join("slashres")), [WRITE]);
    // The plain key does not know this resource.
    expect(
        c.release(&bytes(&ls), b"slashres").await,
        not_locked("slashres"),
    );
    c.release(slash.as_bytes(), b"slashres").await.unwrap();
    assert!(!ls.join("slashres").exists());
    // The lockspaces work after all this.
    c.acquire(&bytes(&nested), b"r", AUTO).await.unwrap();
    c.release(&bytes(&nested), b"r").await.unwrap();
}

#[tokio::test]
async fn create_lockspace_on_a_file_is_not_a_directory() {
    // S03 / spec §2.7.
    let d = Daemon::start();
    let mut c = d.client().await;
    let file = d.base().join("afile");
    std::fs::write(&file, b"").unwrap();
    expect(
        c.create_lockspace(&bytes(&file)).await,
        not_a_directory(&file),
    );
    // No entry was stored.
    c.register(&owner("vm", 1, PID_A)).await.unwrap();
    expect(
        c.acquire(&bytes(&file), b"r", AUTO).await,
        no_lockspace(&file),
    );
    assert!(file.is_file());
}

#[tokio::test]
async fn create_lockspace_mkdir_failure_is_a_system_error() {
    // spec §2.7: mkdir under a regular file fails with ENOTDIR. libvirt answers
    // OK to every NEW it cannot create and stores a NULL lockspace (README fix 1).
    let d = Daemon::start();
    let mut c = d.client().await;
    let file = d.base().join("afile");
    std::fs::write(&file, b"").unwrap();
    let dir = file.join("sub");
    expect(
        c.create_lockspace(&bytes(&dir)).await,
        system(
            51,
            libc::ENOTDIR,
            &format!(
                "Unable to create lockspace {}: Not a directory",
                dir.display()
            ),
        ),
    );
    // Deeper: the parent's parent is the file.
    let deep = file.join("a/b");
    expect(
        c.create_lockspace(&bytes(&deep)).await,
        system(
            51,
            libc::ENOTDIR,
            &format!(
                "Unable to create lockspace {}: Not a directory",
                deep.display()
            ),
        ),
    );
    // A name component longer than NAME_MAX (255 bytes).
    let long = d.base().join("n".repeat(256));
    expect(
        c.create_lockspace(&bytes(&long)).await,
        system(
            51,
            libc::ENAMETOOLONG,
            &format!(
                "Unable to create lockspace {}: File name too long",
                long.display()
            ),
        ),
    );
    c.register(&owner("vm", 1, PID_A)).await.unwrap();
    for never_stored in [&dir, &deep, &long] {
        expect(
            c.acquire(&bytes(never_stored), b"r", AUTO).await,
            no_lockspace(never_stored),
        );
    }
}

// ---------------------------------------------------------------------------------
// Resource errors.

#[tokio::test]
async fn acquire_of_a_missing_file_without_autocreate_is_enoent() {
    // S04, S06, spec §11.5 item 9.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    for (name, flags) in [("missing", 0), ("t", SHARED)] {
        expect(
            c.acquire(&p, name.as_bytes(), flags).await,
            system(
                51,
                libc::ENOENT,
                &format!(
                    "Unable to open resource {}/{name}: No such file or directory",
                    ls.display()
                ),
            ),
        );
        assert!(!ls.join(name).exists());
    }
    // Nothing was entered in the table.
    expect(c.release(&p, b"missing").await, not_locked("missing"));
}

#[tokio::test]
async fn create_resource_failure_is_a_system_error_of_domain_none() {
    // spec §2.7: CREATE_RESOURCE errors come from virfile.c (domain 0).
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    std::fs::remove_dir(&ls).unwrap();
    expect(
        c.create_resource(&bytes(&ls), b"r").await,
        system(
            0,
            libc::ENOENT,
            &format!(
                "cannot create file '{}/r': No such file or directory",
                ls.display()
            ),
        ),
    );
    // DELETE of a missing file in a missing directory: ENOENT is ignored.
    c.delete_resource(&bytes(&ls), b"r").await.unwrap();
}

#[tokio::test]
async fn acquire_autocreate_open_failure_is_a_system_error() {
    // spec §2.7: "Unable to open/create resource".
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    std::fs::remove_dir(&ls).unwrap();
    for flags in [AUTO, AUTO | SHARED] {
        expect(
            c.acquire(&bytes(&ls), b"r", flags).await,
            system(
                51,
                libc::ENOENT,
                &format!(
                    "Unable to open/create resource {}/r: No such file or directory",
                    ls.display()
                ),
            ),
        );
    }
    expect(c.release(&bytes(&ls), b"r").await, not_locked("r"));
    // A directory in the way of the lease file.
    std::fs::create_dir_all(ls.join("adir")).unwrap();
    expect(
        c.acquire(&bytes(&ls), b"adir", AUTO).await,
        system(
            51,
            libc::EISDIR,
            &format!(
                "Unable to open/create resource {}/adir: Is a directory",
                ls.display()
            ),
        ),
    );
    expect(
        c.acquire(&bytes(&ls), b"adir", 0).await,
        system(
            51,
            libc::EISDIR,
            &format!(
                "Unable to open resource {}/adir: Is a directory",
                ls.display()
            ),
        ),
    );
    assert!(ls.join("adir").is_dir());
}

#[tokio::test]
async fn resource_names_up_to_255_bytes_work_and_256_are_too_long() {
    // S09.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    let ok = "n".repeat(255);
    c.acquire(&p, ok.as_bytes(), AUTO).await.unwrap();
    assert_eq!(d.kernel_locks_on(&ls.join(&ok)), [WRITE]);
    c.release(&p, ok.as_bytes()).await.unwrap();
    assert!(!ls.join(&ok).exists());
    let long = "n".repeat(256);
    let too_long = |what: &str| {
        system(
            51,
            libc::ENAMETOOLONG,
            &format!("{what} {}/{long}: File name too long", ls.display()),
        )
    };
    expect(
        c.acquire(&p, long.as_bytes(), AUTO).await,
        too_long("Unable to open/create resource"),
    );
    expect(
        c.acquire(&p, long.as_bytes(), 0).await,
        too_long("Unable to open resource"),
    );
    expect(
        c.create_resource(&p, long.as_bytes()).await,
        system(
            0,
            libc::ENAMETOOLONG,
            &format!(
                "cannot create file '{}/{long}': File name too long",
                ls.display()
            ),
        ),
    );
    // The largest string the protocol allows.
    let huge = "n".repeat(65536);
    expect(
        c.acquire(&p, huge.as_bytes(), AUTO).await,
        system(
            51,
            libc::ENAMETOOLONG,
            &format!(
                "Unable to open/create resource {}/{huge}: File name too long",
                ls.display()
            ),
        ),
    );
    c.ping().await.unwrap();
}

#[tokio::test]
async fn non_utf8_resource_names_are_fine() {
    // S09.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    let name: &[u8] = b"caf\xe9\xff\x01x";
    let file = ls.join(OsStr::from_bytes(name));
    c.acquire(&p, name, AUTO).await.unwrap();
    assert!(file.exists());
    assert_eq!(d.kernel_locks_on(&file), [WRITE]);
    let mut other = registered(&d, PID_B).await;
    let err = other.acquire(&p, name, AUTO).await.unwrap_err();
    let e = err.remote().expect("remote error");
    assert_eq!((e.code, e.domain), (87, 51));
    c.release(&p, name).await.unwrap();
    assert!(!file.exists());
}

#[tokio::test]
async fn invalid_names_are_refused_in_directory_lockspaces() {
    // Deliberate fix 1: the real daemon escapes the directory (S09 '../escape') or
    // reports "Is a directory" ('' and '.').
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    std::fs::create_dir(ls.join("sub")).unwrap();
    let p = bytes(&ls);
    for name in ["", ".", "..", "../escape", "sub/x", "x/", "/abs", "a/../b"] {
        let want = invalid_name(name, &ls);
        for flags in [0, AUTO, SHARED, SHARED | AUTO] {
            expect(c.acquire(&p, name.as_bytes(), flags).await, want.clone());
        }
        expect(c.create_resource(&p, name.as_bytes()).await, want.clone());
        expect(c.delete_resource(&p, name.as_bytes()).await, want);
    }
    assert!(!d.base().join("escape").exists());
    assert!(!ls.join("sub/x").exists());
    assert!(ls.is_dir() && ls.join("sub").is_dir());
    // Near misses are ordinary names.
    for name in ["...", ".x", "x.", "..x"] {
        c.acquire(&p, name.as_bytes(), AUTO).await.unwrap();
        assert!(ls.join(name).exists());
        c.release(&p, name.as_bytes()).await.unwrap();
    }
}

#[tokio::test]
async fn default_lockspace_uses_names_as_paths() {
    // S08; in the default lockspace names are not checked.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let file = d.base().join("default-res");
    let name = bytes(&file);
    c.acquire(b"", &name, AUTO).await.unwrap();
    assert!(file.exists());
    assert_eq!(mode(&file), 0o600);
    assert_eq!(d.kernel_locks_on(&file), [WRITE]);
    expect(
        c.acquire(b"", &name, AUTO).await,
        busy(&file.display().to_string()),
    );
    c.release(b"", &name).await.unwrap();
    assert!(!file.exists());
    c.create_resource(b"", &name).await.unwrap();
    assert!(file.exists());
    assert_eq!(mode(&file), 0o600);
    c.delete_resource(b"", &name).await.unwrap();
    assert!(!file.exists());
    // ".." components are just part of the path here.
    std::fs::create_dir(d.base().join("sub")).unwrap();
    let dotted = format!("{}/sub/../dotted", d.base().display());
    c.create_resource(b"", dotted.as_bytes()).await.unwrap();
    assert!(d.base().join("dotted").exists());
    c.acquire(b"", dotted.as_bytes(), 0).await.unwrap();
    assert_eq!(d.kernel_locks_on(&d.base().join("dotted")), [WRITE]);
    c.release(b"", dotted.as_bytes()).await.unwrap();
    c.delete_resource(b"", dotted.as_bytes()).await.unwrap();
    assert!(!d.base().join("dotted").exists());
    // A missing file in the default lockspace.
    let missing = d.base().join("missing");
    expect(
        c.acquire(b"", &bytes(&missing), 0).await,
        system(
            51,
            libc::ENOENT,
            &format!(
                "Unable to open resource {}: No such file or directory",
                missing.display()
            ),
        ),
    );
}

// ---------------------------------------------------------------------------------
// Acquire / release semantics.

#[tokio::test]
async fn exclusive_acquire_and_release_basics() {
    // S04.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    let r1 = ls.join("r1");
    c.create_resource(&p, b"r1").await.unwrap();
    assert!(r1.is_file());
    assert_eq!(mode(&r1), 0o600);
    assert_eq!(std::fs::metadata(&r1).unwrap().len(), 0);
    assert!(d.kernel_locks_on(&r1).is_empty());
    c.acquire(&p, b"r1", 0).await.unwrap();
    assert_eq!(d.kernel_locks_on(&r1), [WRITE]);
    expect(c.acquire(&p, b"r1", 0).await, busy("r1"));
    expect(c.acquire(&p, b"r1", SHARED).await, busy("r1"));
    expect(c.acquire(&p, b"r1", AUTO).await, busy("r1"));
    expect(c.create_resource(&p, b"r1").await, busy("r1"));
    expect(c.delete_resource(&p, b"r1").await, busy("r1"));
    // The refused calls did not disturb the kernel lock.
    assert_eq!(d.kernel_locks_on(&r1), [WRITE]);
    c.release(&p, b"r1").await.unwrap();
    assert!(d.kernel_locks_on(&r1).is_empty());
    assert!(r1.exists(), "non-AUTOCREATE files are kept");
    expect(c.release(&p, b"r1").await, not_locked("r1"));
    c.create_resource(&p, b"r1").await.unwrap();
    c.delete_resource(&p, b"r1").await.unwrap();
    assert!(!r1.exists());
    c.delete_resource(&p, b"r1").await.unwrap();
    c.delete_resource(&p, b"never-existed").await.unwrap();
}

#[tokio::test]
async fn create_resource_leaves_an_existing_file_untouched() {
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let f = ls.join("f");
    std::fs::write(&f, b"content").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    c.create_resource(&bytes(&ls), b"f").await.unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"content");
    assert_eq!(mode(&f), 0o644);
    // Creating a resource where a directory is refuses (libvirt: EISDIR from open).
    std::fs::create_dir(ls.join("d")).unwrap();
    expect(
        c.create_resource(&bytes(&ls), b"d").await,
        system(
            0,
            libc::EISDIR,
            &format!("cannot create file '{}/d': Is a directory", ls.display()),
        ),
    );
}

#[tokio::test]
async fn delete_resource_unlink_failure_is_a_system_error() {
    // spec §2.7: unlink errors other than ENOENT (here EISDIR) are reported.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    std::fs::create_dir(ls.join("adir")).unwrap();
    expect(
        c.delete_resource(&bytes(&ls), b"adir").await,
        system(
            51,
            libc::EISDIR,
            &format!(
                "Unable to delete lockspace resource {}/adir: Is a directory",
                ls.display()
            ),
        ),
    );
    assert!(ls.join("adir").is_dir());
}

#[tokio::test]
async fn touching_a_held_file_through_another_key_keeps_its_kernel_lock() {
    // spec §12 pitfall 1: CREATE_RESOURCE must not open and close a file the daemon
    // holds a lock on (closing any fd of it drops the lock).
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let r = ls.join("r");
    c.acquire(&bytes(&ls), b"r", AUTO).await.unwrap();
    assert_eq!(d.kernel_locks_on(&r), [WRITE]);
    // The same file as a full path in the default lockspace...
    c.create_resource(b"", &bytes(&r)).await.unwrap();
    assert_eq!(d.kernel_locks_on(&r), [WRITE]);
    // ...and through the trailing-slash key of the same directory.
    let slash = format!("{}/", ls.display());
    c.create_lockspace(slash.as_bytes()).await.unwrap();
    c.create_resource(slash.as_bytes(), b"r").await.unwrap();
    assert_eq!(d.kernel_locks_on(&r), [WRITE]);
    c.release(&bytes(&ls), b"r").await.unwrap();
    assert!(!r.exists());
}

#[tokio::test]
async fn autocreate_files_are_0600_and_unlinked_on_release_even_if_pre_existing() {
    // S04.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    let r2 = ls.join("r2");
    c.acquire(&p, b"r2", AUTO).await.unwrap();
    assert!(r2.is_file());
    assert_eq!(mode(&r2), 0o600);
    let ino = inode(&r2);
    assert_eq!(d.kernel_locks_on(&r2), [WRITE]);
    c.release(&p, b"r2").await.unwrap();
    assert!(!r2.exists());
    assert!(locks_on_inode(&d, ino).is_empty());
    // A pre-existing file (with content) is deleted too.
    let pre = ls.join("pre");
    std::fs::write(&pre, b"keep me?").unwrap();
    c.acquire(&p, b"pre", AUTO).await.unwrap();
    assert_eq!(std::fs::read(&pre).unwrap(), b"keep me?");
    c.release(&p, b"pre").await.unwrap();
    assert!(!pre.exists());
    // A pre-existing file acquired without AUTOCREATE is kept.
    std::fs::write(&pre, b"x").unwrap();
    c.acquire(&p, b"pre", 0).await.unwrap();
    c.release(&p, b"pre").await.unwrap();
    assert!(pre.exists());
}

#[tokio::test]
async fn exclusive_contention_between_two_owners() {
    // S05.
    let d = Daemon::start();
    let mut a = registered(&d, PID_A).await;
    let mut b = registered(&d, PID_B).await;
    let ls = lockspace(&d, &mut a, "ls").await;
    let p = bytes(&ls);
    a.acquire(&p, b"x", AUTO).await.unwrap();
    expect(b.acquire(&p, b"x", AUTO).await, busy("x"));
    expect(b.acquire(&p, b"x", 0).await, busy("x"));
    expect(b.acquire(&p, b"x", SHARED | AUTO).await, busy("x"));
    expect(b.release(&p, b"x").await, not_owner(PID_B));
    expect(b.delete_resource(&p, b"x").await, busy("x"));
    expect(b.create_resource(&p, b"x").await, busy("x"));
    assert!(ls.join("x").exists());
    assert_eq!(d.kernel_locks_on(&ls.join("x")), [WRITE]);
    a.release(&p, b"x").await.unwrap();
    b.acquire(&p, b"x", AUTO).await.unwrap();
    expect(a.release(&p, b"x").await, not_owner(PID_A));
    b.release(&p, b"x").await.unwrap();
    assert!(!ls.join("x").exists());
}

#[tokio::test]
async fn shared_leases_between_owners() {
    // S06.
    let d = Daemon::start();
    let mut a = registered(&d, PID_A).await;
    let mut b = registered(&d, PID_B).await;
    let mut c = registered(&d, PID_C).await;
    let ls = lockspace(&d, &mut a, "ls").await;
    let p = bytes(&ls);
    let s = ls.join("s");
    a.acquire(&p, b"s", SHARED | AUTO).await.unwrap();
    b.acquire(&p, b"s", SHARED | AUTO).await.unwrap();
    b.acquire(&p, b"s", SHARED).await.unwrap();
    expect(c.acquire(&p, b"s", AUTO).await, busy("s"));
    expect(c.acquire(&p, b"s", 0).await, busy("s"));
    assert_eq!(d.kernel_locks_on(&s), [READ]);
    expect(c.release(&p, b"s").await, not_owner(PID_C));
    a.release(&p, b"s").await.unwrap();
    expect(a.release(&p, b"s").await, not_owner(PID_A));
    expect(c.acquire(&p, b"s", AUTO).await, busy("s"));
    b.release(&p, b"s").await.unwrap();
    expect(c.acquire(&p, b"s", AUTO).await, busy("s"));
    assert!(s.exists());
    assert_eq!(d.kernel_locks_on(&s), [READ]);
    let ino = inode(&s);
    b.release(&p, b"s").await.unwrap();
    assert!(
        !s.exists(),
        "the last shared release of an AUTOCREATE lease unlinks"
    );
    assert!(locks_on_inode(&d, ino).is_empty());
    c.acquire(&p, b"s", AUTO).await.unwrap();
    expect(a.acquire(&p, b"s", SHARED | AUTO).await, busy("s"));
    expect(a.acquire(&p, b"s", SHARED).await, busy("s"));
    c.release(&p, b"s").await.unwrap();
    expect(
        a.acquire(&p, b"t", SHARED).await,
        system(
            51,
            libc::ENOENT,
            &format!(
                "Unable to open resource {}/t: No such file or directory",
                ls.display()
            ),
        ),
    );
}

#[tokio::test]
async fn shared_autocreate_by_one_owner_counts_each_acquire() {
    // S04 r3: every SHARED acquire is one owner entry.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    let r3 = ls.join("r3");
    c.acquire(&p, b"r3", SHARED | AUTO).await.unwrap();
    assert_eq!(d.kernel_locks_on(&r3), [READ]);
    c.acquire(&p, b"r3", SHARED | AUTO).await.unwrap();
    c.acquire(&p, b"r3", SHARED).await.unwrap();
    assert_eq!(d.kernel_locks_on(&r3), [READ]);
    c.release(&p, b"r3").await.unwrap();
    c.release(&p, b"r3").await.unwrap();
    assert!(r3.exists());
    assert_eq!(d.kernel_locks_on(&r3), [READ]);
    c.release(&p, b"r3").await.unwrap();
    assert!(!r3.exists());
    expect(c.release(&p, b"r3").await, not_locked("r3"));
}

#[tokio::test]
async fn a_shared_entry_keeps_the_flags_of_its_first_acquirer() {
    // spec §6.4: joining a shared lease does not change its AUTOCREATE flag.
    let d = Daemon::start();
    let mut a = registered(&d, PID_A).await;
    let mut b = registered(&d, PID_B).await;
    let ls = lockspace(&d, &mut a, "ls").await;
    let p = bytes(&ls);
    a.create_resource(&p, b"kept").await.unwrap();
    a.acquire(&p, b"kept", SHARED).await.unwrap();
    b.acquire(&p, b"kept", SHARED | AUTO).await.unwrap();
    a.release(&p, b"kept").await.unwrap();
    b.release(&p, b"kept").await.unwrap();
    assert!(ls.join("kept").exists(), "first acquirer had no AUTOCREATE");
    assert!(d.kernel_locks_on(&ls.join("kept")).is_empty());
    a.acquire(&p, b"gone", SHARED | AUTO).await.unwrap();
    b.acquire(&p, b"gone", SHARED).await.unwrap();
    a.release(&p, b"gone").await.unwrap();
    assert!(ls.join("gone").exists());
    b.release(&p, b"gone").await.unwrap();
    assert!(!ls.join("gone").exists(), "first acquirer had AUTOCREATE");
}

#[tokio::test]
async fn release_errors_not_locked_and_not_owner() {
    // Spec §11.5 item 8.
    let d = Daemon::start();
    let mut a = registered(&d, PID_A).await;
    let mut b = registered(&d, PID_B).await;
    let ls = lockspace(&d, &mut a, "ls").await;
    let p = bytes(&ls);
    expect(a.release(&p, b"never").await, not_locked("never"));
    expect(a.release(b"", b"/never").await, not_locked("/never"));
    a.acquire(&p, b"held", AUTO).await.unwrap();
    expect(b.release(&p, b"held").await, not_owner(PID_B));
    // The failed release changed nothing.
    assert_eq!(d.kernel_locks_on(&ls.join("held")), [WRITE]);
    expect(b.acquire(&p, b"held", AUTO).await, busy("held"));
    a.release(&p, b"held").await.unwrap();
}

#[tokio::test]
async fn ownership_is_by_pid_not_by_connection() {
    // S07.
    let d = Daemon::start();
    let mut a = registered(&d, PID_A).await;
    let mut b = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut a, "ls").await;
    let p = bytes(&ls);
    a.acquire(&p, b"o", AUTO).await.unwrap();
    expect(b.acquire(&p, b"o", AUTO).await, busy("o"));
    b.release(&p, b"o").await.unwrap();
    expect(a.release(&p, b"o").await, not_locked("o"));
    assert!(!ls.join("o").exists());
}

// ---------------------------------------------------------------------------------
// Disconnects (spec §5.3, §11.5 item 12, S10, S11).

#[tokio::test]
async fn closing_a_connection_whose_owner_is_not_its_peer_keeps_the_leases() {
    // Spec §11.5 item 12: fake owner pid != peer pid.
    let d = Daemon::start();
    let mut a = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut a, "ls").await;
    let p = bytes(&ls);
    a.acquire(&p, b"keep", AUTO).await.unwrap();
    a.acquire(&p, b"shared", SHARED | AUTO).await.unwrap();
    a.acquire(b"", &bytes(&d.base().join("dflt")), AUTO)
        .await
        .unwrap();
    drop(a);
    wait_lock_clients(&d, 0).await;
    let mut b = registered(&d, PID_B).await;
    expect(b.acquire(&p, b"keep", AUTO).await, busy("keep"));
    expect(b.acquire(&p, b"shared", AUTO).await, busy("shared"));
    assert!(ls.join("keep").exists());
    assert_eq!(d.kernel_locks_on(&ls.join("keep")), [WRITE]);
    assert_eq!(d.kernel_locks_on(&ls.join("shared")), [READ]);
    assert_eq!(d.kernel_locks_on(&d.base().join("dflt")), [WRITE]);
    // Re-register as that pid on another connection: it can release.
    let mut again = registered(&d, PID_A).await;
    again.release(&p, b"keep").await.unwrap();
    again.release(&p, b"shared").await.unwrap();
    again
        .release(b"", &bytes(&d.base().join("dflt")))
        .await
        .unwrap();
    assert!(!ls.join("keep").exists());
    assert!(!d.base().join("dflt").exists());
    b.acquire(&p, b"keep", AUTO).await.unwrap();
    b.release(&p, b"keep").await.unwrap();
}

/// A process that exists but is neither the test runner nor the daemon.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn closing_a_connection_registered_as_another_live_process_kills_nobody() {
    // S11: the owner pid is another live process.
    let d = Daemon::start();
    let mut sleeper = Sleeper(
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = sleeper.0.id();
    let mut a = registered(&d, pid).await;
    let ls = lockspace(&d, &mut a, "ls").await;
    let p = bytes(&ls);
    a.acquire(&p, b"f", AUTO).await.unwrap();
    drop(a);
    wait_lock_clients(&d, 0).await;
    // Deliberately let time pass: a wrong fence, decided at the disconnect,
    // would land within this.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut b = registered(&d, PID_B).await;
    expect(b.acquire(&p, b"f", AUTO).await, busy("f"));
    assert!(
        matches!(sleeper.0.try_wait(), Ok(None)),
        "the foreign owner process must not be signalled"
    );
    let mut again = registered(&d, pid).await;
    again.release(&p, b"f").await.unwrap();
    assert!(!ls.join("f").exists());
}

// ---------------------------------------------------------------------------------
// Another process holds the kernel lock (spec §11.5 item 10, §6.5).

/// A forked child holding a POSIX lock on byte 0 of a file until dropped.
struct ForeignLock {
    child: nix::unistd::Pid,
    go: Option<OwnedFd>,
}

impl ForeignLock {
    fn hold(path: &Path, kind: libc::c_int) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
        let (go_r, go_w) = nix::unistd::pipe().unwrap();
        let (file_fd, ready_fd, go_fd) = (file.as_raw_fd(), ready_w.as_raw_fd(), go_r.as_raw_fd());
        // SAFETY: the child makes raw, async-signal-safe syscalls only (dup2,
        // close_range, fcntl, write, read, _exit) on fds it inherited, then exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => unsafe {
                // Keep only the file and the two pipe ends, as fds 0-2, so that the
                // child holds no other test's sockets open.
                libc::dup2(file_fd, 0);
                libc::dup2(ready_fd, 1);
                libc::dup2(go_fd, 2);
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                let fl = libc::flock {
                    l_type: kind as libc::c_short,
                    l_whence: libc::SEEK_SET as libc::c_short,
                    l_start: 0,
                    l_len: 1,
                    l_pid: 0,
                };
                let ok: u8 = (libc::fcntl(0, libc::F_SETLK, &fl) == 0) as u8;
                libc::write(1, (&ok as *const u8).cast(), 1);
                let mut b = 0u8;
                libc::read(2, (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            },
            nix::unistd::ForkResult::Parent { child } => {
                drop((file, ready_w, go_r));
                let mut b = [0u8; 1];
                let n = nix::unistd::read(&ready_r, &mut b).unwrap();
                assert_eq!((n, b[0]), (1, 1), "child could not take its lock");
                Self {
                    child,
                    go: Some(go_w),
                }
            }
        }
    }
}

impl Drop for ForeignLock {
    fn drop(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = nix::unistd::write(&go, &[0]);
        }
        let _ = nix::sys::wait::waitpid(self.child, None);
    }
}

#[tokio::test]
async fn another_process_holding_the_file_makes_acquire_busy_and_keeps_the_file() {
    // Spec §11.5 item 10.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    let held = ls.join("held");
    std::fs::write(&held, b"").unwrap();
    let foreign = ForeignLock::hold(&held, libc::F_WRLCK);
    for flags in [AUTO, 0, SHARED, SHARED | AUTO] {
        expect(c.acquire(&p, b"held", flags).await, busy("held"));
        assert!(
            held.exists(),
            "a refused acquire (flags {flags}) keeps the file"
        );
    }
    assert!(d.kernel_locks_on(&held).is_empty());
    // Nothing was entered in the table.
    expect(c.release(&p, b"held").await, not_locked("held"));
    drop(foreign);
    c.acquire(&p, b"held", AUTO).await.unwrap();
    assert_eq!(d.kernel_locks_on(&held), [WRITE]);
    c.release(&p, b"held").await.unwrap();
    assert!(!held.exists());
}

#[tokio::test]
async fn another_process_sharing_the_file_keeps_it_after_the_last_shared_release() {
    // Spec §6.5: a shared AUTOCREATE lease deletes the file only if it can upgrade
    // to an exclusive lock, i.e. nobody else shares it.
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let ls = lockspace(&d, &mut c, "ls").await;
    let p = bytes(&ls);
    let f = ls.join("f");
    std::fs::write(&f, b"").unwrap();
    let foreign = ForeignLock::hold(&f, libc::F_RDLCK);
    expect(c.acquire(&p, b"f", AUTO).await, busy("f"));
    expect(c.acquire(&p, b"f", 0).await, busy("f"));
    c.acquire(&p, b"f", SHARED | AUTO).await.unwrap();
    assert_eq!(d.kernel_locks_on(&f), [READ]);
    c.release(&p, b"f").await.unwrap();
    assert!(f.exists(), "another process still shares the lease file");
    assert!(d.kernel_locks_on(&f).is_empty());
    drop(foreign);
    // Without a foreign sharer the last release deletes it.
    c.acquire(&p, b"f", SHARED | AUTO).await.unwrap();
    c.release(&p, b"f").await.unwrap();
    assert!(!f.exists());
}

// ---------------------------------------------------------------------------------
// libvirt's tests/virlockspacetest.c through the RPC surface (spec §11.1).

#[tokio::test]
async fn lockspacetest_1_lockspace_creation() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let dir = d.base().join("lockspacetest");
    assert!(!dir.exists());
    c.create_lockspace(&bytes(&dir)).await.unwrap();
    assert!(dir.is_dir());
}

#[tokio::test]
async fn lockspacetest_2_resource_lifecycle() {
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let dir = lockspace(&d, &mut c, "lockspacetest").await;
    let p = bytes(&dir);
    c.create_resource(&p, b"foo").await.unwrap();
    assert!(dir.join("foo").exists());
    c.delete_resource(&p, b"foo").await.unwrap();
    assert!(!dir.join("foo").exists());
}

#[tokio::test]
async fn lockspacetest_3_exclusive_lock() {
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let dir = lockspace(&d, &mut c, "lockspacetest").await;
    let p = bytes(&dir);
    let foo = dir.join("foo");
    c.create_resource(&p, b"foo").await.unwrap();
    c.acquire(&p, b"foo", 0).await.unwrap();
    assert!(foo.exists());
    assert_eq!(d.kernel_locks_on(&foo), [WRITE]);
    expect(c.acquire(&p, b"foo", 0).await, busy("foo"));
    expect(c.delete_resource(&p, b"foo").await, busy("foo"));
    c.release(&p, b"foo").await.unwrap();
    assert!(d.kernel_locks_on(&foo).is_empty());
    c.delete_resource(&p, b"foo").await.unwrap();
    assert!(!foo.exists());
}

#[tokio::test]
async fn lockspacetest_4_shared_lock() {
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let dir = lockspace(&d, &mut c, "lockspacetest").await;
    let p = bytes(&dir);
    let foo = dir.join("foo");
    c.create_resource(&p, b"foo").await.unwrap();
    c.acquire(&p, b"foo", SHARED).await.unwrap();
    assert_eq!(d.kernel_locks_on(&foo), [READ]);
    expect(c.acquire(&p, b"foo", 0).await, busy("foo"));
    c.acquire(&p, b"foo", SHARED).await.unwrap();
    assert_eq!(d.kernel_locks_on(&foo), [READ]);
    expect(c.delete_resource(&p, b"foo").await, busy("foo"));
    c.release(&p, b"foo").await.unwrap();
    assert_eq!(d.kernel_locks_on(&foo), [READ]);
    expect(c.delete_resource(&p, b"foo").await, busy("foo"));
    c.release(&p, b"foo").await.unwrap();
    assert!(d.kernel_locks_on(&foo).is_empty());
    assert!(foo.exists());
    c.delete_resource(&p, b"foo").await.unwrap();
    assert!(!foo.exists());
}

#[tokio::test]
async fn lockspacetest_5_exclusive_autocreate() {
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let dir = lockspace(&d, &mut c, "lockspacetest").await;
    let p = bytes(&dir);
    let foo = dir.join("foo");
    c.create_resource(&p, b"foo").await.unwrap();
    c.acquire(&p, b"foo", AUTO).await.unwrap();
    assert!(foo.exists());
    let ino = inode(&foo);
    assert_eq!(d.kernel_locks_on(&foo), [WRITE]);
    c.release(&p, b"foo").await.unwrap();
    assert!(!foo.exists());
    assert!(locks_on_inode(&d, ino).is_empty());
}

#[tokio::test]
async fn lockspacetest_6_shared_autocreate() {
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let dir = lockspace(&d, &mut c, "lockspacetest").await;
    let p = bytes(&dir);
    let foo = dir.join("foo");
    c.create_resource(&p, b"foo").await.unwrap();
    c.acquire(&p, b"foo", SHARED | AUTO).await.unwrap();
    let ino = inode(&foo);
    assert_eq!(d.kernel_locks_on(&foo), [READ]);
    expect(c.acquire(&p, b"foo", AUTO).await, busy("foo"));
    assert!(foo.exists());
    c.acquire(&p, b"foo", SHARED | AUTO).await.unwrap();
    assert_eq!(d.kernel_locks_on(&foo), [READ]);
    c.release(&p, b"foo").await.unwrap();
    assert!(foo.exists());
    assert_eq!(d.kernel_locks_on(&foo), [READ]);
    c.release(&p, b"foo").await.unwrap();
    assert!(!foo.exists());
    assert!(locks_on_inode(&d, ino).is_empty());
}

#[tokio::test]
async fn lockspacetest_7_full_path_in_default_lockspace() {
    let d = Daemon::start();
    let mut c = registered(&d, PID_A).await;
    let dir = d.base().join("lockspacetest");
    std::fs::create_dir(&dir).unwrap();
    let foo = dir.join("foo");
    let name = bytes(&foo);
    let shown = foo.display().to_string();
    c.create_resource(b"", &name).await.unwrap();
    assert!(foo.exists());
    c.acquire(b"", &name, 0).await.unwrap();
    assert_eq!(d.kernel_locks_on(&foo), [WRITE]);
    expect(c.acquire(b"", &name, 0).await, busy(&shown));
    expect(c.delete_resource(b"", &name).await, busy(&shown));
    c.release(b"", &name).await.unwrap();
    assert!(d.kernel_locks_on(&foo).is_empty());
    c.delete_resource(b"", &name).await.unwrap();
    assert!(!foo.exists());
}
