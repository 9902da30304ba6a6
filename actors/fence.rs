//! Fencing a lease owner whose connection closed while it held leases: the VM
//! must not keep writing to disks it no longer has a lease for. Same schedule as
//! libvirt (SIGTERM, probe every 200 ms, SIGKILL at 1.6 s, give up at 3 s), but as
//! a timer-driven task: libvirt sleeps in its only thread and freezes every client.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use super::fence_marks::Fencing;

const PROBES: u32 = 15;
const KILL_AT: u32 = 8;
const INTERVAL: Duration = Duration::from_millis(200);

/// How a fencing attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The process is gone (after `signals` signals were sent).
    Gone { signals: u32 },
    /// Still there after SIGKILL and 3 s (a zombie nobody reaps, or no permission).
    StillThere,
}

/// Fences the owner `fencing` was started for; the mark (carried over by a
/// live upgrade) ends when this does. Every fencing runs through here.
pub async fn run(fencing: Fencing) -> Outcome {
    fence(fencing.pid(), fencing.label()).await
}

/// Runs [`run`] on the system arbiter (the main event thread), not on the
/// caller's: a lockspace thread may hang in a syscall on a dead mount, and the
/// SIGKILL escalation must not wait for it.
pub fn spawn(fencing: Fencing) {
    actix::System::current().arbiter().spawn(async move {
        run(fencing).await;
    });
}

/// Terminates `pid`, escalating to SIGKILL. PIDs <= 1 are never signalled.
async fn fence(pid: i32, who: &str) -> Outcome {
    if pid <= 1 {
        return Outcome::Gone { signals: 0 };
    }
    let target = Pid::from_raw(pid);
    let mut sent = 0;
    for i in 0..PROBES {
        let sig = match i {
            0 => Some(Signal::SIGTERM),
            KILL_AT => Some(Signal::SIGKILL),
            _ => None,
        };
        match kill(target, sig) {
            Ok(()) => {
                if let Some(sig) = sig {
                    sent += 1;
                    warn!(pid, owner = who, signal = %sig, "fencing lease owner");
                }
            }
            Err(Errno::ESRCH) => {
                info!(pid, owner = who, "lease owner is gone");
                return Outcome::Gone { signals: sent };
            }
            Err(e) => warn!(pid, owner = who, error = %e, "cannot signal lease owner"),
        }
        actix_rt::time::sleep(INTERVAL).await;
    }
    warn!(
        pid,
        owner = who,
        "lease owner still exists after SIGKILL; giving up"
    );
    Outcome::StillThere
}
