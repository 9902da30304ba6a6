//! libvirt's tests/virlockspacetest.c scenarios (spec §11.1) on a real directory,
//! with kernel state checked in /proc/locks.

use super::*;
use crate::proclocks;

const OWNER: OwnerPid = 4242;
const SHARED: u32 = ACQUIRE_SHARED;
const AUTO: u32 = ACQUIRE_AUTOCREATE;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ls: LockSpace,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lockspace");
    create_directory(dir.as_os_str().as_bytes()).unwrap();
    let ls = LockSpace::directory(dir.as_os_str().as_bytes().to_vec());
    Fixture { _tmp: tmp, dir, ls }
}

fn kernel_modes(path: &Path) -> Vec<String> {
    proclocks::of_pid_on(std::process::id(), path)
        .unwrap()
        .into_iter()
        .map(|l| format!("{} {} {}-{:?}", l.kind, l.mode, l.start, l.end))
        .collect()
}

#[test]
fn lockspace_creation_makes_the_directory() {
    let f = fixture();
    assert!(f.dir.is_dir());
    let file = f.dir.join("file");
    std::fs::write(&file, b"").unwrap();
    assert_eq!(
        create_directory(file.as_os_str().as_bytes()),
        Err(LockError::NotADirectory(file.display().to_string()))
    );
}

#[test]
fn resource_lifecycle() {
    let mut f = fixture();
    f.ls.create_resource(b"foo").unwrap();
    assert!(f.dir.join("foo").exists());
    f.ls.delete_resource(b"foo").unwrap();
    assert!(!f.dir.join("foo").exists());
    f.ls.delete_resource(b"foo").unwrap();
}

#[test]
fn exclusive_lock() {
    let mut f = fixture();
    let foo = f.dir.join("foo");
    f.ls.create_resource(b"foo").unwrap();
    f.ls.acquire(b"foo", OWNER, 0).unwrap();
    assert_eq!(kernel_modes(&foo), ["POSIX WRITE 0-Some(0)"]);
    assert_eq!(
        f.ls.acquire(b"foo", OWNER, 0),
        Err(LockError::Busy("foo".into()))
    );
    assert_eq!(
        f.ls.delete_resource(b"foo"),
        Err(LockError::Busy("foo".into()))
    );
    f.ls.release(b"foo", OWNER).unwrap();
    assert!(kernel_modes(&foo).is_empty());
    assert!(foo.exists(), "non-AUTOCREATE files stay");
    f.ls.delete_resource(b"foo").unwrap();
    assert!(!foo.exists());
}

#[test]
fn shared_lock() {
    let mut f = fixture();
    let foo = f.dir.join("foo");
    f.ls.create_resource(b"foo").unwrap();
    f.ls.acquire(b"foo", OWNER, SHARED).unwrap();
    assert_eq!(kernel_modes(&foo), ["POSIX READ 0-Some(0)"]);
    assert!(f.ls.acquire(b"foo", OWNER, 0).is_err());
    f.ls.acquire(b"foo", OWNER, SHARED).unwrap();
    assert_eq!(
        kernel_modes(&foo).len(),
        1,
        "one kernel lock for all sharers"
    );
    assert!(f.ls.delete_resource(b"foo").is_err());
    f.ls.release(b"foo", OWNER).unwrap();
    assert!(f.ls.delete_resource(b"foo").is_err());
    f.ls.release(b"foo", OWNER).unwrap();
    f.ls.delete_resource(b"foo").unwrap();
    assert!(!foo.exists());
}

#[test]
fn exclusive_autocreate_deletes_even_a_preexisting_file() {
    let mut f = fixture();
    f.ls.create_resource(b"foo").unwrap();
    f.ls.acquire(b"foo", OWNER, AUTO).unwrap();
    assert!(f.dir.join("foo").exists());
    f.ls.release(b"foo", OWNER).unwrap();
    assert!(!f.dir.join("foo").exists());
}

