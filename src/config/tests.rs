//! Unit tests of `virtlockd.conf` parsing: libvirt's syntax, types, ranges and texts.

use super::*;

fn parse(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
    Config::parse_str(text, "test.conf")
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok((cfg, _)) => cfg,
        Err(e) => panic!("unexpected error for {text:?}: {e}"),
    }
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(cfg) => panic!("expected an error for {text:?}, got {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_text_gives_defaults() {
    let (cfg, warnings) = parse("").expect("empty");
    assert_eq!(cfg, Config::default());
    assert!(warnings.is_empty());
    assert_eq!(cfg.max_clients, 1024);
    assert_eq!(cfg.admin_max_clients, 5000);
    assert_eq!(
        ok("\n\n   \n# only comments\n\t# more\n"),
        Config::default()
    );
}

#[test]
fn libvirt_augeas_sample_parses() {
    // src/locking/test_virtlockd.aug.in
    let text = "log_level = 3\n\
                log_filters=\"1:locking 4:object 4:json 4:event 1:util\"\n\
                log_outputs=\"3:syslog:virtlockd\"\n\
                max_clients = 1024\n\
                admin_max_clients = 5\n";
    let (cfg, warnings) = parse(text).expect("libvirt's sample");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        cfg,
        Config {
            log_level: Some(3),
            log_filters: Some("1:locking 4:object 4:json 4:event 1:util".into()),
            log_outputs: Some("3:syslog:virtlockd".into()),
            max_clients: 1024,
            admin_max_clients: 5,
            ..Config::default()
        }
    );
}

#[test]
fn lease_check_settings() {
    let d = Config::default();
    assert_eq!(
        (d.lease_check_interval, d.lease_loss_action),
        (5, LossAction::Fence)
    );
    let cfg = ok("lease_check_interval = 0\nlease_loss_action = \"log\"\n");
    assert_eq!(
        (cfg.lease_check_interval, cfg.lease_loss_action),
        (0, LossAction::Log)
    );
    assert_eq!(
        ok("lease_loss_action = 'fence'").lease_loss_action,
        LossAction::Fence
    );
    assert_eq!(
        err("lease_loss_action = \"kill\""),
        "test.conf: 'lease_loss_action' must be one of \"fence\", \"log\", not 'kill'"
    );
    assert_eq!(
        err("lease_loss_action = 1"),
        "test.conf: expected a string for 'lease_loss_action' parameter"
    );
    assert_eq!(
        err("lease_check_interval = 86401"),
        "test.conf: value for 'lease_check_interval' parameter must be in range 0:86400"
    );
    assert_eq!(
        err("lease_check_interval = -5"),
        "test.conf: expected an unsigned integer for 'lease_check_interval' parameter"
    );
}

