//! `virtlockd.conf`: libvirt's own configuration syntax (virConf), read through the
//! `config` crate with a custom [`config::Format`], and turned into a typed [`Config`]
//! with libvirt's error texts (spec §9.3).
//!
//! The syntax is that of `src/util/virconf.c`:
//!
//! * one `name = value` per line (or several separated by `;`); names start with an
//!   ASCII letter and continue with letters, digits and `_`;
//! * values are decimal integers (optionally signed; no hex, as in libvirt), strings in
//!   `"double"`, `'single'` or `"""triple"""` quotes (no escapes; only triple-quoted
//!   strings may span lines), or lists `[ v, v, ... ]` that may span lines;
//! * `#` starts a comment outside strings; blank lines are fine.
//!
//! Like libvirt, the first occurrence of a repeated key wins, a missing implicit file
//! means defaults, and a value of the wrong type is fatal. Unlike libvirt, unknown and
//! repeated keys produce warnings instead of being ignored silently.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use config::{FileStoredFormat, Format, Map, Value, ValueKind};

/// Lock server connection limit when `max_clients` is not set (libvirt's code default).
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
/// Admin server connection limit when `admin_max_clients` is not set. libvirt's sample
/// config says 5, but its code default is 5000 (spec §9.3).
pub const DEFAULT_ADMIN_MAX_CLIENTS: usize = 5000;
/// Seconds between revalidations of leases on network storage (`lease_check_interval`).
pub const DEFAULT_LEASE_CHECK_INTERVAL: u64 = 5;
/// Largest `lease_check_interval` accepted: a day.
pub const MAX_LEASE_CHECK_INTERVAL: u64 = 86_400;

/// What the daemon does when a lease on network storage is found lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossAction {
    /// Terminate the owner (SIGTERM, then SIGKILL), as on an owner's disconnect.
    #[default]
    Fence,
    /// Only log it.
    Log,
}

impl LossAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fence => "fence",
            Self::Log => "log",
        }
    }
}

/// Every key `virtlockd.conf` understands; anything else draws a warning.
pub const KNOWN_KEYS: &[&str] = &[
    "log_level",
    "log_filters",
    "log_outputs",
    "max_clients",
    "admin_max_clients",
    "lease_check_interval",
    "lease_loss_action",
];

/// libvirt refuses to read configuration files larger than this (`MAX_CONFIG_FILE_SIZE`).
pub const MAX_CONFIG_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// The settings of `virtlockd.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Default log priority, 1 (debug) ..= 4 (error); `None` keeps the built-in default
    /// (3, warning). A `log_level = 0` in the file also reads as `None`, as in libvirt.
    pub log_level: Option<u8>,
    /// libvirt log filters (`"1:foo 4:bar"`), unparsed; see `crate::logging`.
    pub log_filters: Option<String>,
    /// libvirt log outputs (`"3:stderr 1:file:/x"`), unparsed; see `crate::logging`.
    pub log_outputs: Option<String>,
    /// Connection limit of the lock server.
    pub max_clients: usize,
    /// Connection limit of the admin server.
    pub admin_max_clients: usize,
    /// Seconds between revalidations of leases on network storage; 0 = never.
    pub lease_check_interval: u64,
    /// What a lost lease triggers.
    pub lease_loss_action: LossAction,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            log_level: None,
            log_filters: None,
            log_outputs: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            admin_max_clients: DEFAULT_ADMIN_MAX_CLIENTS,
            lease_check_interval: DEFAULT_LEASE_CHECK_INTERVAL,
            lease_loss_action: LossAction::default(),
        }
    }
}

/// Why `virtlockd.conf` could not be used. The texts follow libvirt's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing explicit file, permissions, a directory, ...).
    #[error("Failed to open file '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_FILE_SIZE`].
    #[error("Failed to open file '{}': file is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    /// The text is not virConf syntax.
    #[error("configuration file syntax error: {origin}:{line}: {what}")]
    Syntax {
        origin: String,
        line: usize,
        what: String,
    },
    /// A known key has a value of the wrong type, e.g.
    /// `/etc/libvirt/virtlockd.conf: expected an unsigned integer for 'max_clients' parameter`.
    #[error("{origin}: expected {expected} for '{key}' parameter")]
    WrongType {
        origin: String,
        key: String,
        /// `"an unsigned integer"` or `"a string"`.
        expected: &'static str,
    },
    /// A known key has a value of the right type but outside its range.
    #[error("{origin}: value for '{key}' parameter must be in range {min}:{max}")]
    OutOfRange {
        origin: String,
        key: String,
        min: u64,
        max: u64,
    },
    /// A string key has a value outside its set of choices.
    #[error("{origin}: '{key}' must be one of {choices}, not '{value}'")]
    BadChoice {
        origin: String,
        key: String,
        value: String,
        choices: &'static str,
    },
    /// Any other failure reported by the `config` crate.
    #[error("{origin}: {message}")]
    Other { origin: String, message: String },
}