#[test]
fn shared_autocreate() {
    let mut f = fixture();
    let foo = f.dir.join("foo");
    f.ls.create_resource(b"foo").unwrap();
    f.ls.acquire(b"foo", OWNER, SHARED | AUTO).unwrap();
    assert!(f.ls.acquire(b"foo", OWNER, AUTO).is_err());
    assert!(foo.exists());
    f.ls.acquire(b"foo", OWNER, SHARED | AUTO).unwrap();
    f.ls.release(b"foo", OWNER).unwrap();
    assert!(foo.exists());
    f.ls.release(b"foo", OWNER).unwrap();
    assert!(!foo.exists());
}

#[test]
fn full_path_in_default_lockspace() {
    let f = fixture();
    let mut ls = LockSpace::default_space();
    let foo = f.dir.join("foo");
    let name = foo.as_os_str().as_bytes();
    ls.create_resource(name).unwrap();
    ls.acquire(name, OWNER, 0).unwrap();
    assert!(ls.acquire(name, OWNER, 0).is_err());
    assert!(ls.delete_resource(name).is_err());
    ls.release(name, OWNER).unwrap();
    ls.delete_resource(name).unwrap();
    assert!(!foo.exists());
}

#[test]
fn release_errors() {
    let mut f = fixture();
    assert_eq!(
        f.ls.release(b"x", OWNER),
        Err(LockError::NotLocked("x".into()))
    );
    f.ls.acquire(b"x", OWNER, AUTO).unwrap();
    assert_eq!(f.ls.release(b"x", 7), Err(LockError::NotOwner(7)));
    assert_eq!(
        f.ls.acquire(b"missing", OWNER, 0).unwrap_err().errno(),
        Some(nix::errno::Errno::ENOENT)
    );
}

#[test]
fn release_owner_removes_every_entry_and_only_that_owners() {
    let mut f = fixture();
    f.ls.acquire(b"s", OWNER, SHARED | AUTO).unwrap();
    f.ls.acquire(b"s", OWNER, SHARED | AUTO).unwrap();
    f.ls.acquire(b"s", 99, SHARED | AUTO).unwrap();
    f.ls.acquire(b"x", OWNER, AUTO).unwrap();
    f.ls.acquire(b"y", 99, AUTO).unwrap();
    let mut released = f.ls.release_owner(OWNER);
    released.sort();
    assert_eq!(released, [b"s".to_vec(), b"x".to_vec()]);
    assert!(!f.dir.join("x").exists());
    assert!(f.dir.join("s").exists(), "still shared by 99");
    assert_eq!(
        f.ls.release(b"s", OWNER),
        Err(LockError::NotOwner(OWNER as i64))
    );
    assert!(f.ls.release_owner(99).len() == 2);
    assert!(f.ls.is_empty());
    assert!(!f.dir.join("s").exists());
}

#[test]
fn names_that_leave_the_directory_are_refused() {
    let mut f = fixture();
    for name in [&b""[..], b".", b"..", b"../escape", b"a/b"] {
        assert!(matches!(
            f.ls.acquire(name, OWNER, AUTO),
            Err(LockError::InvalidName { .. })
        ));
        assert!(f.ls.create_resource(name).is_err());
        assert!(f.ls.delete_resource(name).is_err());
    }
    assert!(!f.dir.parent().unwrap().join("escape").exists());
}

