//! `virtlockctl` output: readable tables, and JSON whose field names and types
//! are stable (documented in the README; new fields may be added, none removed
//! or changed).

use serde_json::{json, Value};

use super::fscheck::{Reach, Report};
use crate::lockspace::lease::Storage;
use crate::names::uuid_string;
use crate::protocol::inspect::{
    ClientView, CrashSafetyView, LeaseStatus, LeaseView, OwnerView, StatusView,
};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `YYYY-MM-DD HH:MM:SS+0000` (UTC), as virt-admin shows times; `-` if unknown.
pub fn time(epoch: i64) -> String {
    if epoch <= 0 {
        return "-".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch as u64);
    let s = crate::logging::format_timestamp(t);
    // Drop the milliseconds.
    match s.split_once('.') {
        Some((head, tail)) => format!("{head}{}", &tail[3..]),
        None => s,
    }
}

/// A table with a header line and left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn owner_json(o: &OwnerView) -> Value {
    match &o.details {
        Some(d) => json!({
            "pid": o.pid,
            "name": text(&d.name),
            "uuid": uuid_string(&d.uuid),
            "domain_id": d.id,
        }),
        None => json!({ "pid": o.pid, "name": null, "uuid": null, "domain_id": null }),
    }
}

fn owner_short(o: &OwnerView) -> String {
    match &o.details {
        Some(d) => format!(
            "{} ({}, id {}, pid {})",
            text(&d.name),
            uuid_string(&d.uuid),
            d.id,
            o.pid
        ),
        None => format!("pid {}", o.pid),
    }
}

fn mode(l: &LeaseView) -> &'static str {
    if l.shared {
        "shared"
    } else {
        "exclusive"
    }
}

pub fn lease_json(l: &LeaseView) -> Value {
    json!({
        "lockspace": l.lockspace.as_deref().map(text),
        "direct": l.lockspace.is_none(),
        "name": text(&l.name),
        "path": text(&l.path),
        "mode": mode(l),
        "autocreate": l.autocreate,
        "acquired_at": (l.acquired_at > 0).then_some(l.acquired_at),
        "status": l.status.name(),
        "status_reason": l.status.detail().map(|(reason, _)| reason),
        "status_since": l.status.detail().map(|(_, since)| since),
        "owners": l.owners.iter().map(owner_json).collect::<Vec<_>>(),
    })
}

/// `held`, or e.g. `lost at 2026-11-22 10:00:00 (the filesystem fails ...)`.
fn lease_status_text(s: &LeaseStatus) -> String {
    match s.detail() {
        None => s.name(),
        Some((reason, since)) => format!("{} at {} ({reason})", s.name(), time(since)),
    }
}

pub fn leases_json(leases: &[LeaseView]) -> Value {
    json!({ "leases": leases.iter().map(lease_json).collect::<Vec<_>>() })
}

/// One row per lease; a lease with several owners lists them one per line.
pub fn leases_table(leases: &[LeaseView]) -> String {
    if leases.is_empty() {
        return "no leases held\n".into();
    }
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                l.lockspace
                    .as_deref()
                    .map_or_else(|| "(direct)".to_owned(), text),
                text(&l.name),
                mode(l).to_owned(),
                if l.autocreate { "yes" } else { "no" }.to_owned(),
                time(l.acquired_at),
                lease_status_text(&l.status),
                l.owners
                    .iter()
                    .map(owner_short)
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "LOCKSPACE",
            "NAME",
            "MODE",
            "AUTOCREATE",
            "ACQUIRED",
            "STATUS",
            "OWNERS",
        ],
        &rows,
    );
    // File paths differ from names only in file lockspaces: list them below.
    let files: Vec<Vec<String>> = leases
        .iter()
        .filter(|l| l.lockspace.is_some())
        .map(|l| vec![text(&l.name), text(&l.path)])
        .collect();
    if !files.is_empty() {
        out.push('\n');
        out.push_str(&table(&["NAME", "FILE"], &files));
    }
    out
}

pub fn clients_json(clients: &[ClientView]) -> Value {
    json!({
        "clients": clients.iter().map(|c| json!({
            "server": c.server,
            "id": c.id,
            "pid": c.pid,
            "uid": c.uid,
            "connected_at": c.connected_at,
            "owner": c.owner.as_ref().map(owner_json),
            "restricted": c.restricted,
            "leases": c.leases,
        })).collect::<Vec<_>>()
    })
}

pub fn clients_table(clients: &[ClientView]) -> String {
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            vec![
                c.server.clone(),
                c.id.to_string(),
                c.pid.to_string(),
                c.owner.as_ref().map_or_else(|| "-".to_owned(), owner_short),
                if c.restricted { "yes" } else { "no" }.to_owned(),
                time(c.connected_at),
                c.leases.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SERVER",
            "ID",
            "PID",
            "OWNER",
            "RESTRICTED",
            "CONNECTED SINCE",
            "LEASES",
        ],
        &rows,
    )
}