impl Config {
    /// Reads `path`. A missing file is fine (defaults) unless `explicit` (given with
    /// `-f`): then it is an error, as are unreadable files even when implicit (libvirt
    /// only tolerates `ENOENT`).
    ///
    /// Returns the config and warnings (e.g. unknown keys) for the caller to log.
    pub fn load(path: &Path, explicit: bool) -> Result<(Config, Vec<String>), ConfigError> {
        let text = match read_limited(path) {
            Ok(text) => text,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok((Config::default(), Vec::new()));
            }
            Err(ReadError::Io(source)) => {
                return Err(ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(ReadError::TooLarge) => {
                return Err(ConfigError::TooLarge {
                    path: path.to_path_buf(),
                    max: MAX_CONFIG_FILE_SIZE,
                })
            }
        };
        Self::parse_str(&text, &path.display().to_string())
    }

    /// Parses config text; `origin` names it in errors and warnings (normally the path).
    pub fn parse_str(text: &str, origin: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let format = VirConfFormat::default();
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, format.clone()))
            .build()
            .map_err(|e| from_config_error(e, origin))?;
        let report = format.report();
        let table = match built.cache.kind {
            ValueKind::Table(table) => table,
            _ => Map::new(),
        };

        // (line, text) so that warnings come out in file order whatever the map order.
        let mut warnings: Vec<(usize, String)> = Vec::new();
        for dup in &report.duplicates {
            warnings.push((
                dup.line,
                format!(
                    "{origin}:{}: duplicate setting '{}' ignored, the one on line {} is used",
                    dup.line, dup.name, dup.first_line
                ),
            ));
        }
        for key in table.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            let line = report.lines.get(key).copied().unwrap_or(0);
            warnings.push((
                line,
                format!("{origin}:{line}: unknown setting '{key}' ignored"),
            ));
        }

        // Same order as libvirt's virLockDaemonConfigLoadOptions, so that a file with
        // several bad keys reports the same one first.
        let mut cfg = Config::default();
        if let Some(level) = get_uint(&table, "log_level", origin)? {
            if level > 4 {
                return Err(out_of_range(origin, "log_level", 4));
            }
            cfg.log_level = u8::try_from(level).ok().filter(|&l| l != 0);
        }
        cfg.log_filters = get_string(&table, "log_filters", origin)?;
        cfg.log_outputs = get_string(&table, "log_outputs", origin)?;
        for (key, slot) in [
            ("max_clients", &mut cfg.max_clients),
            ("admin_max_clients", &mut cfg.admin_max_clients),
        ] {
            if let Some(n) = get_uint(&table, key, origin)? {
                if n > u64::from(u32::MAX) {
                    return Err(out_of_range(origin, key, u64::from(u32::MAX)));
                }
                *slot = usize::try_from(n).map_err(|_| out_of_range(origin, key, 0))?;
                if n == 0 {
                    let line = report.lines.get(key).copied().unwrap_or(0);
                    warnings.push((
                        line,
                        format!("{origin}:{line}: {key} = 0: that server will accept no clients"),
                    ));
                }
            }
        }
        if let Some(n) = get_uint(&table, "lease_check_interval", origin)? {
            if n > MAX_LEASE_CHECK_INTERVAL {
                return Err(out_of_range(
                    origin,
                    "lease_check_interval",
                    MAX_LEASE_CHECK_INTERVAL,
                ));
            }
            cfg.lease_check_interval = n;
        }
        if let Some(a) = get_string(&table, "lease_loss_action", origin)? {
            cfg.lease_loss_action = match a.as_str() {
                "fence" => LossAction::Fence,
                "log" => LossAction::Log,
                _ => {
                    return Err(ConfigError::BadChoice {
                        origin: origin.to_string(),
                        key: "lease_loss_action".into(),
                        value: a,
                        choices: "\"fence\", \"log\"",
                    })
                }
            };
        }

        // By line, then by text: several settings can share a line (`a = 1; b = 2`,
        // or lines ended by CR) and the table's key order is random per parse.
        warnings.sort();
        Ok((cfg, warnings.into_iter().map(|(_, w)| w).collect()))
    }
}

