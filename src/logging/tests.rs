//! Unit tests of the logging: syntax, resolution, formats, and the layer at work.

use std::fmt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{debug, error, info, trace, warn, Level, Metadata};
use tracing_subscriber::layer::{Layer, SubscriberExt as _};

use super::layer::layer_with;
use super::record::{truncate, Record};
use super::sinks::{datagram_socket, Sink};
use super::syntax::glob_match;
use super::*;

/// The priority numbered `n`, for tables written with libvirt's numbers.
fn p(n: u8) -> Priority {
    Priority::from_number(n).expect("a priority is 1..=4")
}

fn out(level: u8, dest: Destination) -> Output {
    Output {
        level: p(level),
        dest,
    }
}

fn file(path: &str) -> Destination {
    Destination::File(PathBuf::from(path))
}

fn invalid(r: Result<impl fmt::Debug, LogError>) -> String {
    match r {
        Err(e) => {
            assert!(e.is_invalid_argument(), "{e:?}");
            e.to_string()
        }
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn levels() {
    assert_eq!(
        ["debug", "info", "warning", "error"],
        [1, 2, 3, 4].map(|n| p(n).name())
    );
    assert_eq!([1, 2, 3, 4].map(|n| p(n).to_string()), ["1", "2", "3", "4"]);
    assert!(Priority::Debug < Priority::Info && Priority::Warning < Priority::Error);
    for (s, l) in [
        ("1", 1),
        ("debug", 1),
        ("2", 2),
        ("info", 2),
        ("3", 3),
        ("warning", 3),
        ("4", 4),
        ("error", 4),
    ] {
        assert_eq!(parse_level(s).expect(s).number(), l);
    }
    assert_eq!(
        invalid(parse_level("warn")),
        "Failed to set logging priority, argument 'warn' is invalid"
    );
    assert!(parse_level("0").is_err() && parse_level("DEBUG").is_err());
    assert!(check_level(0).is_err() && check_level(5).is_err());
    assert_eq!(check_level(2).expect("2"), Priority::Info);
    assert_eq!(Priority::of(&Level::TRACE), Priority::Debug);
    assert_eq!(Priority::of(&Level::DEBUG), Priority::Debug);
    assert_eq!(Priority::of(&Level::INFO), Priority::Info);
    assert_eq!(Priority::of(&Level::WARN), Priority::Warning);
    assert_eq!(Priority::of(&Level::ERROR), Priority::Error);
}

#[test]
fn filters_parse_and_render() {
    let filters = parse_filters("  1:foo\t4:+bar   3:actors::conn ").expect("filters");
    assert_eq!(
        filters,
        [
            Filter {
                level: p(1),
                pattern: "foo".into()
            },
            Filter {
                level: p(4),
                pattern: "bar".into()
            },
            Filter {
                level: p(3),
                pattern: "actors::conn".into()
            },
        ]
    );
    assert_eq!(
        render_filters(&filters),
        "1:*foo* 4:*bar* 3:*actors::conn* "
    );
    assert_eq!(render_filters(&[]), "");
    assert_eq!(parse_filters("").expect("empty"), []);
    assert_eq!(parse_filters("   ").expect("blank"), []);
    // libvirt's augeas sample
    let sample = "1:locking 4:object 4:json 4:event 1:util";
    let parsed = parse_filters(sample).expect("sample");
    assert_eq!(
        render_filters(&parsed),
        "1:*locking* 4:*object* 4:*json* 4:*event* 1:*util* "
    );
}

#[test]
fn bad_filters_are_rejected() {
    assert_eq!(
        invalid(parse_filters("0:foo")),
        "Invalid priority '0' for filter '0:foo'"
    );
    assert_eq!(
        invalid(parse_filters("1:ok 5:foo")),
        "Invalid priority '5' for filter '5:foo'"
    );
    assert_eq!(
        invalid(parse_filters("x:foo")),
        "Invalid priority 'x' for filter 'x:foo'"
    );
    assert_eq!(
        invalid(parse_filters("foo")),
        "Malformed format for filter 'foo'"
    );
    assert_eq!(invalid(parse_filters("1:")), "Invalid match string ''");
    assert_eq!(invalid(parse_filters("1:+")), "Invalid match string '+'");
}

#[test]
fn outputs_parse_and_render() {
    let text = "3:stderr 1:file:/var/log/x.log 2:journald 4:syslog:virtlockd";
    let outputs = parse_outputs(text).expect("outputs");
    assert_eq!(
        outputs,
        [
            out(3, Destination::Stderr),
            out(1, file("/var/log/x.log")),
            out(2, Destination::Journald),
            out(4, Destination::Syslog("virtlockd".into())),
        ]
    );
    assert_eq!(render_outputs(&outputs), text);
    assert_eq!(render_outputs(&[]), "");
    assert_eq!(parse_outputs(" ").expect("blank"), []);
}

#[test]
fn duplicate_outputs_keep_the_last() {
    let outputs = parse_outputs("1:stderr 2:file:/x 3:stderr 1:file:/y 4:syslog:a 4:syslog:b")
        .expect("outputs");
    assert_eq!(
        render_outputs(&outputs),
        "2:file:/x 3:stderr 1:file:/y 4:syslog:a 4:syslog:b"
    );
}

#[test]
fn bad_outputs_are_rejected() {
    let cases = [
        ("0:stderr", "Invalid log priority '0' for log output '0:stderr'"),
        ("5:stderr", "Invalid log priority '5' for log output '5:stderr'"),
        ("stderr", "Malformed format for log output 'stderr'"),
        (
            "3:console",
            "Invalid log destination 'console' for log output '3:console'",
        ),
        (
            "3:file",
            "Log output '3:file' does not meet the format requirements for destination type 'file'",
        ),
        (
            "3:file:",
            "Log output '3:file:' does not meet the format requirements for destination type 'file'",
        ),
        (
            "3:file:/a:b",
            "Log output '3:file:/a:b' does not meet the format requirements for destination type 'file'",
        ),
        (
            "3:stderr:x",
            "Log output '3:stderr:x' does not meet the format requirements for destination type 'stderr'",
        ),
        (
            "3:syslog",
            "Log output '3:syslog' does not meet the format requirements for destination type 'syslog'",
        ),
    ];
    for (spec, msg) in cases {
        assert_eq!(invalid(parse_outputs(spec)), msg, "{spec}");
    }
    assert!(parse_outputs("3:stderr 3:nowhere").is_err());
}

#[test]
fn file_paths_are_made_absolute() {
    let outputs = parse_outputs("1:file:/var//log/./libvirt/../x.log").expect("path");
    assert_eq!(outputs[0].dest, file("/var/log/x.log"));
    let cwd = std::env::current_dir().expect("cwd");
    let outputs = parse_outputs("1:file:rel.log").expect("relative");
    assert_eq!(outputs[0].dest, Destination::File(cwd.join("rel.log")));
}

#[test]
fn filter_matching() {
    let f = |pattern: &str| Filter {
        level: Priority::Debug,
        pattern: pattern.into(),
    };
    let target = "virtlockd::actors::connection";
    assert!(f("connection").matches(target));
    assert!(f("virtlockd").matches(target));
    assert!(f("actors::conn").matches(target));
    assert!(!f("lockspace").matches(target));
    assert!(f("act*tion").matches(target));
    assert!(f("actors??connection").matches(target));
    assert!(!f("actors?connection").matches(target));
    assert!(f("*").matches(target));
    assert!(f("conn*").matches(target));
    assert!(!f("x*y").matches(target));
    assert!(glob_match(b"a*b*c", b"xxaxxbxxcxx"));
    assert!(!glob_match(b"a*b*c", b"xxaxxcxxbxx"));
    assert!(glob_match(b"?", b"z"));
    assert!(!glob_match(b"?", b""));
}

#[test]
fn threshold_uses_first_matching_filter() {
    let settings = LogSettings {
        level: p(3),
        filters: parse_filters("4:actors::connection 1:actors").expect("filters"),
        ..LogSettings::default()
    };
    assert_eq!(settings.threshold("virtlockd::actors::connection"), p(4));
    assert_eq!(settings.threshold("virtlockd::actors::lockspace"), p(1));
    assert_eq!(settings.threshold("virtlockd::lockspace"), p(3));
}

fn env() -> EnvInputs {
    EnvInputs {
        stdin_is_tty: true,
        cache_dir: Some(PathBuf::from("/home/u/.cache")),
        ..EnvInputs::default()
    }
}

#[test]
fn resolve_defaults() {
    let s = resolve(None, None, None, &env(), false, false, true).expect("defaults");
    assert_eq!(s, LogSettings::default());
    assert_eq!(render_outputs(&s.outputs), "3:stderr");
    // 0 and empty strings mean "not set".
    let s = resolve(Some(0), Some(""), Some(" "), &env(), false, false, true).expect("empty");
    assert_eq!(s, LogSettings::default());
}

#[test]
fn resolve_config_only() {
    let s = resolve(
        Some(1),
        Some("4:connection"),
        Some("2:file:/tmp/v.log"),
        &env(),
        false,
        false,
        true,
    )
    .expect("config");
    assert_eq!(s.level.number(), 1);
    assert_eq!(render_filters(&s.filters), "4:*connection* ");
    assert_eq!(render_outputs(&s.outputs), "2:file:/tmp/v.log");
    assert_eq!(render_outputs(&s.default_outputs), "1:stderr");
}

#[test]
fn environment_overrides_config() {
    let e = EnvInputs {
        libvirt_debug: Some("info".into()),
        log_filters: Some("1:lockspace".into()),
        log_outputs: Some("4:stderr".into()),
        ..env()
    };
    let s = resolve(
        Some(4),
        Some("4:connection"),
        Some("2:file:/tmp/v.log"),
        &e,
        false,
        false,
        true,
    )
    .expect("env");
    assert_eq!(s.level.number(), 2);
    assert_eq!(render_filters(&s.filters), "1:*lockspace* ");
    assert_eq!(render_outputs(&s.outputs), "4:stderr");

    // Empty variables do not override.
    let e = EnvInputs {
        libvirt_debug: Some(String::new()),
        log_filters: Some(String::new()),
        log_outputs: Some(String::new()),
        ..env()
    };
    let s = resolve(
        Some(4),
        Some("4:x"),
        Some("2:stderr"),
        &e,
        false,
        false,
        true,
    )
    .expect("empty env");
    assert_eq!(s.level.number(), 4);
    assert_eq!(render_filters(&s.filters), "4:*x* ");
    assert_eq!(render_outputs(&s.outputs), "2:stderr");
}

#[test]
fn verbose_only_raises() {
    let level = |cfg: Option<u8>, debug: Option<&str>, verbose: bool| {
        let e = EnvInputs {
            libvirt_debug: debug.map(str::to_string),
            ..env()
        };
        resolve(cfg, None, None, &e, verbose, false, true)
            .expect("resolve")
            .level
            .number()
    };
    assert_eq!(level(None, None, true), 2);
    assert_eq!(level(Some(4), None, true), 2);
    assert_eq!(level(Some(1), None, true), 1);
    assert_eq!(level(Some(1), Some("error"), false), 4);
    assert_eq!(level(Some(1), Some("error"), true), 2);
    assert_eq!(level(Some(4), Some("debug"), true), 1);
}

#[test]
fn resolve_errors_name_their_origin() {
    let e = env();
    let r = |lvl, f, o, e: &EnvInputs| resolve(lvl, f, o, e, false, false, true);
    assert_eq!(
        invalid(r(Some(5), None, None, &e)),
        "log_level: Failed to set logging priority, argument '5' is invalid"
    );
    assert_eq!(
        invalid(r(None, Some("9:x"), None, &e)),
        "log_filters: Invalid priority '9' for filter '9:x'"
    );
    assert_eq!(
        invalid(r(None, None, Some("3:tty"), &e)),
        "log_outputs: Invalid log destination 'tty' for log output '3:tty'"
    );
    let bad = |f: fn(&mut EnvInputs)| {
        let mut e = env();
        f(&mut e);
        invalid(r(None, None, None, &e))
    };
    assert_eq!(
        bad(|e| e.libvirt_debug = Some("loud".into())),
        "LIBVIRT_DEBUG: Failed to set logging priority, argument 'loud' is invalid"
    );
    assert_eq!(
        bad(|e| e.log_filters = Some("x".into())),
        "LIBVIRT_LOG_FILTERS: Malformed format for filter 'x'"
    );
    assert_eq!(
        bad(|e| e.log_outputs = Some("1:file".into())),
        "LIBVIRT_LOG_OUTPUTS: Log output '1:file' does not meet the format requirements for destination type 'file'"
    );
}

/// (journald writable, stdin tty, daemon, privileged, LIBVIRT_DEBUG, outputs)
type DefaultCase = (bool, bool, bool, bool, Option<&'static str>, &'static str);

#[test]
fn default_output_rules() {
    let cases: [DefaultCase; 10] = [
        // Observed on Debian: daemon as root without journald.
        (
            false,
            true,
            true,
            true,
            None,
            "3:file:/var/log/libvirt/virtlockd.log",
        ),
        (
            false,
            false,
            true,
            true,
            None,
            "3:file:/var/log/libvirt/virtlockd.log",
        ),
        (
            false,
            true,
            true,
            false,
            None,
            "3:file:/home/u/.cache/libvirt/virtlockd.log",
        ),
        (true, true, true, true, None, "3:journald"),
        (true, true, true, false, Some("debug"), "2:journald"),
        (true, false, false, true, None, "3:journald"),
        (true, false, false, true, Some("1"), "2:journald"),
        (true, true, false, true, Some("1"), "1:stderr"),
        (false, false, false, true, None, "3:stderr"),
        (false, true, false, false, Some("error"), "4:stderr"),
    ];
    for (journald, tty, daemon, privileged, debug, want) in cases {
        let e = EnvInputs {
            journald_writable: journald,
            stdin_is_tty: tty,
            libvirt_debug: debug.map(str::to_string),
            ..env()
        };
        let s = resolve(None, None, None, &e, false, daemon, privileged).expect("resolve");
        let case = format!(
            "journald={journald} tty={tty} daemon={daemon} root={privileged} debug={debug:?}"
        );
        assert_eq!(render_outputs(&s.outputs), want, "{case}");
        assert_eq!(s.outputs, s.default_outputs, "{case}");
    }
    // The default follows -v too.
    let s = resolve(None, None, None, &env(), true, false, false).expect("verbose");
    assert_eq!(render_outputs(&s.outputs), "2:stderr");
}

#[test]
fn configured_outputs_keep_the_default_for_later() {
    let e = EnvInputs {
        journald_writable: true,
        ..env()
    };
    let s = resolve(None, None, Some("1:stderr"), &e, false, true, true).expect("resolve");
    assert_eq!(render_outputs(&s.outputs), "1:stderr");
    assert_eq!(render_outputs(&s.default_outputs), "3:journald");
}

#[test]
fn user_daemon_without_cache_dir() {
    let e = EnvInputs {
        cache_dir: None,
        ..env()
    };
    assert!(matches!(
        resolve(None, None, None, &e, false, true, false),
        Err(LogError::NoCacheDir)
    ));
    let s =
        resolve(None, None, Some("4:stderr"), &e, false, true, false).expect("outputs configured");
    assert_eq!(render_outputs(&s.default_outputs), "3:stderr");
}

#[test]
fn settings_floor() {
    let mut s = LogSettings::default();
    assert_eq!(s.floor(), Some(p(3)));
    s.filters = parse_filters("1:foo").expect("f");
    assert_eq!(s.floor(), Some(p(3)), "the stderr output at 3 still limits");
    s.outputs = parse_outputs("1:stderr").expect("o");
    assert_eq!(s.floor(), Some(p(1)));
    s.filters.clear();
    assert_eq!(s.floor(), Some(p(3)));
    s.level = p(4);
    assert_eq!(s.floor(), Some(p(4)));
    s.outputs.clear();
    assert_eq!(s.floor(), None, "no output: nothing is written");
    assert_eq!(Priority::Debug.level_filter(), LevelFilter::TRACE);
    assert_eq!(Priority::Warning.level_filter(), LevelFilter::WARN);
}

#[test]
fn timestamps() {
    let at = |secs: u64, ms: u64| {
        format_timestamp(UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + ms))
    };
    assert_eq!(at(0, 0), "1970-01-01 00:00:00.000+0000");
    assert_eq!(at(1_795_372_985, 123), "2026-11-22 18:43:05.123+0000");
    assert_eq!(at(951_868_799, 999), "2000-02-29 23:59:59.999+0000");
    assert_eq!(at(1_709_164_800, 7), "2024-02-29 00:00:00.007+0000");
    assert_eq!(at(946_684_799, 0), "1999-12-31 23:59:59.000+0000");
    assert_eq!(at(4_107_585_600, 50), "2100-03-01 12:00:00.050+0000");
}

fn record<'a>(level: u8, body: &'a str) -> Record<'a> {
    Record {
        level: p(level),
        target: "virtlockd::t",
        body,
        file: Some("src/x.rs"),
        line: Some(42),
        time: UNIX_EPOCH + std::time::Duration::from_millis(1_795_372_985_123),
        pid: 4242,
    }
}