fn libvirt_version(v: u64) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000)
}

/// Seconds since the daemon started, by its own clock; 0 if that clock says
/// otherwise. Both times come from the daemon: any values must do.
fn uptime(s: &StatusView) -> i64 {
    s.now.saturating_sub(s.started_at).max(0)
}

pub fn status_json(s: &StatusView) -> Value {
    json!({
        "version": s.version,
        "libvirt_version": libvirt_version(s.libvirt_version),
        "pid": s.pid,
        "started_at": s.started_at,
        "uptime_seconds": uptime(s),
        "lock_clients": s.lock_clients,
        "admin_clients": s.admin_clients,
        "lockspaces": s.lockspaces,
        "leases": s.leases,
        "live_upgrades": s.upgrades,
        "crash_safety": s.crash_safety.as_ref().map(crash_safety_json),
    })
}

fn crash_safety_json(c: &CrashSafetyView) -> Value {
    json!({
        "mode": c.mode,
        "reason": (!c.reason.is_empty()).then_some(&c.reason),
        "parked_fds": c.parked,
        "journal_bytes": c.journal_bytes,
        "generation": c.generation,
        "recoveries": c.recoveries,
    })
}

/// `n thing` or `n things`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `512 B`, `3.1 KiB`, `2.0 MiB`, ...
fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `active (12 fds parked, journal 3.1 KiB, generation 2, 0 recoveries)`,
/// `off`, `inactive (why)`; `unknown` from a daemon that does not say.
fn crash_safety_text(c: Option<&CrashSafetyView>) -> String {
    let Some(c) = c else {
        return "unknown (the daemon predates crash-safe mode)".into();
    };
    if c.mode == "active" {
        return format!(
            "active ({} parked, journal {}, generation {}, {})",
            count(c.parked, "fd", "fds"),
            size(c.journal_bytes),
            c.generation,
            count(c.recoveries, "recovery", "recoveries")
        );
    }
    if c.reason.is_empty() {
        c.mode.clone()
    } else {
        format!("{} ({})", c.mode, c.reason)
    }
}

fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

pub fn status_text(s: &StatusView) -> String {
    let rows = [
        (
            "version",
            format!(
                "{} (libvirt {})",
                s.version,
                libvirt_version(s.libvirt_version)
            ),
        ),
        ("pid", s.pid.to_string()),
        ("started", time(s.started_at)),
        ("uptime", duration(uptime(s))),
        ("lock clients", s.lock_clients.to_string()),
        ("admin clients", s.admin_clients.to_string()),
        ("lockspaces", s.lockspaces.to_string()),
        ("leases", s.leases.to_string()),
        ("live upgrades", s.upgrades.to_string()),
        ("crash safety", crash_safety_text(s.crash_safety.as_ref())),
    ];
    rows.iter()
        .map(|(k, v)| format!("{k:<14}: {v}\n"))
        .collect()
}

pub fn who_json(path: &str, leases: &[LeaseView]) -> Value {
    json!({
        "path": path,
        "leases": leases.iter().map(lease_json).collect::<Vec<_>>(),
    })
}

pub fn who_text(path: &str, leases: &[LeaseView]) -> String {
    if leases.is_empty() {
        return format!("{path}: no lease held\n");
    }
    let mut out = String::new();
    for l in leases {
        let place = match &l.lockspace {
            None => "direct lease".to_owned(),
            Some(ls) => format!("lease {} in lockspace {}", text(&l.name), text(ls)),
        };
        out.push_str(&format!(
            "{path}: {place}, {} since {}, {}\n",
            mode(l),
            time(l.acquired_at),
            lease_status_text(&l.status)
        ));
        for o in &l.owners {
            out.push_str(&format!("  owner: {}\n", owner_short(o)));
        }
    }
    out
}

fn reach_name(r: Reach) -> &'static str {
    match r {
        Reach::OtherHosts => "other-hosts",
        Reach::ThisHostOnly => "this-host-only",
    }
}

fn storage_name(s: Storage) -> String {
    match s {
        Storage::Local => "local".into(),
        Storage::MayHang(kind) => format!("network:{kind}"),
    }
}

pub fn check_json(r: &Report) -> Value {
    json!({
        "dir": r.dir.display().to_string(),
        "fstype": r.mount.as_ref().map(|m| m.fstype.clone()),
        "source": r.mount.as_ref().map(|m| m.source.clone()),
        "mount_point": r.mount.as_ref().map(|m| m.mount_point.display().to_string()),
        "options": r.mount.as_ref().map(|m| m.options.clone()).unwrap_or_default(),
        "daemon_storage": storage_name(r.storage),
        "reach": reach_name(r.assessment.reach),
        "reason": r.assessment.reason,
    })
}

