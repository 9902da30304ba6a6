//! Live upgrade on SIGUSR1: quiesce every actor, write their state, and exec the
//! (possibly new) binary in place. Same pid, so the kernel keeps every POSIX lock
//! and every socket; the new image rebuilds the actors before it reads a socket.
//!
//! Order matters: accept stops first; each connection hands over only between
//! requests (its last reply written); releases of connections that closed meanwhile
//! finish before the lockspaces freeze; fencing under way is carried over. If
//! anything fails before the exec takes effect, every actor resumes: no lock and
//! no client is lost.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::deferred_shutdown::DeferredShutdown;
use super::fence_marks::FencingMarks;
use super::lockspace::{Freeze, Frozen};
use super::lockspace_table::LockspaceTable;
use super::releases::PendingReleases;
use super::rpc::Quiesce;
use super::supervisor::{Pause, Resume, Supervisor};
use crate::state::encoded::EncodedLockspace;
use crate::state::{self, FenceState, Snapshot, ADMIN_SERVER, LOCK_SERVER};

/// What to exec and where to leave the state.
#[derive(Debug, Clone)]
pub struct ExecPlan {
    /// `argv[0]` resolved to an absolute path at start-up.
    pub exe: PathBuf,
    /// The original command line, `argv[0]` included.
    pub argv: Vec<CString>,
    /// Our snapshot (MessagePack).
    pub snapshot_file: PathBuf,
    /// libvirt's JSON, for a hand-back to libvirt's daemon.
    pub json_file: PathBuf,
    /// The working directory at start-up: the new image gets the original argv,
    /// whose relative paths (`--runtime-dir run`) must mean what they meant,
    /// even after `-d` moved us to `/`.
    pub cwd: Option<PathBuf>,
}

impl ExecPlan {
    /// Resolves `argv[0]` as execvp would, against the start-up working directory.
    pub fn from_args(
        args: &[std::ffi::OsString],
        snapshot_file: PathBuf,
        json_file: PathBuf,
    ) -> Self {
        let argv0 = args.first().cloned().unwrap_or_else(|| "virtlockd".into());
        let exe = resolve_exe(Path::new(&argv0))
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from(&argv0));
        let argv = args
            .iter()
            .filter_map(|a| CString::new(a.as_bytes()).ok())
            .collect();
        Self {
            exe,
            argv,
            snapshot_file,
            json_file,
            cwd: std::env::current_dir().ok(),
        }
    }
}

fn resolve_exe(argv0: &Path) -> Option<PathBuf> {
    if argv0.as_os_str().as_bytes().contains(&b'/') {
        return std::path::absolute(argv0).ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(argv0))
        .find(|p| p.is_file())
        .and_then(|p| std::path::absolute(p).ok())
}

/// The daemon-wide state a live upgrade waits for, freezes and carries over.
#[derive(Clone)]
pub struct UpgradeShared {
    pub lockspaces: LockspaceTable,
    pub releases: PendingReleases,
    pub fencing: FencingMarks,
    pub shutdown: DeferredShutdown,
}

pub struct Handoff {
    supervisor: Addr<Supervisor>,
    shared: UpgradeShared,
    plan: ExecPlan,
    /// Upgrades done by this process so far (carried over).
    upgrades: u64,
    started_at: i64,
    busy: bool,
}

impl Handoff {
    pub fn new(
        supervisor: Addr<Supervisor>,
        shared: UpgradeShared,
        plan: ExecPlan,
        upgrades: u64,
        started_at: i64,
    ) -> Self {
        Self {
            supervisor,
            shared,
            plan,
            upgrades,
            started_at,
            busy: false,
        }
    }
}

impl Actor for Handoff {
    type Context = Context<Self>;
}

/// Re-exec now (SIGUSR1).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Upgrade;

impl Handler<Upgrade> for Handoff {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Upgrade, _: &mut Self::Context) -> Self::Result {
        if self.busy {
            warn!("live upgrade already in progress");
            return Box::pin(fut::ready(()));
        }
        self.busy = true;
        let supervisor = self.supervisor.clone();
        let shared = self.shared.clone();
        let plan = self.plan.clone();
        let (upgrades, started_at) = (self.upgrades, self.started_at);
        Box::pin(
            async move {
                let mut resumes = Vec::new();
                let outcome = upgrade(
                    &supervisor,
                    &shared,
                    &plan,
                    upgrades,
                    started_at,
                    &mut resumes,
                )
                .await;
                // Only failures come back: a successful exec never returns.
                error!("live upgrade failed ({outcome}); resuming with every lock and client");
                for tx in resumes {
                    let _ = tx.send(());
                }
                supervisor.do_send(Resume);
            }
            .into_actor(self)
            .map(|(), act, _| act.busy = false),
        )
    }
}