fn out_of_range(origin: &str, key: &str, max: u64) -> ConfigError {
    ConfigError::OutOfRange {
        origin: origin.to_string(),
        key: key.to_string(),
        min: 0,
        max,
    }
}

/// libvirt's `virConfGetValueUInt`: only a non-negative integer will do.
fn get_uint(
    table: &Map<String, Value>,
    key: &str,
    origin: &str,
) -> Result<Option<u64>, ConfigError> {
    match table.get(key).map(|v| &v.kind) {
        None => Ok(None),
        Some(ValueKind::U64(n)) => Ok(Some(*n)),
        Some(_) => Err(ConfigError::WrongType {
            origin: origin.to_string(),
            key: key.to_string(),
            expected: "an unsigned integer",
        }),
    }
}

/// libvirt's `virConfGetValueString`: only a quoted string will do (no lists, no numbers).
fn get_string(
    table: &Map<String, Value>,
    key: &str,
    origin: &str,
) -> Result<Option<String>, ConfigError> {
    match table.get(key).map(|v| &v.kind) {
        None => Ok(None),
        Some(ValueKind::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ConfigError::WrongType {
            origin: origin.to_string(),
            key: key.to_string(),
            expected: "a string",
        }),
    }
}

fn from_config_error(e: config::ConfigError, origin: &str) -> ConfigError {
    if let config::ConfigError::FileParse { cause, .. } = &e {
        if let Some(syntax) = cause.downcast_ref::<SyntaxError>() {
            return ConfigError::Syntax {
                origin: origin.to_string(),
                line: syntax.line,
                what: syntax.what.to_string(),
            };
        }
    }
    ConfigError::Other {
        origin: origin.to_string(),
        message: e.to_string(),
    }
}

enum ReadError {
    Io(std::io::Error),
    TooLarge,
}

fn read_limited(path: &Path) -> Result<String, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut buf = Vec::new();
    file.take(MAX_CONFIG_FILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if buf.len() as u64 > MAX_CONFIG_FILE_SIZE {
        return Err(ReadError::TooLarge);
    }
    // libvirt treats the file as bytes; a stray Latin-1 byte in a comment must not
    // make the whole file unreadable.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A virConf syntax error: the line (1-based) and libvirt's description of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct SyntaxError {
    pub line: usize,
    pub what: &'static str,
}

/// A key that appeared more than once; libvirt uses the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub name: String,
    pub line: usize,
    pub first_line: usize,
}

/// What the last parse saw besides the values: where each key was, and repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseReport {
    pub lines: HashMap<String, usize>,
    pub duplicates: Vec<Duplicate>,
}

/// libvirt's virConf syntax as a [`config::Format`]. Integers become `U64` (or `I64`
/// when negative, so that they fail an unsigned lookup as in libvirt), strings
/// `String`, lists `Array`.
///
/// `config` only hands back the merged values, so key lines and repeated keys are
/// recorded on the side in a report shared by clones of the format.
#[derive(Debug, Clone, Default)]
pub struct VirConfFormat {
    report: Arc<Mutex<ParseReport>>,
}

impl VirConfFormat {
    /// Key lines and duplicates from the most recent parse through this format.
    pub fn report(&self) -> ParseReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Format for VirConfFormat {
    fn parse(
        &self,
        uri: Option<&String>,
        text: &str,
    ) -> Result<Map<String, Value>, Box<dyn std::error::Error + Send + Sync>> {
        let entries = parse_virconf(text)?;
        let mut map = Map::new();
        let mut report = ParseReport::default();
        for entry in entries {
            if let Some(&first_line) = report.lines.get(&entry.name) {
                report.duplicates.push(Duplicate {
                    name: entry.name,
                    line: entry.line,
                    first_line,
                });
                continue;
            }
            report.lines.insert(entry.name.clone(), entry.line);
            map.insert(entry.name, to_value(uri, entry.value));
        }
        *self.report.lock().unwrap_or_else(PoisonError::into_inner) = report;
        Ok(map)
    }
}

impl FileStoredFormat for VirConfFormat {
    fn file_extensions(&self) -> &'static [&'static str] {
        &["conf"]
    }
}