#[test]
fn line_formats() {
    assert_eq!(
        record(2, "hello k=1").text_line(),
        "2026-11-22 18:43:05.123+0000: 4242: info : virtlockd::t: hello k=1\n"
    );
    assert_eq!(
        record(3, "careful").syslog_datagram("virtlockd"),
        "<28>virtlockd[4242]: warning : virtlockd::t: careful"
    );
    assert_eq!(
        record(1, "x").syslog_datagram("lockd"),
        "<31>lockd[4242]: debug : virtlockd::t: x"
    );
    assert_eq!(
        record(4, "x").syslog_datagram("v"),
        "<27>v[4242]: error : virtlockd::t: x"
    );
    assert_eq!(
        String::from_utf8(record(2, "hi").journald_payload()).expect("utf8"),
        "MESSAGE=hi\nPRIORITY=6\nSYSLOG_FACILITY=3\nSYSLOG_IDENTIFIER=virtlockd\n\
         LIBVIRT_SOURCE=virtlockd::t\nCODE_FILE=src/x.rs\nCODE_LINE=42\n"
    );
    let payload = record(4, "a\nb").journald_payload();
    let mut want = b"MESSAGE\n".to_vec();
    want.extend_from_slice(&3u64.to_le_bytes());
    want.extend_from_slice(b"a\nb\nPRIORITY=3\n");
    assert!(payload.starts_with(&want), "{payload:?}");
}

