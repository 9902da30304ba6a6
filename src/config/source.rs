//! virConf as the `config` crate sees it: a parsed text is a [`config::Source`], and
//! [`VirConfFormat`] is the [`config::Format`] for `config::File`.
//!
//! Each value's origin is `FILE:LINE`, so the crate's own type errors name key and line;
//! syntax errors are [`SyntaxError`]s, which carry both too.

use std::collections::{HashMap, HashSet};

use ::config::{FileStoredFormat, Format, Map, Source, Value, ValueKind};

use super::virconf::{self, ConfValue, Entry, SyntaxError};

/// A key that appeared more than once; libvirt uses the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub name: String,
    pub line: usize,
    pub first_line: usize,
}

/// A parsed virConf text: its statements in file order, with their lines.
#[derive(Debug, Clone, PartialEq)]
pub struct VirConf {
    origin: Option<String>,
    entries: Vec<Entry>,
}

impl VirConf {
    /// Parses `text`; `origin` (normally the path) prefixes each value's line.
    pub fn parse(text: &str, origin: Option<&str>) -> Result<Self, SyntaxError> {
        Ok(Self {
            origin: origin.map(str::to_string),
            entries: virconf::parse(text)?,
        })
    }

    /// The first statement of each name, in file order: what libvirt uses.
    pub fn settings(&self) -> impl Iterator<Item = &Entry> {
        let mut seen = HashSet::new();
        self.entries
            .iter()
            .filter(move |e| seen.insert(e.name.as_str()))
    }

    /// The line of the statement that sets `name` (the first one if repeated).
    pub fn line_of(&self, name: &str) -> Option<usize> {
        self.entries.iter().find(|e| e.name == name).map(|e| e.line)
    }

    /// Statements that repeat an earlier name, in file order.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut first_lines: HashMap<&str, usize> = HashMap::new();
        let mut duplicates = Vec::new();
        for e in &self.entries {
            match first_lines.get(e.name.as_str()) {
                Some(&first_line) => duplicates.push(Duplicate {
                    name: e.name.clone(),
                    line: e.line,
                    first_line,
                }),
                None => {
                    first_lines.insert(&e.name, e.line);
                }
            }
        }
        duplicates
    }

    fn to_map(&self) -> Map<String, Value> {
        self.settings()
            .map(|e| {
                let at = match &self.origin {
                    Some(origin) => format!("{origin}:{}", e.line),
                    None => format!("line {}", e.line),
                };
                (e.name.clone(), to_value(&at, &e.value))
            })
            .collect()
    }
}

impl Source for VirConf {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, ::config::ConfigError> {
        Ok(self.to_map())
    }
}

/// Integers become `U64` (or `I64` when negative), strings `String`, lists `Array`.
fn to_value(at: &String, value: &ConfValue) -> Value {
    let kind = match value {
        ConfValue::UInt(n) => ValueKind::U64(*n),
        ConfValue::Int(n) => ValueKind::I64(*n),
        ConfValue::Str(s) => ValueKind::String(s.clone()),
        ConfValue::List(items) => ValueKind::Array(items.iter().map(|v| to_value(at, v)).collect()),
    };
    Value::new(Some(at), kind)
}

/// libvirt's virConf syntax as a [`config::Format`], for `config::File` sources.
/// The first occurrence of a repeated key wins, as in libvirt.
#[derive(Debug, Clone, Copy, Default)]
pub struct VirConfFormat;

impl Format for VirConfFormat {
    fn parse(
        &self,
        uri: Option<&String>,
        text: &str,
    ) -> Result<Map<String, Value>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(VirConf::parse(text, uri.map(String::as_str))?.to_map())
    }
}

impl FileStoredFormat for VirConfFormat {
    fn file_extensions(&self) -> &'static [&'static str] {
        &["conf"]
    }
}
