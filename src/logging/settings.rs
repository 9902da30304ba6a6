//! The log settings in effect and how they are resolved from the config file, the
//! environment and the command line, with libvirt's precedence and defaults.

use std::io::{self, IsTerminal as _};
use std::path::PathBuf;

use super::syntax::{parse_filters, parse_outputs, Destination, Filter, Output};
use super::{
    check_level, parse_level, LogError, Priority, DAEMON_NAME, DEFAULT_LEVEL, JOURNALD_SOCKET,
    PRIVILEGED_LOG_FILE,
};

/// Everything from the process environment that decides the log settings, gathered
/// in one place so that the rules can be tested with made-up values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvInputs {
    /// `LIBVIRT_DEBUG` (empty counts as unset).
    pub libvirt_debug: Option<String>,
    /// `LIBVIRT_LOG_FILTERS` (empty counts as unset).
    pub log_filters: Option<String>,
    /// `LIBVIRT_LOG_OUTPUTS` (empty counts as unset).
    pub log_outputs: Option<String>,
    /// Whether [`JOURNALD_SOCKET`] is writable (`access(W_OK)`).
    pub journald_writable: bool,
    /// Whether stdin is a terminal.
    pub stdin_is_tty: bool,
    /// The user cache directory (`$XDG_CACHE_HOME`, else `~/.cache`), for the default
    /// log file of a user daemon.
    pub cache_dir: Option<PathBuf>,
}

impl EnvInputs {
    /// Reads the real environment, journald socket and stdin.
    pub fn from_process() -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty())
        };
        Self {
            libvirt_debug: var("LIBVIRT_DEBUG"),
            log_filters: var("LIBVIRT_LOG_FILTERS"),
            log_outputs: var("LIBVIRT_LOG_OUTPUTS"),
            journald_writable: nix::unistd::access(JOURNALD_SOCKET, nix::unistd::AccessFlags::W_OK)
                .is_ok(),
            stdin_is_tty: io::stdin().is_terminal(),
            cache_dir: user_cache_dir(),
        }
    }
}

/// GLib's `g_get_user_cache_dir`: `$XDG_CACHE_HOME`, else `$HOME/.cache`, else the
/// passwd home directory's `.cache`.
fn user_cache_dir() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = non_empty("HOME") {
        return Some(PathBuf::from(home).join(".cache"));
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir.join(".cache"))
}

/// The complete logging configuration in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Default level, for events no filter matches.
    pub level: Priority,
    pub filters: Vec<Filter>,
    /// Never empty once in effect: setting no outputs selects `default_outputs`.
    pub outputs: Vec<Output>,
    /// What "no outputs" means (spec §9.3 rules, decided at start-up), e.g. when the
    /// admin API sets an empty output list.
    pub default_outputs: Vec<Output>,
}

impl Default for LogSettings {
    fn default() -> Self {
        let stderr = vec![Output {
            level: DEFAULT_LEVEL,
            dest: Destination::Stderr,
        }];
        Self {
            level: DEFAULT_LEVEL,
            filters: Vec::new(),
            outputs: stderr.clone(),
            default_outputs: stderr,
        }
    }
}

impl LogSettings {
    /// The level an event of `target` must reach to pass the filters.
    pub fn threshold(&self, target: &str) -> Priority {
        self.filters
            .iter()
            .find(|f| f.matches(target))
            .map_or(self.level, |f| f.level)
    }

    /// Whether an event of `level` and `target` would be written anywhere.
    pub fn wants(&self, level: Priority, target: &str) -> bool {
        level >= self.threshold(target) && self.outputs.iter().any(|o| level >= o.level)
    }

    /// The least level any event could be written at (`None`: nothing is written):
    /// below it nothing needs a look.
    pub(super) fn floor(&self) -> Option<Priority> {
        let by_filters = self
            .filters
            .iter()
            .map(|f| f.level)
            .chain([self.level])
            .min()
            .unwrap_or(self.level);
        let by_outputs = self.outputs.iter().map(|o| o.level).min()?;
        Some(by_filters.max(by_outputs))
    }

