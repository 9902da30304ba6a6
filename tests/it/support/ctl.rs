//! `virtlockctl` run against a test's daemon.

use std::process::Command;

use serde_json::Value;

use super::daemon::Daemon;
use super::process::outcome;

/// Runs virtlockctl against `d`; returns (exit code, stdout, stderr).
pub fn ctl(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_virtlockctl"))
        .arg("--runtime-dir")
        .arg(d.dir.path().join("run"))
        .args(args)
        .output()
        .expect("run virtlockctl");
    outcome(out)
}

/// `virtlockctl ARGS --json`, which must succeed, parsed.
#[track_caller]
pub fn ctl_json(d: &Daemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = ctl(d, &all);
    assert_eq!(code, 0, "virtlockctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}
