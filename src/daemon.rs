//! Start-up and the life of the daemon process, in libvirt's order (spec §9.2):
//! options, config, logging, paths, run directory, `-d`, pid file, sockets
//! (bound or from systemd), then the actor system until shutdown.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use nix::sys::signal::Signal;

use tracing::{debug, error, info, warn};

use crate::actors::handoff::{ExecPlan, Handoff, Upgrade};
use crate::actors::supervisor::{
    ListenerSpec, Restored, Server, SetLeaseCheck, SetLimits, Shutdown, Supervisor,
    SupervisorConfig,
};
use crate::cli::Cli;
use crate::config::Config;
use crate::daemonize::{daemonize, ReadyPipe};
use crate::listener::bind_unix;
use crate::logging::{self, EnvInputs, LogHandle};
use crate::paths::Paths;
use crate::pidfile::PidFile;
use crate::restore;
use crate::state::Snapshot;
use crate::systemd::{Activation, ActivationEnv, ADMIN_SOCKET_NAME, LOCK_SOCKET_NAME};

/// libvirt's exit codes (spec §9.1).
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const PIDFILE: u8 = 1;
    pub const RUNDIR: u8 = 2;
    pub const INIT: u8 = 3;
    pub const SIGNALS: u8 = 4;
    pub const SOCKETS: u8 = 6;
}

/// Everything the signal handler needs to reload settings on SIGHUP.
struct Reload {
    config_file: PathBuf,
    explicit_config: bool,
    verbose: bool,
    daemon: bool,
    privileged: bool,
    log: LogHandle,
}

impl Reload {
    fn apply(&self, supervisor: &Addr<Supervisor>) {
        let (cfg, warnings) = match Config::load(&self.config_file, self.explicit_config) {
            Ok(c) => c,
            Err(e) => {
                error!("reload failed, settings unchanged: {e}");
                return;
            }
        };
        for w in warnings {
            warn!("{w}");
        }
        match logging::resolve(
            cfg.log_level,
            cfg.log_filters.as_deref(),
            cfg.log_outputs.as_deref(),
            &EnvInputs::from_process(),
            self.verbose,
            self.daemon,
            self.privileged,
        )
        .and_then(|s| self.log.set(s))
        {
            Ok(()) => {}
            Err(e) => error!("reload: logging settings unchanged: {e}"),
        }
        supervisor.do_send(SetLimits {
            max_clients: cfg.max_clients,
            admin_max_clients: cfg.admin_max_clients,
        });
        supervisor.do_send(SetLeaseCheck {
            interval_secs: cfg.lease_check_interval,
            action: cfg.lease_loss_action,
        });
        info!(config = %self.config_file.display(), "configuration reloaded");
    }
}