/// How long one phase of the upgrade may take. An actor stuck on a hung mount
/// must not freeze the daemon: the upgrade is abandoned and everything resumes.
const PHASE_LIMIT: Duration = Duration::from_secs(5);

async fn within<F: std::future::Future>(phase: &str, f: F) -> Result<F::Output, String> {
    tokio::time::timeout(PHASE_LIMIT, f)
        .await
        .map_err(|_| format!("{phase} took longer than {PHASE_LIMIT:?}"))
}

/// Quiesces everything and execs; returns why it did not happen. Every actor
/// paused on the way has its resume sender in `resumes`.
async fn upgrade(
    supervisor: &Addr<Supervisor>,
    shared: &UpgradeShared,
    plan: &ExecPlan,
    upgrades: u64,
    started_at: i64,
    resumes: &mut Vec<oneshot::Sender<()>>,
) -> String {
    let t0 = Instant::now();
    let mut phases = PhaseClock::new(t0);
    let mut paused = match supervisor.send(Pause).await {
        Ok(Some(p)) => p,
        Ok(None) => return "the daemon is shutting down".into(),
        Err(e) => return e.to_string(),
    };
    let lock_clients = std::mem::take(&mut paused.lock_clients);
    let admin_clients = std::mem::take(&mut paused.admin_clients);
    let quiesce = join_all(lock_clients.iter().map(|c| {
        let (tx, rx) = oneshot::channel();
        resumes.push(tx);
        c.send(Quiesce { resume: rx })
    }));
    phases.mark("pause");
    let lock_states = match within("quiescing clients", quiesce).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    phases.mark("quiesce_clients");
    let quiesce = join_all(admin_clients.iter().map(|c| {
        let (tx, rx) = oneshot::channel();
        resumes.push(tx);
        c.send(Quiesce { resume: rx })
    }));
    let admin_states = match within("quiescing admin clients", quiesce).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    for server in &mut paused.servers {
        let states = match server.name.as_str() {
            LOCK_SERVER => &lock_states,
            ADMIN_SERVER => &admin_states,
            _ => continue,
        };
        // A client that closed meanwhile answers nothing: it is gone, and its
        // release is awaited just below. The clients that were between
        // requests are there already; these go first, as the new image
        // rebuilds them in this order (their next request is likely waiting).
        let asked: Vec<_> = states
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        server.clients.splice(0..0, asked);
    }
    phases.mark("quiesce_admin");
    if let Err(e) = within("releases of closed clients", shared.releases.settled()).await {
        return e;
    }
    phases.mark("releases");
    // Our own binary again: only our snapshot is written, and each
    // lockspace encodes its part of it where it lives.
    let execs_itself = plan.execs_itself();
    let freeze = join_all(shared.lockspaces.all().into_iter().map(|ls| {
        let (tx, rx) = oneshot::channel();
        resumes.push(tx);
        async move {
            ls.send(Freeze {
                resume: rx,
                encode: execs_itself,
            })
            .await
        }
    }));
    let mut lockspaces = Vec::new();
    let mut encoded = Vec::new();
    match within("freezing lockspaces", freeze).await {
        Ok(states) => {
            for st in states {
                match st {
                    Ok(Frozen::State(st)) => lockspaces.push(st),
                    Ok(Frozen::Encoded(Ok(e))) => encoded.push(e),
                    Ok(Frozen::Encoded(Err(e))) => {
                        return format!("a lockspace could not encode its state: {e}")
                    }
                    Err(e) => return format!("a lockspace did not answer: {e}"),
                }
            }
        }
        Err(e) => return e,
    }
    phases.mark("freeze");
    // The default lockspace first, as the restore expects.
    lockspaces.sort_by_key(|l| l.directory.is_some());
    encoded.sort_by_key(|l| l.directory.is_some());
    let snapshot = Snapshot {
        format: state::FORMAT.into(),
        version: state::VERSION,
        magic: std::process::id(),
        servers: paused.servers,
        lockspaces,
        upgrades: upgrades + 1,
        started_at,
        fencing: shared
            .fencing
            .now()
            .into_iter()
            .map(|(pid, label)| FenceState { pid, label })
            .collect(),
        // No libvirt twin when we exec our very own binary again (token 0):
        // libvirt's JSON is only for a hand-over to another binary.
        token: if execs_itself { 0 } else { token() },
        timeout: Some(paused.timeout),
        // Only a build of ours takes up the crash-safe store; libvirt's
        // daemon gets none (see `exec_with`).
        crash: if crate::crash::active() && plan.keeps_store() {
            crate::crash::upgrade_state()
        } else {
            None
        },
        // Only our very binary is known to close it.
        stale_fds: if execs_itself {
            let mut stale = take_stale();
            stale.extend(EVENT_LOOP_FD.get().copied());
            stale
        } else {
            // Another binary would keep them open for good.
            close_stale();
            Vec::new()
        },
    };
    phases.mark("snapshot");
    let clients: usize = snapshot.servers.iter().map(|s| s.clients.len()).sum();
    let leases: usize = snapshot
        .lockspaces
        .iter()
        .map(|l| l.resources.len())
        .chain(encoded.iter().map(|l| l.fds.len()))
        .sum();
    info!(
        clients,
        leases,
        quiesce_ms = t0.elapsed().as_secs_f64() * 1e3,
        exe = %plan.exe.display(),
        "live upgrade: executing"
    );
    exec_with(plan, &snapshot, &encoded, &shared.shutdown, t0, &mut phases).to_string()
}

