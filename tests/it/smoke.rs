//! The daemon starts, answers, and holds a real kernel lock.

use crate::support::{bytes, holding, Daemon};

#[tokio::test]
async fn acquire_shows_in_proc_locks_and_release_removes_the_file() {
    let d = Daemon::start();
    let ls = d.base().join("ls");
    let mut c = holding(&d, &ls, b"r1").await;
    assert_eq!(d.kernel_locks_on(&ls.join("r1")), ["POSIX WRITE 0-0"]);
    c.release(&bytes(&ls), b"r1").await.unwrap();
    assert!(!ls.join("r1").exists());
    c.ping().await.unwrap();
}

/// Runs an example to its end; asserts it succeeded and returns its output.
async fn run_example(cmd: &mut tokio::process::Command) -> String {
    let out = cmd.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn multi_lockspace_example_runs_libvirts_layouts() {
    let d = Daemon::start();
    let text = run_example(
        tokio::process::Command::new(crate::support::example("multi_lockspace"))
            .arg(d.socket())
            .arg(d.base()),
    )
    .await;
    for line in [
        "acquired direct disk lock",
        "acquired file lockspace (sha256 of path)",
        "acquired LVM volume",
        "acquired SCSI LUN",
        "acquired custom lease",
        "vm2 on the same disk: resource busy",
        "all leases released",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[tokio::test]
async fn loadgen_reports_rate_latency_and_daemon_cpu() {
    let d = Daemon::start();
    let text = run_example(
        tokio::process::Command::new(crate::support::example("loadgen"))
            .arg("--socket")
            .arg(d.socket())
            .arg("--daemon-pid")
            .arg(d.pid().to_string())
            .args([
                "--clients",
                "8",
                "--seconds",
                "0.3",
                "--autocreate",
                "--shared-ratio",
                "0.5",
            ])
            .arg("--lockspace")
            .arg(d.base().join("load")),
    )
    .await;
    assert!(
        text.contains("rpc/s") && text.contains("p99=") && text.contains("cpu_per_rpc="),
        "{text}"
    );
}
