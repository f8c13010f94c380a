//! The JSON protocol between the CLI (or a script, or an IDE) and a session daemon.
//!
//! One request per line, one response per line. A connection that sends `{"op":"events"}`
//! afterwards receives every stop as an `Event` line until it closes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Break {
        location: String,
        #[serde(default)]
        cond: Option<String>,
    },
    Delete {
        id: u32,
    },
    Breaks,
    Continue,
    Interrupt,
    Wait {
        #[serde(default)]
        timeout: Option<f64>,
    },
    Bt,
    Print {
        expr: String,
    },
    Step,
    Next,
    Finish,
    List {
        #[serde(default)]
        location: Option<String>,
    },
    Gdb {
        command: String,
    },
    Load {
        /// A .ko file or a module name (empty with `build`).
        #[serde(default)]
        file: String,
        #[serde(default)]
        module_path: Vec<PathBuf>,
        /// A newer build of a loaded module takes the old one's place (rules, dependants,
        /// symbols and breakpoints looked after).
        #[serde(default)]
        replace: bool,
        /// Build the out-of-tree module in this directory against the machine's kernel first;
        /// implies `replace`.
        #[serde(default)]
        build: Option<PathBuf>,
    },
    Skb {
        #[serde(default)]
        expr: Option<String>,
        #[serde(default)]
        raw: bool,
        #[serde(default)]
        hex: bool,
    },
    /// Kernel symbols and commands starting with a prefix (shell completion).
    Complete {
        prefix: String,
    },
    /// End the session; `reason` is what waiters and later commands are told (default
    /// "detached").
    Detach {
        #[serde(default)]
        reason: Option<String>,
    },
    Events,
}

/// Longest request line the daemon reads; a longer one gets an error reply and is skipped.
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// A request line or request that the daemon refuses; the text is the reply's.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request line longer than {MAX_REQUEST_LINE} bytes: send one JSON object per line")]
    TooLong,
    #[error("request line is not UTF-8 ({0}): send one JSON object per line")]
    NotUtf8(std::str::Utf8Error),
    #[error("empty request line: send one JSON object per line, e.g. {{\"op\":\"status\"}}")]
    Empty,
    #[error("bad request {shown:?}: {source}")]
    Json {
        /// The line's first 200 characters.
        shown: String,
        source: serde_json::Error,
    },
    #[error("{what} is empty: give one, e.g. {example}")]
    Blank {
        what: &'static str,
        example: &'static str,
    },
    #[error("give a module or --build {}, not both", .0.display())]
    ModuleAndBuild(std::path::PathBuf),
    #[error(transparent)]
    Seconds(#[from] crate::util::SecondsError),
}

impl Request {
    /// Checks what a request carries before anything of it reaches gdb: the CLI calls it before
    /// sending, the daemon again on every line it reads (a script or IDE may send anything).
    pub fn check(&self) -> Result<(), RequestError> {
        fn not_blank(
            what: &'static str,
            text: &str,
            example: &'static str,
        ) -> Result<(), RequestError> {
            if text.trim().is_empty() {
                Err(RequestError::Blank { what, example })
            } else {
                Ok(())
            }
        }
        match self {
            Request::Wait { timeout: Some(t) } => {
                crate::util::seconds("--timeout", *t)?;
                Ok(())
            }
            Request::Break { location, cond } => {
                // An empty location means "here" to gdb: a breakpoint in the host libc of the
                // UML process, which stops the machine at once.
                not_blank(
                    "the breakpoint location",
                    location,
                    "`umldbg break reject_tg`",
                )?;
                match cond {
                    Some(c) => not_blank("the --if condition", c, "--if 'skb->len > 100'"),
                    None => Ok(()),
                }
            }
            Request::List { location: Some(l) } => {
                not_blank("the list location", l, "`umldbg list reject_tg`")
            }
            Request::Print { expr } => not_blank("the expression", expr, "`umldbg print skb->len`"),
            Request::Skb { expr: Some(e), .. } => {
                not_blank("the sk_buff expression", e, "`umldbg skb skb`")
            }
            Request::Gdb { command } => {
                not_blank("the gdb command", command, "`umldbg gdb info registers`")
            }
            Request::Load {
                file,
                build: Some(dir),
                ..
            } => {
                if !file.trim().is_empty() {
                    return Err(RequestError::ModuleAndBuild(dir.clone()));
                }
                not_blank(
                    "the --build directory",
                    &dir.display().to_string(),
                    "`umldbg load --build ./mymod`",
                )
            }
            Request::Load { file, .. } => not_blank("the module", file, "`umldbg load ipt_REJECT`"),
            _ => Ok(()),
        }
    }
}

