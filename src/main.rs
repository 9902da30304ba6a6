//! virtlockd: parse the command line, take the pid file, bind the sockets, and
//! run the actor system until a shutdown signal.

use std::process::ExitCode;

use actix::prelude::*;
use clap::{CommandFactory, FromArgMatches};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use virtlockd::actors::supervisor::{Shutdown, Supervisor, SupervisorConfig};
use virtlockd::cli::{files_help, Cli};
use virtlockd::listener::bind_unix;
use virtlockd::pidfile::PidFile;

/// libvirt's exit codes (spec §9.1).
const EXIT_PIDFILE: u8 = 1;
const EXIT_RUNDIR: u8 = 2;
const EXIT_SOCKETS: u8 = 6;

fn main() -> ExitCode {
    let privileged = nix::unistd::geteuid().is_root();
    let cmd = Cli::command().after_help(files_help(privileged));
    let cli = match cmd
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(1),
            };
        }
    };
    init_logging(cli.verbose);
    let paths = cli.paths(privileged);

    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        paths.run_dir_umask,
    ));
    let made = std::fs::create_dir_all(&paths.run_dir);
    nix::sys::stat::umask(old);
    if let Err(e) = made {
        error!(dir = %paths.run_dir.display(), error = %e, "Unable to create rundir");
        return ExitCode::from(EXIT_RUNDIR);
    }
    let pidfile = match PidFile::acquire(&paths.pid_file) {
        Ok(p) => p,
        Err(e) => {
            error!("Unable to obtain pidfile: {e}");
            return ExitCode::from(EXIT_PIDFILE);
        }
    };
    let bound =
        bind_unix(&paths.lock_socket).and_then(|l| Ok((l, bind_unix(&paths.admin_socket)?)));
    let (lock_listener, admin_listener) = match bound {
        Ok(b) => b,
        Err(e) => {
            error!(error = %e, "Unable to initialize network sockets");
            return ExitCode::from(EXIT_SOCKETS);
        }
    };
    info!(socket = %paths.lock_socket.display(), pid = std::process::id(), "starting");

    let system = System::new();
    system.block_on(async move {
        let supervisor = Supervisor::new(SupervisorConfig {
            lock_listener,
            admin_listener: Some(admin_listener),
            max_clients: 1024,
            admin_max_clients: 5000,
            unlink_on_exit: vec![paths.lock_socket.clone(), paths.admin_socket.clone()],
        })
        .start();
        actix::spawn(handle_signals(supervisor));
    });
    let code = system.run_with_code().unwrap_or_else(|e| {
        error!(error = %e, "event loop failed");
        1
    });
    drop(pidfile);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// SIGTERM/SIGINT/SIGQUIT shut down cleanly. Signals that kill libvirt's daemon
/// outright (SIGHUP, SIGUSR2) and the live-upgrade signal SIGUSR1 never drop our
/// locks: until they mean something they are logged and ignored.
async fn handle_signals(supervisor: Addr<Supervisor>) {
    let kinds = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::quit(),
        SignalKind::hangup(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ];
    let mut streams = Vec::new();
    for kind in kinds {
        match signal(kind) {
            Ok(s) => streams.push((kind, s)),
            Err(e) => warn!(error = %e, "cannot install a signal handler"),
        }
    }
    loop {
        let waits = streams.iter_mut().map(|(kind, s)| {
            let kind = *kind;
            Box::pin(async move {
                s.recv().await;
                kind
            })
        });
        let (kind, _, _) = futures_util::future::select_all(waits).await;
        if [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::quit(),
        ]
        .contains(&kind)
        {
            info!(signal = kind.as_raw_value(), "shutdown requested");
            supervisor.do_send(Shutdown);
            return;
        }
        warn!(
            signal = kind.as_raw_value(),
            "signal ignored: locks are kept (live upgrade and reload are not available yet)"
        );
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIRTLOCKD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