fn to_value(uri: Option<&String>, value: ConfValue) -> Value {
    match value {
        ConfValue::UInt(n) => Value::new(uri, ValueKind::U64(n)),
        ConfValue::Int(n) => Value::new(uri, ValueKind::I64(n)),
        ConfValue::Str(s) => Value::new(uri, ValueKind::String(s)),
        ConfValue::List(items) => Value::new(
            uri,
            ValueKind::Array(items.into_iter().map(|v| to_value(uri, v)).collect()),
        ),
    }
}

/// One virConf value, keeping libvirt's distinction between signed and unsigned.
#[derive(Debug, Clone, PartialEq)]
enum ConfValue {
    UInt(u64),
    Int(i64),
    Str(String),
    List(Vec<ConfValue>),
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    value: ConfValue,
    line: usize,
}

fn parse_virconf(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        line: 1,
    }
    .parse_all()
}

/// A cursor over the text in the manner of virconf.c, which the error texts and line
/// numbers follow.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) {
        if self.peek() == Some(b'\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    fn err(&self, what: &'static str) -> SyntaxError {
        SyntaxError {
            line: self.line,
            what,
        }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
    }

    fn skip_to_eol(&mut self) {
        while !matches!(self.peek(), None | Some(b'\n' | b'\r')) {
            self.bump();
        }
    }

    /// Whitespace, line ends and comments: between statements and inside lists.
    fn skip_space_and_comments(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_ascii_whitespace() || c == b'\x0b' => self.bump(),
                Some(b'#') => self.skip_to_eol(),
                _ => return,
            }
        }
    }

    fn parse_all(mut self) -> Result<Vec<Entry>, SyntaxError> {
        let mut entries = Vec::new();
        loop {
            self.skip_space_and_comments();
            if self.peek().is_none() {
                return Ok(entries);
            }
            let line = self.line;
            let name = self.parse_name()?;
            self.skip_blanks();
            if self.peek() != Some(b'=') {
                return Err(self.err("expecting an assignment"));
            }
            self.bump();
            self.skip_blanks();
            let value = self.parse_value()?;
            self.skip_blanks();
            if self.peek() == Some(b'#') {
                self.skip_to_eol();
            }
            match self.peek() {
                None | Some(b'\n' | b'\r') => {}
                Some(b';') => self.bump(),
                Some(_) => return Err(self.err("expecting a separator")),
            }
            entries.push(Entry { name, value, line });
        }
    }

    fn parse_name(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        if !self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            return Err(self.err("expecting a name"));
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.bump();
        }
        Ok(self.text[start..self.pos].to_string())
    }

    fn parse_value(&mut self) -> Result<ConfValue, SyntaxError> {
        match self.peek() {
            Some(b'"' | b'\'') => self.parse_string().map(ConfValue::Str),
            Some(b'[') => self.parse_list(),
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' => self.parse_number(),
            _ => Err(self.err("expecting a value")),
        }
    }

    fn parse_string(&mut self) -> Result<String, SyntaxError> {
        if self.text[self.pos..].starts_with("\"\"\"") {
            self.pos += 3;
            let start = self.pos;
            let Some(len) = self.text[start..].find("\"\"\"") else {
                while self.peek().is_some() {
                    self.bump();
                }
                return Err(self.err("unterminated string"));
            };
            while self.pos < start + len {
                self.bump();
            }
            self.pos += 3;
            return Ok(self.text[start..start + len].to_string());
        }
        let quote = self.peek();
        self.bump();
        let start = self.pos;
        while !matches!(self.peek(), None | Some(b'\n' | b'\r')) && self.peek() != quote {
            self.bump();
        }
        if self.peek() != quote {
            return Err(self.err("unterminated string"));
        }
        let s = self.text[start..self.pos].to_string();
        self.bump();
        Ok(s)
    }

    fn parse_list(&mut self) -> Result<ConfValue, SyntaxError> {
        self.bump();
        self.skip_space_and_comments();
        let mut items = Vec::new();
        if !matches!(self.peek(), None | Some(b']')) {
            items.push(self.parse_value()?);
            self.skip_space_and_comments();
        }
        while !matches!(self.peek(), None | Some(b']')) {
            if self.peek() != Some(b',') {
                return Err(self.err("expecting a separator in list"));
            }
            self.bump();
            self.skip_space_and_comments();
            if self.peek() == Some(b']') {
                break;
            }
            items.push(self.parse_value()?);
            self.skip_space_and_comments();
        }
        if self.peek() != Some(b']') {
            return Err(self.err("list is not closed with ]"));
        }
        self.bump();
        Ok(ConfValue::List(items))
    }

    fn parse_number(&mut self) -> Result<ConfValue, SyntaxError> {
        let negative = self.peek() == Some(b'-');
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.bump();
        }
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(self.err("unterminated number"));
        }
        let mut magnitude: u64 = 0;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            // libvirt wraps around silently; a wrapped limit would be worse than a refusal.
            magnitude = magnitude
                .checked_mul(10)
                .and_then(|m| m.checked_add(u64::from(c - b'0')))
                .ok_or_else(|| self.err("number out of range"))?;
            self.bump();
        }
        if !negative || magnitude == 0 {
            return Ok(ConfValue::UInt(magnitude));
        }
        0i64.checked_sub_unsigned(magnitude)
            .map(ConfValue::Int)
            .ok_or_else(|| self.err("number out of range"))
    }
}