/// One request line as read from a connection, before it is parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum RawLine {
    /// The bytes of a line, without its newline.
    Line(Vec<u8>),
    /// A line longer than the cap: its bytes were dropped up to the newline.
    TooLong,
}

/// Splits a byte stream into request lines of at most `cap` bytes without ever holding more
/// than `cap` bytes (sans-IO: the connection feeds it what it reads).
#[derive(Debug)]
pub struct LineSplitter {
    cap: usize,
    buf: Vec<u8>,
    too_long: bool,
}

impl LineSplitter {
    pub fn new(cap: usize) -> LineSplitter {
        LineSplitter {
            cap,
            buf: Vec::new(),
            too_long: false,
        }
    }

    /// Feed bytes; returns how many were used and the line they completed, if any. Call again
    /// with the rest after a line.
    pub fn push(&mut self, data: &[u8]) -> (usize, Option<RawLine>) {
        let (part, used, done) = match data.iter().position(|&b| b == b'\n') {
            Some(i) => (&data[..i], i + 1, true),
            None => (data, data.len(), false),
        };
        if !self.too_long {
            if self.buf.len() + part.len() > self.cap {
                self.too_long = true;
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(part);
            }
        }
        if !done {
            return (used, None);
        }
        (used, Some(self.take()))
    }

    /// At the end of the stream: the last line if it had no newline.
    pub fn finish(&mut self) -> Option<RawLine> {
        (self.too_long || !self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> RawLine {
        let line = if std::mem::take(&mut self.too_long) {
            RawLine::TooLong
        } else {
            RawLine::Line(std::mem::take(&mut self.buf))
        };
        self.buf = Vec::new();
        line
    }
}

/// Parse and check one request line; the error is the reply's text.
pub fn parse_line(line: &RawLine) -> Result<Request, RequestError> {
    let bytes = match line {
        RawLine::TooLong => return Err(RequestError::TooLong),
        RawLine::Line(b) => b,
    };
    let text = std::str::from_utf8(bytes).map_err(RequestError::NotUtf8)?;
    let text = text.trim_end_matches('\r');
    if text.trim().is_empty() {
        return Err(RequestError::Empty);
    }
    let req: Request = serde_json::from_str(text).map_err(|source| RequestError::Json {
        shown: text.chars().take(200).collect(),
        source,
    })?;
    req.check()?;
    Ok(req)
}

/// The reply to one request: `text` is for people, `data` for programs.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok_text(text: impl Into<String>) -> Response {
        Response {
            ok: true,
            text: Some(text.into()),
            ..Default::default()
        }
    }
    pub fn ok_data(text: impl Into<String>, data: serde_json::Value) -> Response {
        Response {
            ok: true,
            text: Some(text.into()),
            data: Some(data),
            ..Default::default()
        }
    }
    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

/// One frame of a backtrace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FrameInfo {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

/// A stop as `wait` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopInfo {
    pub reason: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub args: BTreeMap<String, String>,
    pub backtrace: Vec<FrameInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakpoint: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The decoded packet when a `struct sk_buff *` argument is in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skb: Option<serde_json::Value>,
    /// The skb view as text (the CLI prints it under the stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skb_text: Option<String>,
}

