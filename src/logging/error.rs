//! Why a logging setting was refused or could not be put into effect.

use std::io;
use std::path::PathBuf;

/// Why a logging setting was refused or could not be put into effect.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A malformed level, filter or output (libvirt's `VIR_ERR_INVALID_ARG` texts; the
    /// admin API answers these with error code 8).
    #[error("{0}")]
    Invalid(String),
    /// An invalid setting together with where it came from (a config key or an
    /// environment variable).
    #[error("{origin}: {inner}")]
    In {
        origin: String,
        inner: Box<LogError>,
    },
    /// A file output could not be opened.
    #[error("failed to open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file output names a file this daemon holds as a lease: the log would
    /// close it one day, and closing any fd of a file drops all of this
    /// process's POSIX locks on it.
    #[error("cannot log to {}: the file is held as a lease", path.display())]
    HeldLease { path: PathBuf },
    /// The socket of a journald or syslog output could not be created.
    #[error("failed to create a socket for the {what} log output: {source}")]
    Socket {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// A user daemon needs its cache directory for the default log file.
    #[error(
        "cannot determine the user cache directory for the default log file (HOME is not set)"
    )]
    NoCacheDir,
    /// The layer a [`super::LogHandle`] changes is gone (its subscriber was dropped).
    #[error("the logging layer is no longer installed")]
    Gone,
    /// [`super::install`] was called while a global subscriber is already set.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

impl LogError {
    /// True for a malformed specification (as opposed to an I/O failure).
    pub fn is_invalid_argument(&self) -> bool {
        match self {
            LogError::Invalid(_) | LogError::HeldLease { .. } => true,
            LogError::In { inner, .. } => inner.is_invalid_argument(),
            _ => false,
        }
    }

    pub(super) fn within(origin: &str) -> impl FnOnce(LogError) -> LogError + '_ {
        move |inner| LogError::In {
            origin: origin.to_string(),
            inner: Box::new(inner),
        }
    }
}