#[test]
fn truncate_respects_char_boundaries() {
    assert_eq!(truncate("abc", 5), "abc");
    assert_eq!(truncate("abc", 2), "ab");
    assert_eq!(truncate("aé", 2), "a");
}

/// Runs `f` with a local subscriber made of a layer with `settings`.
fn with_layer(settings: LogSettings, f: impl FnOnce(&LogHandle)) -> LogHandle {
    let (layer, handle) = super::layer(settings).expect("layer");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || f(&handle));
    handle
}

fn settings_with(level: u8, outputs: &str) -> LogSettings {
    LogSettings {
        level: p(level),
        outputs: parse_outputs(outputs).expect("outputs"),
        ..LogSettings::default()
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn temp_log(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path()
        .canonicalize()
        .expect("canonical tempdir")
        .join(name)
}

#[test]
fn file_output_gets_formatted_lines_and_not_filtered_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = temp_log(&dir, "sub/v.log");
    let settings = settings_with(2, &format!("1:file:{}", path.display()));
    with_layer(settings, |_| {
        info!(target: "virtlockd::actors::connection", client = 7, path = "a b", "hello {}", "world");
        debug!(target: "virtlockd::actors::connection", "hidden debug");
        trace!("hidden trace");
        warn!(error = %"boom", "careful");
        error!(code = 8u32);
    });
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let pid = std::process::id();
    let (stamp, rest) = lines[0].split_at(28);
    assert_eq!(
        rest,
        format!(": {pid}: info : virtlockd::actors::connection: hello world client=7 path=\"a b\"")
    );
    let bytes = stamp.as_bytes();
    assert!(stamp.ends_with("+0000"), "{stamp}");
    for (i, b) in bytes.iter().enumerate().take(23) {
        match i {
            4 | 7 => assert_eq!(*b, b'-'),
            10 => assert_eq!(*b, b' '),
            13 | 16 => assert_eq!(*b, b':'),
            19 => assert_eq!(*b, b'.'),
            _ => assert!(b.is_ascii_digit(), "{stamp}"),
        }
    }
    assert!(lines[1].ends_with(&format!(
        ": {pid}: warning : virtlockd::logging::tests: careful error=boom"
    )));
    assert!(lines[2].ends_with(": error : virtlockd::logging::tests: code=8"));
    assert!(!lines.iter().any(|l| l.contains("hidden")));
    let meta = std::fs::metadata(&path).expect("metadata");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn file_output_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = temp_log(&dir, "v.log");
    std::fs::write(&path, "old line\n").expect("write");
    with_layer(
        settings_with(3, &format!("3:file:{}", path.display())),
        |_| {
            warn!("new line");
        },
    );
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], "old line");
    assert!(lines[1].ends_with("new line"));
}

