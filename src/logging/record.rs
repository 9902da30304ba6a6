//! One event as each output writes it: libvirt's text line (stderr, files), a
//! journald native-protocol datagram, an RFC 3164 syslog datagram.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};

use super::{Priority, DAEMON_NAME};

/// Datagram sockets refuse messages beyond their buffer size (about 200 KiB by
/// default); rather than losing a huge message entirely, its text is cut here.
pub(super) const MAX_DATAGRAM_MESSAGE: usize = 64 * 1024;
/// syslog facility `LOG_DAEMON`, as libvirt's `openlog(..., LOG_DAEMON)` uses.
const SYSLOG_FACILITY_DAEMON: u8 = 3;

/// One event, ready to be written in each output's format.
pub(super) struct Record<'a> {
    pub level: Priority,
    pub target: &'a str,
    /// Message followed by `key=value` fields.
    pub body: &'a str,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    pub time: SystemTime,
    pub pid: u32,
}

impl Record<'_> {
    /// The stderr/file line.
    pub fn text_line(&self) -> String {
        format!(
            "{}: {}: {} : {}: {}\n",
            format_timestamp(self.time),
            self.pid,
            self.level.name(),
            self.target,
            self.body
        )
    }

    /// A journald native-protocol datagram.
    pub fn journald_payload(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.body.len() + 256);
        journal_field(
            &mut buf,
            "MESSAGE",
            truncate(self.body, MAX_DATAGRAM_MESSAGE),
        );
        journal_field(
            &mut buf,
            "PRIORITY",
            &self.level.syslog_severity().to_string(),
        );
        journal_field(
            &mut buf,
            "SYSLOG_FACILITY",
            &SYSLOG_FACILITY_DAEMON.to_string(),
        );
        journal_field(&mut buf, "SYSLOG_IDENTIFIER", DAEMON_NAME);
        journal_field(&mut buf, "LIBVIRT_SOURCE", self.target);
        if let Some(file) = self.file {
            journal_field(&mut buf, "CODE_FILE", file);
        }
        if let Some(line) = self.line {
            journal_field(&mut buf, "CODE_LINE", &line.to_string());
        }
        buf
    }

    /// An RFC 3164 datagram without timestamp: `<PRI>ident[pid]: level : target: body`.
    pub fn syslog_datagram(&self, ident: &str) -> String {
        format!(
            "<{}>{ident}[{}]: {} : {}: {}",
            u16::from(SYSLOG_FACILITY_DAEMON) * 8 + u16::from(self.level.syslog_severity()),
            self.pid,
            self.level.name(),
            self.target,
            truncate(self.body, MAX_DATAGRAM_MESSAGE)
        )
    }
}

pub(super) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends one journald field: `NAME=value\n`, or for values containing a newline the
/// binary form `NAME\n<le64 length>value\n`.
fn journal_field(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

/// Collects an event's message and its other fields as ` key=value`.
#[derive(Default)]
pub(super) struct BodyVisitor {
    message: String,
    fields: String,
}

impl BodyVisitor {
    pub fn finish(self) -> String {
        if self.message.is_empty() {
            self.fields.trim_start().to_string()
        } else {
            self.message + &self.fields
        }
    }
}

impl Visit for BodyVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm+0000` in UTC, libvirt's log timestamp.
///
/// Hand-written rather than through a date crate: this one fixed UTC format is the
/// only date work in the program, the conversion below is a dozen lines, and it is
/// total, whereas `time`'s `OffsetDateTime::from(SystemTime)` panics past year 9999
/// (`virtlockctl` formats times it receives over the wire with it) and `jiff` or
/// `chrono` would need a fallback for the same range, besides adding their crates.
pub fn format_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
