//! Sans-IO parser of GDB/MI output (the `mi3` dialect), one line at a time.
//!
//! gdb's output is a sequence of lines, each one record (GDB manual, "GDB/MI Output Syntax"):
//!
//! ```text
//! [token]^class[,var=value]...   result record: the answer to the command with that token
//! [token]*class[,var=value]...   exec async record (*stopped, *running)
//! [token]+class[,var=value]...   status async record
//! [token]=class[,var=value]...   notify async record (=breakpoint-modified, =library-loaded)
//! ~"c-string"  @"c-string"  &"c-string"   console, target and log stream records
//! (gdb)                          the prompt: gdb is ready for the next command
//! ```
//!
//! A value is a C string, a tuple `{var=value,...}` or a list `[value,...]` / `[var=value,...]`.
//! Lists of results may repeat a name (`stack=[frame={..},frame={..}]`, `args=[name="a",name="b"]`)
//! so results are kept as an ordered list of pairs, never a map.
//!
//! Nothing here reads a pipe: [`super::framer::LineFramer`] turns byte chunks into lines and
//! [`parse_line`] turns one line into a [`Record`] or a [`ParseError`] that names the line. The
//! parser is one pass over the line (no backtracking, no rescanning), and it bounds nesting depth
//! so that hostile input cannot exhaust the stack.

use std::fmt;

use super::cstring::{self, UnescapeError};
pub use super::record::{
    AsyncKind, AsyncRecord, List, Record, ResultClass, ResultRecord, Results, StreamKind,
    StreamRecord, Token, Value,
};

/// Deepest nesting of tuples and lists accepted. Real gdb output nests a handful of levels
/// (`BreakpointTable={body=[bkpt={locations=[{...}]}]}`); the bound only exists so that a line of
/// ten thousand `[` ends in an error instead of a stack overflow.
pub const MAX_DEPTH: usize = 256;

/// How much of an offending line a [`ParseError`] keeps for its message.
const EXCERPT_LEN: usize = 240;

/// What was wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("empty line")]
    Empty,
    #[error("unknown record type {0}")]
    UnknownRecordType(ByteDisplay),
    #[error("token does not fit in 64 bits")]
    TokenTooLarge,
    #[error("a token before a stream record")]
    TokenOnStream,
    #[error("missing record class")]
    MissingClass,
    #[error("unknown result class {0:?}")]
    UnknownResultClass(String),
    #[error("expected {expected}, found {found}")]
    Expected {
        expected: &'static str,
        found: ByteDisplay,
    },
    #[error("empty variable name")]
    EmptyVariable,
    #[error("string not terminated")]
    UnterminatedString,
    #[error("{0}")]
    BadEscape(UnescapeError),
    #[error("list mixes values and name=value results")]
    MixedList,
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A byte in an error message, or the end of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteDisplay(pub Option<u8>);

impl fmt::Display for ByteDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("end of line"),
            Some(b) => write!(f, "'{}'", std::ascii::escape_default(b)),
        }
    }
}

/// A line gdb sent that is not valid MI. Carries the line (its first 240 bytes) so that the
/// message alone says what arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed GDB/MI line ({kind} at byte {offset}): {excerpt}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// Byte offset in the line where parsing stopped.
    pub offset: usize,
    /// The start of the line, decoded lossily, with `...` if it was cut.
    pub excerpt: String,
    /// Length of the whole line in bytes.
    pub line_len: usize,
}

impl ParseError {
    fn new(line: &[u8], offset: usize, kind: ParseErrorKind) -> Self {
        let cut = line.len().min(EXCERPT_LEN);
        // Control characters are escaped so that binary garbage cannot mess up a terminal;
        // quotes are left alone because MI lines are full of them.
        let mut excerpt = String::with_capacity(cut);
        for c in String::from_utf8_lossy(&line[..cut]).chars() {
            if c.is_control() {
                excerpt.extend(c.escape_default());
            } else {
                excerpt.push(c);
            }
        }
        if cut < line.len() {
            excerpt.push_str("...");
        }
        ParseError {
            kind,
            offset,
            excerpt,
            line_len: line.len(),
        }
    }
}