    /// Fills in the outputs: none means the default ones, and with no default
    /// either, stderr (libvirt's last resort).
    pub(super) fn normalized(mut self) -> Self {
        if self.outputs.is_empty() {
            self.outputs = self.default_outputs.clone();
        }
        if self.outputs.is_empty() {
            self.outputs = vec![Output {
                level: self.level,
                dest: Destination::Stderr,
            }];
        }
        self
    }
}

/// The default outputs of spec §9.3 for a default `level`: with `--daemon`, journald
/// if its socket is writable, else the log file; in the foreground, journald if stdin
/// is not a terminal and its socket is writable, else stderr. journald gets at most
/// INFO so that debug logging cannot trip its rate limit.
pub fn default_outputs(
    level: Priority,
    env: &EnvInputs,
    daemon: bool,
    privileged: bool,
) -> Result<Vec<Output>, LogError> {
    let journald = Output {
        level: level.max(Priority::Info),
        dest: Destination::Journald,
    };
    if env.journald_writable && (daemon || !env.stdin_is_tty) {
        return Ok(vec![journald]);
    }
    let dest = if !daemon {
        Destination::Stderr
    } else if privileged {
        Destination::File(PathBuf::from(PRIVILEGED_LOG_FILE))
    } else {
        let cache = env.cache_dir.as_ref().ok_or(LogError::NoCacheDir)?;
        Destination::File(cache.join("libvirt").join(format!("{DAEMON_NAME}.log")))
    };
    Ok(vec![Output { level, dest }])
}

/// Resolves the settings with libvirt's precedence (`virDaemonSetupLogging`):
/// config < environment (`LIBVIRT_DEBUG` = default level, `LIBVIRT_LOG_FILTERS`,
/// `LIBVIRT_LOG_OUTPUTS`, each replacing the config's when set) < `verbose` (which
/// raises the default level to INFO if it is less verbose). Without outputs, the
/// default outputs of [`default_outputs`] are used, at the resolved default level.
///
/// Like libvirt versions that fail start-up on bad logging settings, an invalid
/// level, filter or output is an error; it names the key or variable it came from.
/// An empty `log_level` (0) or empty string counts as unset.
pub fn resolve(
    cfg_level: Option<u8>,
    cfg_filters: Option<&str>,
    cfg_outputs: Option<&str>,
    env: &EnvInputs,
    verbose: bool,
    daemon: bool,
    privileged: bool,
) -> Result<LogSettings, LogError> {
    let mut level = DEFAULT_LEVEL;
    if let Some(l) = cfg_level.filter(|&l| l != 0) {
        level = check_level(l).map_err(LogError::within("log_level"))?;
    }
    let mut filters = match cfg_filters {
        Some(s) => parse_filters(s).map_err(LogError::within("log_filters"))?,
        None => Vec::new(),
    };
    let mut outputs = match cfg_outputs {
        Some(s) => parse_outputs(s).map_err(LogError::within("log_outputs"))?,
        None => Vec::new(),
    };

    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    if let Some(d) = set(&env.libvirt_debug) {
        level = parse_level(&d).map_err(LogError::within("LIBVIRT_DEBUG"))?;
    }
    if let Some(f) = set(&env.log_filters) {
        filters = parse_filters(&f).map_err(LogError::within("LIBVIRT_LOG_FILTERS"))?;
    }
    if let Some(o) = set(&env.log_outputs) {
        outputs = parse_outputs(&o).map_err(LogError::within("LIBVIRT_LOG_OUTPUTS"))?;
    }

    if verbose && level > Priority::Info {
        level = Priority::Info;
    }

    let default_outputs = match default_outputs(level, env, daemon, privileged) {
        Ok(d) => d,
        // Only fatal if the default is actually needed now; a later "revert to
        // default" then gets stderr.
        Err(_) if !outputs.is_empty() => vec![Output {
            level,
            dest: Destination::Stderr,
        }],
        Err(e) => return Err(e),
    };
    Ok(LogSettings {
        level,
        filters,
        outputs,
        default_outputs,
    }
    .normalized())
}
