//! Open file description locks (`F_OFD_SETLK`, byte 0, length 1) between two
//! Gluster clients: the crash-safe lease mode keeps its leases as OFD locks
//! whose descriptions outlive the daemon (parked in flight in a Unix socket),
//! so on a shared volume they must be arbitrated by the brick exactly as POSIX
//! locks are, and live exactly as long as their open file description.
//!
//! The test process reaches the mounts of the volume through
//! `/proc/<namespace's first pid>/root`, which resolves paths in that mount
//! namespace: every lock below is taken by this process, through two FUSE
//! mounts (two Gluster clients) of one lease file.

use std::ffi::c_int;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use super::{missing_prerequisite, Gluster};

/// Bound of the wait for the brick to drop a lock after the last reference to
/// its description is gone: FUSE sends that RELEASE in the background.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);
/// How long a lock that must survive a close is watched after it.
const STILL_HELD_FOR: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Ofd,
    Posix,
}

/// The lease byte, as the daemon locks it.
fn byte_zero(ty: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: ty as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        // F_OFD_SETLK requires 0 here.
        l_pid: 0,
    }
}

/// A non-blocking lock request (or unlock) of byte 0.
fn set(fd: impl AsFd, kind: Kind, ty: libc::c_int) -> nix::Result<()> {
    let lock = byte_zero(ty);
    let arg = match kind {
        Kind::Ofd => FcntlArg::F_OFD_SETLK(&lock),
        Kind::Posix => FcntlArg::F_SETLK(&lock),
    };
    fcntl(fd, arg).map(drop)
}

#[track_caller]
fn granted(r: nix::Result<()>, what: &str) {
    if let Err(e) = r {
        panic!("{what}: refused ({e})");
    }
}

#[track_caller]
fn refused(r: nix::Result<()>, what: &str) {
    match r {
        Err(Errno::EAGAIN | Errno::EACCES) => {}
        other => panic!("{what}: expected EAGAIN or EACCES, got {other:?}"),
    }
}

/// The exclusive lease cannot be taken through `other` (another Gluster
/// client), now nor a little later: nothing in flight is about to drop it.
#[track_caller]
fn still_held(other: &File, what: &str) {
    refused(set(other, Kind::Ofd, libc::F_WRLCK), what);
    std::thread::sleep(STILL_HELD_FOR);
    refused(
        set(other, Kind::Ofd, libc::F_WRLCK),
        &format!("{what}, {STILL_HELD_FOR:?} later"),
    );
}

/// Polls until `other` gets the exclusive lease (then lets it go again);
/// returns how long the brick took to drop the previous holder's lock.
#[track_caller]
fn freed_for(other: &File, what: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        match set(other, Kind::Ofd, libc::F_WRLCK) {
            Ok(()) => break,
            Err(Errno::EAGAIN | Errno::EACCES) if t0.elapsed() < RELEASE_PATIENCE => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{what}: still refused after {:?} ({e})", t0.elapsed()),
        }
    }
    let took = t0.elapsed();
    granted(set(other, Kind::Ofd, libc::F_UNLCK), "unlock");
    took
}

