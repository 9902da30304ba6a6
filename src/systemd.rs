//! systemd integration: socket activation (`LISTEN_PID`, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`, spec §1.3) and readiness notification (`sd_notify`).

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use thiserror::Error;

/// First fd systemd passes.
const LISTEN_FDS_START: RawFd = 3;

/// The socket unit names libvirt claims.
pub const LOCK_SOCKET_NAME: &str = "virtlockd.socket";
pub const ADMIN_SOCKET_NAME: &str = "virtlockd-admin.socket";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ActivationError {
    #[error("Malformed LISTEN_FDS '{0}'")]
    BadCount(String),
    #[error("Expected {expected} names in LISTEN_FDNAMES, found {found}")]
    NameCount { expected: usize, found: usize },
    #[error("Some activation file descriptors are unclaimed")]
    Unclaimed,
    #[error("Activation fd {fd} is not usable: {why}")]
    BadFd { fd: RawFd, why: String },
}

/// Listening fds handed over by systemd, by socket unit name.
#[derive(Debug, Default)]
pub struct Activation {
    by_name: HashMap<String, Vec<RawFd>>,
}

/// What the environment says, read once. Kept separate from the process
/// environment so the rules are testable.
#[derive(Debug, Default, Clone)]
pub struct ActivationEnv {
    pub listen_pid: Option<String>,
    pub listen_fds: Option<String>,
    pub listen_fdnames: Option<String>,
}

impl ActivationEnv {
    /// Reads and removes the `LISTEN_*` variables (they must not leak to children
    /// or survive a re-exec).
    pub fn take_from_process() -> Self {
        let take = |k: &str| {
            let v = std::env::var(k).ok();
            std::env::remove_var(k);
            v
        };
        Self {
            listen_pid: take("LISTEN_PID"),
            listen_fds: take("LISTEN_FDS"),
            listen_fdnames: take("LISTEN_FDNAMES"),
        }
    }
}

impl Activation {
    /// libvirt's rules: activation only if `LISTEN_PID` is our pid and `LISTEN_FDS`
    /// parses; without `LISTEN_FDNAMES` it silently does not apply.
    pub fn from_env(env: &ActivationEnv, own_pid: u32) -> Result<Option<Self>, ActivationError> {
        if env.listen_pid.as_deref() != Some(own_pid.to_string().as_str()) {
            return Ok(None);
        }
        let Some(count) = env.listen_fds.as_deref() else {
            return Ok(None);
        };
        let n: usize = count
            .parse()
            .map_err(|_| ActivationError::BadCount(count.to_owned()))?;
        let Some(names) = env.listen_fdnames.as_deref() else {
            return Ok(None);
        };
        let names: Vec<&str> = names.split(':').collect();
        if names.len() != n {
            return Err(ActivationError::NameCount {
                expected: n,
                found: names.len(),
            });
        }
        let mut by_name: HashMap<String, Vec<RawFd>> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            by_name
                .entry((*name).to_owned())
                .or_default()
                .push(LISTEN_FDS_START + i as RawFd);
        }
        Ok(Some(Self { by_name }))
    }

    /// Takes the listeners systemd passed under `name` (none if absent).
    pub fn claim(&mut self, name: &str) -> Result<Vec<UnixListener>, ActivationError> {
        let fds = self.by_name.remove(name).unwrap_or_default();
        fds.into_iter().map(adopt_listener).collect()
    }

    /// Takes the fds systemd passed from its file-descriptor store under
    /// names starting with `prefix` (what we stored there before a crash),
    /// with their names. Each must be open.
    pub fn take_stored(&mut self, prefix: &str) -> Vec<(String, OwnedFd)> {
        let names: Vec<String> = self
            .by_name
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for name in names {
            for fd in self.by_name.remove(&name).unwrap_or_default() {
                // SAFETY: a flag query on a borrowed fd, failing if not open.
                let open = fcntl(
                    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                    FcntlArg::F_GETFD,
                )
                .is_ok();
                if open {
                    // SAFETY: systemd passed this fd to us; nothing else owns it.
                    out.push((name.clone(), unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        out
    }

    /// Fails if any passed fd was not claimed.
    pub fn finish(self) -> Result<(), ActivationError> {
        if self.by_name.is_empty() {
            Ok(())
        } else {
            Err(ActivationError::Unclaimed)
        }
    }
}

fn adopt_listener(fd: RawFd) -> Result<UnixListener, ActivationError> {
    let bad = |why: String| ActivationError::BadFd { fd, why };
    // Check before owning: if LISTEN_FDS lies, this number may belong to a file
    // we opened ourselves (pid file, log), which must not be closed under us.
    // SAFETY: the borrow lives only for these checks; the fd is not closed here.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_GETFD).map_err(|e| bad(e.to_string()))?;
    let kind = nix::sys::socket::getsockopt(&borrowed, nix::sys::socket::sockopt::SockType)
        .map_err(|e| bad(e.to_string()))?;
    if kind != nix::sys::socket::SockType::Stream {
        return Err(bad(format!("not a stream socket ({kind:?})")));
    }
    // SAFETY: systemd passed this fd to us and it is a socket; nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| bad(e.to_string()))?;
    // libvirt calls listen() on activated sockets too.
    let backlog =
        nix::sys::socket::Backlog::new(crate::listener::BACKLOG).map_err(|e| bad(e.to_string()))?;
    nix::sys::socket::listen(&owned, backlog).map_err(|e| bad(e.to_string()))?;
    Ok(UnixListener::from(owned))
}

/// Sends a state string ("READY=1", "STOPPING=1") to `$NOTIFY_SOCKET`, if set.
/// Failures are ignored: notification is advisory.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            abstract_name,
        )
    } else {
        std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(&path))
    };
    if let Ok(addr) = addr {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: &str, fds: &str, names: Option<&str>) -> ActivationEnv {
        ActivationEnv {
            listen_pid: Some(pid.into()),
            listen_fds: Some(fds.into()),
            listen_fdnames: names.map(Into::into),
        }
    }

    #[test]
    fn activation_needs_our_pid_and_names() {
        assert!(Activation::from_env(&env("1", "2", Some("a:b")), 2)
            .unwrap()
            .is_none());
        assert!(Activation::from_env(&env("2", "2", None), 2)
            .unwrap()
            .is_none());
        assert_eq!(
            Activation::from_env(&env("2", "x", Some("a")), 2).unwrap_err(),
            ActivationError::BadCount("x".into())
        );
        assert_eq!(
            Activation::from_env(&env("2", "2", Some("a")), 2).unwrap_err(),
            ActivationError::NameCount {
                expected: 2,
                found: 1
            }
        );
        let a = Activation::from_env(
            &env(
                "2",
                "3",
                Some("virtlockd-admin.socket:virtlockd.socket:virtlockd.socket"),
            ),
            2,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.by_name[LOCK_SOCKET_NAME], vec![4, 5]);
        assert_eq!(a.by_name[ADMIN_SOCKET_NAME], vec![3]);
        assert_eq!(a.finish(), Err(ActivationError::Unclaimed));
    }
}
