//! Taking over the sockets a live upgrade left open across exec: listeners and
//! client connections, each by its fd number in the snapshot.

use std::os::fd::{FromRawFd, OwnedFd};

use tokio::net::{UnixListener, UnixStream};

use crate::state::ListenerState;

/// Takes ownership of an inherited fd after checking it is open.
fn owned_fd(fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: only a flag query on a borrowed fd.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)?;
    // SAFETY: inherited across exec for exactly this use; open (checked above).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn adopt_listener(l: &ListenerState) -> std::io::Result<UnixListener> {
    let std_listener = std::os::unix::net::UnixListener::from(owned_fd(l.fd)?);
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

pub fn adopt_stream(fd: i32) -> std::io::Result<UnixStream> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // One F_GETFL both proves the fd open and tells whether O_NONBLOCK (a flag
    // of the open file, which survives exec) still needs setting.
    // SAFETY: a flag query on a borrowed fd.
    let flags = fcntl(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        FcntlArg::F_GETFL,
    )?;
    // SAFETY: inherited across exec for this client; open (checked above).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let flags = OFlag::from_bits_truncate(flags);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(&owned, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    UnixStream::from_std(std::os::unix::net::UnixStream::from(owned))
}
