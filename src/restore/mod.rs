//! Where a starting daemon's state comes from, one module for the three
//! sources, each turned into the same [`Snapshot`] that the supervisor then
//! rebuilds (`actors/supervisor.rs`, `Restored`):
//!
//! * after a live upgrade, our own snapshot (spec §8.2), or libvirt's JSON
//!   when libvirt's daemon execs us (hand-over) — [`after_exec`];
//! * after a crash, the crash-safe store handed back by the service manager
//!   — [`crash`];
//! * in crash-safe mode, the store a previous image kept is taken up
//!   ([`carry_on`]) or a new one is started from whatever was restored
//!   ([`crash::arm`]).

pub mod crash;

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::lockspace::lease::{self, Storage};
use crate::paths::Paths;
use crate::state::{self, Snapshot};

/// The state a previous image of this process left for us (spec §8.2): our
/// snapshot if its libvirt twin is still there, else libvirt's JSON (hand-over
/// from libvirt's daemon). Both files are removed at once, whatever they hold; a
/// state of another process (magic != our pid) is ignored.
pub fn after_exec(paths: &Paths) -> Option<Snapshot> {
    let me = std::process::id();
    let t_read = std::time::Instant::now();
    let packed = std::fs::read(paths.restart_snapshot()).ok();
    debug!(
        ms = t_read.elapsed().as_secs_f64() * 1e3,
        bytes = packed.as_ref().map_or(0, Vec::len),
        "snapshot read"
    );
    let _ = std::fs::remove_file(paths.restart_snapshot());
    // Only the head of libvirt's JSON is needed to pair it with our snapshot; the
    // whole (megabytes) only when adopting libvirt's own state.
    let json_file = std::fs::File::open(&paths.restart_state).ok();
    let _ = std::fs::remove_file(&paths.restart_state);
    let mut head = [0u8; 128];
    let (mut json_file, n) = match json_file {
        Some(mut f) => {
            let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
            (Some(f), n)
        }
        None => (None, 0),
    };
    let token = json_token(&head[..n]);
    if let Some(bytes) = packed {
        match Snapshot::from_msgpack(&bytes) {
            // Token 0: written for ourselves alone; else its JSON twin must be
            // there (if libvirt's daemon consumed the twin, this one is stale).
            Ok(s) if s.magic == me && (s.token == 0 || token == Some(s.token)) => {
                info!(upgrades = s.upgrades, "restoring after live upgrade");
                return Some(s);
            }
            Ok(s) if s.magic == me => warn!(
                "restart snapshot without its libvirt twin (consumed by another daemon); ignored"
            ),
            Ok(s) => warn!(
                magic = s.magic,
                "Found restart exec file with old magic; ignored"
            ),
            Err(e) => warn!("restart snapshot unreadable ({e}); using libvirt's state file"),
        }
    }
    let mut rest = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(json_file.as_mut()?, &mut rest) {
        error!("restart state unreadable, starting afresh: {e}");
        return None;
    }
    let mut bytes = head[..n].to_vec();
    bytes.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&bytes);
    match state::libvirt::from_json(&text) {
        Ok(s) if s.magic == me => {
            info!("adopting the state of libvirt's virtlockd");
            Some(s)
        }
        Ok(s) => {
            warn!(
                magic = s.magic,
                "Found restart exec file with old magic; ignored"
            );
            None
        }
        Err(e) => {
            error!("restart state unreadable, starting afresh: {e}");
            None
        }
    }
}

/// Our token, which `tag_json` puts first in the document: found without parsing
/// megabytes of JSON.
fn json_token(bytes: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"virtlockdRsToken\": \"";
    let head = &bytes[..bytes.len().min(128)];
    let start = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = head[start..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Where each restored lockspace may run (see `Supervisor::start_lockspace`).
/// statfs on a dead mount never returns, so each gets a second at most; a
/// lockspace that does not answer runs on a thread of its own.
pub fn classify(snapshot: &Snapshot) -> Vec<Storage> {
    snapshot
        .lockspaces
        .iter()
        .map(|ls| match &ls.directory {
            None => Storage::ANYWHERE,
            Some(dir) => {
                let dir = PathBuf::from(std::ffi::OsStr::from_bytes(dir));
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(lease::storage_of(&dir));
                });
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(Ok(s)) => s,
                    _ => Storage::MayHang("unresponsive"),
                }
            }
        })
        .collect()
}

/// After a live upgrade in crash-safe mode: takes up the store the previous
/// image kept (the same generation; its fds are in `snapshot`). False if
/// there was none or it cannot be used (a new one is then armed).
pub fn carry_on(snapshot: &Snapshot) -> bool {
    let Some(state) = &snapshot.crash else {
        return false;
    };
    let mut open = std::collections::HashMap::new();
    for ls in &snapshot.lockspaces {
        for r in &ls.resources {
            if r.tag != 0 {
                open.insert(r.tag, r.fd);
            }
        }
    }
    for s in &snapshot.servers {
        let server = if s.name == state::ADMIN_SERVER {
            crate::crash::entry::ADMIN
        } else {
            crate::crash::entry::LOCK
        };
        for c in &s.clients {
            open.insert(crate::crash::client_tag(server, c.id), c.fd);
        }
    }
    match crate::crash::adopt(state, open) {
        Ok(()) => {
            crate::crash::record_or_log(&crate::crash::Entry::Daemon {
                started_at: snapshot.started_at,
                upgrades: snapshot.upgrades,
                recoveries: state.recoveries,
            });
            info!(
                generation = state.generation,
                "crash-safe store taken up after the live upgrade"
            );
            true
        }
        Err(e) => {
            error!(error = %e, "the crash-safe store of the previous image cannot be used; starting a new one");
            false
        }
    }
}

#[cfg(test)]
mod tests;