/// The main event loop's epoll instance, if found (see `note_event_loop_fd`).
static EVENT_LOOP_FD: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// The lowest fd number not in use (what the next fd made will get).
pub fn lowest_free_fd() -> Option<i32> {
    // open() returns the lowest free number; it is closed again at once.
    let null = std::fs::File::open("/dev/null").ok()?;
    let lowest = std::os::fd::AsRawFd::as_raw_fd(&null);
    Some(lowest)
}

/// Remembers `fd` as the event loop's epoll instance if it is one. Closing
/// it costs ~0.75 us per socket registered in it (10,000 clients: ~7 ms);
/// the kernel would do it inside the upgrade's execve, while every client
/// waits, so the upgrade keeps it open across the exec instead and the new
/// image closes it once every client is back (`close_stale_later`).
pub fn note_event_loop_fd(fd: i32) {
    let is_epoll = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]");
    if is_epoll {
        let _ = EVENT_LOOP_FD.set(fd);
    }
}

/// Stale fds (see [`close_stale_later`]) not closed yet.
static STALE: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Closes fds a previous image left for us to close (its event loop's
/// epoll instance): on a thread when there are many clients, whose sockets
/// were registered in it; the event loop meanwhile serves them.
pub fn close_stale_later(fds: Vec<i32>, clients: usize) {
    STALE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(fds);
    if clients < 256 {
        close_stale();
    } else {
        std::thread::spawn(close_stale);
    }
}

fn close_stale() {
    loop {
        // Held while one is closed: an upgrade that starts meanwhile waits,
        // then passes on the rest (`take_stale`), so none leaks into its image.
        let mut stale = STALE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(fd) = stale.pop() else { return };
        // Only an epoll instance is ours to close: a number reused since
        // would be something else.
        let is_epoll = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]");
        if is_epoll {
            // SAFETY: an fd inherited from the previous image for this
            // only, which nothing in this image owns.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }
}

/// The stale fds not closed yet, for the next image to close.
fn take_stale() -> Vec<i32> {
    std::mem::take(
        &mut *STALE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Makes fds survive exec: every lease file and client socket gets this once,
/// when it is opened or accepted (or recovered after a crash), so that an
/// upgrade need not touch thousands of fds. The daemon starts no other
/// program, so close-on-exec protects nothing there.
pub fn keep_across_exec(fds: &[i32]) -> std::io::Result<()> {
    set_cloexec(fds, false)
}

/// The fds of a snapshot that may be close-on-exec: listeners (bound or
/// handed over by systemd) and the crash-safe store's; with the fds parked
/// beside a held lease. Leases and clients never are (`keep_across_exec`).
fn close_on_exec_fds(snapshot: &Snapshot) -> Vec<i32> {
    let mut fds: Vec<i32> = snapshot
        .servers
        .iter()
        .flat_map(|s| s.listeners.iter().map(|l| l.fd))
        .collect();
    if let Some(c) = &snapshot.crash {
        fds.extend([c.journal, c.park_tx, c.park_rx, c.busy]);
    }
    // fds parked beside a held lease must survive too: closing one would drop
    // the lease's lock. The new image leaves them open.
    fds.extend(crate::lockspace::lease::parked_fds());
    fds.extend(&snapshot.stale_fds);
    fds
}

/// Sets the guarded signals to SIG_IGN; returns the previous actions.
fn ignore_guarded() -> Vec<(nix::sys::signal::Signal, nix::sys::signal::SigAction)> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    crate::signals::GUARDED
        .iter()
        // SAFETY: installs SIG_IGN; no handler code is involved.
        .filter_map(|&sig| {
            unsafe { sigaction(sig, &ignore) }
                .ok()
                .map(|old| (sig, old))
        })
        .collect()
}

fn restore_actions(saved: &[(nix::sys::signal::Signal, nix::sys::signal::SigAction)]) {
    for (sig, action) in saved {
        // SAFETY: puts back exactly the action that was installed before.
        let _ = unsafe { nix::sys::signal::sigaction(*sig, action) };
    }
}

/// Distinguishes the snapshots of successive upgrades of one process.
fn token() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ ((std::process::id() as u64) << 32)
}

/// Writes both state files, lets the fds survive exec, and execs. Returns only on
/// failure, after undoing all of it.
fn exec_with(
    plan: &ExecPlan,
    snapshot: &Snapshot,
    encoded: &[EncodedLockspace],
    shutdown: &DeferredShutdown,
    t0: Instant,
    phases: &mut PhaseClock,
) -> std::io::Error {
    let fds = close_on_exec_fds(snapshot);
    let mut saved = Vec::new();
    let mut unblocked = false;
    let here = std::env::current_dir().ok();
    // Held until the exec: the signal thread takes no signal meanwhile, so every
    // one stays pending for the process and survives execve. Dropped (the thread
    // resumes and takes them) only if the exec fails.
    let mut quiet = None;
    // Every actor is frozen, so no fd closes or changes meanwhile.
    let written = write_state(plan, snapshot, encoded);
    phases.mark("write");
    let written = written.and_then(|()| set_cloexec(&fds, false));
    phases.mark("keep_fds");
    let result: std::io::Result<()> = written.and_then(|()| {
        let q = quiet.insert(crate::signals::quiesce()?);
        // Taken before the thread stopped, but not handled: the event loop is
        // this very thread, busy here.
        let queued = q.take_queued();
        // A shutdown asked for while we quiesced wins over the upgrade.
        if queued
            .iter()
            .any(|s| crate::signals::TERMINATING.contains(s))
        {
            q.requeue(&queued);
            return Err(std::io::Error::other("shutdown requested"));
        }
        for sig in queued {
            // Pending again (blocked in every thread): the next image takes it.
            nix::sys::signal::kill(nix::unistd::getpid(), sig)?;
        }
        if snapshot.token != 0 {
            // Hand-over to another binary (libvirt's daemon): it would never
            // unblock them, and its handlers do not exist yet. Ignored, they
            // cannot kill it meanwhile; the price is that one arriving from now
            // until its handlers exist is discarded (pending ones too).
            saved = ignore_guarded();
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
                Some(&crate::signals::guarded_set()),
                None,
            )?;
            unblocked = true;
        }
        // Execing ourselves, they stay blocked: the new image's signal thread
        // takes them once its event loop is ready.
        if let Some(cwd) = &plan.cwd {
            std::env::set_current_dir(cwd)?;
        }
        if shutdown.requested() {
            return Err(std::io::Error::other("shutdown requested"));
        }
        if snapshot.crash.is_none() && crate::crash::active() {
            // A program that does not keep the store (libvirt's daemon): the
            // store is emptied, else the parked references would keep every
            // lease it releases locked. From here a crash loses the leases,
            // as it always does under libvirt's daemon.
            if let Some(g) = crate::crash::release_store() {
                warn!(
                    generation = g,
                    "crash-safe store released for the hand-over to a daemon that does not keep it"
                );
            }
        }
        crate::failpoint::crash_point("upgrade:before-exec");
        phases.mark("signals");
        phases.report();
        info!(
            ms = t0.elapsed().as_secs_f64() * 1e3,
            exec_at_us = crate::clock::epoch_micros(),
            "live upgrade: state written, exec"
        );
        let err = nix::unistd::execv(&plan.exe_cstring()?, &plan.argv).unwrap_err();
        Err(std::io::Error::from(err))
    });
    let err = result
        .err()
        .unwrap_or_else(|| std::io::Error::other("exec returned"));
    if unblocked {
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&crate::signals::guarded_set()),
            None,
        );
    }
    restore_actions(&saved);
    drop(quiet);
    if let Some(here) = here {
        let _ = std::env::set_current_dir(here);
    }
    // Close-on-exec again where it was: the listeners, the store's fds and
    // the running event loop's epoll. Parked fds stay without it (as every
    // upgrade leaves them), and a previous image's stale epoll fds taken for
    // this snapshot are closed now, as they would have been.
    let own_loop = EVENT_LOOP_FD.get().copied();
    let stale: Vec<i32> = snapshot
        .stale_fds
        .iter()
        .copied()
        .filter(|&fd| Some(fd) != own_loop)
        .collect();
    let parked = crate::lockspace::lease::parked_fds();
    let rearm: Vec<i32> = fds
        .iter()
        .copied()
        .filter(|fd| !stale.contains(fd) && !parked.contains(fd))
        .collect();
    let _ = set_cloexec(&rearm, true);
    close_stale_later(stale, 0);
    let _ = std::fs::remove_file(&plan.snapshot_file);
    let _ = std::fs::remove_file(&plan.json_file);
    err
}

