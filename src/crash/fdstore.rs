//! The service manager's file-descriptor store (systemd's `FDSTORE=1`,
//! `FDSTOREREMOVE=1`, `BARRIER=1` on `$NOTIFY_SOCKET`; `sd_notify(3)`,
//! `sd_pid_notify_with_fds(3)`). What is stored comes back after a restart in
//! `LISTEN_FDS`, named by `LISTEN_FDNAMES`.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// Every name we store starts with this (the socket units' names never do).
pub const PREFIX: &str = "vlrs-";

/// The notification socket, if a service manager gave one.
pub fn socket_path() -> Option<std::ffi::OsString> {
    std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty())
}

fn address() -> Result<UnixAddr, Errno> {
    let path = socket_path().ok_or(Errno::ENOENT)?;
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name),
        None => UnixAddr::new(bytes),
    }
}

/// Sends `state` with `fds` attached.
fn send(state: &str, fds: &[RawFd]) -> Result<(), Errno> {
    let addr = address()?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let iov = [IoSlice::new(state.as_bytes())];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        Some(&addr),
    )?;
    Ok(())
}

/// Stores `fds` under `name` (not polled: the store must keep them whatever
/// their state).
pub fn store(name: &str, fds: &[BorrowedFd<'_>]) -> Result<(), Errno> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    send(&format!("FDSTORE=1\nFDNAME={name}\nFDPOLL=0"), &raw)
}

/// Drops every stored fd named `name`.
pub fn remove(name: &str) -> Result<(), Errno> {
    send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[])
}

/// Waits until the service manager has handled every notification sent
/// before (it closes the pipe end sent with `BARRIER=1`). False on timeout.
pub fn barrier(timeout: Duration) -> Result<bool, Errno> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    send("BARRIER=1", &[write.as_raw_fd()])?;
    drop(write);
    let mut fds = [nix::poll::PollFd::new(
        read.as_fd(),
        nix::poll::PollFlags::POLLHUP,
    )];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    loop {
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
