//! Binding the daemon's Unix sockets as libvirt does: stale path unlinked first
//! (safe because the pid file is already held), inode mode 0700, backlog 30,
//! close-on-exec.

use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::socket::{
    bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::{umask, Mode};

/// libvirt's listen backlog (`max_queued_clients` 0 maps to 30).
pub const BACKLOG: i32 = 30;

pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    // The umask decides the socket inode's mode; nothing else runs yet.
    let old = umask(Mode::from_bits_truncate(0o077));
    let bound = bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr);
    umask(old);
    bound?;
    listen(&fd, Backlog::new(BACKLOG)?)?;
    Ok(UnixListener::from(fd))
}
