//! Wall-clock times as the daemon records them (connect times, lease times,
//! start-up): whole seconds since the epoch, 0 before it.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn epoch_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Now, in seconds since the epoch.
pub fn now_epoch_seconds() -> i64 {
    epoch_seconds(SystemTime::now())
}
