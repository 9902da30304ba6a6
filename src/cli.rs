//! The command line of virtlockd(8), plus our additions.

use std::path::PathBuf;

use clap::Parser;

use crate::paths::Paths;

/// Largest `--timeout` libvirt accepts (INT_MAX / 1000 seconds).
pub const MAX_TIMEOUT: u32 = 2_147_483;

#[derive(Debug, Parser)]
#[command(
    name = "virtlockd",
    about = "Lock daemon for libvirt's lockd lock manager (wire-compatible virtlockd)",
    long_about = "Holds disk and lease locks (POSIX fcntl locks) on behalf of libvirtd's \
lockd plugin, in a process of its own so that libvirtd can restart without losing them.",
    version = concat!(env!("CARGO_PKG_VERSION"), " (virtlockd-rs; libvirt lock protocol 1)"),
    disable_version_flag = true
)]
pub struct Cli {
    /// Print version and exit.
    #[arg(short = 'V', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,

    /// Log informational messages too (raises the log level to 2 = info).
    #[arg(short, long)]
    pub verbose: bool,

    /// Run in the background; return once the daemon accepts connections.
    #[arg(short, long)]
    pub daemon: bool,

    /// Configuration file (default: see below; a file named here must exist).
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Exit after SECS seconds with no client connected and no lock held
    /// (0 = never, the default; at most 2147483).
    #[arg(short, long, value_name = "SECS", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Option<u32>,

    /// PID file to create and lock (default: see below).
    #[arg(short, long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Put every runtime file (lock socket, admin socket, pid file, restart state)
    /// in DIR instead of the default locations. Lets several daemons run side by side.
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
}

/// libvirt's parse: leading decimal digits, trailing garbage tolerated, range
/// 0..=2147483.
fn parse_timeout(s: &str) -> Result<u32, String> {
    let digits: String = s
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match digits.parse::<u64>() {
        Ok(n) if n <= MAX_TIMEOUT as u64 && !s.trim_start().starts_with('-') => Ok(n as u32),
        _ => Err("Invalid value for timeout".to_owned()),
    }
}

impl Cli {
    /// The paths this invocation will use.
    pub fn paths(&self, privileged: bool) -> Paths {
        let mut p = match &self.runtime_dir {
            Some(dir) => Paths::under(dir, privileged),
            None => Paths::defaults(privileged),
        };
        if let Some(pid) = &self.pid_file {
            p.pid_file = pid.clone();
        }
        if let Some(cfg) = &self.config {
            p.config_file = cfg.clone();
        }
        p
    }
}

/// The part of `--help` after the options: default paths for the current
/// privilege level, environment, signals, exit codes.
pub fn after_help(privileged: bool) -> String {
    let p = Paths::defaults(privileged);
    format!(
        "Default paths ({}):\n  Lock socket:   {}\n  Admin socket:  {}\n  PID file:      {}\n  Restart state: {}\n  Config file:   {}\n\n\
Environment:\n  LIBVIRT_DEBUG        default log level (1 debug .. 4 error), overrides the config file\n  \
LIBVIRT_LOG_FILTERS  log filters (\"level:match ...\"), overrides the config file\n  \
LIBVIRT_LOG_OUTPUTS  log outputs (\"level:stderr level:file:PATH level:journald level:syslog:IDENT\")\n  \
VIRTLOCKD_CRASH_SAFE  1 asks for crash-safe mode (leases kept in the service manager's file-descriptor store) when the config file does not set crash_safe\n  \
LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES  systemd socket activation (virtlockd.socket, virtlockd-admin.socket)\n\n\
Signals:\n  SIGTERM, SIGINT, SIGQUIT  shut down: close clients (their lease holders are fenced), exit 0\n  \
SIGHUP                    reload logging settings and client limits from the config file\n  \
SIGUSR1                   live upgrade: re-exec in place keeping every lock and client\n  \
SIGUSR2, SIGPIPE          ignored\n\n\
Exit codes: 0 ok, 1 usage/config/pid file, 2 run directory, 3 initialisation, 4 signals, 6 sockets",
        if privileged { "running as root" } else { "running as a user" },
        p.lock_socket.display(),
        p.admin_socket.display(),
        p.pid_file.display(),
        p.restart_state.display(),
        p.config_file.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_parses_like_libvirt() {
        assert_eq!(parse_timeout("120"), Ok(120));
        assert_eq!(parse_timeout("120s"), Ok(120));
        assert_eq!(parse_timeout("0"), Ok(0));
        assert_eq!(parse_timeout("2147483"), Ok(2_147_483));
        assert!(parse_timeout("2147484").is_err());
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("abc").is_err());
        assert!(parse_timeout("").is_err());
    }

    #[test]
    fn equals_form_is_accepted() {
        let cli = Cli::try_parse_from(["virtlockd", "--timeout=120", "-d", "-v"]).unwrap();
        assert_eq!(cli.timeout, Some(120));
        assert!(cli.daemon && cli.verbose);
        let cli = Cli::try_parse_from(["virtlockd", "-t", "5", "-f", "/x.conf"]).unwrap();
        assert_eq!(cli.timeout, Some(5));
        assert_eq!(cli.paths(true).config_file, PathBuf::from("/x.conf"));
    }
}
