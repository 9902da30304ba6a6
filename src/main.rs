//! virtlockd: parse the command line and hand over to [`virtlockd::daemon::run`].

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use virtlockd::cli::{after_help, Cli};

fn main() -> ExitCode {
    virtlockd::clock::note_main();
    virtlockd::heap::tune();
    // Before any thread exists, so that every thread inherits it: the daemon's
    // signals are only ever taken by its signal thread (see `signals`), never
    // by a default action or a handler on a thread an exec would discard.
    if let Err(e) = virtlockd::signals::block() {
        eprintln!("virtlockd: error: Unable to setup signal handlers: {e}");
        return ExitCode::from(virtlockd::daemon::exit::SIGNALS);
    }
    let argv0 = std::env::args()
        .next()
        .unwrap_or_else(|| "virtlockd".into());
    let privileged = nix::unistd::geteuid().is_root();
    let cmd = Cli::command().after_help(after_help(privileged));
    match cmd
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => virtlockd::daemon::run(cli, &argv0),
        Err(e) => {
            // --help and --version go to stdout with exit 0; usage errors exit 1
            // (libvirt's code), not clap's 2.
            // Like libvirt: usage (asked for or not) goes to stderr, the version to
            // stdout; usage errors exit 1, not clap's 2.
            match e.kind() {
                clap::error::ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                clap::error::ErrorKind::DisplayHelp => {
                    eprint!("{}", e.render());
                    ExitCode::SUCCESS
                }
                _ => {
                    let _ = e.print();
                    ExitCode::from(1)
                }
            }
        }
    }
}