/// Puts a new reference to `fd`'s open file description in flight in a Unix
/// socket, as the daemon parks its leases: returns the socket pair that holds
/// it (sender, receiver).
fn park(fd: impl AsFd) -> (OwnedFd, OwnedFd) {
    let (tx, rx) = socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    let fds = [fd.as_fd().as_raw_fd()];
    sendmsg::<()>(
        tx.as_raw_fd(),
        &[IoSlice::new(b"l")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .expect("send the fd");
    (tx, rx)
}

/// Receives the reference parked in `rx`: a new fd, same description.
fn unpark(rx: &OwnedFd) -> OwnedFd {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        rx.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("receive the fd");
    for c in msg.cmsgs().expect("control messages") {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let [fd] = fds[..] {
                // SAFETY: the kernel just installed this fd for us; nothing
                // else owns it.
                return unsafe { OwnedFd::from_raw_fd(fd) };
            }
        }
    }
    panic!("no fd received");
}

fn open(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

#[test]
fn ofd_locks_cross_glusterfs_clients() {
    if let Some(why) = missing_prerequisite() {
        crate::support::skip("ofd_locks_cross_glusterfs_clients", &why);
        return;
    }
    let t0 = Instant::now();
    let g = Gluster::start();
    // The lease file as each host names it, from this mount namespace.
    let via = |h: &str| -> PathBuf {
        let mount = g.mount(h);
        let inside = mount.strip_prefix("/").expect("absolute mount point");
        PathBuf::from(format!("/proc/{}/root", g.init))
            .join(inside)
            .join("lease")
    };
    let a = open(&via("hostA"));
    let b = open(&via("hostB"));
    let (meta_a, meta_b) = (a.metadata().expect("stat"), b.metadata().expect("stat"));
    assert_ne!(
        meta_a.dev(),
        meta_b.dev(),
        "hostA and hostB must be two mounts"
    );
    assert_eq!(meta_a.ino(), meta_b.ino(), "one lease file on both mounts");

    // 0. In contrast, and to show that the checks below see a release: a
    //    POSIX lock goes with the first close of any fd of the file.
    granted(set(&a, Kind::Posix, libc::F_WRLCK), "POSIX write via A");
    refused(
        set(&b, Kind::Ofd, libc::F_WRLCK),
        "OFD write via B, POSIX held",
    );
    drop(a.try_clone().expect("dup"));
    let posix_by_dup = freed_for(&b, "POSIX lock after closing a dup of A's fd");

    // 1. Exclusive through A keeps out every request through B, OFD or POSIX,
    //    and another description through A too.
    granted(set(&a, Kind::Ofd, libc::F_WRLCK), "OFD write via A");
    refused(set(&b, Kind::Ofd, libc::F_WRLCK), "OFD write via B");
    refused(set(&b, Kind::Ofd, libc::F_RDLCK), "OFD read via B");
    refused(set(&b, Kind::Posix, libc::F_WRLCK), "POSIX write via B");
    refused(set(&b, Kind::Posix, libc::F_RDLCK), "POSIX read via B");
    let a2 = open(&via("hostA"));
    refused(
        set(&a2, Kind::Ofd, libc::F_WRLCK),
        "OFD write via another description on A",
    );
    // B learns that a write lock on the byte conflicts, not who holds it
    // (l_pid -1, as for any OFD lock).
    let mut probe = byte_zero(libc::F_RDLCK);
    fcntl(&b, FcntlArg::F_OFD_GETLK(&mut probe)).expect("F_OFD_GETLK via B");
    assert_eq!(
        (
            c_int::from(probe.l_type),
            probe.l_start,
            probe.l_len,
            probe.l_pid
        ),
        (libc::F_WRLCK, 0, 1, -1),
        "conflict reported through B"
    );
    // The lock lives on the brick only: the kernel's lock table, where
    // `virtlockd::proclocks` looks, does not list it (FUSE passes the lock on
    // to the Gluster client instead of recording it).
    let in_kernel: Vec<_> = virtlockd::proclocks::of_pid_by_fd(std::process::id())
        .expect("fdinfo")
        .into_iter()
        .filter(|l| l.inode == meta_a.ino())
        .collect();
    assert_eq!(in_kernel, [], "a Gluster lease in the kernel's lock table");

    // 2. Closing a second reference to the description keeps the lock: a dup,
    //    then an fd received over a Unix socket (SCM_RIGHTS).
    drop(a.try_clone().expect("dup"));
    still_held(&b, "after closing a dup of A's fd");
    let (tx, rx) = park(&a);
    drop(unpark(&rx));
    drop((tx, rx));
    still_held(&b, "after closing A's fd received over a socket");

    // 3. An explicit unlock through one reference releases it at once, though
    //    the other stays open.
    let (tx, rx) = park(&a);
    let received = unpark(&rx);
    drop((tx, rx));
    granted(set(&received, Kind::Ofd, libc::F_UNLCK), "OFD unlock");
    granted(
        set(&b, Kind::Ofd, libc::F_WRLCK),
        "OFD write via B after the unlock through the received fd",
    );
    refused(
        set(&a, Kind::Ofd, libc::F_WRLCK),
        "OFD write via A while B holds",
    );
    granted(set(&b, Kind::Ofd, libc::F_UNLCK), "OFD unlock via B");
    drop(received);

    // 4. Shared leases through A and B coexist, and keep an exclusive out.
    granted(set(&a, Kind::Ofd, libc::F_RDLCK), "OFD read via A");
    granted(set(&b, Kind::Ofd, libc::F_RDLCK), "OFD read via B too");
    refused(
        set(&a2, Kind::Ofd, libc::F_WRLCK),
        "OFD write via another description on A, under two readers",
    );
    let b2 = open(&via("hostB"));
    refused(
        set(&b2, Kind::Posix, libc::F_WRLCK),
        "POSIX write via B, under two readers",
    );
    drop(b2);
    granted(set(&a, Kind::Ofd, libc::F_UNLCK), "OFD unlock via A");
    granted(set(&b, Kind::Ofd, libc::F_UNLCK), "OFD unlock via B");

    // 5. The last close releases it: once with the last fd closed, once with
    //    the last reference in flight, dropped with the socket that holds it.
    granted(set(&a, Kind::Ofd, libc::F_WRLCK), "OFD write via A again");
    let dup = a.try_clone().expect("dup");
    drop(a);
    still_held(&b, "after closing A's first fd, its dup open");
    drop(dup);
    let by_close = freed_for(&b, "after the last fd of A's description closed");

    granted(
        set(&a2, Kind::Ofd, libc::F_WRLCK),
        "OFD write via A's other description",
    );
    let (tx, rx) = park(&a2);
    drop(a2);
    still_held(&b, "with A's only reference parked in a socket");
    drop((tx, rx));
    let by_socket = freed_for(&b, "after the socket holding A's last reference closed");

    // 6. A crash, as the crash-safe mode lives it: the process that took the
    //    lock is killed while its description is parked; the successor takes
    //    it out of the socket, and its explicit unlock frees the lease.
    let a3 = open(&via("hostA"));
    let (ready_rd, ready_wr) = nix::unistd::pipe().expect("pipe");
    let lock = byte_zero(libc::F_WRLCK);
    // SAFETY: the child only makes raw async-signal-safe calls (fcntl, write,
    // pause, _exit) on what it inherited.
    let taker = match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => unsafe {
            let ok = libc::fcntl(a3.as_raw_fd(), libc::F_OFD_SETLK, &lock) == 0;
            libc::write(ready_wr.as_raw_fd(), [u8::from(ok)].as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        },
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(ready_wr);
    let mut ok = [0u8; 1];
    let got = nix::unistd::read(&ready_rd, &mut ok);
    let (tx, rx) = park(&a3);
    drop(a3);
    nix::sys::signal::kill(taker, nix::sys::signal::Signal::SIGKILL).expect("kill");
    nix::sys::wait::waitpid(taker, None).expect("reap");
    assert_eq!(got, Ok(1), "the child's report");
    assert_eq!(ok, [1], "OFD write via A in a child refused");
    still_held(&b, "with its taker killed, its description parked");
    let successor = unpark(&rx);
    drop((tx, rx));
    still_held(&b, "once the successor has its description");
    granted(
        set(&successor, Kind::Ofd, libc::F_UNLCK),
        "OFD unlock by the successor",
    );
    granted(
        set(&b, Kind::Ofd, libc::F_WRLCK),
        "OFD write via B after the successor's unlock",
    );
    drop(successor);
    granted(set(&b, Kind::Ofd, libc::F_UNLCK), "OFD unlock via B");

    eprintln!(
        "OFD locks cross Gluster clients: freed {by_close:?} after the last close, \
         {by_socket:?} after the parking socket closed (a POSIX lock {posix_by_dup:?} \
         after closing a dup); {:?} in all",
        t0.elapsed()
    );
}
