//! The settings of `virtlockd.conf` as deserialized by the `config` crate, then checked
//! the way libvirt's `virLockDaemonConfigLoadOptions` checks them.

use serde::Deserialize;

use super::source::VirConf;
use super::virconf::ConfValue;
use super::{Config, ConfigError, LossAction, MAX_LEASE_CHECK_INTERVAL};

/// The known keys, each still a raw virConf value.
///
/// Not `u64`/`String` fields: the `config` crate converts between types where libvirt
/// refuses (`"10"` would pass as a number, `3` as a string), and it visits fields in
/// its map's order, whereas libvirt checks keys in a fixed order and reports the first
/// bad one. So the types and ranges are checked in [`RawSettings::check`].
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawSettings {
    log_level: Option<ConfValue>,
    log_filters: Option<ConfValue>,
    log_outputs: Option<ConfValue>,
    max_clients: Option<ConfValue>,
    admin_max_clients: Option<ConfValue>,
    lease_check_interval: Option<ConfValue>,
    lease_loss_action: Option<ConfValue>,
    crash_safe: Option<ConfValue>,
}

/// A warning and the line it is about, for sorting into file order.
pub(super) type LineWarning = (usize, String);

impl RawSettings {
    /// The typed [`Config`], plus warnings about accepted but odd values. `origin` names
    /// the file in errors; `document` gives the lines of the warnings.
    pub(super) fn check(
        self,
        origin: &str,
        document: &VirConf,
    ) -> Result<(Config, Vec<LineWarning>), ConfigError> {
        let mut warnings = Vec::new();
        let mut cfg = Config::default();
        // Same order as libvirt's virLockDaemonConfigLoadOptions, so that a file with
        // several bad keys reports the same one first.
        if let Some(level) = uint(self.log_level, "log_level", origin)? {
            if level > 4 {
                return Err(out_of_range(origin, "log_level", 4));
            }
            cfg.log_level = u8::try_from(level).ok().filter(|&l| l != 0);
        }
        cfg.log_filters = string(self.log_filters, "log_filters", origin)?;
        cfg.log_outputs = string(self.log_outputs, "log_outputs", origin)?;
        for (key, value, slot) in [
            ("max_clients", self.max_clients, &mut cfg.max_clients),
            (
                "admin_max_clients",
                self.admin_max_clients,
                &mut cfg.admin_max_clients,
            ),
        ] {
            if let Some(n) = uint(value, key, origin)? {
                if n > u64::from(u32::MAX) {
                    return Err(out_of_range(origin, key, u64::from(u32::MAX)));
                }
                *slot = usize::try_from(n).map_err(|_| out_of_range(origin, key, 0))?;
                if n == 0 {
                    let line = document.line_of(key).unwrap_or(0);
                    warnings.push((
                        line,
                        format!("{origin}:{line}: {key} = 0: that server will accept no clients"),
                    ));
                }
            }
        }
        if let Some(n) = uint(self.lease_check_interval, "lease_check_interval", origin)? {
            if n > MAX_LEASE_CHECK_INTERVAL {
                return Err(out_of_range(
                    origin,
                    "lease_check_interval",
                    MAX_LEASE_CHECK_INTERVAL,
                ));
            }
            cfg.lease_check_interval = n;
        }
        if let Some(a) = string(self.lease_loss_action, "lease_loss_action", origin)? {
            cfg.lease_loss_action = match a.as_str() {
                "fence" => LossAction::Fence,
                "log" => LossAction::Log,
                _ => {
                    return Err(ConfigError::BadChoice {
                        origin: origin.to_string(),
                        key: "lease_loss_action".into(),
                        value: a,
                        choices: "\"fence\", \"log\"",
                    })
                }
            };
        }
        // Not a libvirt key, so no libvirt text to keep: its errors name the line too.
        let at = format!("{origin}:{}", document.line_of("crash_safe").unwrap_or(0));
        if let Some(n) = uint(self.crash_safe, "crash_safe", &at)? {
            if n > 1 {
                return Err(out_of_range(&at, "crash_safe", 1));
            }
            cfg.crash_safe = Some(n == 1);
        }
        Ok((cfg, warnings))
    }
}

fn out_of_range(origin: &str, key: &str, max: u64) -> ConfigError {
    ConfigError::OutOfRange {
        origin: origin.to_string(),
        key: key.to_string(),
        min: 0,
        max,
    }
}

/// libvirt's `virConfGetValueUInt`: only a non-negative integer will do.
fn uint(value: Option<ConfValue>, key: &str, origin: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(ConfValue::UInt(n)) => Ok(Some(n)),
        Some(_) => Err(wrong_type(origin, key, "an unsigned integer")),
    }
}

/// libvirt's `virConfGetValueString`: only a quoted string will do (no lists, no numbers).
fn string(
    value: Option<ConfValue>,
    key: &str,
    origin: &str,
) -> Result<Option<String>, ConfigError> {
    match value {
        None => Ok(None),
        Some(ConfValue::Str(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type(origin, key, "a string")),
    }
}

fn wrong_type(origin: &str, key: &str, expected: &'static str) -> ConfigError {
    ConfigError::WrongType {
        origin: origin.to_string(),
        key: key.to_string(),
        expected,
    }
}