#[test]
fn crash_safe_is_0_or_1_and_unset_by_default() {
    assert_eq!(Config::default().crash_safe, None);
    assert_eq!(ok("crash_safe = 1").crash_safe, Some(true));
    assert_eq!(ok("crash_safe = 0").crash_safe, Some(false));
    assert_eq!(ok("crash_safe = +1").crash_safe, Some(true));
    assert_eq!(ok("max_clients = 3").crash_safe, None);
    // Errors name the file, the line and the key.
    assert_eq!(
        err("max_clients = 3\ncrash_safe = 2\n"),
        "test.conf:2: value for 'crash_safe' parameter must be in range 0:1"
    );
    assert_eq!(
        err("\n\ncrash_safe = -1"),
        "test.conf:3: expected an unsigned integer for 'crash_safe' parameter"
    );
    assert_eq!(
        err("crash_safe = \"1\""),
        "test.conf:1: expected an unsigned integer for 'crash_safe' parameter"
    );
    assert_eq!(
        err("crash_safe = [1]"),
        "test.conf:1: expected an unsigned integer for 'crash_safe' parameter"
    );
    // The first occurrence wins, as for every key.
    let (cfg, warnings) = parse("crash_safe = 0\ncrash_safe = 1\n").expect("duplicate");
    assert_eq!(cfg.crash_safe, Some(false));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn crash_safe_comes_from_the_file_then_the_environment() {
    let unset = Config::default();
    let on = ok("crash_safe = 1");
    let off = ok("crash_safe = 0");
    let wanted = |cfg: &Config, env: Option<&str>| {
        let choice = crash_safe_wanted(cfg, env);
        (choice.wanted, choice.warning.is_some())
    };
    // The environment decides only when the file does not.
    assert_eq!(wanted(&unset, None), (false, false));
    assert_eq!(wanted(&unset, Some("1")), (true, false));
    assert_eq!(wanted(&unset, Some("0")), (false, false));
    assert_eq!(wanted(&unset, Some("")), (false, false));
    assert_eq!(wanted(&off, Some("1")), (false, false));
    assert_eq!(wanted(&on, None), (true, false));
    assert_eq!(wanted(&on, Some("0")), (true, false));
    assert_eq!(wanted(&on, Some("yes")), (true, false));
    // Anything but 0 or 1 is off, and said so.
    for odd in ["yes", "true", "2", " 1", "1\n", "on"] {
        let choice = crash_safe_wanted(&unset, Some(odd));
        assert!(!choice.wanted, "{odd:?}");
        let warning = choice.warning.expect("a warning");
        assert!(
            warning.starts_with(&format!("{CRASH_SAFE_ENV}={odd:?} is neither 0 nor 1")),
            "{warning}"
        );
    }
}

#[test]
fn shipped_sample_parses_to_defaults() {
    let text = include_str!("../../virtlockd.conf");
    let (cfg, warnings) = parse(text).expect("shipped sample");
    assert_eq!(cfg, Config::default());
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn shipped_sample_uncommented_is_valid() {
    // Every "#key = value" line of the sample must be a valid setting once
    // uncommented, and the limits shown must be the defaults.
    let text: String = include_str!("../../virtlockd.conf")
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest
                    .split('=')
                    .next()
                    .is_some_and(|k| KNOWN_KEYS.contains(&k.trim()) && !k.starts_with(' ')) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (cfg, warnings) = parse(&text).expect("uncommented sample");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cfg.max_clients, DEFAULT_MAX_CLIENTS);
    assert_eq!(cfg.admin_max_clients, DEFAULT_ADMIN_MAX_CLIENTS);
    assert_eq!(cfg.log_level, Some(3));
    assert!(cfg.log_filters.is_some());
    assert!(cfg.log_outputs.is_some());
    assert_eq!(cfg.crash_safe, Some(false), "the sample shows the default");
    for spec in [cfg.log_filters, cfg.log_outputs].into_iter().flatten() {
        assert!(!spec.is_empty());
    }
}

#[test]
fn quotes_comments_and_blanks() {
    let cfg = ok("# leading comment\n\
                  \n\
                  log_filters = '1:foo 4:bar'   # trailing comment\n\
                  \tlog_outputs=\"1:file:/tmp/x#y.log\"#no space before comment\n\
                  max_clients=7;admin_max_clients = 8 ; \n");
    assert_eq!(cfg.log_filters.as_deref(), Some("1:foo 4:bar"));
    assert_eq!(cfg.log_outputs.as_deref(), Some("1:file:/tmp/x#y.log"));
    assert_eq!(cfg.max_clients, 7);
    assert_eq!(cfg.admin_max_clients, 8);
}

#[test]
fn quote_kinds_do_not_end_each_other() {
    let cfg = ok("log_filters = \"it's\"\nlog_outputs = 'say \"hi\"'\n");
    assert_eq!(cfg.log_filters.as_deref(), Some("it's"));
    assert_eq!(cfg.log_outputs.as_deref(), Some("say \"hi\""));
}

#[test]
fn triple_quoted_string_spans_lines() {
    let cfg = ok("log_outputs = \"\"\"1:stderr\n3:file:/tmp/x\"\"\"\nmax_clients = 3\n");
    assert_eq!(cfg.log_outputs.as_deref(), Some("1:stderr\n3:file:/tmp/x"));
    assert_eq!(cfg.max_clients, 3);
}

#[test]
fn empty_string_is_kept() {
    assert_eq!(ok("log_outputs = \"\"").log_outputs.as_deref(), Some(""));
}

#[test]
fn crlf_line_ends() {
    let cfg = ok("max_clients = 9\r\nlog_level = 1\r\n");
    assert_eq!(cfg.max_clients, 9);
    assert_eq!(cfg.log_level, Some(1));
}

#[test]
fn signed_and_zero_numbers() {
    assert_eq!(ok("max_clients = +12").max_clients, 12);
    assert_eq!(ok("max_clients = -0").max_clients, 0);
    assert_eq!(ok("log_level = 0").log_level, None);
    assert_eq!(ok("max_clients = 4294967295").max_clients, 4_294_967_295);
}

#[test]
fn lists_parse_and_are_not_strings() {
    let text = "foo_list = [ \"a\", 'b',\n  3, -4, [ ], # comment in list\n  \"c\", ]\n";
    let entries = virconf::parse(text).expect("list");
    assert_eq!(
        entries[0].value,
        ConfValue::List(vec![
            ConfValue::Str("a".into()),
            ConfValue::Str("b".into()),
            ConfValue::UInt(3),
            ConfValue::Int(-4),
            ConfValue::List(vec![]),
            ConfValue::Str("c".into()),
        ])
    );
    // An unknown list-valued key is only a warning.
    let (_, warnings) = parse(text).expect("unknown list key");
    assert_eq!(
        warnings,
        ["test.conf:1: unknown setting 'foo_list' ignored"]
    );
    assert_eq!(
        err("log_outputs = [ \"1:stderr\" ]"),
        "test.conf: expected a string for 'log_outputs' parameter"
    );
    assert_eq!(
        virconf::parse("x = []").expect("empty list")[0].value,
        ConfValue::List(vec![])
    );
}

#[test]
fn wrong_types_use_libvirts_messages() {
    assert_eq!(
        err("max_clients = \"10\""),
        "test.conf: expected an unsigned integer for 'max_clients' parameter"
    );
    assert_eq!(
        err("admin_max_clients = -1"),
        "test.conf: expected an unsigned integer for 'admin_max_clients' parameter"
    );
    assert_eq!(
        err("log_level = \"3\""),
        "test.conf: expected an unsigned integer for 'log_level' parameter"
    );
    assert_eq!(
        err("log_outputs = 3"),
        "test.conf: expected a string for 'log_outputs' parameter"
    );
    assert_eq!(
        err("log_filters = 1"),
        "test.conf: expected a string for 'log_filters' parameter"
    );
    assert!(matches!(
        parse("max_clients = [1]"),
        Err(ConfigError::WrongType { ref key, expected: "an unsigned integer", .. }) if key == "max_clients"
    ));
}

#[test]
fn out_of_range_values() {
    assert_eq!(
        err("log_level = 5"),
        "test.conf: value for 'log_level' parameter must be in range 0:4"
    );
    assert_eq!(
        err("max_clients = 4294967296"),
        "test.conf: value for 'max_clients' parameter must be in range 0:4294967295"
    );
    assert_eq!(
        err("max_clients = 99999999999999999999"),
        "configuration file syntax error: test.conf:1: number out of range"
    );
}

#[test]
fn unknown_and_duplicate_keys_warn() {
    let (cfg, warnings) = parse(
        "max_clients = 10\n\
         listen_tcp = 1\n\
         max_clients = 20\n\
         Log_Level = 1\n",
    )
    .expect("warnings only");
    assert_eq!(
        cfg.max_clients, 10,
        "the first occurrence wins, as in libvirt"
    );
    assert_eq!(cfg.log_level, None, "keys are case-sensitive");
    assert_eq!(
        warnings,
        [
            "test.conf:2: unknown setting 'listen_tcp' ignored",
            "test.conf:3: duplicate setting 'max_clients' ignored, the one on line 1 is used",
            "test.conf:4: unknown setting 'Log_Level' ignored",
        ]
    );
}

#[test]
fn warnings_of_one_line_come_out_in_the_same_order_every_time() {
    // Found by fuzzing (the keys once came in a hash table's random order):
    // settings that share a line are warned about in the file's order.
    for _ in 0..16 {
        let (_, warnings) = parse("zz = 0; qq = 1; mm = 2\rkk = 3\n").expect("warnings only");
        assert_eq!(
            warnings,
            [
                "test.conf:1: unknown setting 'zz' ignored",
                "test.conf:1: unknown setting 'qq' ignored",
                "test.conf:1: unknown setting 'mm' ignored",
                "test.conf:1: unknown setting 'kk' ignored",
            ]
        );
    }
}

#[test]
fn zero_client_limit_warns() {
    let (cfg, warnings) = parse("\nmax_clients = 0\n").expect("zero");
    assert_eq!(cfg.max_clients, 0);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].starts_with("test.conf:2: max_clients = 0"));
}