impl ExecPlan {
    /// Whether argv[0] is still the very file this process runs (a reload, not
    /// a package upgrade or a hand-over to libvirt's binary). A replaced file is
    /// a new inode: /proc/self/exe then names the old one.
    fn execs_itself(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let id = |m: std::fs::Metadata| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
        match (
            std::fs::metadata(&self.exe),
            std::fs::metadata("/proc/self/exe"),
        ) {
            (Ok(a), Ok(b)) => id(a) == id(b),
            _ => false,
        }
    }

    /// Whether the program to exec takes up the crash-safe store.
    fn keeps_store(&self) -> bool {
        self.execs_itself() || crate::crash::binary_keeps_store(&self.exe)
    }

    fn exe_cstring(&self) -> std::io::Result<CString> {
        CString::new(self.exe.as_os_str().as_bytes()).map_err(std::io::Error::other)
    }
}

fn write_state(
    plan: &ExecPlan,
    snapshot: &Snapshot,
    encoded: &[EncodedLockspace],
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let write = |path: &Path, bytes: &[u8]| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        std::io::Write::write_all(&mut f, bytes)
    };
    if snapshot.token == 0 {
        let packed = snapshot
            .to_msgpack_with(encoded)
            .map_err(std::io::Error::other)?;
        return write(&plan.snapshot_file, &packed);
    }
    // Both encodings at once: every millisecond here is a millisecond of pause.
    std::thread::scope(|scope| {
        let json = scope.spawn(|| {
            let json = state::libvirt::to_json(snapshot).map_err(std::io::Error::other)?;
            write(&plan.json_file, tag_json(&json, snapshot.token).as_bytes())
        });
        let packed = snapshot.to_msgpack().map_err(std::io::Error::other)?;
        write(&plan.snapshot_file, &packed)?;
        json.join()
            .unwrap_or_else(|_| Err(std::io::Error::other("JSON writer panicked")))
    })
}