/// Runs the daemon; returns the process exit code.
pub fn run(cli: Cli, argv0: &str) -> ExitCode {
    let run_at_us = crate::clock::epoch_micros();
    let t_run = std::time::Instant::now();
    let privileged = nix::unistd::geteuid().is_root();
    let mut paths = cli.paths(privileged);
    absolutize(&mut paths);
    // Resolved now: `-d` changes the working directory, and a package upgrade may
    // replace the file; the live upgrade must exec whatever is there then.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let plan = ExecPlan::from_args(&args, paths.restart_snapshot(), paths.restart_state.clone());

    let (cfg, warnings) = match Config::load(&paths.config_file, cli.config.is_some()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{argv0}: error: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let settings = logging::resolve(
        cfg.log_level,
        cfg.log_filters.as_deref(),
        cfg.log_outputs.as_deref(),
        &EnvInputs::from_process(),
        cli.verbose,
        cli.daemon,
        privileged,
    );
    let log = match settings.and_then(logging::install) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{argv0}: error: cannot set up logging: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    for w in warnings {
        warn!("{w}");
    }

    let t_logging = t_run.elapsed();
    raise_fd_limit();
    if let Err(e) = make_run_dir(&paths) {
        error!(dir = %paths.run_dir.display(), error = %e, "Unable to create rundir");
        return ExitCode::from(exit::RUNDIR);
    }

    let t_restore = std::time::Instant::now();
    let restored = restore::after_exec(&paths);
    let t_state = t_restore.elapsed();
    if cli.daemon && restored.is_some() {
        // The exec ran in the start-up directory so that the command line meant
        // the same; a daemon lives in `/` (paths are absolute by now).
        let _ = std::env::set_current_dir("/");
    }
    let ready = if cli.daemon && restored.is_none() {
        match daemonize(argv0) {
            Ok(pipe) => Some(pipe),
            Err(e) => {
                error!(error = %e, "cannot daemonize");
                return ExitCode::from(exit::INIT);
            }
        }
    } else {
        None
    };
    let fail = |code: u8, ready: Option<ReadyPipe>| {
        if let Some(r) = ready {
            r.report(code);
        }
        ExitCode::from(code)
    };

    let pidfile = match PidFile::acquire(&paths.pid_file) {
        Ok(p) => p,
        Err(e) => {
            error!("Unable to obtain pidfile: {e}");
            // After an exec the pid file was ours a moment ago: libvirt exits 3.
            let code = if restored.is_some() {
                exit::INIT
            } else {
                exit::PIDFILE
            };
            return fail(code, ready);
        }
    };
    let crash_safe = crash_safe_mode(&cfg);
    let (listeners, restored) = match restored {
        Some(mut snapshot) => {
            // The sockets come from the snapshot; activation variables are stale.
            let _ = ActivationEnv::take_from_process();
            if crash_safe && !restore::carry_on(&snapshot) {
                arm(&mut snapshot, 1, &[], &[], 0);
            }
            let storage = restore::classify(&snapshot);
            (Vec::new(), Some(Restored::start(snapshot, storage)))
        }
        None => match listeners(&paths) {
            Ok((l, stored)) => {
                let defaults = restore::crash::Defaults {
                    max_clients: cfg.max_clients,
                    admin_max_clients: cfg.admin_max_clients,
                };
                let stored = restore::crash::Stored::sort(stored);
                if stored.is_empty() {
                    if crash_safe {
                        let mut fresh = restore::crash::empty_snapshot(&defaults);
                        fresh.started_at = crate::clock::now_epoch_seconds();
                        arm(&mut fresh, 1, &[], &[], 0);
                    }
                    (l, None)
                } else {
                    info!("restarting after a crash: restoring from the crash-safe store");
                    let rec = restore::crash::recover(stored, &defaults);
                    let mut snapshot = rec.snapshot;
                    // The store hands its fds back close-on-exec; leases and
                    // clients must not be (see `handoff::keep_across_exec`).
                    // One that fails is not open: the restore reports it.
                    for fd in snapshot.fds() {
                        let _ = crate::actors::handoff::keep_across_exec(&[fd]);
                    }
                    if crash_safe {
                        arm(
                            &mut snapshot,
                            rec.next_generation,
                            &rec.retire,
                            &rec.retire_busy,
                            rec.recoveries,
                        );
                    } else {
                        restore::crash::retire(&rec.retire, &rec.retire_busy);
                    }
                    let storage = restore::classify(&snapshot);
                    (l, Some(Restored::start(snapshot, storage)))
                }
            }
            Err(e) => {
                error!("Unable to initialize network sockets: {e}");
                return fail(exit::SOCKETS, ready);
            }
        },
    };
    let (upgrades, started_at) = restored
        .as_ref()
        .map_or((0, crate::clock::now_epoch_seconds()), |r| {
            (r.snapshot().upgrades, r.snapshot().started_at)
        });
    // libvirt's restart state has no start time (0): the process's own is it.
    let started_at = match started_at {
        0 => crate::clock::process_start_epoch_seconds()
            .unwrap_or_else(crate::clock::now_epoch_seconds),
        t => t,
    };

    let admin_log = log.clone();
    let reload = Reload {
        config_file: paths.config_file.clone(),
        explicit_config: cli.config.is_some(),
        verbose: cli.verbose,
        daemon: cli.daemon,
        privileged,
        log,
    };
    let timeout = cli
        .timeout
        .filter(|&t| t > 0)
        .map(|t| Duration::from_secs(t.into()));
    info!(pid = std::process::id(), socket = %paths.lock_socket.display(), "starting");

    // Blocked since the first line of main: one that arrived meanwhile is
    // pending, and is handled once the actors below exist.
    let signals = match crate::signals::start() {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "Unable to setup signal handlers");
            return fail(exit::SIGNALS, ready);
        }
    };

    // The event loop's epoll instance takes the lowest free fd as it is
    // made: noted, so that a live upgrade leaves its closing to the new image.
    let free = crate::actors::handoff::lowest_free_fd();
    let system = System::new();
    if let Some(fd) = free {
        crate::actors::handoff::note_event_loop_fd(fd);
    }
    system.block_on(async move {
        let supervisor = Supervisor::new(SupervisorConfig {
            listeners,
            max_clients: cfg.max_clients,
            admin_max_clients: cfg.admin_max_clients,
            timeout,
            restored,
            lease_check: (cfg.lease_check_interval, cfg.lease_loss_action),
            info: crate::actors::admin_state::DaemonInfo {
                log: Some(admin_log),
                upgrades,
                started_at,
            },
        });
        let upgrade_shared = supervisor.upgrade_shared();
        let supervisor = supervisor.start();
        let handoff = Handoff::new(
            supervisor.clone(),
            upgrade_shared,
            plan,
            upgrades,
            started_at,
        )
        .start();
        actix::spawn(handle_signals(signals, supervisor, handoff, reload));
    });
    if let Some(r) = ready {
        r.report(0);
    }
    info!(
        ms = t_restore.elapsed().as_secs_f64() * 1e3,
        "state read and actors started"
    );
    debug!(
        main_at_us = crate::clock::MAIN_AT_US.load(std::sync::atomic::Ordering::Relaxed),
        run_at_us,
        config_and_logging_ms = t_logging.as_secs_f64() * 1e3,
        state_read_ms = t_state.as_secs_f64() * 1e3,
        to_event_loop_ms = t_run.elapsed().as_secs_f64() * 1e3,
        "start-up timing"
    );
    let code = system.run_with_code().unwrap_or_else(|e| {
        error!(error = %e, "event loop failed");
        exit::INIT.into()
    });
    drop(pidfile);
    info!(code, "exiting");
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Whether crash-safe mode runs: asked for (`crash_safe` in the config, else
/// `VIRTLOCKD_CRASH_SAFE`, which the shipped unit sets) and a service manager
/// to keep the store (`$NOTIFY_SOCKET`).
fn crash_safe_mode(cfg: &Config) -> bool {
    let env = std::env::var(crate::config::CRASH_SAFE_ENV).ok();
    let choice = crate::config::crash_safe_wanted(cfg, env.as_deref());
    if let Some(w) = choice.warning {
        warn!("{w}");
    }
    if !choice.wanted {
        return false;
    }
    if crate::crash::fdstore::socket_path().is_none() {
        warn!("crash_safe is set but no service manager keeps a file-descriptor store ($NOTIFY_SOCKET unset); leases will not survive a crash");
        crate::crash::set_inactive();
        return false;
    }
    true
}

/// Starts the crash-safe store for `snapshot`; on failure the daemon runs
/// without (logged), as it would without a store.
fn arm(
    snapshot: &mut Snapshot,
    generation: u64,
    retire: &[u64],
    retire_busy: &[u64],
    recoveries: u64,
) {
    match restore::crash::arm(snapshot, generation, retire, retire_busy, recoveries) {
        Ok(()) => info!(
            generation,
            "crash-safe mode active: leases are OFD locks kept in the service manager's fd store"
        ),
        Err(e) => {
            error!(error = %e, "cannot start the crash-safe store; leases will not survive a crash");
            crate::crash::set_inactive();
        }
    }
}

/// `-d` changes the working directory to `/`: relative paths given on the
/// command line must keep meaning what they meant.
fn absolutize(paths: &mut Paths) {
    for p in [
        &mut paths.lock_socket,
        &mut paths.admin_socket,
        &mut paths.pid_file,
        &mut paths.restart_state,
        &mut paths.config_file,
        &mut paths.run_dir,
    ] {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
}

/// Every client and every held lease costs an fd: use all the hard limit allows
/// (systemd's unit gives 1024:524288, as libvirt 11 expects).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(error = %e, soft, hard, "cannot raise the open-files limit");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the open-files limit"),
    }
}