#[cfg(test)]
mod tests {
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
    fn shipped_sample_parses_to_defaults() {
        let text = include_str!("../virtlockd.conf");
        let (cfg, warnings) = parse(text).expect("shipped sample");
        assert_eq!(cfg, Config::default());
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn shipped_sample_uncommented_is_valid() {
        // Every "#key = value" line of the sample must be a valid setting once
        // uncommented, and the limits shown must be the defaults.
        let text: String = include_str!("../virtlockd.conf")
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
        let entries = parse_virconf(text).expect("list");
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
            parse_virconf("x = []").expect("empty list")[0].value,
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
        // Found by fuzzing: the unknown keys came in the table's random order.
        for _ in 0..16 {
            let (_, warnings) = parse("zz = 0; qq = 1; mm = 2\rkk = 3\n").expect("warnings only");
            assert_eq!(
                warnings,
                [
                    "test.conf:1: unknown setting 'kk' ignored",
                    "test.conf:1: unknown setting 'mm' ignored",
                    "test.conf:1: unknown setting 'qq' ignored",
                    "test.conf:1: unknown setting 'zz' ignored",
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
                "expecting an assignment",
            ),
            ("\n\nlog_level =\n", 3, "expecting a value"),
            ("log_level = \n3\n", 1, "expecting a value"),
            (
                "log_outputs = \"1:stderr\nmax_clients = 1\n",
                1,
                "unterminated string",
            ),
            ("a = 1\nlog_outputs = '1:stderr\n", 2, "unterminated string"),
            ("log_outputs = \"\"\"1:stderr\n\n", 3, "unterminated string"),
            ("max_clients = 0x10\n", 1, "expecting a separator"),
            ("max_clients = 10 20\n", 1, "expecting a separator"),
            ("log_level = -\n", 1, "unterminated number"),
            ("log_level = true\n", 1, "expecting a value"),
            ("= 3\n", 1, "expecting a name"),
            ("_x = 3\n", 1, "expecting a name"),
            ("log.level = 3\n", 1, "expecting an assignment"),
            ("x = [ 1 2 ]\n", 1, "expecting a separator in list"),
            ("x = [ 1,\n 2\n", 3, "list is not closed with ]"),
        ];
        for (text, line, what) in cases {
            match parse(text) {
                Err(ConfigError::Syntax {
                    origin,
                    line: l,
                    what: w,
                }) => {
                    assert_eq!(origin, "test.conf", "{text:?}");
                    assert_eq!((l, w.as_str()), (line, what), "{text:?}");
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

        std::fs::write(&path, "max_clients = 'many'\n").expect("write");
        let msg = Config::load(&path, false)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "{}: expected an unsigned integer for 'max_clients' parameter",
                path.display()
            )
        );

        std::fs::write(&path, "\nmax_clients = \n").expect("write");
        let msg = Config::load(&path, false)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "configuration file syntax error: {}:2: expecting a value",
                path.display()
            )
        );
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
        let format = VirConfFormat::default();
        let built = config::Config::builder()
            .add_source(config::File::from_str(
                "a = 1\nb = -2\nc = 'x'\nd = [1, 'y']\n",
                format.clone(),
            ))
            .build()
            .expect("build");
        assert_eq!(built.get_int("a").expect("a"), 1);
        assert_eq!(built.get_int("b").expect("b"), -2);
        assert_eq!(built.get_string("c").expect("c"), "x");
        assert_eq!(built.get_array("d").expect("d").len(), 2);
        let report = format.report();
        assert_eq!(report.lines.get("d"), Some(&4));
        assert!(report.duplicates.is_empty());
    }
}