#[test]
fn syntax_errors_name_file_and_line() {
    let cases = [
        (
            "max_clients = 1\nlog_level 3\n",
            2,
            Some("log_level"),
            "expecting an assignment",
        ),
        (
            "\n\nlog_level =\n",
            3,
            Some("log_level"),
            "expecting a value",
        ),
        (
            "log_level = \n3\n",
            1,
            Some("log_level"),
            "expecting a value",
        ),
        (
            "log_outputs = \"1:stderr\nmax_clients = 1\n",
            1,
            Some("log_outputs"),
            "unterminated string",
        ),
        (
            "a = 1\nlog_outputs = '1:stderr\n",
            2,
            Some("log_outputs"),
            "unterminated string",
        ),
        (
            "log_outputs = \"\"\"1:stderr\n\n",
            3,
            Some("log_outputs"),
            "unterminated string",
        ),
        (
            "max_clients = 0x10\n",
            1,
            Some("max_clients"),
            "expecting a separator",
        ),
        (
            "max_clients = 10 20\n",
            1,
            Some("max_clients"),
            "expecting a separator",
        ),
        (
            "log_level = -\n",
            1,
            Some("log_level"),
            "unterminated number",
        ),
        (
            "log_level = true\n",
            1,
            Some("log_level"),
            "expecting a value",
        ),
        ("= 3\n", 1, None, "expecting a name"),
        ("_x = 3\n", 1, None, "expecting a name"),
        ("log.level = 3\n", 1, Some("log"), "expecting an assignment"),
        (
            "x = [ 1 2 ]\n",
            1,
            Some("x"),
            "expecting a separator in list",
        ),
        ("x = [ 1,\n 2\n", 3, Some("x"), "list is not closed with ]"),
    ];
    for (text, line, key, what) in cases {
        match parse(text) {
            Err(ConfigError::Syntax {
                origin,
                line: l,
                key: k,
                what: w,
            }) => {
                assert_eq!(origin, "test.conf", "{text:?}");
                assert_eq!((l, k.as_deref(), w.as_str()), (line, key, what), "{text:?}");
            }
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }
    assert_eq!(
        err("max_clients = 1\nlog_level 3\n"),
        "configuration file syntax error: test.conf:2: expecting an assignment"
    );
}

#[test]
fn load_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("virtlockd.conf");
    let (cfg, warnings) = Config::load(&path, false).expect("implicit missing file");
    assert_eq!(cfg, Config::default());
    assert!(warnings.is_empty());
    match Config::load(&path, true) {
        Err(ConfigError::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io error, got {other:?}"),
    }
    let msg = Config::load(&path, true)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with(&format!("Failed to open file '{}'", path.display())));
}

