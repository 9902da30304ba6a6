//! libvirt's text forms of log filters (`level:match`) and outputs
//! (`level:destination[:data]`): parsed with libvirt's rules and error texts, and
//! rendered as its admin API shows them.
//!
//! Hand-written on purpose: these are libvirt's exact formats (`virLogParseFilter`,
//! `virLogParseOutput`, GLib's `g_pattern_match_simple`), which `EnvFilter` or
//! `Targets` directives do not express: libvirt takes the first filter whose pattern
//! occurs anywhere in the target, not the most specific prefix.

use std::fmt::{self, Write as _};
use std::path::{Component, Path, PathBuf};

use super::{LogError, Priority};

/// A libvirt log filter `level:match`: events whose target matches `pattern` are
/// logged from `level` up, whatever the default level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub level: Priority,
    /// Matched anywhere in the event's target; `*` and `?` are wildcards (libvirt
    /// turns `foo` into the glob `*foo*`).
    pub pattern: String,
}

impl Filter {
    /// Whether this filter applies to events of `target`.
    pub fn matches(&self, target: &str) -> bool {
        if self.pattern.contains(['*', '?']) {
            glob_match(self.pattern.as_bytes(), target.as_bytes())
        } else {
            target.contains(self.pattern.as_str())
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.pattern)
    }
}

/// Whether `pattern`, with an implicit `*` at both ends, matches all of `text`
/// (GLib's `g_pattern_match_simple` on libvirt's `*match*`).
pub(super) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Backtracking point: pattern position after the last '*' and the text position
    // that '*' currently stops at. The implicit leading '*' is one at offset 0.
    let mut star: Option<(usize, usize)> = Some((0, 0));
    loop {
        if p == pattern.len() {
            return true; // implicit trailing '*'
        }
        match pattern[p] {
            b'*' => {
                p += 1;
                star = Some((p, t));
                continue;
            }
            c if t < text.len() && (c == b'?' || c == text[t]) => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) if st < text.len() => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            _ => return false,
        }
    }
}

/// Where an output writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    /// An absolute path (relative ones are made absolute when parsed).
    File(PathBuf),
    Journald,
    /// syslog with this ident.
    Syslog(String),
}

impl Destination {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Destination::Stderr => "stderr",
            Destination::File(_) => "file",
            Destination::Journald => "journald",
            Destination::Syslog(_) => "syslog",
        }
    }
}

/// A libvirt log output `level:destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Events below this level are not written to this output.
    pub level: Priority,
    pub dest: Destination,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dest {
            Destination::Stderr | Destination::Journald => {
                write!(f, "{}:{}", self.level, self.dest.kind())
            }
            Destination::File(path) => write!(f, "{}:file:{}", self.level, path.display()),
            Destination::Syslog(ident) => write!(f, "{}:syslog:{ident}", self.level),
        }
    }
}

fn parse_priority(s: &str) -> Option<Priority> {
    s.parse::<u8>().ok().and_then(Priority::from_number)
}

/// Parses libvirt's filter list: `level:match` items separated by spaces.
pub fn parse_filters(s: &str) -> Result<Vec<Filter>, LogError> {
    s.split_ascii_whitespace().map(parse_filter).collect()
}

/// One filter, with libvirt's rules (`virLogParseFilter`) except one: everything
/// after the first `:` is the pattern, so that Rust module paths such as
/// `1:actors::connection` work (libvirt would cut it to `actors`). A leading `+` is
/// dropped.
pub fn parse_filter(src: &str) -> Result<Filter, LogError> {
    let Some((level, raw)) = src.split_once(':') else {
        return Err(LogError::Invalid(format!(
            "Malformed format for filter '{src}'"
        )));
    };
    let level = parse_priority(level).ok_or_else(|| {
        LogError::Invalid(format!("Invalid priority '{level}' for filter '{src}'"))
    })?;
    let pattern = raw.strip_prefix('+').unwrap_or(raw);
    if pattern.is_empty() {
        return Err(LogError::Invalid(format!("Invalid match string '{raw}'")));
    }
    Ok(Filter {
        level,
        pattern: pattern.to_string(),
    })
}

/// Parses libvirt's output list: `level:dest[:data]` items separated by spaces. A
/// later duplicate (same destination, same file or ident) replaces an earlier one
/// and moves to its place at the end, as in libvirt.
pub fn parse_outputs(s: &str) -> Result<Vec<Output>, LogError> {
    let mut outputs: Vec<Output> = Vec::new();
    for item in s.split_ascii_whitespace() {
        let output = parse_output(item)?;
        outputs.retain(|o| o.dest != output.dest);
        outputs.push(output);
    }
    Ok(outputs)
}

/// One output, with libvirt's rules and texts (`virLogParseOutput`).
pub fn parse_output(src: &str) -> Result<Output, LogError> {
    let tokens: Vec<&str> = src.split(':').collect();
    if tokens.len() < 2 {
        return Err(LogError::Invalid(format!(
            "Malformed format for log output '{src}'"
        )));
    }
    let level = parse_priority(tokens[0]).ok_or_else(|| {
        LogError::Invalid(format!(
            "Invalid log priority '{}' for log output '{src}'",
            tokens[0]
        ))
    })?;
    let fields = match tokens[1] {
        "stderr" | "journald" => 2,
        "file" | "syslog" => 3,
        other => {
            return Err(LogError::Invalid(format!(
                "Invalid log destination '{other}' for log output '{src}'"
            )))
        }
    };
    let format_error = || {
        LogError::Invalid(format!(
            "Log output '{src}' does not meet the format requirements for destination type '{}'",
            tokens[1]
        ))
    };
    if tokens.len() != fields || (fields == 3 && tokens[2].is_empty()) {
        return Err(format_error());
    }
    let dest = match tokens[1] {
        "stderr" => Destination::Stderr,
        "journald" => Destination::Journald,
        "syslog" => Destination::Syslog(tokens[2].to_string()),
        _ => Destination::File(absolute_path(Path::new(tokens[2])).ok_or_else(format_error)?),
    };
    Ok(Output { level, dest })
}

/// GLib's `g_canonicalize_filename`: relative to the current directory, `.` and `..`
/// resolved lexically (symlinks are left alone).
fn absolute_path(path: &Path) -> Option<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut out = PathBuf::from("/");
    for part in joined.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Filters as the admin API returns them: each `level:*match*` followed by a
/// space. libvirt stores a filter's match as the glob `*match*` and shows that
/// (matching is the same: our plain patterns match as substrings).
pub fn render_filters(filters: &[Filter]) -> String {
    filters.iter().fold(String::new(), |mut s, f| {
        let _ = write!(s, "{}:*{}* ", f.level, f.pattern);
        s
    })
}

/// Outputs as the admin API returns them: `level:dest[:data]` joined by single spaces.
pub fn render_outputs(outputs: &[Output]) -> String {
    outputs
        .iter()
        .map(Output::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}
