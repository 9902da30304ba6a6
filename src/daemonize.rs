//! `-d`: detach like libvirt's daemons (double fork, setsid, chdir `/`, stdio to
//! /dev/null) with a status pipe, so the command returns 0 only once the daemon
//! accepts connections, and otherwise says why it failed.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe, setsid, ForkResult};

/// The daemon's end of the status pipe.
pub struct ReadyPipe(OwnedFd);

impl ReadyPipe {
    /// Tells the waiting parent the outcome: 0 = ready, else a libvirt exit code.
    pub fn report(self, code: u8) {
        let _ = nix::unistd::write(&self.0, &[code]);
    }
}

/// libvirt's text for a start-up exit code.
pub fn describe(code: u8) -> &'static str {
    match code {
        1 => "Unable to obtain pidfile",
        2 => "Unable to create rundir",
        3 => "Unable to initialize libvirt",
        4 => "Unable to setup signal handlers",
        6 => "Unable to initialize network sockets",
        9 => "Unable to re-execute daemon",
        _ => "Unknown failure",
    }
}

/// Forks into the background. Returns in the daemon process only; the original
/// process waits for the daemon's report and exits with 0 or 1. Must run before
/// any thread is started.
pub fn daemonize(argv0: &str) -> std::io::Result<ReadyPipe> {
    let (rd, wr) = pipe()?;
    // SAFETY: single-threaded at this point (no runtime started yet).
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(wr);
            // The waiting command keeps the default actions (Ctrl-C stops the
            // wait); only the daemon takes its signals on a thread of its own.
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
                Some(&crate::signals::guarded_set()),
                None,
            );
            let _ = nix::sys::wait::waitpid(child, None);
            let mut status = [0u8; 1];
            let got = std::fs::File::from(rd).read(&mut status).unwrap_or(0);
            if got == 1 && status[0] == 0 {
                std::process::exit(0);
            }
            let reason = if got == 1 {
                describe(status[0])
            } else {
                "Daemon exited before it was ready"
            };
            eprintln!(
                "{argv0}: error: {reason}. Check /var/log/messages or run without --daemon for more info."
            );
            std::process::exit(1);
        }
        ForkResult::Child => {}
    }
    drop(rd);
    setsid()?;
    // SAFETY: still single-threaded.
    if let ForkResult::Parent { .. } = unsafe { fork() }? {
        // The session leader exits so the daemon can never reacquire a terminal.
        // SAFETY: _exit skips destructors that belong to the original process.
        unsafe { libc::_exit(0) };
    }
    std::env::set_current_dir("/")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    dup2_stdin(&null)?;
    dup2_stdout(&null)?;
    dup2_stderr(&null)?;
    debug_assert!(null.as_raw_fd() > 2);
    Ok(ReadyPipe(wr))
}
