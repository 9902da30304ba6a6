//! The command line of virtlockd(8), plus our additions.

use std::path::PathBuf;

use clap::Parser;

use crate::paths::Paths;

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

    /// Log informational messages too (default: warnings and errors).
    #[arg(short, long)]
    pub verbose: bool,

    /// PID file to create and lock (default: see FILES below).
    #[arg(short, long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Put every runtime file (lock socket, admin socket, pid file, restart state)
    /// in DIR instead of the default locations. Lets several daemons run side by side.
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
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
        p
    }
}

/// The "FILES" section of `--help`, for the current privilege level.
pub fn files_help(privileged: bool) -> String {
    let p = Paths::defaults(privileged);
    format!(
        "Default paths ({}):\n  Lock socket:   {}\n  Admin socket:  {}\n  PID file:      {}\n  Restart state: {}\n  Config file:   {}",
        if privileged { "running as root" } else { "running as a user" },
        p.lock_socket.display(),
        p.admin_socket.display(),
        p.pid_file.display(),
        p.restart_state.display(),
        p.config_file.display(),
    )
}
