//! `examples/lease_holder` playing QEMU, and the examples it is built from.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::daemon::Daemon;

/// Path of an example binary built next to the test binary. `cargo test` builds
/// examples before it runs tests; a filtered run (`--test it`) does not, and would
/// run a missing or stale one (tests and examples agree on a line protocol), so
/// each example is brought up to date once per test run.
pub fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("examples").join(name);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let release = dir.file_name().is_some_and(|d| d == "release");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--example", name])
            .args(release.then_some("--release"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example");
        assert!(status.success(), "cannot build example {name}");
        built.push(name.to_owned());
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// `examples/lease_holder` playing QEMU: its own connection, registered with its
/// own pid, holding one lease (or none, with `--no-lease`).
pub struct Holder {
    pub child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Holder {
    /// Starts it and waits until it holds the lease `name` in lockspace `ls`.
    pub async fn start(d: &Daemon, ls: &Path, name: &str, extra: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(example("lease_holder"))
            .arg(d.socket())
            .arg(ls)
            .arg(name)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn lease_holder");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("lease_holder timed out")
            .expect("read");
        assert_eq!(first.as_deref(), Some("held"));
        Self { child, lines }
    }

    /// Asks the holder to close its connection; returns once it did.
    ///
    /// The daemon may fence the holder the moment the connection is closed, and
    /// on a loaded machine SIGTERM can land before the holder has written
    /// "closed". So the holder says "closing" first, and after that either
    /// "closed" or the end of its output (it was killed while reporting) means
    /// the connection is closed. How the holder ended is for the caller to check
    /// with [`Holder::wait`].
    pub async fn close_connection(&mut self) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").await.expect("write");
        stdin.flush().await.expect("flush");
        let first = self.next_line().await;
        assert_eq!(
            first.as_deref(),
            Some("closing"),
            "holder did not start closing"
        );
        let second = self.next_line().await;
        assert!(
            matches!(second.as_deref(), Some("closed") | None),
            "unexpected line from the holder: {second:?}"
        );
    }

    async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .expect("timeout")
            .expect("read")
    }

    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("holder still running")
            .expect("wait")
    }

    /// Closes the holder's connection and asserts what that must bring: the
    /// daemon fences it (SIGTERM) within 5 s and its lease file `lease` is gone.
    pub async fn assert_fenced_on_close(&mut self, d: &Daemon, lease: &Path) {
        self.close_connection().await;
        assert_eq!(
            self.wait_signal(Duration::from_secs(5)).await,
            Some(libc::SIGTERM),
            "daemon log:\n{}",
            d.log()
        );
        assert!(!lease.exists());
    }

    /// Waits for the holder's end; the signal that ended it, if one did.
    pub async fn wait_signal(&mut self, limit: Duration) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(&self.wait(limit).await)
    }
}
