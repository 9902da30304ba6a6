//! `virtlockd.conf`: libvirt's own configuration syntax (virConf), read through the
//! `config` crate and turned into a typed [`Config`] with libvirt's error texts
//! (spec §9.3).
//!
//! * [`virconf`]: the syntax, parsed into statements that keep their line;
//! * [`source`]: a parsed text as a [`config::Source`], and [`VirConfFormat`], the
//!   [`config::Format`] for `config::File`;
//! * [`settings`]: the known keys deserialized from the `config` crate, then checked in
//!   libvirt's order with libvirt's texts.
//!
//! The syntax is that of `src/util/virconf.c`:
//!
//! * one `name = value` per line (or several separated by `;`); names start with an
//!   ASCII letter and continue with letters, digits and `_`;
//! * values are decimal integers (optionally signed; no hex, as in libvirt), strings in
//!   `"double"`, `'single'` or `"""triple"""` quotes (no escapes; only triple-quoted
//!   strings may span lines), or lists `[ v, v, ... ]` that may span lines;
//! * `#` starts a comment outside strings; blank lines are fine.
//!
//! Like libvirt, the first occurrence of a repeated key wins, a missing implicit file
//! means defaults, and a value of the wrong type is fatal. Unlike libvirt, unknown and
//! repeated keys produce warnings instead of being ignored silently.

mod crash_safe;
mod settings;
mod source;
mod virconf;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use crash_safe::{crash_safe_wanted, CrashSafeChoice, CRASH_SAFE_ENV};
use settings::RawSettings;
pub use source::{Duplicate, VirConf, VirConfFormat};
pub use virconf::{ConfValue, Entry, SyntaxError};

/// Lock server connection limit when `max_clients` is not set (libvirt's code default).
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
/// Admin server connection limit when `admin_max_clients` is not set. libvirt's sample
/// config says 5, but its code default is 5000 (spec §9.3).
pub const DEFAULT_ADMIN_MAX_CLIENTS: usize = 5000;
/// Seconds between revalidations of leases on network storage (`lease_check_interval`).
pub const DEFAULT_LEASE_CHECK_INTERVAL: u64 = 5;
/// Largest `lease_check_interval` accepted: a day.
pub const MAX_LEASE_CHECK_INTERVAL: u64 = 86_400;

/// What the daemon does when a lease on network storage is found lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossAction {
    /// Terminate the owner (SIGTERM, then SIGKILL), as on an owner's disconnect.
    #[default]
    Fence,
    /// Only log it.
    Log,
}

impl LossAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fence => "fence",
            Self::Log => "log",
        }
    }
}

/// Every key `virtlockd.conf` understands; anything else draws a warning.
pub const KNOWN_KEYS: &[&str] = &[
    "log_level",
    "log_filters",
    "log_outputs",
    "max_clients",
    "admin_max_clients",
    "lease_check_interval",
    "lease_loss_action",
    "crash_safe",
];

/// libvirt refuses to read configuration files larger than this (`MAX_CONFIG_FILE_SIZE`).
pub const MAX_CONFIG_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// The settings of `virtlockd.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Default log priority, 1 (debug) ..= 4 (error); `None` keeps the built-in default
    /// (3, warning). A `log_level = 0` in the file also reads as `None`, as in libvirt.
    pub log_level: Option<u8>,
    /// libvirt log filters (`"1:foo 4:bar"`), unparsed; see `crate::logging`.
    pub log_filters: Option<String>,
    /// libvirt log outputs (`"3:stderr 1:file:/x"`), unparsed; see `crate::logging`.
    pub log_outputs: Option<String>,
    /// Connection limit of the lock server.
    pub max_clients: usize,
    /// Connection limit of the admin server.
    pub admin_max_clients: usize,
    /// Seconds between revalidations of leases on network storage; 0 = never.
    pub lease_check_interval: u64,
    /// What a lost lease triggers.
    pub lease_loss_action: LossAction,
    /// `crash_safe = 0|1`; `None` when the file does not say, and then
    /// [`crash_safe_wanted`] asks the environment.
    pub crash_safe: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            log_level: None,
            log_filters: None,
            log_outputs: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            admin_max_clients: DEFAULT_ADMIN_MAX_CLIENTS,
            lease_check_interval: DEFAULT_LEASE_CHECK_INTERVAL,
            lease_loss_action: LossAction::default(),
            crash_safe: None,
        }
    }
}