#[test]
fn each_output_has_its_own_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let errors = temp_log(&dir, "errors.log");
    let all = temp_log(&dir, "all.log");
    let outputs = format!("4:file:{} 1:file:{}", errors.display(), all.display());
    with_layer(settings_with(1, &outputs), |_| {
        debug!("d");
        info!("i");
        warn!("w");
        error!("e");
    });
    assert_eq!(read_lines(&errors).len(), 1);
    assert!(read_lines(&errors)[0].contains(": error : "));
    assert_eq!(read_lines(&all).len(), 4);
}

fn emit_debug_connection() {
    debug!(target: "virtlockd::actors::connection", "conn debug");
}

fn emit_debug_other() {
    debug!(target: "virtlockd::lockspace", "other debug");
}

#[test]
fn filters_change_at_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = temp_log(&dir, "v.log");
    let settings = settings_with(3, &format!("1:file:{}", path.display()));
    with_layer(settings, |handle| {
        emit_debug_connection();
        emit_debug_other();
        handle.set_filters(parse_filters("1:connection").expect("filters"));
        emit_debug_connection();
        emit_debug_other();
        handle.set_filters(Vec::new());
        emit_debug_connection();
        handle.set_level(Priority::Debug).expect("level");
        emit_debug_other();
        assert_eq!(handle.settings().level.number(), 1);
    });
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].ends_with("virtlockd::actors::connection: conn debug"));
    assert!(lines[1].ends_with("virtlockd::lockspace: other debug"));
}

