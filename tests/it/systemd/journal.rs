//! journald under real systemd: the daemon's lines reach the journal of
//! virtlockd.service with libvirt's priorities (error 3, warning 4) and
//! `SYSLOG_IDENTIFIER=virtlockd`; `systemctl kill -s HUP` reloads the config.

use std::time::Instant;

use super::setup::{Host, Units};

const CONFIG: &str = "/etc/libvirt/virtlockd.conf";

/// This boot's journal entries of virtlockd.service whose message contains
/// `text`, as JSON objects.
fn entries(h: &Host, priority: &str, text: &str) -> Vec<serde_json::Value> {
    h.journal(&format!("-p {priority} -o json"))
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains(text)))
        .collect()
}

/// `nclients_max` of the lock server, as virt-admin reports it.
fn max_clients(h: &Host) -> String {
    let info = h.c.exec_ok(
        "timeout --foreground 20 virt-admin -c virtlockd:///system srv-clients-info virtlockd",
    );
    info.lines()
        .find_map(|l| l.strip_prefix("nclients_max"))
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no nclients_max in:\n{info}"))
}

fn append_config(h: &Host, line: &str) {
    h.c.exec_ok(&format!(
        "mkdir -p /etc/libvirt && echo '{line}' >>{CONFIG}"
    ));
}

async fn journal_priorities_and_sighup(test: &str, units: Units) {
    let Some(h) = Host::boot_or_skip(test, units) else {
        return;
    };
    // A key we do not know: a warning when the daemon starts.
    append_config(&h, "vltest_unknown_key = 1");
    let _client = h.client(4_000_001).await;
    let pid = h.main_pid();
    let before = max_clients(&h);
    assert_ne!(before, "7");

    // A value of the wrong type: SIGHUP keeps the settings and logs an error.
    h.c.exec_ok(&format!(
        "cp {CONFIG} {CONFIG}.good && echo 'max_clients = \"many\"' >>{CONFIG}"
    ));
    let t = Instant::now();
    h.c.exec_ok("systemctl kill -s HUP virtlockd.service");
    h.wait_for(
        "the failed reload is in the journal at priority err",
        || !entries(&h, "err", "reload failed, settings unchanged").is_empty(),
    );
    let logged = t.elapsed();
    let error = &entries(&h, "err", "reload failed, settings unchanged")[0];
    assert_eq!(error["PRIORITY"], "3", "{error}");
    assert_eq!(error["SYSLOG_IDENTIFIER"], "virtlockd", "{error}");
    assert_eq!(error["SYSLOG_FACILITY"], "3", "{error}");
    assert_eq!(error["_SYSTEMD_UNIT"], "virtlockd.service", "{error}");
    assert_eq!(error["_PID"], pid.to_string(), "{error}");
    assert!(
        error["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("max_clients")),
        "{error}"
    );
    // What `journalctl -u virtlockd -p err` shows a person: our line, by our name.
    let shown = h.journal("-p err");
    assert!(
        shown.lines().any(|l| l.contains(&format!(
            "virtlockd[{pid}]: reload failed, settings unchanged"
        ))),
        "{shown}"
    );
    // The unknown key is a warning: priority 4, so not among the errors.
    let warning = entries(&h, "warning", "vltest_unknown_key");
    assert!(!warning.is_empty(), "no warning:\n{}", h.journal(""));
    assert!(warning.iter().all(|w| w["PRIORITY"] == "4"), "{warning:?}");
    assert!(entries(&h, "err", "vltest_unknown_key").is_empty());
    assert_eq!(max_clients(&h), before, "a failed reload changed the limit");

    // A valid file: SIGHUP applies it, in the same process.
    h.c.exec_ok(&format!(
        "cp {CONFIG}.good {CONFIG} && echo 'max_clients = 7' >>{CONFIG}"
    ));
    h.c.exec_ok("systemctl kill -s HUP virtlockd.service");
    h.wait_for("max_clients = 7 applied by SIGHUP", || {
        max_clients(&h) == "7"
    });
    assert_eq!(h.main_pid(), pid);
    assert_eq!(h.state(), "active/running");
    eprintln!(
        "{test}: error line in the journal {logged:?} after SIGHUP; a valid config applied by SIGHUP"
    );
}

#[tokio::test]
async fn systemd_journal_priorities_and_sighup_with_our_units() {
    journal_priorities_and_sighup(
        "systemd_journal_priorities_and_sighup_with_our_units",
        Units::Ours,
    )
    .await;
}

#[tokio::test]
async fn systemd_journal_priorities_and_sighup_with_debian_units() {
    journal_priorities_and_sighup(
        "systemd_journal_priorities_and_sighup_with_debian_units",
        Units::Debian,
    )
    .await;
}
