//! The third source of state: what the crash-safe store kept of a daemon that
//! died (see `crate::crash`). The journal says what the daemon had
//! acknowledged; the parked fds are the leases and client sockets
//! themselves; the busy table names connections with a request unanswered.
//! Together they make the same [`Snapshot`] a live upgrade carries, which
//! the one restore path then rebuilds.
//!
//! Nothing the store holds is dropped unexplained: a lease fd the journal
//! cannot account for (an unreadable journal) stays held, listed under an
//! unknown owner (pid 0) in the default lockspace, until an administrator
//! releases it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use tracing::{error, info, warn};

use crate::crash::entry::{client_of, Entry, Folded, ADMIN, LOCK};
use crate::crash::journal::Journal;
use crate::crash::memory::BusyTable;
use crate::crash::store::Store;
use crate::crash::{fdstore, CrashError};
use crate::lockspace::lease::{self, LockMode};
use crate::protocol::lock::ACQUIRE_SHARED;
use crate::state::{
    ClientState, FenceState, LockspaceState, OwnerState, ServerState, SessionState, Snapshot,
    ADMIN_SERVER, FORMAT, LOCK_SERVER, VERSION,
};

/// The pid under which leases of an unknown owner are listed.
pub const UNKNOWN_OWNER: i32 = 0;

/// The fds the service manager handed back, sorted by what they are.
#[derive(Default)]
pub struct Stored {
    generations: BTreeMap<u64, Generation>,
    busy: Vec<(u64, OwnedFd)>,
}

#[derive(Default)]
struct Generation {
    journal: Option<OwnedFd>,
    tx: Option<OwnedFd>,
    rx: Option<OwnedFd>,
}

