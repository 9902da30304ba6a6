//! Errors of the lock engine, and the one place that turns each into the exact
//! libvirt error (code, domain, text) a client receives.

use nix::errno::Errno;
use thiserror::Error;

use crate::protocol::error::{code, domain};
use crate::protocol::RemoteError;

/// A lock-engine failure. Paths and names are kept as display strings; non-UTF-8
/// bytes appear as U+FFFD in messages.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LockError {
    #[error("Lockspace resource '{0}' is locked")]
    Busy(String),
    #[error("Lockspace resource '{0}' is not locked")]
    NotLocked(String),
    #[error("owner {0} does not hold the resource lock")]
    NotOwner(i64),
    #[error("Unable to open resource {path}")]
    Open { path: String, errno: Errno },
    #[error("Unable to open/create resource {path}")]
    OpenCreate { path: String, errno: Errno },
    #[error("Unable to acquire lock on '{path}'")]
    Lock { path: String, errno: Errno },
    #[error("Lockspace location {0} exists, but is not a directory")]
    NotADirectory(String),
    #[error("Unable to create lockspace {dir}")]
    CreateLockspace { dir: String, errno: Errno },
    #[error("cannot create file '{path}'")]
    CreateFile { path: String, errno: Errno },
    #[error("Unable to delete lockspace resource {path}")]
    Delete { path: String, errno: Errno },
    /// Our fix: names that would leave (or be) the lockspace directory.
    #[error("resource name '{name}' is not valid in lockspace '{dir}'")]
    InvalidName { name: String, dir: String },
    /// Crash-safe mode could not keep the lease safe from a crash (journal or
    /// parking socket failed): the acquire is refused rather than granted
    /// unprotected.
    #[error("lease not acquired: {0}")]
    CrashStore(String),
}

impl LockError {
    /// The errno of a system error, if this is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Open { errno, .. }
            | Self::OpenCreate { errno, .. }
            | Self::Lock { errno, .. }
            | Self::CreateLockspace { errno, .. }
            | Self::CreateFile { errno, .. }
            | Self::Delete { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl From<&LockError> for RemoteError {
    fn from(e: &LockError) -> Self {
        let text = e.to_string();
        if let Some(errno) = e.errno() {
            // CREATE_RESOURCE's errors come from libvirt's virfile.c (domain NONE).
            let dom = match e {
                LockError::CreateFile { .. } => domain::NONE,
                _ => domain::LOCKSPACE,
            };
            return RemoteError::system(dom, errno as i32, text);
        }
        let c = match e {
            LockError::Busy(_) | LockError::NotLocked(_) => code::RESOURCE_BUSY,
            LockError::InvalidName { .. } => code::INVALID_ARG,
            _ => code::INTERNAL_ERROR,
        };
        RemoteError::new(c, domain::LOCKSPACE, text)
    }
}

impl From<LockError> for RemoteError {
    fn from(e: LockError) -> Self {
        (&e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_libvirt() {
        let r: RemoteError = LockError::NotOwner(4000006).into();
        assert_eq!(
            (r.code, r.domain, r.message.as_str()),
            (
                1,
                51,
                "internal error: owner 4000006 does not hold the resource lock"
            )
        );
        let r: RemoteError = LockError::Open {
            path: "/x/missing".into(),
            errno: Errno::ENOENT,
        }
        .into();
        assert_eq!(
            (r.code, r.domain, r.int1, r.message.as_str()),
            (
                38,
                51,
                2,
                "Unable to open resource /x/missing: No such file or directory"
            )
        );
        let r: RemoteError = LockError::CreateFile {
            path: "/x".into(),
            errno: Errno::EACCES,
        }
        .into();
        assert_eq!((r.code, r.domain), (38, 0));
        let r: RemoteError = LockError::InvalidName {
            name: "..".into(),
            dir: "/d".into(),
        }
        .into();
        assert_eq!(
            (r.code, r.domain, r.message.as_str()),
            (
                8,
                51,
                "invalid argument: resource name '..' is not valid in lockspace '/d'"
            )
        );
    }
}
