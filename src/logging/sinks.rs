//! The opened outputs: stderr, files (never closed under a lease), and the journald
//! and syslog datagram sockets.

use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use super::record::Record;
use super::syntax::Destination;
use super::{LogError, JOURNALD_SOCKET, SYSLOG_SOCKET};
use crate::lockspace::lease;

/// An opened output.
pub(super) enum Sink {
    Stderr,
    File(LogFile),
    Journald {
        socket: UnixDatagram,
        address: PathBuf,
    },
    Syslog {
        socket: UnixDatagram,
        address: PathBuf,
        ident: String,
    },
}

impl Sink {
    /// Writes `record`; `text_line` caches the text line between the outputs that
    /// write it.
    pub fn write(&self, record: &Record, text_line: &mut Option<String>) -> io::Result<()> {
        match self {
            Sink::Stderr => {
                let line = text_line.get_or_insert_with(|| record.text_line());
                io::stderr().lock().write_all(line.as_bytes())
            }
            Sink::File(file) => {
                let line = text_line.get_or_insert_with(|| record.text_line());
                // One write per line: O_APPEND keeps concurrent lines whole.
                file.write_line(line.as_bytes())
            }
            Sink::Journald { socket, address } => socket
                .send_to(&record.journald_payload(), address)
                .map(drop),
            Sink::Syslog {
                socket,
                address,
                ident,
            } => socket
                .send_to(record.syslog_datagram(ident).as_bytes(), address)
                .map(drop),
        }
    }

    pub fn open(dest: &Destination) -> Result<Sink, LogError> {
        Ok(match dest {
            Destination::Stderr => Sink::Stderr,
            Destination::File(path) => Sink::File(open_log_file(path)?),
            Destination::Journald => Sink::Journald {
                socket: datagram_socket("journald")?,
                address: PathBuf::from(JOURNALD_SOCKET),
            },
            Destination::Syslog(ident) => Sink::Syslog {
                socket: datagram_socket("syslog")?,
                address: PathBuf::from(SYSLOG_SOCKET),
                ident: ident.clone(),
            },
        })
    }
}

/// A non-blocking datagram socket: a stalled log reader must never stall lock
/// requests, so a full socket buffer drops the line instead.
pub(super) fn datagram_socket(what: &'static str) -> Result<UnixDatagram, LogError> {
    let socket = UnixDatagram::unbound().map_err(|source| LogError::Socket { what, source })?;
    socket
        .set_nonblocking(true)
        .map_err(|source| LogError::Socket { what, source })?;
    Ok(socket)
}

/// An open log file. It is never closed while its file is held as a lease (see
/// [`lease::close_unless_held`]): a lease may be taken on the file after the log
/// opened it, or adopted in a live upgrade after the log was opened.
/// The file is `None` only inside `drop`, which hands it to the lease table.
pub(super) struct LogFile(Option<std::fs::File>);

impl LogFile {
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        match &self.0 {
            Some(file) => {
                let mut writer: &std::fs::File = file;
                writer.write_all(line)
            }
            None => Ok(()),
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        if let Some(file) = self.0.take() {
            lease::close_unless_held(file.into());
        }
    }
}

/// Opens a log file like libvirt (`O_CREAT|O_APPEND|O_WRONLY`, mode 0600), close-on-exec
/// so that a re-exec does not leak it. A missing directory is created (mode 0700),
/// as libvirt does for the user's cache directory.
fn open_log_file(path: &Path) -> Result<LogFile, LogError> {
    let open_error = |source| LogError::Open {
        path: path.to_path_buf(),
        source,
    };
    let held = || LogError::HeldLease {
        path: path.to_path_buf(),
    };
    // Checked before opening so that a refused file costs no fd; checked again
    // on the opened fd, since a lease may be taken on it in between.
    if lease::is_path_held(path) {
        return Err(held());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(open_error)?;
        }
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(open_error)?;
    let fd = lease::unless_held(file.into()).map_err(|_| held())?;
    Ok(LogFile(Some(fd.into())))
}