impl StopInfo {
    /// A one-line summary plus the decoded packet, for people.
    pub fn render(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut s = format!(
            "stopped ({}) in {} ({}) at {}:{}",
            self.reason,
            self.function.as_deref().unwrap_or("??"),
            args.join(", "),
            self.file.as_deref().unwrap_or("??"),
            self.line
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into())
        );
        for (i, f) in self.backtrace.iter().enumerate().take(12) {
            s.push_str(&format!(
                "\n  #{i:<2} {} at {}:{}",
                f.function.as_deref().unwrap_or("??"),
                f.file.as_deref().unwrap_or("??"),
                f.line.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
            ));
        }
        if let Some(t) = &self.skb_text {
            s.push('\n');
            s.push_str(t.trim_end());
        }
        s
    }
}

/// A line on an events connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Stopped(StopInfo),
    Running,
    ModuleLoaded {
        name: String,
        text: String,
        source: String,
    },
    ModuleUnloaded {
        name: String,
    },
    Exited {
        reason: String,
    },
    /// The subscriber fell behind and `missed` events were dropped for it; the next event is
    /// the session's state now (`stopped` with the stop, `running`, or `exited`).
    Lagged {
        missed: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(cap: usize, chunks: &[&[u8]]) -> Vec<RawLine> {
        let mut sp = LineSplitter::new(cap);
        let mut out = Vec::new();
        for c in chunks {
            let mut rest = *c;
            while !rest.is_empty() {
                let (used, line) = sp.push(rest);
                rest = &rest[used..];
                out.extend(line);
            }
        }
        out.extend(sp.finish());
        out
    }

    #[test]
    fn splitter_caps_lines_and_goes_on_after_a_long_one() {
        let got = lines(4, &[b"ab", b"c\n12345", b"678\n\nxy"]);
        assert_eq!(
            got,
            vec![
                RawLine::Line(b"abc".to_vec()),
                RawLine::TooLong,
                RawLine::Line(vec![]),
                RawLine::Line(b"xy".to_vec()),
            ]
        );
        assert_eq!(
            lines(4, &[b"abcd\n"]),
            vec![RawLine::Line(b"abcd".to_vec())]
        );
    }

    #[test]
    fn every_bad_line_has_a_one_line_error() {
        for raw in [
            RawLine::TooLong,
            RawLine::Line(vec![]),
            RawLine::Line(b"   ".to_vec()),
            RawLine::Line(vec![0xff, 0xfe, b'{']),
            RawLine::Line(b"{\"op\":\"nope\"}".to_vec()),
            RawLine::Line(b"{\"op\":\"wait\",\"timeout\":-1}".to_vec()),
            RawLine::Line(b"{\"op\":\"wait\",\"timeout\":1e308}".to_vec()),
            RawLine::Line(b"{\"op\":\"break\",\"location\":\"\"}".to_vec()),
            RawLine::Line(b"{\"op\":\"break\",\"location\":\" \\t\"}".to_vec()),
        ] {
            let e = parse_line(&raw).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{raw:?}: {e}");
        }
        assert!(matches!(
            parse_line(&RawLine::Line(
                b"{\"op\":\"wait\",\"timeout\":2.5}".to_vec()
            )),
            Ok(Request::Wait { timeout: Some(_) })
        ));
    }

    #[test]
    fn wait_timeouts_that_are_not_seconds_are_refused() {
        for t in [-1.0, f64::NAN, f64::INFINITY, 1e308] {
            assert!(Request::Wait { timeout: Some(t) }.check().is_err(), "{t}");
        }
        assert!(Request::Wait { timeout: None }.check().is_ok());
        assert!(Request::Wait { timeout: Some(0.0) }.check().is_ok());
    }

    #[test]
    fn blank_locations_and_expressions_are_refused() {
        let b = |l: &str| Request::Break {
            location: l.into(),
            cond: None,
        };
        assert!(b("").check().is_err());
        assert!(b(" \t\n").check().is_err());
        assert!(b("reject_tg").check().is_ok());
        let c = Request::Break {
            location: "reject_tg".into(),
            cond: Some(" ".into()),
        };
        assert!(c.check().is_err());
        assert!(Request::Print { expr: "".into() }.check().is_err());
        assert!(
            Request::List {
                location: Some("".into())
            }
            .check()
            .is_err()
        );
        assert!(Request::List { location: None }.check().is_ok());
    }
}