/// Adds our token to libvirt's JSON (its reader ignores unknown keys).
pub fn tag_json(json: &str, token: u64) -> String {
    match json.find('{') {
        Some(i) => format!(
            "{}{{\n  \"virtlockdRsToken\": \"{token}\",{}",
            &json[..i],
            &json[i + 1..]
        ),
        None => json.to_owned(),
    }
}

fn set_cloexec(fds: &[i32], on: bool) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: listeners, the crash-safe store's fds, fds parked beside a
        // lease and stale epoll fds: none is closed while every actor is
        // frozen (or, at accept and recovery, before anything else has it).
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let flags = if on {
            FdFlag::FD_CLOEXEC
        } else {
            FdFlag::empty()
        };
        fcntl(borrowed, FcntlArg::F_SETFD(flags))?;
    }
    Ok(())
}

/// Elapsed time of each phase of an upgrade, logged at debug level: the pause
/// a client sees is their sum, and each has its own cost driver.
struct PhaseClock {
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

impl PhaseClock {
    fn new(t0: Instant) -> Self {
        Self {
            last: t0,
            phases: Vec::with_capacity(12),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.phases.push((phase, now - self.last));
        self.last = now;
    }

    fn report(&mut self) {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(name, d)| format!("{name}={:.3}ms", d.as_secs_f64() * 1e3))
            .collect();
        tracing::debug!(phases = %phases.join(" "), "live upgrade timing");
        self.phases.clear();
    }
}