impl Stored {
    /// Sorts `(name, fd)` pairs from `LISTEN_FDNAMES`; unknown names are
    /// logged and closed.
    pub fn sort(fds: Vec<(String, OwnedFd)>) -> Self {
        let mut out = Self::default();
        for (name, fd) in fds {
            let parsed = name
                .strip_prefix(fdstore::PREFIX)
                .and_then(|rest| rest.rsplit_once('-'))
                .and_then(|(kind, g)| Some((kind.to_owned(), g.parse::<u64>().ok()?)));
            let Some((kind, g)) = parsed else {
                warn!(name, "unknown fd in the store; closed");
                continue;
            };
            if kind == "busy" {
                out.busy.push((g, fd));
                continue;
            }
            let generation = out.generations.entry(g).or_default();
            match kind.as_str() {
                "journal" => generation.journal = Some(fd),
                "parktx" => generation.tx = Some(fd),
                "parkrx" => generation.rx = Some(fd),
                _ => warn!(name, "unknown fd in the store; closed"),
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.generations.is_empty() && self.busy.is_empty()
    }
}

/// Defaults for what the journal may not name.
pub struct Defaults {
    pub max_clients: usize,
    pub admin_max_clients: usize,
}

/// A daemon's state recovered from the store, and what to retire from it
/// once a new generation holds everything.
pub struct Recovery {
    pub snapshot: Snapshot,
    /// Generations and busy tables found in the store.
    pub retire: Vec<u64>,
    pub retire_busy: Vec<u64>,
    pub next_generation: u64,
    pub recoveries: u64,
}

/// What the restore found, for the log.
#[derive(Debug, Default)]
struct Report {
    leases: usize,
    clients: usize,
    busy_closed: usize,
    lost: usize,
    missing: usize,
    released: usize,
    closed: usize,
    unknown: usize,
}

/// Rebuilds the state of the daemon that died from `stored`.
pub fn recover(stored: Stored, defaults: &Defaults) -> Recovery {
    let Stored {
        mut generations,
        busy,
    } = stored;
    let mut retire: Vec<u64> = generations.keys().copied().collect();
    let retire_busy: Vec<u64> = busy.iter().map(|(g, _)| *g).collect();
    let newest = retire
        .iter()
        .chain(&retire_busy)
        .copied()
        .max()
        .unwrap_or(0);

    // The newest complete generation's journal.
    let mut journal = None;
    for (g, generation) in generations.iter_mut().rev() {
        if generation.tx.is_none() || generation.rx.is_none() {
            continue;
        }
        let Some(fd) = generation.journal.take() else {
            continue;
        };
        match Journal::open(fd) {
            Ok(Some(j)) => {
                journal = Some(j);
                break;
            }
            Ok(None) => error!(generation = g, "crash journal is not a journal"),
            Err(e) => error!(generation = g, error = %e, "crash journal unreadable"),
        }
    }

    // Every parked fd of every generation; one per tag.
    let mut fds: HashMap<u64, OwnedFd> = HashMap::new();
    let mut untagged = Vec::new();
    for generation in generations.values() {
        let Some(rx) = &generation.rx else { continue };
        match crate::crash::park::drain(rx.as_fd()) {
            Ok(parked) => {
                for (tag, fd) in parked {
                    if tag == 0 {
                        untagged.push(fd);
                    } else {
                        fds.entry(tag).or_insert(fd);
                    }
                }
            }
            Err(e) => error!(error = %e, "cannot receive parked fds"),
        }
    }
    let mut busy_tags = HashSet::new();
    for (_, fd) in busy {
        match BusyTable::open(fd) {
            Ok(t) => busy_tags.extend(t.busy()),
            Err(e) => warn!(error = %e, "busy table unreadable"),
        }
    }

    let (folded, readable) = match &journal {
        Some(j) => {
            let folded = Folded::replay(j.records().into_iter().map(|(_, r)| r));
            // A record cut short by the crash (never acknowledged) and a
            // damaged journal look alike: either way, what the records
            // before it do not explain is kept, never released.
            let ok = folded.undecodable == 0 && j.intact();
            if !ok {
                error!(
                    undecodable = folded.undecodable,
                    intact = j.intact(),
                    "crash journal damaged or cut short; leases it does not explain are kept for an unknown owner"
                );
            }
            (folded, ok)
        }
        None => {
            if !fds.is_empty() {
                error!(
                    "no readable crash journal; every parked lease is kept for an unknown owner"
                );
            }
            (Folded::default(), false)
        }
    };
    drop(journal);

    let mut report = Report::default();
    let mut snapshot = empty_snapshot(defaults);
    let mut recoveries = 0;
    let mut lockspaces: BTreeMap<Vec<u8>, LockspaceState> = BTreeMap::new();
    lockspaces.insert(Vec::new(), lockspace(None));
    let mut owners: Vec<(Vec<u8>, OwnerState)> = Vec::new();
    let mut resources = Vec::new();
    for entry in folded.live.into_values() {
        match entry {
            Entry::Daemon {
                started_at,
                upgrades,
                recoveries: r,
            } => {
                snapshot.started_at = started_at;
                snapshot.upgrades = upgrades;
                recoveries = r;
            }
            Entry::Timeout(t) => snapshot.timeout = Some(t),
            Entry::Server {
                server,
                max_clients,
                max_unauth_clients,
                prio_workers,
            } => {
                let s = &mut snapshot.servers[usize::from(server == ADMIN)];
                s.max_clients = max_clients;
                s.max_unauth_clients = Some(max_unauth_clients);
                s.prio_workers = Some(prio_workers);
            }
            Entry::Lockspace { directory } => {
                lockspaces
                    .entry(directory.clone())
                    .or_insert_with(|| lockspace(Some(directory)));
            }
            Entry::Owner { lockspace, owner } => owners.push((lockspace, owner)),
            Entry::Fence { pid, label } => snapshot.fencing.push(FenceState {
                pid,
                label: label.unwrap_or_default(),
            }),
            Entry::Client { server, id, client } => {
                let Some(mut client) = client else { continue };
                let tag = crate::crash::client_tag(server, id);
                let Some(fd) = fds.remove(&tag) else {
                    warn!(
                        server,
                        client = id,
                        "client socket not in the store; it is gone"
                    );
                    continue;
                };
                if busy_tags.contains(&tag) {
                    // A request was read and not answered (or a packet
                    // partly read): the connection closes, with the usual
                    // disconnect semantics, so no client waits forever.
                    shutdown(&fd);
                    report.busy_closed += 1;
                }
                client.fd = fd.into_raw_fd();
                report.clients += 1;
                let s = &mut snapshot.servers[usize::from(server == ADMIN)];
                s.next_client_id = s.next_client_id.max(id + 1);
                s.clients.push(client);
            }
            Entry::Resource {
                lockspace,
                name,
                held,
            } => {
                if let Some((tag, state)) = held {
                    resources.push((lockspace, name, tag, state));
                }
            }
        }
    }

    let now = crate::clock::now_epoch_seconds();
    for (key, name, tag, mut state) in resources {
        // The journal's record names the resource outside its state.
        state.name.clone_from(&name);
        let Some(fd) = fds.remove(&tag) else {
            error!(
                lockspace = %crate::names::lossy_utf8(&key),
                resource = %crate::names::lossy_utf8(&name),
                "lease could not be accounted for: its fd is not in the store; its lock is gone"
            );
            report.missing += 1;
            continue;
        };
        if state.lock_held {
            // The lock is asserted once more on the same open file description:
            // a no-op if held, and a lease that was held by a POSIX lock (adopted
            // from libvirt's daemon) becomes an OFD lock now. Refused means
            // somebody took the file while we were down.
            let mode = if state.flags & ACQUIRE_SHARED != 0 {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            };
            if let Err(e) = lease::ofd_lock(fd.as_fd(), mode) {
                error!(
                    resource = %crate::names::lossy_utf8(&name),
                    path = %crate::lockspace::path_in((!key.is_empty()).then_some(&key[..]), &name).display(),
                    error = %e,
                    "lease lost while the daemon was down"
                );
                state.lock_held = false;
                state.lost_reason = Some(format!("lost while the daemon was down ({})", e.desc()));
                state.lost_since = now;
                report.lost += 1;
            }
        }
        state.ofd = true;
        state.tag = tag;
        state.fd = fd.into_raw_fd();
        report.leases += 1;
        lockspaces
            .entry(key.clone())
            .or_insert_with(|| lockspace(Some(key)))
            .resources
            .push(state);
    }
    for (key, owner) in owners {
        if let Some(ls) = lockspaces.get_mut(&key) {
            ls.owners.push(owner);
        }
    }

    // What the journal does not name.
    for (tag, fd) in fds {
        match client_of(tag) {
            Some(_) if readable => {
                // A connection that had closed: make sure its peer knows.
                shutdown(&fd);
                report.closed += 1;
            }
            Some((server, id)) => {
                let s = &mut snapshot.servers[usize::from(server == ADMIN)];
                s.next_client_id = s.next_client_id.max(id + 1);
                s.clients.push(ClientState {
                    id,
                    fd: fd.into_raw_fd(),
                    conn_time: 0,
                    session: (server == LOCK).then(SessionState::default),
                    pending: Vec::new(),
                    peer_pid: None,
                    peer_ids: None,
                });
                report.clients += 1;
            }
            None if readable => {
                // Released, or acquired and never acknowledged: its connection
                // was busy and is closed. The lock of this description ends.
                let _ = lease::ofd_unlock(fd.as_fd());
                report.released += 1;
            }
            None => unknown_lease(&mut lockspaces, fd, tag, now, &mut report),
        }
    }
    for fd in untagged {
        unknown_lease(&mut lockspaces, fd, 0, now, &mut report);
    }
    snapshot.lockspaces = lockspaces.into_values().collect();
    // The default lockspace first, as the snapshot's readers expect.
    snapshot
        .lockspaces
        .sort_by_key(|l| l.directory.as_ref().map(|d| d.len()).is_some());

    info!(
        leases = report.leases,
        clients = report.clients,
        closed_mid_request = report.busy_closed,
        lost_while_down = report.lost,
        unaccounted = report.missing,
        released = report.released,
        closed_connections = report.closed,
        unknown_owner = report.unknown,
        "recovered from the crash-safe store"
    );
    retire.sort_unstable();
    Recovery {
        snapshot,
        retire,
        retire_busy,
        next_generation: newest + 1,
        recoveries: recoveries + 1,
    }
}

/// A lease the journal does not explain: kept, under an unknown owner, in
/// the default lockspace (named by its path), as held.
fn unknown_lease(
    lockspaces: &mut BTreeMap<Vec<u8>, LockspaceState>,
    fd: OwnedFd,
    tag: u64,
    now: i64,
    report: &mut Report,
) {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_else(|_| format!("(unknown file, tag {tag})").into_bytes());
    let file_id = nix::sys::stat::fstat(fd.as_fd())
        .ok()
        .map(|st| (st.st_dev, st.st_ino));
    error!(
        path = %String::from_utf8_lossy(&path),
        "lease held for an unknown owner (the journal does not explain it); kept until released"
    );
    report.unknown += 1;
    let default = lockspaces
        .entry(Vec::new())
        .or_insert_with(|| lockspace(None));
    default.resources.push(crate::state::ResourceState {
        name: path.clone(),
        path,
        fd: fd.into_raw_fd(),
        lock_held: true,
        flags: 0,
        owners: vec![UNKNOWN_OWNER],
        acquired_at: now,
        lost_reason: None,
        lost_since: 0,
        file_id,
        ofd: true,
        tag,
    });
}

fn shutdown(fd: &OwnedFd) {
    // SAFETY: shutdown(2) on an open socket we own; no memory involved.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
}

fn lockspace(directory: Option<Vec<u8>>) -> LockspaceState {
    LockspaceState {
        directory,
        resources: Vec::new(),
        owners: Vec::new(),
    }
}

/// A snapshot of a daemon with nothing (a first start in crash-safe mode).
pub fn empty_snapshot(d: &Defaults) -> Snapshot {
    let server = |name: &str, max: usize| ServerState {
        name: name.to_owned(),
        max_clients: max as u64,
        next_client_id: 1,
        listeners: Vec::new(),
        clients: Vec::new(),
        max_unauth_clients: None,
        prio_workers: None,
    };
    Snapshot {
        format: FORMAT.to_owned(),
        version: VERSION,
        magic: std::process::id(),
        servers: vec![
            server(LOCK_SERVER, d.max_clients),
            server(ADMIN_SERVER, d.admin_max_clients),
        ],
        lockspaces: Vec::new(),
        upgrades: 0,
        started_at: 0,
        fencing: Vec::new(),
        token: 0,
        timeout: None,
        crash: None,
        stale_fds: Vec::new(),
    }
}

/// Starts a crash-safe store holding everything `snapshot` names (its leases
/// get tags if they have none), as generation `generation`; `retire` and
/// `retire_busy` leave the fd store once the new generation is in it.
pub fn arm(
    snapshot: &mut Snapshot,
    generation: u64,
    retire: &[u64],
    retire_busy: &[u64],
    recoveries: u64,
) -> Result<(), CrashError> {
    let mut next_tag = snapshot
        .lockspaces
        .iter()
        .flat_map(|l| l.resources.iter().map(|r| r.tag))
        .max()
        .unwrap_or(0)
        + 1;
    let mut records = vec![Entry::Daemon {
        started_at: snapshot.started_at,
        upgrades: snapshot.upgrades,
        recoveries,
    }];
    if let Some(t) = snapshot.timeout {
        records.push(Entry::Timeout(t));
    }
    let mut open: HashMap<u64, RawFd> = HashMap::new();
    for (i, s) in snapshot.servers.iter().enumerate() {
        let server = if s.name == ADMIN_SERVER { ADMIN } else { LOCK };
        if i < 2 {
            records.push(Entry::Server {
                server,
                max_clients: s.max_clients,
                max_unauth_clients: s.max_unauth_clients.unwrap_or(s.max_clients),
                prio_workers: s.prio_workers.unwrap_or(0),
            });
        }
        for c in &s.clients {
            let tag = crate::crash::client_tag(server, c.id);
            open.insert(tag, c.fd);
            let mut rec = c.clone();
            rec.fd = -1;
            rec.pending = Vec::new();
            records.push(Entry::Client {
                server,
                id: c.id,
                client: Some(rec),
            });
        }
    }
    for ls in &mut snapshot.lockspaces {
        let key = ls.directory.clone().unwrap_or_default();
        if let Some(dir) = &ls.directory {
            records.push(Entry::Lockspace {
                directory: dir.clone(),
            });
        }
        for r in &mut ls.resources {
            if r.tag == 0 {
                r.tag = next_tag;
                next_tag += 1;
            }
            open.insert(r.tag, r.fd);
            let mut rec = r.clone();
            rec.fd = -1;
            records.push(Entry::Resource {
                lockspace: key.clone(),
                name: r.name.clone(),
                held: Some((r.tag, rec)),
            });
        }
        for o in &ls.owners {
            records.push(Entry::Owner {
                lockspace: key.clone(),
                owner: o.clone(),
            });
        }
    }
    for f in &snapshot.fencing {
        records.push(Entry::Fence {
            pid: f.pid,
            label: Some(f.label.clone()),
        });
    }
    let busy = BusyTable::create()?;
    fdstore::store(
        &format!("{}busy-{generation}", fdstore::PREFIX),
        &[busy.fd().as_fd()],
    )?;
    let mut store = Store::create(generation, &records, open, retire)?;
    for g in retire_busy {
        fdstore::remove(&format!("{}busy-{g}", fdstore::PREFIX))?;
    }
    store.next_tag = next_tag;
    store.recoveries = recoveries;
    crate::crash::install(store, busy, generation);
    Ok(())
}

/// Drops what the store kept once it is no longer wanted (crash-safe mode
/// switched off since): the leases recovered stay held by this process.
pub fn retire(generations: &[u64], busy: &[u64]) {
    let names = generations
        .iter()
        .flat_map(|&g| crate::crash::store::names(g))
        .chain(busy.iter().map(|g| format!("{}busy-{g}", fdstore::PREFIX)));
    for name in names {
        if let Err(e) = fdstore::remove(&name) {
            warn!(name, error = %e, "cannot remove from the fd store");
        }
    }
}
