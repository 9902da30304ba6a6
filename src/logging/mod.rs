//! The daemon's logging: libvirt's model of a default level, `level:match` filters
//! and `level:destination` outputs (spec §9.3, admin API §10 rows 14-17), implemented
//! as a `tracing` layer whose settings can be replaced at runtime (SIGHUP, virt-admin).
//!
//! Levels are libvirt's: 1 debug (tracing `DEBUG` and `TRACE`), 2 info, 3 warning,
//! 4 error. An event is written when its level reaches the level of the first filter
//! whose pattern matches its target (the Rust module path, e.g.
//! `virtlockd::actors::connection`), or the default level when no filter matches,
//! and then to every output whose own level it reaches.
//!
//! Lines look like libvirt's:
//! `2026-11-22 18:43:05.123+0000: 4242: info : virtlockd::actors::connection: message key=value`.
//!
//! * `priority`: the level type;
//! * `syntax`: libvirt's filter and output syntax;
//! * `settings`: the settings in effect, resolved from config, environment and CLI;
//! * `record` and `sinks`: each output's format, and the opened outputs;
//! * `layer`: the `tracing` layer and the handle that changes it at runtime.

mod error;
mod layer;
mod priority;
mod record;
mod settings;
mod sinks;
mod syntax;

#[cfg(test)]
mod tests;

use tracing_subscriber::layer::SubscriberExt as _;

pub use error::LogError;
pub use layer::{LogHandle, LogLayer, Logger};
pub use priority::{check_level, parse_level, Priority, DEFAULT_LEVEL};
pub use record::format_timestamp;
pub use settings::{default_outputs, resolve, EnvInputs, LogSettings};
pub use syntax::{
    parse_filter, parse_filters, parse_output, parse_outputs, render_filters, render_outputs,
    Destination, Filter, Output,
};

/// journald's native-protocol socket; its writability also decides the default output.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";
/// The local syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// Name used for the default log file and as journald's `SYSLOG_IDENTIFIER`.
pub const DAEMON_NAME: &str = "virtlockd";
/// Default log file of a privileged daemon started with `--daemon` without journald.
pub const PRIVILEGED_LOG_FILE: &str = "/var/log/libvirt/virtlockd.log";

/// Builds the layer and its handle without installing it (for composing one's own
/// subscriber, e.g. in tests with `tracing::subscriber::with_default`).
pub fn layer(settings: LogSettings) -> Result<(LogLayer, LogHandle), LogError> {
    layer::open(settings)
}

/// Installs the global subscriber; returns a handle to change settings at runtime.
pub fn install(settings: LogSettings) -> Result<LogHandle, LogError> {
    let (layer, handle) = layer(settings)?;
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .map_err(|_| LogError::AlreadyInstalled)?;
    Ok(handle)
}