#[test]
fn conflict_with_another_process_is_busy_and_keeps_the_file() {
    let mut f = fixture();
    let path = f.dir.join("held");
    std::fs::write(&path, b"").unwrap();
    // Another process holds a POSIX write lock on byte 0: a forked child that only
    // makes raw syscalls before _exit.
    // Two pipes: child -> parent "locked", parent -> child "you may exit".
    let (ready_rd, ready_wr) = nix::unistd::pipe().unwrap();
    let (done_rd, done_wr) = nix::unistd::pipe().unwrap();
    let lease = Lease::open_existing(&path).unwrap();
    // SAFETY: the child only calls async-signal-safe functions (fcntl, write, read,
    // _exit) on fds it inherited.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let ok = lease.lock(LockMode::Exclusive).is_ok();
            let _ = nix::unistd::write(&ready_wr, &[ok as u8]);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&done_rd, &mut b);
            unsafe { libc::_exit(0) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(lease);
            let mut b = [0u8; 1];
            nix::unistd::read(&ready_rd, &mut b).unwrap();
            assert_eq!(b[0], 1);
            assert_eq!(
                f.ls.acquire(b"held", OWNER, AUTO),
                Err(LockError::Busy("held".into()))
            );
            assert_eq!(
                f.ls.acquire(b"held", OWNER, SHARED),
                Err(LockError::Busy("held".into()))
            );
            assert!(path.exists(), "a refused AUTOCREATE leaves the file");
            nix::unistd::write(&done_wr, &[0]).unwrap();
            nix::sys::wait::waitpid(child, None).unwrap();
            f.ls.acquire(b"held", OWNER, 0).unwrap();
        }
    }
}

#[test]
fn one_file_under_two_names_is_never_leased_twice() {
    let mut f = fixture();
    let path = f.dir.join("disk");
    f.ls.acquire(b"disk", OWNER, AUTO).unwrap();
    let mut default = LockSpace::default_space();
    let alias = path.as_os_str().as_bytes();
    assert_eq!(
        default.acquire(alias, 7, 0),
        Err(LockError::Busy(lossy_utf8(alias)))
    );
    assert_eq!(
        default.acquire(alias, 7, SHARED | AUTO),
        Err(LockError::Busy(lossy_utf8(alias)))
    );
    // The refused attempts must not have dropped the holder's kernel lock.
    assert_eq!(kernel_modes(&path), ["POSIX WRITE 0-Some(0)"]);
    f.ls.release(b"disk", OWNER).unwrap();
    std::fs::write(&path, b"").unwrap();
    default.acquire(alias, 7, 0).unwrap();
    assert_eq!(kernel_modes(&path), ["POSIX WRITE 0-Some(0)"]);
    default.release(alias, 7).unwrap();
    assert!(kernel_modes(&path).is_empty());
}

#[test]
fn owner_details_live_as_long_as_the_owners_entries() {
    use crate::protocol::lock::Owner;
    use std::sync::Arc;
    let mut f = fixture();
    let vm = |pid: u32| {
        Some(Arc::new(Owner {
            uuid: [pid as u8; 16],
            name: format!("vm{pid}").into_bytes(),
            id: pid,
            pid,
        }))
    };
    f.ls.acquire_as(b"a", 11, SHARED | AUTO, vm(11)).unwrap();
    f.ls.acquire_as(b"a", 11, SHARED | AUTO, vm(11)).unwrap();
    f.ls.acquire_as(b"b", 12, AUTO, vm(12)).unwrap();
    let shown = crate::lockspace::inspect::leases(&f.ls);
    let a = shown.iter().find(|l| l.name == b"a").unwrap();
    assert_eq!(a.owners.len(), 2);
    assert!(a.shared && a.autocreate && a.acquired_at > 0);
    assert_eq!(
        a.owners[0].details.as_ref().map(|d| d.name.clone()),
        Some(b"vm11".to_vec())
    );
    f.ls.release(b"a", 11).unwrap();
    assert!(f.ls.owner_details(11).is_some(), "one entry left");
    f.ls.release(b"a", 11).unwrap();
    assert!(f.ls.owner_details(11).is_none());
    // Carried over a live upgrade with the table (the restore is tested end to
    // end in tests/it/virtlockctl.rs).
    let state = f.ls.state();
    assert_eq!(state.owners.iter().map(|o| o.pid).collect::<Vec<_>>(), [12]);
    assert_eq!(f.ls.release_owner(12), vec![b"b".to_vec()]);
    assert!(f.ls.owner_details(12).is_none());
}