#[test]
fn load_reads_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("virtlockd.conf");
    std::fs::write(&path, "max_clients = 77\nbogus = 'x'\n").expect("write");
    let (cfg, warnings) = Config::load(&path, true).expect("load");
    assert_eq!(cfg.max_clients, 77);
    assert_eq!(
        warnings,
        [format!(
            "{}:2: unknown setting 'bogus' ignored",
            path.display()
        )]
    );

    let refusals = [
        (
            "max_clients = 'many'\n",
            format!(
                "{}: expected an unsigned integer for 'max_clients' parameter",
                path.display()
            ),
        ),
        (
            "\nmax_clients = \n",
            format!(
                "configuration file syntax error: {}:2: expecting a value",
                path.display()
            ),
        ),
    ];
    for (text, expected) in refusals {
        std::fs::write(&path, text).expect("write");
        let msg = Config::load(&path, false)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(msg, expected, "{text:?}");
    }
}

#[test]
fn load_directory_is_an_error_even_when_implicit() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Config::load(dir.path(), false),
        Err(ConfigError::Io { .. })
    ));
}

#[test]
fn load_rejects_huge_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.conf");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(MAX_CONFIG_FILE_SIZE + 1).expect("set_len");
    assert!(matches!(
        Config::load(&path, true),
        Err(ConfigError::TooLarge { .. })
    ));
}

