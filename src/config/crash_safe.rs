//! Whether crash-safe mode is asked for: `crash_safe` in `virtlockd.conf` if the
//! file sets it, else the environment variable [`CRASH_SAFE_ENV`], which the
//! shipped systemd unit sets (the unit is where the file-descriptor store the
//! mode needs is configured, so it is the unit that turns the mode on; a
//! daemon started by hand, or under libvirt's unit, runs without it).
//!
//! Whether the mode can then run is decided at start (see `crate::crash`).

use super::Config;

/// `VIRTLOCKD_CRASH_SAFE=1` asks for crash-safe mode when `virtlockd.conf`
/// does not set `crash_safe`.
pub const CRASH_SAFE_ENV: &str = "VIRTLOCKD_CRASH_SAFE";

/// The answer of [`crash_safe_wanted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashSafeChoice {
    /// Whether crash-safe mode is asked for.
    pub wanted: bool,
    /// A value of [`CRASH_SAFE_ENV`] that is neither `0` nor `1`, for the
    /// caller to log (it then counts as `0`).
    pub warning: Option<String>,
}

/// Resolves crash-safe mode: `cfg.crash_safe` if the file set it; else `env`,
/// the value of [`CRASH_SAFE_ENV`] if set: `1` is on, `0`, empty or unset is
/// off, and anything else is off with a warning (a typo must not turn on a
/// mode that changes how leases are held, and must not go unnoticed either).
pub fn crash_safe_wanted(cfg: &Config, env: Option<&str>) -> CrashSafeChoice {
    let off = CrashSafeChoice {
        wanted: false,
        warning: None,
    };
    if let Some(wanted) = cfg.crash_safe {
        return CrashSafeChoice { wanted, ..off };
    }
    match env {
        None | Some("" | "0") => off,
        Some("1") => CrashSafeChoice {
            wanted: true,
            ..off
        },
        Some(other) => CrashSafeChoice {
            warning: Some(format!(
                "{CRASH_SAFE_ENV}={other:?} is neither 0 nor 1: crash-safe mode stays off"
            )),
            ..off
        },
    }
}