#[test]
fn filter_can_silence_a_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = temp_log(&dir, "v.log");
    let mut settings = settings_with(1, &format!("1:file:{}", path.display()));
    settings.filters = parse_filters("4:connection").expect("filters");
    with_layer(settings, |_| {
        emit_debug_connection();
        emit_debug_other();
        warn!(target: "virtlockd::actors::connection", "conn warning");
        error!(target: "virtlockd::actors::connection", "conn error");
    });
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].ends_with("other debug"));
    assert!(lines[1].ends_with("conn error"));
}

fn fd_open_for(path: &Path) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == path))
        })
        .unwrap_or(false)
}

#[test]
fn replacing_outputs_closes_old_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = temp_log(&dir, "first.log");
    let second = temp_log(&dir, "second.log");
    let settings = settings_with(3, &format!("3:file:{}", first.display()));
    let handle = with_layer(settings, |handle| {
        assert!(fd_open_for(&first));
        warn!("one");
        handle
            .set_outputs(parse_outputs(&format!("3:file:{}", second.display())).expect("o"))
            .expect("set_outputs");
        assert!(!fd_open_for(&first), "old file must be closed");
        assert!(fd_open_for(&second));
        warn!("two");
        // Same file again: reopened, still exactly one descriptor.
        handle
            .set_outputs(parse_outputs(&format!("3:file:{}", second.display())).expect("o"))
            .expect("same again");
        let count = std::fs::read_dir("/proc/self/fd")
            .expect("fd dir")
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == second))
            .count();
        assert_eq!(count, 1);
    });
    drop(handle);
    assert!(!fd_open_for(&second), "dropping the layer closes the file");
    assert_eq!(read_lines(&first).len(), 1);
    assert_eq!(read_lines(&second).len(), 1);
}