/// Parse one line of gdb output. The line may or may not carry its `\n` / `\r\n`.
pub fn parse_line(line: &[u8]) -> Result<Record, ParseError> {
    let line = strip_eol(line);
    let mut p = Parser {
        line,
        pos: 0,
        depth: 0,
    };
    p.record()
        .map_err(|(offset, kind)| ParseError::new(line, offset, kind))
}

/// [`parse_line`] for text.
pub fn parse_str(line: &str) -> Result<Record, ParseError> {
    parse_line(line.as_bytes())
}

fn strip_eol(mut line: &[u8]) -> &[u8] {
    if let [rest @ .., b'\n'] = line {
        line = rest;
    }
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    line
}

type PResult<T> = Result<T, (usize, ParseErrorKind)>;

struct Parser<'a> {
    line: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.line.get(self.pos).copied()
    }

    fn fail<T>(&self, kind: ParseErrorKind) -> PResult<T> {
        Err((self.pos, kind))
    }

    fn expect(&mut self, byte: u8, expected: &'static str) -> PResult<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(ParseErrorKind::Expected {
                expected,
                found: ByteDisplay(self.peek()),
            })
        }
    }

    fn record(&mut self) -> PResult<Record> {
        if self.line.is_empty() {
            return self.fail(ParseErrorKind::Empty);
        }
        if let Some(rest) = self.line.strip_prefix(b"(gdb)") {
            // gdb prints "(gdb) " with a trailing blank; be lenient about the blank.
            if rest.iter().all(u8::is_ascii_whitespace) {
                return Ok(Record::Prompt);
            }
        }
        let token = self.token()?;
        let Some(kind) = self.peek() else {
            return self.fail(ParseErrorKind::Expected {
                expected: "a record type after the token",
                found: ByteDisplay(None),
            });
        };
        let record = match kind {
            b'^' => {
                self.pos += 1;
                let start = self.pos;
                let word = self.class_word();
                if word.is_empty() {
                    return self.fail(ParseErrorKind::MissingClass);
                }
                let Some(class) = ResultClass::from_bytes(word) else {
                    return Err((
                        start,
                        ParseErrorKind::UnknownResultClass(
                            String::from_utf8_lossy(word).into_owned(),
                        ),
                    ));
                };
                let results = self.tail_results()?;
                Record::Result(ResultRecord {
                    token,
                    class,
                    results,
                })
            }
            b'*' | b'+' | b'=' => {
                self.pos += 1;
                let kind = match kind {
                    b'*' => AsyncKind::Exec,
                    b'+' => AsyncKind::Status,
                    _ => AsyncKind::Notify,
                };
                let word = self.class_word();
                if word.is_empty() {
                    return self.fail(ParseErrorKind::MissingClass);
                }
                // class_word only accepts ASCII, so this conversion never replaces anything.
                let class = String::from_utf8_lossy(word).into_owned();
                let results = self.tail_results()?;
                Record::Async(AsyncRecord {
                    token,
                    kind,
                    class,
                    results,
                })
            }
            b'~' | b'@' | b'&' => {
                if token.is_some() {
                    return self.fail(ParseErrorKind::TokenOnStream);
                }
                self.pos += 1;
                let kind = match kind {
                    b'~' => StreamKind::Console,
                    b'@' => StreamKind::Target,
                    _ => StreamKind::Log,
                };
                let text = self.c_string()?;
                self.end()?;
                Record::Stream(StreamRecord { kind, text })
            }
            other => {
                return self.fail(ParseErrorKind::UnknownRecordType(ByteDisplay(Some(other))));
            }
        };
        Ok(record)
    }

    fn token(&mut self) -> PResult<Option<Token>> {
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or((start, ParseErrorKind::TokenTooLarge))?;
            self.pos += 1;
        }
        Ok((self.pos > start).then_some(Token(value)))
    }

    fn class_word(&mut self) -> &[u8] {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
        &self.line[start..self.pos]
    }

    fn end(&self) -> PResult<()> {
        match self.peek() {
            None => Ok(()),
            found => self.fail(ParseErrorKind::Expected {
                expected: "end of line",
                found: ByteDisplay(found),
            }),
        }
    }

    /// `(,result)*` up to the end of the line.
    fn tail_results(&mut self) -> PResult<Results> {
        let mut results = Results::new();
        while self.peek().is_some() {
            self.expect(b',', "',' or end of line")?;
            let (name, value) = self.result()?;
            results.0.push((name, value));
        }
        Ok(results)
    }

    /// `variable=value`.
    fn result(&mut self) -> PResult<(String, Value)> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if matches!(b, b'=' | b',' | b'{' | b'}' | b'[' | b']' | b'"')
                || b.is_ascii_whitespace()
            {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return match self.peek() {
                Some(b'=') => self.fail(ParseErrorKind::EmptyVariable),
                found => self.fail(ParseErrorKind::Expected {
                    expected: "a variable name",
                    found: ByteDisplay(found),
                }),
            };
        }
        let name = String::from_utf8_lossy(&self.line[start..self.pos]).into_owned();
        self.expect(b'=', "'=' after a variable name")?;
        let value = self.value()?;
        Ok((name, value))
    }

    fn value(&mut self) -> PResult<Value> {
        match self.peek() {
            Some(b'"') => Ok(Value::Const(self.c_string()?)),
            Some(b'{') => self.nested(|p| p.tuple()),
            Some(b'[') => self.nested(|p| p.list()),
            found => self.fail(ParseErrorKind::Expected {
                expected: "a value ('\"', '{' or '[')",
                found: ByteDisplay(found),
            }),
        }
    }

    fn nested(&mut self, inner: impl FnOnce(&mut Self) -> PResult<Value>) -> PResult<Value> {
        if self.depth >= MAX_DEPTH {
            return self.fail(ParseErrorKind::TooDeep);
        }
        self.depth += 1;
        let value = inner(self);
        self.depth -= 1;
        value
    }

    fn tuple(&mut self) -> PResult<Value> {
        self.expect(b'{', "'{'")?;
        let mut results = Results::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Tuple(results));
        }
        loop {
            let (name, value) = self.result()?;
            results.0.push((name, value));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Tuple(results));
                }
                found => {
                    return self.fail(ParseErrorKind::Expected {
                        expected: "',' or '}'",
                        found: ByteDisplay(found),
                    });
                }
            }
        }
    }

    fn list(&mut self) -> PResult<Value> {
        self.expect(b'[', "'['")?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::List(List::Values(Vec::new())));
        }
        // The first element decides the shape: a value starts with a quote or a bracket, a
        // result with a name.
        let of_values = matches!(self.peek(), Some(b'"' | b'{' | b'['));
        let mut values = Vec::new();
        let mut results = Results::new();
        loop {
            let element_is_value = matches!(self.peek(), Some(b'"' | b'{' | b'['));
            if element_is_value != of_values {
                return self.fail(ParseErrorKind::MixedList);
            }
            if of_values {
                values.push(self.value()?);
            } else {
                let (name, value) = self.result()?;
                results.0.push((name, value));
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                found => {
                    return self.fail(ParseErrorKind::Expected {
                        expected: "',' or ']'",
                        found: ByteDisplay(found),
                    });
                }
            }
        }
        Ok(Value::List(if of_values {
            List::Values(values)
        } else {
            List::Results(results)
        }))
    }

    /// A quoted C string, unescaped and decoded.
    fn c_string(&mut self) -> PResult<String> {
        self.expect(b'"', "'\"'")?;
        let body_start = self.pos;
        // Find the closing quote: the first '"' not preceded by an escaping backslash. One pass,
        // skipping the byte after each backslash.
        let mut i = self.pos;
        let mut escaped = false;
        let close = loop {
            match self.line[i..].iter().position(|&b| b == b'"' || b == b'\\') {
                None => return Err((body_start - 1, ParseErrorKind::UnterminatedString)),
                Some(off) => {
                    let at = i + off;
                    if self.line[at] == b'"' {
                        break at;
                    }
                    if at + 1 >= self.line.len() {
                        return Err((body_start - 1, ParseErrorKind::UnterminatedString));
                    }
                    escaped = true;
                    i = at + 2;
                }
            }
        };
        let body = &self.line[body_start..close];
        self.pos = close + 1;
        if !escaped {
            // Most strings (names, numbers, addresses) have no escapes: copy them as they are.
            return Ok(cstring::decode_lossy(body.to_vec()));
        }
        let mut bytes = Vec::with_capacity(body.len());
        cstring::unescape_into(body, &mut bytes)
            .map_err(|e| (body_start + e.offset(), ParseErrorKind::BadEscape(e)))?;
        Ok(cstring::decode_lossy(bytes))
    }
}