/// Why `virtlockd.conf` could not be used. The texts follow libvirt's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing explicit file, permissions, a directory, ...).
    #[error("Failed to open file '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_FILE_SIZE`].
    #[error("Failed to open file '{}': file is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    /// The text is not virConf syntax.
    #[error("configuration file syntax error: {origin}:{line}: {what}")]
    Syntax {
        origin: String,
        line: usize,
        /// The setting being read, when the name was read before the error.
        key: Option<String>,
        what: String,
    },
    /// A known key has a value of the wrong type, e.g.
    /// `/etc/libvirt/virtlockd.conf: expected an unsigned integer for 'max_clients' parameter`.
    #[error("{origin}: expected {expected} for '{key}' parameter")]
    WrongType {
        origin: String,
        key: String,
        /// `"an unsigned integer"` or `"a string"`.
        expected: &'static str,
    },
    /// A known key has a value of the right type but outside its range.
    #[error("{origin}: value for '{key}' parameter must be in range {min}:{max}")]
    OutOfRange {
        origin: String,
        key: String,
        min: u64,
        max: u64,
    },
    /// A string key has a value outside its set of choices.
    #[error("{origin}: '{key}' must be one of {choices}, not '{value}'")]
    BadChoice {
        origin: String,
        key: String,
        value: String,
        choices: &'static str,
    },
    /// Any other failure reported by the `config` crate.
    #[error("{origin}: {message}")]
    Other { origin: String, message: String },
}

impl Config {
    /// Reads `path`. A missing file is fine (defaults) unless `explicit` (given with
    /// `-f`): then it is an error, as are unreadable files even when implicit (libvirt
    /// only tolerates `ENOENT`).
    ///
    /// Returns the config and warnings (e.g. unknown keys) for the caller to log.
    pub fn load(path: &Path, explicit: bool) -> Result<(Config, Vec<String>), ConfigError> {
        let text = match read_limited(path) {
            Ok(text) => text,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok((Config::default(), Vec::new()));
            }
            Err(ReadError::Io(source)) => {
                return Err(ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(ReadError::TooLarge) => {
                return Err(ConfigError::TooLarge {
                    path: path.to_path_buf(),
                    max: MAX_CONFIG_FILE_SIZE,
                })
            }
        };
        Self::parse_str(&text, &path.display().to_string())
    }

    /// Parses config text; `origin` names it in errors and warnings (normally the path).
    pub fn parse_str(text: &str, origin: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let document = VirConf::parse(text, Some(origin)).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            line: e.line,
            key: e.key,
            what: e.what.to_string(),
        })?;
        let settings: RawSettings = ::config::Config::builder()
            .add_source(document.clone())
            .build()
            .and_then(::config::Config::try_deserialize)
            .map_err(|e| ConfigError::Other {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        let (cfg, odd_values) = settings.check(origin, &document)?;

        let mut warnings = Vec::new();
        for dup in document.duplicates() {
            warnings.push((
                dup.line,
                format!(
                    "{origin}:{}: duplicate setting '{}' ignored, the one on line {} is used",
                    dup.line, dup.name, dup.first_line
                ),
            ));
        }
        for entry in document
            .settings()
            .filter(|e| !KNOWN_KEYS.contains(&e.name.as_str()))
        {
            warnings.push((
                entry.line,
                format!(
                    "{origin}:{}: unknown setting '{}' ignored",
                    entry.line, entry.name
                ),
            ));
        }
        warnings.extend(odd_values);
        // Stable: several warnings on one line (`a = 1; b = 2`, or lines ended
        // by CR) keep the order above, which is the file's.
        warnings.sort_by_key(|(line, _)| *line);
        Ok((cfg, warnings.into_iter().map(|(_, w)| w).collect()))
    }
}

enum ReadError {
    Io(std::io::Error),
    TooLarge,
}

fn read_limited(path: &Path) -> Result<String, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut buf = Vec::new();
    file.take(MAX_CONFIG_FILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if buf.len() as u64 > MAX_CONFIG_FILE_SIZE {
        return Err(ReadError::TooLarge);
    }
    // libvirt treats the file as bytes; a stray Latin-1 byte in a comment must not
    // make the whole file unreadable.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests;
