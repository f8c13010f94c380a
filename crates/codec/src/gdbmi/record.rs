//! The values the GDB/MI parser produces: records, results, values and lists.
//!
//! A result list keeps gdb's order and repeated names (`stack=[frame={..},frame={..}]`,
//! `args=[name="a",name="b"]`), so it is a vector of pairs, never a map. Every type writes itself
//! back in MI syntax (`Display`), byte for byte what gdb printed when gdb's host charset is ASCII,
//! which the golden tests check and which logs use; and to JSON (serde) for golden files and the
//! socket protocol.

use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};

use super::cstring;

/// The number that ties a command to its result record (`12-break-list` ... `12^done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Token(pub u64);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One line of gdb output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    Result(ResultRecord),
    Async(AsyncRecord),
    Stream(StreamRecord),
    /// `(gdb)`: the end of a batch of output.
    Prompt,
}

/// `[token]^class[,results]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    pub class: ResultClass,
    pub results: Results,
}

/// The word after `^`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultClass {
    Done,
    Running,
    Connected,
    Error,
    Exit,
}

impl ResultClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultClass::Done => "done",
            ResultClass::Running => "running",
            ResultClass::Connected => "connected",
            ResultClass::Error => "error",
            ResultClass::Exit => "exit",
        }
    }

    pub(crate) fn from_bytes(word: &[u8]) -> Option<Self> {
        Some(match word {
            b"done" => ResultClass::Done,
            b"running" => ResultClass::Running,
            b"connected" => ResultClass::Connected,
            b"error" => ResultClass::Error,
            b"exit" => ResultClass::Exit,
            _ => return None,
        })
    }
}

/// `*`, `+` or `=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AsyncKind {
    /// `*`: the target changed state (`stopped`, `running`).
    Exec,
    /// `+`: progress of a slow operation (`download`).
    Status,
    /// `=`: something else changed (breakpoints, threads, libraries).
    Notify,
}

impl AsyncKind {
    pub fn prefix(self) -> char {
        match self {
            AsyncKind::Exec => '*',
            AsyncKind::Status => '+',
            AsyncKind::Notify => '=',
        }
    }
}

/// `[token]*class[,results]`, `+...` or `=...`. The class is kept as text: gdb adds notify
/// classes from version to version and an unknown one is not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsyncRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    pub kind: AsyncKind,
    pub class: String,
    pub results: Results,
}

/// `~`, `@` or `&`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    /// `~`: what the CLI would print (the output of `print`, `bt`, `list`).
    Console,
    /// `@`: output of the program being debugged, on remote targets.
    Target,
    /// `&`: gdb's own messages, including the text of errors and warnings.
    Log,
}

impl StreamKind {
    pub fn prefix(self) -> char {
        match self {
            StreamKind::Console => '~',
            StreamKind::Target => '@',
            StreamKind::Log => '&',
        }
    }
}

/// A stream record with its text unescaped (and decoded as UTF-8, lossily).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamRecord {
    pub kind: StreamKind,
    pub text: String,
}

/// An ordered list of `name=value` pairs. Names may repeat, so lookups return the first match
/// and [`Results::get_all`] returns every one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Results(pub Vec<(String, Value)>);

impl Results {
    pub fn new() -> Self {
        Results(Vec::new())
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every value stored under `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The value of `name` if it is a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, name: impl Into<String>, value: Value) {
        self.0.push((name.into(), value));
    }
}

impl Serialize for Results {
    /// As a JSON object in gdb's order. A repeated name is written twice, which JSON text allows;
    /// golden files compare text, so nothing is lost there.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// An MI value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Const(String),
    Tuple(Results),
    List(List),
}

/// The two shapes of MI list. `[]` parses as an empty `Values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum List {
    Values(Vec<Value>),
    Results(Results),
}

impl List {
    pub fn len(&self) -> usize {
        match self {
            List::Values(v) => v.len(),
            List::Results(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements, ignoring the names of a list of results: `[frame={..},frame={..}]` and
    /// `[{..},{..}]` both yield the tuples, which is what every consumer wants.
    pub fn values(&self) -> Box<dyn Iterator<Item = &Value> + '_> {
        match self {
            List::Values(v) => Box::new(v.iter()),
            List::Results(r) => Box::new(r.0.iter().map(|(_, v)| v)),
        }
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Const(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_tuple(&self) -> Option<&Results> {
        match self {
            Value::Tuple(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&List> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// Look a name up in a tuple, or in a list of results.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Tuple(t) | Value::List(List::Results(t)) => t.get(name),
            _ => None,
        }
    }

    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// Short name of the shape, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Const(_) => "string",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
        }
    }
}

impl Serialize for Value {
    /// Strings as strings, tuples as objects, lists of values as arrays, and lists of results as
    /// arrays of one-entry objects so that repeated names (`frame`, `name`) stay visible.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Const(s) => serializer.serialize_str(s),
            Value::Tuple(t) => t.serialize(serializer),
            Value::List(List::Values(v)) => v.serialize(serializer),
            Value::List(List::Results(r)) => {
                let mut seq = serializer.serialize_seq(Some(r.len()))?;
                for (name, value) in &r.0 {
                    seq.serialize_element(&SingleEntry(name, value))?;
                }
                seq.end()
            }
        }
    }
}

struct SingleEntry<'a>(&'a str, &'a Value);

impl Serialize for SingleEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}

// Writing records back in MI syntax. With gdb's ASCII host charset this reproduces gdb's line
// exactly, which the golden tests check; it is also the readable form for logs.

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Const(s) => {
                let mut out = String::with_capacity(s.len() + 2);
                cstring::escape_into(s, &mut out);
                f.write_str(&out)
            }
            Value::Tuple(t) => {
                f.write_str("{")?;
                write_results(f, t)?;
                f.write_str("}")
            }
            Value::List(List::Values(v)) => {
                f.write_str("[")?;
                for (i, value) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{value}")?;
                }
                f.write_str("]")
            }
            Value::List(List::Results(r)) => {
                f.write_str("[")?;
                write_results(f, r)?;
                f.write_str("]")
            }
        }
    }
}

fn write_results(f: &mut fmt::Formatter<'_>, results: &Results) -> fmt::Result {
    for (i, (name, value)) in results.0.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{name}={value}")?;
    }
    Ok(())
}

fn write_tail(f: &mut fmt::Formatter<'_>, results: &Results) -> fmt::Result {
    for (name, value) in &results.0 {
        write!(f, ",{name}={value}")?;
    }
    Ok(())
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Result(r) => {
                if let Some(token) = r.token {
                    write!(f, "{token}")?;
                }
                write!(f, "^{}", r.class.as_str())?;
                write_tail(f, &r.results)
            }
            Record::Async(a) => {
                if let Some(token) = a.token {
                    write!(f, "{token}")?;
                }
                write!(f, "{}{}", a.kind.prefix(), a.class)?;
                write_tail(f, &a.results)
            }
            Record::Stream(s) => {
                let mut out = String::with_capacity(s.text.len() + 3);
                out.push(s.kind.prefix());
                cstring::escape_into(&s.text, &mut out);
                f.write_str(&out)
            }
            Record::Prompt => f.write_str("(gdb) "),
        }
    }
}