/// This process's kernel locks on `path` ("WRITE", "READ").
fn my_locks(path: &Path) -> Vec<String> {
    crate::proclocks::of_pid_on(std::process::id(), path)
        .map(|locks| locks.into_iter().map(|l| l.mode).collect())
        .unwrap_or_default()
}

#[test]
fn a_held_lease_is_refused_as_a_log_file() {
    use crate::lockspace::lease::{Lease, LockMode};
    let dir = tempfile::tempdir().expect("tempdir");
    let held = temp_log(&dir, "lease");
    let lease = Lease::open_or_create(&held).expect("lease");
    lease.lock(LockMode::Exclusive).expect("lock");
    let other = temp_log(&dir, "v.log");
    let settings = settings_with(3, &format!("3:file:{}", other.display()));
    with_layer(settings, |handle| {
        let before = handle.settings();
        let err = handle
            .set_outputs(parse_outputs(&format!("3:file:{}", held.display())).expect("o"))
            .expect_err("a held lease must be refused");
        assert!(matches!(err, LogError::HeldLease { .. }), "{err:?}");
        assert!(err.is_invalid_argument());
        assert_eq!(handle.settings(), before);
        // Replacing outputs again closes whatever the refused change opened.
        handle.set_outputs(Vec::new()).expect("default outputs");
    });
    assert_eq!(my_locks(&held), ["WRITE"]);
    drop(lease);
    assert!(my_locks(&held).is_empty());
}

