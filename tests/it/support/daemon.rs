//! Starts the real `virtlockd` binary on a private runtime directory and hands out
//! clients connected to its socket. Every test gets its own daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use virtlockd::client::Client;
use virtlockd::proclocks::{self, KernelLock};

use super::wait::within_blocking;

/// How long a daemon may take to bind its sockets.
const START: Duration = Duration::from_secs(10);

pub struct Daemon {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon and waits until both its sockets accept connections.
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
        let child = verbose_in(&mut cmd, &dir.path().join("run"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn virtlockd");
        let mut d = Self { child, dir };
        d.wait_ready();
        d
    }

    /// Waits for the lock socket, then for the admin socket (bound just after
    /// it). One successful connection each: the readiness probes are client 1
    /// of each server, and a test counting client ids counts from there.
    fn wait_ready(&mut self) {
        for socket in [self.socket(), self.admin_socket()] {
            let mut exited = None;
            let ready = within_blocking(START, || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                std::os::unix::net::UnixStream::connect(&socket).is_ok()
            });
            if let Some(status) = exited {
                panic!("daemon exited ({status}) at start; log:\n{}", self.log());
            }
            assert!(
                ready,
                "daemon did not start: {} refused after {START:?}; log:\n{}",
                socket.display(),
                self.log()
            );
        }
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

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).expect("signal the daemon");
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until the daemon has exited; panics with `what` and the log if it
    /// still runs after `limit`.
    pub fn wait_exited(&mut self, limit: Duration, what: &str) {
        if !within_blocking(limit, || !self.alive()) {
            panic!("{what} after {limit:?}; log:\n{}", self.log());
        }
    }

    /// Sends a signal and waits for exit; returns the exit code.
    pub fn stop_with(&mut self, sig: Signal) -> Option<i32> {
        let _ = kill(Pid::from_raw(self.pid() as i32), sig);
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cmd` (the daemon, or a wrapper that execs it) on the runtime directory
/// `run`, logging everything to stderr, with no stdin.
pub fn verbose_in<'c>(cmd: &'c mut Command, run: &Path) -> &'c mut Command {
    cmd.arg("--runtime-dir")
        .arg(run)
        .arg("-v")
        .env("LIBVIRT_LOG_OUTPUTS", "1:stderr")
        .stdin(Stdio::null())
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

/// A copy of the daemon binary at `to`, for tests that replace or break it.
pub fn copy_daemon(to: &Path) {
    super::executable::copy_executable(Path::new(env!("CARGO_BIN_EXE_virtlockd")), to);
}
