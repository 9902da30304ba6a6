//! Copying executables the tests (and the crash-safe benchmark, which
//! includes this file) run or have the daemon exec.

use std::path::Path;
use std::process::Command;

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
