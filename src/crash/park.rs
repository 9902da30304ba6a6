//! The parking socket: a Unix socket pair kept in the fd store, with every
//! lease fd and client socket sent into it (SCM_RIGHTS) and never received
//! while the daemon lives. The kernel keeps an fd in flight open, and with it
//! the open file description and its OFD lock, until it is received: so a dead
//! daemon's leases stay held and its clients stay connected. One store entry
//! holds them all, where storing each fd would cost systemd work that grows
//! with the number already stored.
//!
//! Each message carries up to [`BATCH`] fds and, as its bytes, their tags
//! (u64 LE each): what the journal calls them.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

/// fds per message: the kernel's SCM_MAX_FD.
pub const BATCH: usize = 253;

/// The send buffer asked for: every parked message counts against it until
/// received. Root may go past `wmem_max` (SO_SNDBUFFORCE); compaction keeps
/// the queue far below this.
const SEND_BUFFER: usize = 1 << 30;

pub struct Park {
    tx: OwnedFd,
    rx: OwnedFd,
    /// Messages and fds sent since this pair was made or adopted.
    messages: usize,
    fds: usize,
}

impl Park {
    pub fn create() -> Result<Self, Errno> {
        let (tx, rx) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        if setsockopt(&tx, sockopt::SndBufForce, &SEND_BUFFER).is_err() {
            // Without CAP_NET_ADMIN: as much as `wmem_max` allows.
            let _ = setsockopt(&tx, sockopt::SndBuf, &SEND_BUFFER);
        }
        Ok(Self {
            tx,
            rx,
            messages: 0,
            fds: 0,
        })
    }

    /// A pair a previous process or image left (its queue still full).
    pub fn adopt(tx: OwnedFd, rx: OwnedFd, fds: usize) -> Self {
        Self {
            tx,
            rx,
            messages: fds.div_ceil(BATCH),
            fds,
        }
    }

    /// Parks `items`: after this returns, they stay open until drained,
    /// whatever happens to this process.
    pub fn park(&mut self, items: &[(u64, BorrowedFd<'_>)]) -> Result<(), Errno> {
        for chunk in items.chunks(BATCH) {
            let mut tags = Vec::with_capacity(chunk.len() * 8);
            let mut fds: Vec<RawFd> = Vec::with_capacity(chunk.len());
            for (tag, fd) in chunk {
                tags.extend_from_slice(&tag.to_le_bytes());
                fds.push(fd.as_raw_fd());
            }
            let iov = [IoSlice::new(&tags)];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            // Blocking is not an option on an actor thread: a full queue is
            // an error the caller answers (compaction, or a failed request).
            sendmsg::<()>(
                self.tx.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            )?;
            self.messages += 1;
            self.fds += chunk.len();
        }
        Ok(())
    }

    /// Parks one fd.
    pub fn park_one(&mut self, tag: u64, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        self.park(&[(tag, fd)])
    }

    /// Receives everything parked, emptying the queue (see [`drain`]).
    pub fn drain(&mut self) -> Result<Vec<(u64, OwnedFd)>, Errno> {
        let out = drain(self.rx.as_fd())?;
        self.messages = 0;
        self.fds = 0;
        Ok(out)
    }

    pub fn fds(&self) -> usize {
        self.fds
    }

    pub fn messages(&self) -> usize {
        self.messages
    }

    pub fn tx(&self) -> BorrowedFd<'_> {
        self.tx.as_fd()
    }

    pub fn rx(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

/// Receives everything parked in `rx`, emptying its queue: (tag, fd) in the
/// order parked. The fds come close-on-exec.
pub fn drain(rx: BorrowedFd<'_>) -> Result<Vec<(u64, OwnedFd)>, Errno> {
    let mut out = Vec::new();
    let mut bytes = vec![0u8; BATCH * 8];
    let mut space = nix::cmsg_space!([RawFd; BATCH]);
    loop {
        let mut iov = [IoSliceMut::new(&mut bytes)];
        let msg = match recvmsg::<()>(
            rx.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: just received: new fds owned by nobody else.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        if n == 0 && fds.is_empty() {
            break;
        }
        let tags = bytes[..n]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        // A message's tags and fds match one for one; an fd without a tag
        // (cannot happen with our writer) gets tag 0: unexplained.
        let mut tags = tags.collect::<Vec<_>>().into_iter();
        for fd in fds {
            out.push((tags.next().unwrap_or(0), fd));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_parked_fd_outlives_every_other_reference_and_comes_back_tagged() {
        let mut park = Park::create().unwrap();
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        park.park_one(7, theirs.as_fd()).unwrap();
        park.park(&[(8, file.as_fd()), (9, theirs.as_fd())])
            .unwrap();
        assert_eq!((park.messages(), park.fds()), (2, 3));
        // The only process reference closes; the parked one keeps it open.
        drop(theirs);
        ours.write_all(b"ping").unwrap();
        let back = park.drain().unwrap();
        let tags: Vec<u64> = back.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, [7, 8, 9]);
        let mut theirs = std::os::unix::net::UnixStream::from(back.into_iter().next().unwrap().1);
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        assert!(park.drain().unwrap().is_empty());
    }

    #[test]
    fn many_fds_park_in_batches() {
        let mut park = Park::create().unwrap();
        let file = tempfile::tempfile().unwrap();
        let items: Vec<(u64, BorrowedFd<'_>)> = (1..=600).map(|t| (t, file.as_fd())).collect();
        park.park(&items).unwrap();
        assert_eq!(park.messages(), 3);
        let back = park.drain().unwrap();
        assert_eq!(back.len(), 600);
        assert!(back
            .iter()
            .enumerate()
            .all(|(i, (t, _))| *t == i as u64 + 1));
    }
}
