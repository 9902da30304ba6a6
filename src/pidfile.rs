//! The pid file as libvirt keeps it (spec §9.6): locked with a POSIX write lock for
//! the daemon's life, so a second daemon on the same paths refuses to start before
//! it could unlink the first one's sockets.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg};
use thiserror::Error;

/// How often acquiring starts over when the file was unlinked or replaced
/// between our open and our lock (a previous daemon exiting does it once).
/// libvirt retries forever: a process replacing the file in a loop would hold
/// the daemon in start-up for ever.
const MAX_ATTEMPTS: usize = 64;

#[derive(Debug, Error)]
pub enum PidFileError {
    #[error("Failed to acquire pid file '{0}': another daemon holds it")]
    Busy(PathBuf),
    #[error(
        "Failed to acquire pid file '{0}': it was replaced {MAX_ATTEMPTS} times while being locked"
    )]
    Unstable(PathBuf),
    #[error("Failed to create pid file '{path}': {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A held pid file; removed (unlink, then close) when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl PidFile {
    pub fn acquire(path: &Path) -> Result<Self, PidFileError> {
        let io = |source| PidFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        for _ in 0..MAX_ATTEMPTS {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(io)?;
            let ino = file.metadata().map_err(io)?.ino();
            let fl = libc::flock {
                l_type: libc::F_WRLCK as libc::c_short,
                l_whence: libc::SEEK_SET as libc::c_short,
                l_start: 0,
                l_len: 1,
                l_pid: 0,
            };
            if fcntl(file.as_fd(), FcntlArg::F_SETLK(&fl)).is_err() {
                return Err(PidFileError::Busy(path.to_path_buf()));
            }
            // The previous holder may have unlinked it between our open and lock.
            match std::fs::metadata(path) {
                Ok(m) if m.ino() == ino => {}
                _ => continue,
            }
            file.set_len(0).map_err(io)?;
            write!(file, "{}", std::process::id()).map_err(io)?;
            return Ok(Self {
                path: path.to_path_buf(),
                file: Some(file),
            });
        }
        Err(PidFileError::Unstable(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Unlink while still locked, so a starting daemon never locks a doomed inode.
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
    }
}
