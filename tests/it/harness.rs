//! Starts the real `virtlockd` binary on a private runtime directory and hands out
//! clients connected to its socket. Every test gets its own daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use virtlockd::client::Client;
use virtlockd::proclocks::{self, KernelLock};

/// The longest round trip a client may see while another client's fencing or
/// a hung filesystem is under way. What it guards against lasts seconds (the
/// fencing schedule, or forever); the margin below that absorbs the scheduling
/// noise of a busy 2-core machine running the whole suite at once.
pub const UNSTALLED: Duration = Duration::from_millis(500);

pub struct Daemon {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon and waits until its socket accepts connections.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), extra_args)
    }

    /// Starts a daemon in `dir` (which may already hold a config file).
    pub fn start_in(dir: tempfile::TempDir, extra_args: &[&str]) -> Self {
        Self::start_program(Path::new(env!("CARGO_BIN_EXE_virtlockd")), dir, extra_args)
    }

    /// Starts `program` (the daemon binary, or a copy of it) in `dir`.
    pub fn start_program(program: &Path, dir: tempfile::TempDir, extra_args: &[&str]) -> Self {
        Self::start_command(Command::new(program), dir, extra_args)
    }

    /// Starts the daemon through `cmd`: the binary itself, or a wrapper that execs
    /// it (e.g. `nsenter`), so that the spawned pid is the daemon's.
    pub fn start_command(mut cmd: Command, dir: tempfile::TempDir, extra_args: &[&str]) -> Self {
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = cmd
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .arg("-v")
            .args(extra_args)
            .env("LIBVIRT_LOG_OUTPUTS", "1:stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn virtlockd");
        let d = Self { child, dir };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("daemon did not start; log:\n{}", self.log());
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/virtlockd-sock")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("run/virtlockd-admin-sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A fresh directory for lockspaces and files of this test.
    pub fn base(&self) -> PathBuf {
        let p = self.dir.path().join("base");
        std::fs::create_dir_all(&p).expect("base dir");
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.socket()).await.expect("connect")
    }

    /// Kernel locks the daemon holds on `path` ("READ"/"WRITE" on byte 0).
    pub fn kernel_locks_on(&self, path: &Path) -> Vec<String> {
        match proclocks::of_pid_on(self.pid(), path) {
            Ok(locks) => locks.iter().map(describe).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal and waits for exit; returns the exit code.
    pub fn stop_with(&mut self, sig: nix::sys::signal::Signal) -> Option<i32> {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig);
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "POSIX WRITE 0-0" style summary of a kernel lock.
pub fn describe(l: &KernelLock) -> String {
    let end = l.end.map_or("EOF".to_owned(), |e| e.to_string());
    format!("{} {} {}-{}", l.kind, l.mode, l.start, end)
}

pub fn bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

/// Asserts that `r` is an error reply with exactly these fields.
#[track_caller]
pub fn assert_err(
    r: Result<(), virtlockd::client::ClientError>,
    code: i32,
    domain: i32,
    message: &str,
) {
    match r {
        Ok(()) => panic!("expected error {code}/{domain} `{message}`, got OK"),
        Err(e) => {
            let e = e
                .remote()
                .unwrap_or_else(|| panic!("expected a remote error, got {e}"));
            assert_eq!(
                (e.code, e.domain, e.message.as_str()),
                (code, domain, message),
                "full error: {e:?}"
            );
        }
    }
}

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
}

/// Copies an executable that a test will run (or have the daemon exec).
///
/// Through `cp`, not `std::fs::copy`: a file this process holds open for
/// writing is inherited by every child that another test thread forks
/// meanwhile, until that child execs, and running the copy then fails with
/// ETXTBSY ("Text file busy"). `cp` holds the write fd in its own process.
pub fn copy_executable(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("--")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp {} {}", from.display(), to.display());
}

/// A copy of the daemon binary at `to`, for tests that replace or break it.
pub fn copy_daemon(to: &Path) {
    copy_executable(Path::new(env!("CARGO_BIN_EXE_virtlockd")), to);
}

/// Reports that `test` cannot run here, and why. CI provides every
/// prerequisite (root, namespaces, FUSE, libvirt, QEMU, GlusterFS,
/// systemd-nspawn), so under `CI=true` a skip would hide a broken install
/// step: there it fails the test instead.
#[track_caller]
pub fn skip(test: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
}