#[test]
fn non_utf8_bytes_in_comments_are_tolerated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.conf");
    std::fs::write(&path, b"# caf\xe9\nmax_clients = 5\n").expect("write");
    assert_eq!(Config::load(&path, true).expect("load").0.max_clients, 5);
}

#[test]
fn format_values_reach_config_crate() {
    let built = config::Config::builder()
        .add_source(config::File::from_str(
            "a = 1\nb = -2\nc = 'x'\nd = [1, 'y']\na = 5\n",
            VirConfFormat,
        ))
        .build()
        .expect("build");
    assert_eq!(built.get_int("a").expect("a"), 1, "the first 'a' wins");
    assert_eq!(built.get_int("b").expect("b"), -2);
    assert_eq!(built.get_string("c").expect("c"), "x");
    assert_eq!(built.get_array("d").expect("d").len(), 2);
    // The crate's own type errors name the key and, through the origin, the line.
    let wrong = built.get_int("c").expect_err("a string is no integer");
    assert!(wrong.to_string().contains("`c` in line 3"), "{wrong}");
}

#[test]
fn format_syntax_errors_carry_key_and_line() {
    let built = config::Config::builder()
        .add_source(config::File::from_str("a = 1\nb = \n", VirConfFormat))
        .build();
    match built {
        Err(config::ConfigError::FileParse { cause, .. }) => {
            let syntax = cause.downcast_ref::<SyntaxError>().expect("a SyntaxError");
            assert_eq!(
                (syntax.line, syntax.key.as_deref(), syntax.what),
                (2, Some("b"), "expecting a value")
            );
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn parsed_text_keeps_lines_and_repeats() {
    let doc = VirConf::parse("a = 1\nb = 2\na = 3\nb = 4\n", Some("x.conf")).expect("parse");
    assert_eq!(doc.line_of("b"), Some(2));
    assert_eq!(doc.line_of("c"), None);
    let names: Vec<_> = doc.settings().map(|e| (e.name.as_str(), e.line)).collect();
    assert_eq!(names, [("a", 1), ("b", 2)]);
    assert_eq!(
        doc.duplicates(),
        [
            Duplicate {
                name: "a".into(),
                line: 3,
                first_line: 1
            },
            Duplicate {
                name: "b".into(),
                line: 4,
                first_line: 2
            },
        ]
    );
}