pub fn check_text(r: &Report) -> String {
    let mut out = format!("directory     : {}\n", r.dir.display());
    if let Some(m) = &r.mount {
        out.push_str(&format!(
            "filesystem    : {} ({} on {})\n",
            m.fstype,
            m.source,
            m.mount_point.display()
        ));
        out.push_str(&format!("mount options : {}\n", m.options.join(",")));
    }
    out.push_str(&format!("daemon storage: {}\n", storage_name(r.storage)));
    out.push_str(&format!(
        "locks reach   : {}\n",
        reach_name(r.assessment.reach)
    ));
    out.push_str(&format!("why           : {}\n", r.assessment.reason));
    if r.assessment.reach == Reach::ThisHostOnly {
        out.push_str(
            "WARNING: leases here do not protect disks shared with other hosts; \
             use this lockspace for a single host only.\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
    }

    #[test]
    fn times_like_virt_admin() {
        assert_eq!(time(1_700_000_000), "2023-11-14 22:13:20+0000");
        assert_eq!(time(0), "-");
        assert_eq!(duration(3_725), "1h 2m 5s");
        assert_eq!(libvirt_version(9_000_000), "9.0.0");
    }

    #[test]
    fn any_start_and_clock_times_render() {
        // Found by fuzzing: the uptime subtraction overflowed on extreme times.
        let status = |started_at, now| StatusView {
            version: "0.1.0".into(),
            libvirt_version: 9_000_000,
            pid: 1,
            started_at,
            now,
            upgrades: 0,
            lock_clients: 0,
            admin_clients: 0,
            lockspaces: 0,
            leases: 0,
            crash_safety: None,
        };
        for (started_at, now, uptime) in [
            (i64::MIN, i64::MAX, i64::MAX),
            (i64::MIN, 1, i64::MAX),
            (i64::MAX, i64::MIN, 0),
            (100, 3_825, 3_725),
        ] {
            let s = status(started_at, now);
            assert_eq!(status_json(&s)["uptime_seconds"], uptime);
            assert!(status_text(&s).contains(&format!("uptime        : {}\n", duration(uptime))));
        }
    }

    fn status_with(crash_safety: Option<CrashSafetyView>) -> StatusView {
        StatusView {
            version: "0.1.0".into(),
            libvirt_version: 9_000_000,
            pid: 1,
            started_at: 100,
            now: 200,
            upgrades: 0,
            lock_clients: 0,
            admin_clients: 0,
            lockspaces: 0,
            leases: 0,
            crash_safety,
        }
    }

    fn crash(mode: &str, reason: &str, parked: u64, journal_bytes: u64) -> CrashSafetyView {
        CrashSafetyView {
            mode: mode.into(),
            reason: reason.into(),
            parked,
            journal_bytes,
            generation: 2,
            recoveries: 0,
        }
    }

    fn crash_line(s: &StatusView) -> String {
        let text = status_text(s);
        let line = text
            .lines()
            .find(|l| l.starts_with("crash safety"))
            .unwrap_or_else(|| panic!("no crash safety line in\n{text}"));
        line.to_owned()
    }

    #[test]
    fn crash_safety_text_says_whether_leases_survive_a_crash() {
        let active = status_with(Some(crash("active", "", 12, 3_174)));
        assert_eq!(
            crash_line(&active),
            "crash safety  : active (12 fds parked, journal 3.1 KiB, generation 2, 0 recoveries)"
        );
        let mut one = crash("active", "", 1, 512);
        one.recoveries = 1;
        assert_eq!(
            crash_line(&status_with(Some(one))),
            "crash safety  : active (1 fd parked, journal 512 B, generation 2, 1 recovery)"
        );
        assert_eq!(
            crash_line(&status_with(Some(crash("off", "", 0, 0)))),
            "crash safety  : off"
        );
        assert_eq!(
            crash_line(&status_with(Some(crash(
                "inactive",
                "no service manager file-descriptor store",
                0,
                0
            )))),
            "crash safety  : inactive (no service manager file-descriptor store)"
        );
        assert_eq!(
            crash_line(&status_with(None)),
            "crash safety  : unknown (the daemon predates crash-safe mode)"
        );
        // It is the last line, after the live upgrades.
        assert!(status_text(&active).ends_with(&format!("{}\n", crash_line(&active))));
    }

    #[test]
    fn crash_safety_json_fields() {
        let v = status_json(&status_with(Some(crash("active", "", 12, 3_174))));
        assert_eq!(
            v["crash_safety"],
            json!({
                "mode": "active",
                "reason": null,
                "parked_fds": 12,
                "journal_bytes": 3_174,
                "generation": 2,
                "recoveries": 0,
            })
        );
        let why = "no service manager file-descriptor store";
        let v = status_json(&status_with(Some(crash("inactive", why, 0, 0))));
        assert_eq!(
            (
                v["crash_safety"]["mode"].as_str(),
                v["crash_safety"]["reason"].as_str()
            ),
            (Some("inactive"), Some(why))
        );
        assert_eq!(status_json(&status_with(None))["crash_safety"], Value::Null);
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(3_174), "3.1 KiB");
        assert_eq!(size(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
    }
}