#[test]
fn a_log_file_leased_later_is_not_closed_under_the_lease() {
    use crate::lockspace::lease::{Lease, LockMode};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = temp_log(&dir, "v.log");
    let settings = settings_with(3, &format!("3:file:{}", path.display()));
    let handle = with_layer(settings, |handle| {
        // A lease taken on the open log file (as a lease adopted in a live
        // upgrade would be), then the log moves elsewhere.
        let lease = Lease::open_existing(&path).expect("lease");
        lease.lock(LockMode::Exclusive).expect("lock");
        handle.set_outputs(Vec::new()).expect("default outputs");
        assert_eq!(
            my_locks(&path),
            ["WRITE"],
            "closing the log dropped the lock"
        );
        assert!(fd_open_for(&path));
        drop(lease);
        // The log's fd was kept with the lease and closed with it.
        assert!(my_locks(&path).is_empty());
        assert!(!fd_open_for(&path));
    });
    drop(handle);
}

#[test]
fn failed_output_change_keeps_the_old_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = temp_log(&dir, "v.log");
    let blocker = temp_log(&dir, "not-a-dir");
    std::fs::write(&blocker, "").expect("write");
    let settings = settings_with(3, &format!("3:file:{}", path.display()));
    with_layer(settings, |handle| {
        let before = handle.settings();
        let bad =
            parse_outputs(&format!("3:stderr 3:file:{}/x.log", blocker.display())).expect("parses");
        let err = handle.set_outputs(bad).expect_err("cannot open");
        assert!(matches!(err, LogError::Open { .. }), "{err:?}");
        assert!(!err.is_invalid_argument());
        assert_eq!(handle.settings(), before);
        warn!("still here");
    });
    assert_eq!(read_lines(&path).len(), 1);
}

#[test]
fn empty_outputs_revert_to_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = temp_log(&dir, "v.log");
    let default = temp_log(&dir, "default.log");
    let settings = LogSettings {
        level: p(3),
        filters: Vec::new(),
        outputs: parse_outputs(&format!("3:file:{}", path.display())).expect("o"),
        default_outputs: parse_outputs(&format!("3:file:{}", default.display())).expect("d"),
    };
    with_layer(settings, |handle| {
        handle.set_outputs(Vec::new()).expect("revert");
        assert_eq!(
            render_outputs(&handle.settings().outputs),
            format!("3:file:{}", default.display())
        );
        warn!("to default");
    });
    assert_eq!(read_lines(&path).len(), 0);
    assert_eq!(read_lines(&default).len(), 1);
}

#[test]
fn no_outputs_at_all_still_log_somewhere() {
    let (_layer, handle) = super::layer(LogSettings {
        outputs: Vec::new(),
        default_outputs: Vec::new(),
        ..LogSettings::default()
    })
    .expect("layer");
    assert_eq!(render_outputs(&handle.settings().outputs), "3:stderr");
}

#[test]
fn a_handle_whose_layer_is_gone_changes_nothing() {
    let (layer, handle) = super::layer(LogSettings::default()).expect("layer");
    handle
        .set_level(Priority::Error)
        .expect("the layer is there");
    assert_eq!(handle.settings().level, Priority::Error);
    drop(layer);
    assert!(matches!(
        handle.set_level(Priority::Debug),
        Err(LogError::Gone)
    ));
    assert!(matches!(
        handle.set_outputs(Vec::new()),
        Err(LogError::Gone)
    ));
    assert!(matches!(
        handle.set(LogSettings::default()),
        Err(LogError::Gone)
    ));
    assert_eq!(handle.settings(), LogSettings::default());
}

#[test]
fn write_failures_are_counted_not_fatal() {
    let handle = with_layer(settings_with(3, "3:file:/dev/full"), |_| {
        warn!("lost");
        error!("lost too");
        info!("not even tried");
    });
    assert_eq!(handle.dropped(), 2);
}

