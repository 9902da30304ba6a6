//! The command line of virtlockctl(1). In the library so that the man page and
//! shell completions can be generated from it (`examples/gen_docs.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::paths::Paths;

#[derive(Parser)]
#[command(
    name = "virtlockctl",
    version,
    about = "Inspect the leases of virtlockd",
    long_about = "Shows who holds which lease, which clients are connected and how the \
daemon is doing, by asking virtlockd over its admin socket (only the daemon's own user \
is admitted), and whether fcntl locks on a lockspace's filesystem reach other hosts."
)]
pub struct Cli {
    /// The daemon's admin socket (default: as the daemon's, for this user).
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,

    /// The daemon's --runtime-dir: its admin socket is in there.
    #[arg(long, value_name = "DIR", global = true)]
    pub runtime_dir: Option<PathBuf>,

    /// Print JSON (field list in the README; stable).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Every held lease with its lockspace, file, mode and owners.
    Locks {
        /// Only leases in this lockspace directory ("" or "direct" for direct leases).
        #[arg(long, value_name = "DIR")]
        lockspace: Option<String>,
        /// Only leases with this owner pid.
        #[arg(long, value_name = "PID")]
        owner: Option<i32>,
    },
    /// The lease of a disk path, direct or in a file lockspace (SHA-256 name).
    Who { path: PathBuf },
    /// Connections of both servers, with their owners and leases.
    Clients,
    /// Version, pid, uptime, clients, lockspaces, leases, live upgrades, and
    /// whether leases survive a crash of the daemon (crash-safe mode).
    Status,
    /// Whether fcntl locks under DIR reach other hosts. Exit status 2 if not.
    Check { dir: PathBuf },
    /// Release a lease held for an unknown owner: one kept after a crash
    /// that the daemon's journal could not account for (`locks` lists it
    /// with owner pid 0, under the file's path). A lease with a known owner
    /// is never released this way. Exit status 1 if there is none on PATH.
    ReleaseUnknown { path: PathBuf },
}

impl Cli {
    /// The admin socket to talk to: `--socket`, else the one in `--runtime-dir`,
    /// else the default for this user.
    pub fn socket(&self) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        let privileged = nix::unistd::geteuid().is_root();
        match &self.runtime_dir {
            Some(dir) => Paths::under(dir, privileged).admin_socket,
            None => Paths::defaults(privileged).admin_socket,
        }
    }
}
