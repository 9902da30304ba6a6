//! `virtlockctl`: who holds which lease, which clients are connected, how the
//! daemon is doing, and whether a lockspace's filesystem shares locks between
//! hosts. Talks to the daemon's admin socket (same peer-uid rule as virt-admin).

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use virtlockd::ctl::cli::{Cli, Command};
use virtlockd::ctl::fscheck::{self, Reach};
use virtlockd::ctl::query::{Inspector, QueryError};
use virtlockd::ctl::{render, who};

fn print_json(v: &serde_json::Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("virtlockctl: {e}"),
    }
}

async fn run(cli: &Cli) -> Result<ExitCode, QueryError> {
    let socket = cli.socket();
    let connect = || Inspector::connect(&socket);
    match &cli.command {
        Command::Locks { lockspace, owner } => {
            let mut leases = connect().await?.leases().await?;
            if let Some(ls) = lockspace {
                let direct = ls.is_empty() || ls == "direct";
                leases.retain(|l| match &l.lockspace {
                    None => direct,
                    Some(d) => !direct && Path::new(ls) == Path::new(&*String::from_utf8_lossy(d)),
                });
            }
            if let Some(pid) = owner {
                leases.retain(|l| l.owners.iter().any(|o| o.pid == *pid));
            }
            if cli.json {
                print_json(&render::leases_json(&leases));
            } else {
                print!("{}", render::leases_table(&leases));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Who { path } => {
            let leases = connect().await?.leases().await?;
            let mine = who::leases_of(path, &leases);
            let shown = path.display().to_string();
            if cli.json {
                print_json(&render::who_json(&shown, &mine));
            } else {
                print!("{}", render::who_text(&shown, &mine));
            }
            Ok(if mine.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Clients => {
            let clients = connect().await?.clients().await?;
            if cli.json {
                print_json(&render::clients_json(&clients));
            } else {
                print!("{}", render::clients_table(&clients));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let status = connect().await?.status().await?;
            if cli.json {
                print_json(&render::status_json(&status));
            } else {
                print!("{}", render::status_text(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ReleaseUnknown { path } => {
            use std::os::unix::ffi::OsStrExt;
            // The daemon names such a lease by the absolute path it read back
            // from the file descriptor.
            let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            connect()
                .await?
                .release_unknown(path.as_os_str().as_bytes())
                .await?;
            if cli.json {
                print_json(&serde_json::json!({ "released": path.display().to_string() }));
            } else {
                println!(
                    "released the lease of an unknown owner on {}",
                    path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        // Needs no daemon.
        Command::Check { dir } => Ok(check(cli, dir)),
    }
}

fn check(cli: &Cli, dir: &Path) -> ExitCode {
    match fscheck::check(dir) {
        Ok(report) => {
            if cli.json {
                print_json(&render::check_json(&report));
            } else {
                print!("{}", render::check_text(&report));
            }
            match report.assessment.reach {
                Reach::OtherHosts => ExitCode::SUCCESS,
                Reach::ThisHostOnly => ExitCode::from(2),
            }
        }
        Err(e) => {
            eprintln!("virtlockctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("virtlockctl: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("virtlockctl: {e}");
            ExitCode::from(1)
        }
    }
}