/// A layer whose single output is a datagram sink aimed at a test socket.
fn datagram_layer(level: u8, sink: Sink, dest: Destination) -> (LogLayer, LogHandle) {
    let settings = LogSettings {
        level: p(level),
        filters: Vec::new(),
        outputs: vec![out(level, dest)],
        default_outputs: Vec::new(),
    };
    layer_with(Logger::with_sinks(settings, vec![sink], Arc::default()))
}

fn receiver(dir: &tempfile::TempDir) -> (UnixDatagram, PathBuf) {
    let path = dir.path().join("sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    (socket, path)
}

#[test]
fn journald_output_sends_native_datagrams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, address) = receiver(&dir);
    let sink = Sink::Journald {
        socket: datagram_socket("journald").expect("socket"),
        address,
    };
    let (layer, handle) = datagram_layer(2, sink, Destination::Journald);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        debug!("not sent");
        info!(owner = 12, "acquired");
    });
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("datagram");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("MESSAGE=acquired owner=12\nPRIORITY=6\n"),
        "{text}"
    );
    assert!(text.contains("\nSYSLOG_IDENTIFIER=virtlockd\n"));
    assert!(text.contains("\nLIBVIRT_SOURCE=virtlockd::logging::tests\n"));
    assert!(text.contains("\nCODE_FILE="));
    socket.set_nonblocking(true).expect("nonblocking");
    assert!(
        socket.recv(&mut buf).is_err(),
        "the debug line was not sent"
    );
    assert_eq!(handle.dropped(), 0);
}

#[test]
fn syslog_output_sends_rfc3164_datagrams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, address) = receiver(&dir);
    let sink = Sink::Syslog {
        socket: datagram_socket("syslog").expect("socket"),
        address,
        ident: "lockd".into(),
    };
    let (layer, _handle) = datagram_layer(3, sink, Destination::Syslog("lockd".into()));
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        warn!("disk busy");
    });
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("datagram");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!(
            "<28>lockd[{}]: warning : virtlockd::logging::tests: disk busy",
            std::process::id()
        )
    );
}

#[test]
fn unreachable_socket_drops_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::Journald {
        socket: datagram_socket("journald").expect("socket"),
        address: dir.path().join("nobody-listens"),
    };
    let (layer, handle) = datagram_layer(3, sink, Destination::Journald);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        error!("into the void");
    });
    assert_eq!(handle.dropped(), 1);
}

#[test]
fn callsite_interest_follows_settings() {
    // The exact per-callsite interest: a debug callsite is "never" under the
    // default settings and becomes "always" once a filter wants it.
    let (layer, handle) = super::layer(settings_with(3, "1:stderr")).expect("layer");
    let meta = emit_meta();
    assert!(
        <LogLayer as Layer<tracing_subscriber::Registry>>::register_callsite(&layer, meta)
            .is_never()
    );
    handle.set_filters(parse_filters("1:interest_probe").expect("filters"));
    assert!(
        <LogLayer as Layer<tracing_subscriber::Registry>>::register_callsite(&layer, meta)
            .is_always()
    );
    assert_eq!(
        <LogLayer as Layer<tracing_subscriber::Registry>>::max_level_hint(&layer),
        Some(LevelFilter::TRACE)
    );
    handle.set_filters(Vec::new());
    assert_eq!(
        <LogLayer as Layer<tracing_subscriber::Registry>>::max_level_hint(&layer),
        Some(LevelFilter::WARN)
    );
}

/// Metadata of a static debug callsite with target `interest_probe`.
fn emit_meta() -> &'static Metadata<'static> {
    struct Probe;
    static PROBE: Probe = Probe;
    static META: Metadata<'static> = tracing::metadata! {
        name: "probe",
        target: "interest_probe",
        level: Level::DEBUG,
        fields: &[],
        callsite: &PROBE,
        kind: tracing::metadata::Kind::EVENT,
    };
    impl tracing::callsite::Callsite for Probe {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            &META
        }
    }
    &META
}

#[test]
fn env_inputs_from_process_does_not_panic() {
    let e = EnvInputs::from_process();
    // Whatever the machine, the probes give consistent answers.
    assert_eq!(
        e.journald_writable,
        nix::unistd::access(JOURNALD_SOCKET, nix::unistd::AccessFlags::W_OK).is_ok()
    );
}