fn make_run_dir(paths: &Paths) -> std::io::Result<()> {
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::from_bits_truncate(paths.run_dir_umask));
    let made = std::fs::create_dir_all(&paths.run_dir);
    umask(old);
    made
}

/// Sockets handed over by systemd, else bound at our paths (self-bound ones are
/// removed at shutdown; activated ones are not); and what systemd handed back
/// from its file-descriptor store (after a crash).
type Stored = Vec<(String, std::os::fd::OwnedFd)>;

fn listeners(paths: &Paths) -> Result<(Vec<ListenerSpec>, Stored), String> {
    let env = ActivationEnv::take_from_process();
    let spec = |server, unlink| {
        move |listener| ListenerSpec {
            server,
            listener,
            unlink,
        }
    };
    let bind = |p: &PathBuf| bind_unix(p).map_err(|e| format!("{}: {e}", p.display()));
    let bound = || -> Result<Vec<ListenerSpec>, String> {
        Ok(vec![
            spec(Server::Lock, true)(bind(&paths.lock_socket)?),
            spec(Server::Admin, true)(bind(&paths.admin_socket)?),
        ])
    };
    match Activation::from_env(&env, std::process::id()).map_err(|e| e.to_string())? {
        Some(mut act) => {
            let stored = act.take_stored(crate::crash::fdstore::PREFIX);
            let lock = act.claim(LOCK_SOCKET_NAME).map_err(|e| e.to_string())?;
            let admin = act.claim(ADMIN_SOCKET_NAME).map_err(|e| e.to_string())?;
            act.finish().map_err(|e| e.to_string())?;
            if lock.is_empty() && admin.is_empty() {
                // Only the store came back (a unit without socket units).
                return Ok((bound()?, stored));
            }
            info!(
                lock = lock.len(),
                admin = admin.len(),
                "using sockets from systemd"
            );
            let specs = lock
                .into_iter()
                .map(spec(Server::Lock, false))
                .chain(admin.into_iter().map(spec(Server::Admin, false)))
                .collect();
            Ok((specs, stored))
        }
        None => Ok((bound()?, Vec::new())),
    }
}

/// SIGTERM/SIGINT/SIGQUIT shut down; SIGHUP reloads; SIGUSR1 starts a live
/// upgrade; SIGUSR2 is ignored. None of them ever drops a lock without the
/// shutdown's release and fencing.
async fn handle_signals(
    signals: crate::signals::Receiver,
    supervisor: Addr<Supervisor>,
    handoff: Addr<Handoff>,
    reload: Reload,
) {
    let reload = Arc::new(reload);
    loop {
        let sig = signals.recv().await;
        if crate::signals::TERMINATING.contains(&sig) {
            info!(signal = sig as i32, "shutdown requested");
            supervisor.do_send(Shutdown);
        } else if sig == Signal::SIGHUP {
            // Reading the config and opening log files (maybe on NFS) may block:
            // not on the event thread that serves every client.
            let (reload, supervisor) = (Arc::clone(&reload), supervisor.clone());
            if let Err(e) = actix_rt::task::spawn_blocking(move || reload.apply(&supervisor)).await
            {
                error!("reload failed: {e}");
            }
        } else if sig == Signal::SIGUSR1 {
            info!("live upgrade requested");
            handoff.do_send(Upgrade);
        } else {
            info!(signal = sig as i32, "signal ignored");
        }
    }
}
