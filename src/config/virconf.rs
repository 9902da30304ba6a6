//! libvirt's virConf syntax (`src/util/virconf.c`), parsed into entries that keep their
//! line, with virconf.c's error texts and line numbers.
//!
//! Hand-written on purpose: no parser crate knows this syntax, and the error texts and
//! the line each error names are libvirt's, which tests and users compare against.

use serde::Deserialize;

/// One virConf value, keeping libvirt's distinction between signed and unsigned so that
/// a negative number fails an unsigned setting as it does in libvirt.
///
/// It deserializes from whatever the `config` crate holds for a virConf value (the
/// variants are tried in order: a non-negative integer is `UInt`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConfValue {
    UInt(u64),
    Int(i64),
    Str(String),
    List(Vec<ConfValue>),
}

/// One `name = value` statement and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub value: ConfValue,
    pub line: usize,
}

/// A virConf syntax error: the line (1-based), the setting being read when it happened
/// (`None` when the name itself is missing or malformed) and libvirt's description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct SyntaxError {
    pub line: usize,
    pub key: Option<String>,
    pub what: &'static str,
}

/// Every statement of `text`, in file order, repeats included.
pub fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
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
            key: None,
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
            let value = self.parse_assignment().map_err(|e| SyntaxError {
                key: Some(name.clone()),
                ..e
            })?;
            entries.push(Entry { name, value, line });
        }
    }

    /// What follows a name: `= value`, then a comment, a line end or `;`.
    fn parse_assignment(&mut self) -> Result<ConfValue, SyntaxError> {
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
        Ok(value)
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
