//! The daemon's signals (SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2),
//! blocked in every thread from the first line of `main` and taken with
//! `sigwaitinfo` by one thread of ours, which queues them for the event loop.
//!
//! No handler is ever installed for them, so none can run on a thread that is
//! about to vanish in the live upgrade's `execve`, and none can kill the daemon
//! with its default action before the actors exist: one arriving early stays
//! pending until the event loop is ready for it.
//!
//! Around the exec the thread is parked ([`quiesce`]): a signal it takes then is
//! raised again for the process, where it stays pending (every thread blocks it)
//! and survives `execve`; the new image takes it after its start-up, or this one
//! after a failed exec.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

/// The signals taken by our thread. Their default action would kill the daemon
/// (dropping every lock) if one were ever unblocked without a handler.
pub const GUARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Shutdown signals.
pub const TERMINATING: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT];

/// How long [`quiesce`] waits for the thread to park; it only ever runs a few
/// instructions between two waits, so this is generous.
const PARK_LIMIT: Duration = Duration::from_secs(2);

/// The guarded signals as a set.
pub fn guarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for sig in GUARDED {
        set.add(sig);
    }
    set
}

/// A real-time signal sent to our thread alone to make it look at the state
/// (a thread in `sigwaitinfo` sees nothing else). Blocked everywhere too: one
/// sent from outside is only a spurious wake-up.
fn wake_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// Blocks the guarded signals and the wake-up signal in the calling thread.
/// Called by `main` before any thread exists, so that every thread inherits it.
pub fn block() -> std::io::Result<()> {
    let set = taken_set();
    // SAFETY: `set` is a valid sigset_t; the old mask is not wanted.
    match unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// The guarded signals and the wake-up signal (not a `SigSet`: nix has no
/// real-time signals).
fn taken_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before any other use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in GUARDED {
            libc::sigaddset(&mut set, sig as libc::c_int);
        }
        libc::sigaddset(&mut set, wake_signal());
        set
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Signals taken are queued for the event loop.
    Normal,
    /// An exec is about to happen: signals stay pending for the process.
    Upgrading,
}

struct State {
    mode: Mode,
    /// Whether the thread is waiting for the end of the upgrade (not in
    /// `sigwaitinfo`, holding no signal).
    parked: bool,
    /// Taken, not yet handled by the event loop.
    queue: VecDeque<Signal>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the parked thread, and the exec waiting for it to park.
    changed: Condvar,
    /// Wakes the event loop when the queue grows.
    queued: tokio::sync::Notify,
    /// Our thread, for the wake-up signal.
    thread: OnceLock<libc::pthread_t>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

fn shared() -> &'static Arc<Shared> {
    SHARED.get_or_init(|| {
        Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Normal,
                parked: false,
                queue: VecDeque::new(),
            }),
            changed: Condvar::new(),
            queued: tokio::sync::Notify::new(),
            thread: OnceLock::new(),
        })
    })
}

/// The event loop's end: the signals in the order they were taken.
pub struct Receiver(Arc<Shared>);

impl Receiver {
    pub async fn recv(&self) -> Signal {
        loop {
            if let Some(sig) = self.0.lock().queue.pop_front() {
                return sig;
            }
            // A notification sent between the check and here is kept as a
            // permit by `Notify`: nothing is missed.
            self.0.queued.notified().await;
        }
    }
}

/// Starts the thread that takes the signals (once per process).
pub fn start() -> std::io::Result<Receiver> {
    let shared = shared().clone();
    if shared.thread.get().is_some() {
        return Err(std::io::Error::other("signal thread already started"));
    }
    let for_thread = shared.clone();
    let handle = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || take_signals(&for_thread))?;
    use std::os::unix::thread::JoinHandleExt;
    let _ = shared.thread.set(handle.as_pthread_t());
    Ok(Receiver(shared))
}

fn take_signals(shared: &Shared) {
    let set = taken_set();
    loop {
        // SAFETY: `set` is valid; no siginfo wanted.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig < 0 {
            continue; // EINTR (a stop and continue)
        }
        let mut st = shared.lock();
        let guarded = Signal::try_from(sig).ok().filter(|s| GUARDED.contains(s));
        if st.mode == Mode::Upgrading {
            if let Some(s) = guarded {
                // Pending for the process again: the next image takes it.
                let _ = nix::sys::signal::kill(nix::unistd::getpid(), s);
            }
            // The wake-up was sent before the mode changed was visible to us;
            // take it now so that it is not left pending across the exec.
            drain_wake();
            st.parked = true;
            shared.changed.notify_all();
            // Not in sigwaitinfo while upgrading: a re-raised signal cannot spin us.
            while st.mode == Mode::Upgrading {
                st = shared
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            st.parked = false;
            continue;
        }
        if let Some(s) = guarded {
            st.queue.push_back(s);
            drop(st);
            shared.queued.notify_one();
        }
    }
}

fn drain_wake() {
    // SAFETY: plain sigset manipulation and a zero-timeout sigtimedwait.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, wake_signal());
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) > 0 {}
    }
}

/// Our thread is parked for the duration of an exec: no signal is taken until
/// this is dropped (the exec failed). Signals queued but not yet handled are
/// handed out by [`Quiet::take_queued`].
pub struct Quiet {
    shared: Arc<Shared>,
}

/// Parks the signal thread before an exec; fails if it does not park in time.
pub fn quiesce() -> std::io::Result<Quiet> {
    let shared = shared().clone();
    let mut st = shared.lock();
    st.mode = Mode::Upgrading;
    if let Some(&thread) = shared.thread.get() {
        // Sent while holding the lock: when the thread sees the new mode, the
        // wake-up is already pending for it (and drained there).
        // SAFETY: the thread never exits, so its pthread_t stays valid.
        unsafe { libc::pthread_kill(thread, wake_signal()) };
        let (guard, timeout) = shared
            .changed
            .wait_timeout_while(st, PARK_LIMIT, |s| !s.parked)
            .unwrap_or_else(PoisonError::into_inner);
        st = guard;
        if timeout.timed_out() {
            st.mode = Mode::Normal;
            drop(st);
            shared.changed.notify_all();
            return Err(std::io::Error::other("the signal thread did not stop"));
        }
    }
    drop(st);
    Ok(Quiet { shared })
}

impl Quiet {
    /// Signals taken before the thread parked but not handled by the event
    /// loop yet (it is busy with the exec): the caller raises them again, or
    /// gives them back with [`Quiet::requeue`].
    pub fn take_queued(&self) -> Vec<Signal> {
        self.shared.lock().queue.drain(..).collect()
    }

    /// Puts signals back at the head of the queue, for the event loop.
    pub fn requeue(&self, signals: &[Signal]) {
        let mut st = self.shared.lock();
        for &s in signals.iter().rev() {
            st.queue.push_front(s);
        }
        drop(st);
        self.shared.queued.notify_one();
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        self.shared.lock().mode = Mode::Normal;
        self.shared.changed.notify_all();
    }
}
