//! Plays QEMU's part: connects to the lock daemon, registers its *own* pid as the
//! lock owner, takes one lease, and then closes the connection on request while it
//! keeps running. The daemon must then release the lease and fence this process.
//!
//! Usage: lease_holder SOCKET LOCKSPACE NAME [--no-lease] [--restrict] [--ignore-term]
//!        [--linger MS] [--report-after MS]
//!
//! Prints "held" once the lease is taken (or registration done with --no-lease),
//! waits for a line on stdin, prints "closing", closes the connection, prints
//! "closed" and sleeps MS milliseconds (default 30000) before exiting 0.
//!
//! The daemon may fence this process as soon as the connection is closed, before
//! "closed" is written: "closing" is what tells the test that the close was asked
//! for and taken up. `--report-after MS` waits that long between the close and
//! "closed", so that a test can make the fence win that race every time.

use std::io::{BufRead, Write};

use virtlockd::client::{owner, Client};
use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: lease_holder SOCKET LOCKSPACE NAME [--no-lease] [--restrict] [--ignore-term] \
             [--linger MS] [--report-after MS]"
        );
        std::process::exit(2);
    }
    let flag = |f: &str| args.iter().any(|a| a == f);
    let linger_ms: u64 = args
        .iter()
        .position(|a| a == "--linger")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(30_000);
    let report_after_ms: u64 = args
        .iter()
        .position(|a| a == "--report-after")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(0);
    if flag("--ignore-term") {
        // SAFETY: installs SIG_IGN, no handler code runs.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGTERM,
                nix::sys::signal::SigHandler::SigIgn,
            )?;
        }
    }
    let (socket, lockspace, name) = (&args[1], args[2].as_bytes(), args[3].as_bytes());
    let mut client = Client::connect(socket).await?;
    client.create_lockspace(lockspace).await?;
    client
        .register(&owner("lease-holder", 1, std::process::id()))
        .await?;
    if !flag("--no-lease") {
        client.acquire(lockspace, name, ACQUIRE_AUTOCREATE).await?;
    }
    if flag("--restrict") {
        // As QEMU's connection does after libvirt's hook registered it.
        client.restrict().await?;
    }
    println!("held");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    println!("closing");
    std::io::stdout().flush()?;
    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(report_after_ms));
    println!("closed");
    std::io::stdout().flush()?;
    std::thread::sleep(std::time::Duration::from_millis(linger_ms));
    Ok(())
}
