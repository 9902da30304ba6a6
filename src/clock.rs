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

/// When `main` began (microseconds since the epoch; 0: not noted), for the
/// start-up timing a live upgrade logs: exec until `main`, then until the
/// daemon runs.
pub static MAIN_AT_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Notes when `main` began.
pub fn note_main() {
    MAIN_AT_US.store(epoch_micros(), std::sync::atomic::Ordering::Relaxed);
}

/// Now, in microseconds since the epoch: timestamps that can be compared
/// across the exec of a live upgrade (a monotonic clock's would be too, but
/// the log reader sees these).
pub fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// When this process started, in seconds since the epoch, from the kernel
/// (/proc/stat's boot time plus /proc/self/stat's start time). After a hand-over
/// from libvirt's daemon, whose state does not say when it started, this is
/// still the daemon's start: the process is the same one.
pub fn process_start_epoch_seconds() -> Option<i64> {
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()?;
    start_from_proc(&boot, &stat, ticks_per_second)
}

fn start_from_proc(proc_stat: &str, self_stat: &str, ticks_per_second: i64) -> Option<i64> {
    let boot: i64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // Fields after the parenthesised command start with field 3 (state);
    // starttime is field 22.
    let rest = &self_stat[self_stat.rfind(')')? + 2..];
    let start_ticks: i64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    (ticks_per_second > 0).then(|| boot + start_ticks / ticks_per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_boot_time_plus_the_process_start() {
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        // A command with spaces and parentheses must not shift the fields.
        let self_stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(
            start_from_proc(proc_stat, self_stat, 100),
            Some(1_700_000_123)
        );
        assert_eq!(start_from_proc("cpu 1\n", self_stat, 100), None);
    }

    #[test]
    fn this_process_started_before_now() {
        let start = process_start_epoch_seconds().expect("readable on Linux");
        let now = now_epoch_seconds();
        assert!(start <= now && start > now - 24 * 3600, "{start} vs {now}");
    }
}
