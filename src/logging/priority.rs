//! libvirt's log priorities (`virLogPriority`): the default level, each filter's and
//! each output's level.

use std::fmt;

use tracing::level_filters::LevelFilter;
use tracing::Level;

use super::LogError;

/// A libvirt log priority; the order is libvirt's (debug is the least).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// `VIR_LOG_DEBUG` (1): tracing `DEBUG` and `TRACE`.
    Debug = 1,
    /// `VIR_LOG_INFO` (2).
    Info = 2,
    /// `VIR_LOG_WARN` (3).
    Warning = 3,
    /// `VIR_LOG_ERROR` (4).
    Error = 4,
}

/// The default level when neither the config nor the environment sets one.
pub const DEFAULT_LEVEL: Priority = Priority::Warning;

impl Priority {
    /// libvirt's number for it, as written in filters and outputs.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The priority numbered `n` (1..=4).
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::Debug),
            2 => Some(Self::Info),
            3 => Some(Self::Warning),
            4 => Some(Self::Error),
            _ => None,
        }
    }

    /// The word libvirt prints for it in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }

    /// libvirt's priority of a tracing event.
    pub fn of(level: &Level) -> Self {
        match *level {
            Level::TRACE | Level::DEBUG => Self::Debug,
            Level::INFO => Self::Info,
            Level::WARN => Self::Warning,
            Level::ERROR => Self::Error,
        }
    }

    /// The most verbose tracing level that reaches this priority.
    pub fn level_filter(self) -> LevelFilter {
        match self {
            Self::Debug => LevelFilter::TRACE,
            Self::Info => LevelFilter::INFO,
            Self::Warning => LevelFilter::WARN,
            Self::Error => LevelFilter::ERROR,
        }
    }

    /// The syslog severity libvirt sends for it.
    pub fn syslog_severity(self) -> u8 {
        match self {
            Self::Debug => 7,
            Self::Info => 6,
            Self::Warning => 4,
            Self::Error => 3,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// Parses a default level as `LIBVIRT_DEBUG` takes it: `1`..`4` or
/// `debug`/`info`/`warning`/`error`.
pub fn parse_level(s: &str) -> Result<Priority, LogError> {
    match s {
        "1" | "debug" => Ok(Priority::Debug),
        "2" | "info" => Ok(Priority::Info),
        "3" | "warning" => Ok(Priority::Warning),
        "4" | "error" => Ok(Priority::Error),
        _ => Err(LogError::Invalid(format!(
            "Failed to set logging priority, argument '{s}' is invalid"
        ))),
    }
}

/// Checks a numeric level (config `log_level`, the admin API).
pub fn check_level(level: u8) -> Result<Priority, LogError> {
    Priority::from_number(level).ok_or_else(|| {
        LogError::Invalid(format!(
            "Failed to set logging priority, argument '{level}' is invalid"
        ))
    })
}
