//! Typed views of parsed MI values: stop events, frames, backtraces, breakpoints, symbols.
//!
//! The parser keeps gdb's output as generic [`Results`]; this module picks out the fields the
//! daemon and its clients use. gdb omits fields freely (a frame without debug info has no file,
//! a stop after attach has no reason), so nearly everything is optional and only a field that is
//! present but malformed (a line number that is not a number) is an error.
//!
//! The JSON form (serde) is what `umldbg wait --json` and the socket protocol print: frames use
//! `function`, `file`, `line`, `addr` and `args` (an object from argument name to value text).

use serde::Serialize;
use serde::ser::SerializeMap;

use super::record::{List, Results, Value};

/// A value gdb left out of an argument list because it is not a scalar (`--simple-values`
/// prints only the type of a struct passed by value). `...` is what gdb's own `bt` shows.
pub const ELIDED_VALUE: &str = "...";

/// Why a typed view could not be taken from a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("GDB/MI {context}: missing field {field:?}")]
    Missing {
        context: &'static str,
        field: &'static str,
    },
    #[error("GDB/MI {context}: field {field:?} should be a {expected}, found a {found}")]
    WrongShape {
        context: &'static str,
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("GDB/MI {context}: field {field:?} is not a number: {value:?}")]
    BadNumber {
        context: &'static str,
        field: &'static str,
        value: String,
    },
}

/// Field access with the context a message needs.
struct Fields<'a> {
    results: &'a Results,
    context: &'static str,
}

impl<'a> Fields<'a> {
    fn new(results: &'a Results, context: &'static str) -> Self {
        Fields { results, context }
    }

    fn str(&self, field: &'static str) -> Result<Option<String>, ExtractError> {
        match self.results.get(field) {
            None => Ok(None),
            Some(Value::Const(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong_shape(field, "string", other)),
        }
    }

    fn required_str(&self, field: &'static str) -> Result<String, ExtractError> {
        self.str(field)?.ok_or(ExtractError::Missing {
            context: self.context,
            field,
        })
    }

    fn number(&self, field: &'static str) -> Result<Option<u32>, ExtractError> {
        match self.str(field)? {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| ExtractError::BadNumber {
                context: self.context,
                field,
                value: text,
            }),
        }
    }

    fn tuple(&self, field: &'static str) -> Result<Option<&'a Results>, ExtractError> {
        match self.results.get(field) {
            None => Ok(None),
            Some(Value::Tuple(t)) => Ok(Some(t)),
            Some(other) => Err(self.wrong_shape(field, "tuple", other)),
        }
    }

    fn list(&self, field: &'static str) -> Result<Option<&'a List>, ExtractError> {
        match self.results.get(field) {
            None => Ok(None),
            Some(Value::List(l)) => Ok(Some(l)),
            // gdb writes an empty list of results as `[]` but some versions use `{}`.
            Some(Value::Tuple(t)) if t.is_empty() => Ok(None),
            Some(other) => Err(self.wrong_shape(field, "list", other)),
        }
    }

    fn wrong_shape(&self, field: &'static str, expected: &'static str, v: &Value) -> ExtractError {
        ExtractError::WrongShape {
            context: self.context,
            field,
            expected,
            found: v.kind_name(),
        }
    }
}

/// Elements of a list that must all be tuples (`[frame={..},frame={..}]` or `[{..},{..}]`).
fn tuples<'a>(
    list: &'a List,
    context: &'static str,
    field: &'static str,
) -> Result<Vec<&'a Results>, ExtractError> {
    list.values()
        .map(|v| {
            v.as_tuple().ok_or(ExtractError::WrongShape {
                context,
                field,
                expected: "list of tuples",
                found: v.kind_name(),
            })
        })
        .collect()
}

/// One stack frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// 0 for the innermost frame. Absent in the frame of a stop event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    /// Program counter as gdb prints it (`0x00005555555551f7`).
    pub addr: Option<String>,
    #[serde(rename = "function")]
    pub func: Option<String>,
    pub file: Option<String>,
    /// Absolute source path, when gdb found one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fullname: Option<String>,
    pub line: Option<u32>,
    /// The shared object of a frame without line information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Arguments in declaration order: name and value text ([`ELIDED_VALUE`] when gdb gave no
    /// value).
    #[serde(serialize_with = "args_as_object")]
    pub args: Vec<(String, String)>,
}

fn args_as_object<S: serde::Serializer>(
    args: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(args.len()))?;
    for (name, value) in args {
        map.serialize_entry(name, value)?;
    }
    map.end()
}

impl Frame {
    /// From a `frame={...}` tuple of a stop event or a `-stack-list-frames` answer.
    pub fn from_results(frame: &Results) -> Result<Frame, ExtractError> {
        let f = Fields::new(frame, "frame");
        let args = match f.list("args")? {
            Some(list) => parse_args(list)?,
            None => Vec::new(),
        };
        Ok(Frame {
            level: f.number("level")?,
            addr: f.str("addr")?,
            func: f.str("func")?,
            file: f.str("file")?,
            fullname: f.str("fullname")?,
            line: f.number("line")?,
            from: f.str("from")?,
            args,
        })
    }

    /// The program counter as a number.
    pub fn address(&self) -> Option<u64> {
        let addr = self.addr.as_deref()?;
        u64::from_str_radix(addr.strip_prefix("0x")?, 16).ok()
    }
}

/// An argument list in any of gdb's shapes: `[{name="p",value="0x1"}]` (with values, maybe a
/// `type`), `[name="argc",name="argv"]` (`--no-values`), or `["argc"]`.
fn parse_args(list: &List) -> Result<Vec<(String, String)>, ExtractError> {
    let mut args = Vec::with_capacity(list.len());
    for value in list.values() {
        match value {
            Value::Const(name) => args.push((name.clone(), ELIDED_VALUE.to_owned())),
            Value::Tuple(arg) => {
                let f = Fields::new(arg, "frame argument");
                let name = f.required_str("name")?;
                let value = f.str("value")?.unwrap_or_else(|| ELIDED_VALUE.to_owned());
                args.push((name, value));
            }
            Value::List(_) => {
                return Err(ExtractError::WrongShape {
                    context: "frame",
                    field: "args",
                    expected: "list of names or tuples",
                    found: "list",
                });
            }
        }
    }
    Ok(args)
}

/// Why the target stopped: `reason` of `*stopped`. Unknown reasons are kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    BreakpointHit,
    WatchpointTrigger,
    ReadWatchpointTrigger,
    AccessWatchpointTrigger,
    WatchpointScope,
    FunctionFinished,
    LocationReached,
    EndSteppingRange,
    SignalReceived,
    Exited,
    ExitedNormally,
    ExitedSignalled,
    SolibEvent,
    Fork,
    Vfork,
    Exec,
    SyscallEntry,
    SyscallReturn,
    NoHistory,
    Other(String),
}

impl StopReason {
    pub fn parse(text: &str) -> StopReason {
        match text {
            "breakpoint-hit" => StopReason::BreakpointHit,
            "watchpoint-trigger" => StopReason::WatchpointTrigger,
            "read-watchpoint-trigger" => StopReason::ReadWatchpointTrigger,
            "access-watchpoint-trigger" => StopReason::AccessWatchpointTrigger,
            "watchpoint-scope" => StopReason::WatchpointScope,
            "function-finished" => StopReason::FunctionFinished,
            "location-reached" => StopReason::LocationReached,
            "end-stepping-range" => StopReason::EndSteppingRange,
            "signal-received" => StopReason::SignalReceived,
            "exited" => StopReason::Exited,
            "exited-normally" => StopReason::ExitedNormally,
            "exited-signalled" => StopReason::ExitedSignalled,
            "solib-event" => StopReason::SolibEvent,
            "fork" => StopReason::Fork,
            "vfork" => StopReason::Vfork,
            "exec" => StopReason::Exec,
            "syscall-entry" => StopReason::SyscallEntry,
            "syscall-return" => StopReason::SyscallReturn,
            "no-history" => StopReason::NoHistory,
            other => StopReason::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StopReason::BreakpointHit => "breakpoint-hit",
            StopReason::WatchpointTrigger => "watchpoint-trigger",
            StopReason::ReadWatchpointTrigger => "read-watchpoint-trigger",
            StopReason::AccessWatchpointTrigger => "access-watchpoint-trigger",
            StopReason::WatchpointScope => "watchpoint-scope",
            StopReason::FunctionFinished => "function-finished",
            StopReason::LocationReached => "location-reached",
            StopReason::EndSteppingRange => "end-stepping-range",
            StopReason::SignalReceived => "signal-received",
            StopReason::Exited => "exited",
            StopReason::ExitedNormally => "exited-normally",
            StopReason::ExitedSignalled => "exited-signalled",
            StopReason::SolibEvent => "solib-event",
            StopReason::Fork => "fork",
            StopReason::Vfork => "vfork",
            StopReason::Exec => "exec",
            StopReason::SyscallEntry => "syscall-entry",
            StopReason::SyscallReturn => "syscall-return",
            StopReason::NoHistory => "no-history",
            StopReason::Other(text) => text,
        }
    }

    /// The program is gone (as opposed to stopped and inspectable).
    pub fn is_exit(&self) -> bool {
        matches!(
            self,
            StopReason::Exited | StopReason::ExitedNormally | StopReason::ExitedSignalled
        )
    }
}

impl Serialize for StopReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A `*stopped` record. In JSON the frame's fields sit at the top level beside `reason`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StopEvent {
    /// Absent when gdb stops for its own reasons, e.g. right after `-target-attach`.
    pub reason: Option<StopReason>,
    #[serde(flatten)]
    pub frame: Option<Frame>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_meaning: Option<String>,
    /// The breakpoint that was hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bkptno: Option<u32>,
    /// The program's exit status (gdb writes it in octal: `exit-code="011"` is 9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u32>,
    /// What `-exec-finish` returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_value: Option<String>,
}

impl StopEvent {
    /// From the results of a `*stopped` record.
    pub fn from_results(results: &Results) -> Result<StopEvent, ExtractError> {
        let f = Fields::new(results, "*stopped");
        let frame = match f.tuple("frame")? {
            Some(frame) => Some(Frame::from_results(frame)?),
            None => None,
        };
        let exit_code = match f.str("exit-code")? {
            None => None,
            Some(text) => Some(parse_exit_code(&text).ok_or(ExtractError::BadNumber {
                context: "*stopped",
                field: "exit-code",
                value: text,
            })?),
        };
        Ok(StopEvent {
            reason: f.str("reason")?.map(|r| StopReason::parse(&r)),
            frame,
            thread_id: f.str("thread-id")?,
            signal_name: f.str("signal-name")?,
            signal_meaning: f.str("signal-meaning")?,
            bkptno: f.number("bkptno")?,
            exit_code,
            return_value: f.str("return-value")?,
        })
    }
}

/// gdb prints exit codes with C's `0%o`, so a leading zero means octal.
pub fn parse_exit_code(text: &str) -> Option<u32> {
    match text.strip_prefix('0') {
        Some("") => Some(0),
        Some(octal) => u32::from_str_radix(octal, 8).ok(),
        None => text.parse().ok(),
    }
}

/// Frames from `-stack-list-frames`, innermost first, with arguments merged in from
/// `-stack-list-arguments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Backtrace(pub Vec<Frame>);

impl Backtrace {
    /// `frames`: the results of `-stack-list-frames` (`stack=[frame={..},..]`); `args`: those of
    /// `-stack-list-arguments` (`stack-args=[frame={level,args},..]`), matched by level.
    pub fn from_results(
        frames: &Results,
        args: Option<&Results>,
    ) -> Result<Backtrace, ExtractError> {
        let f = Fields::new(frames, "-stack-list-frames");
        let mut out = Vec::new();
        if let Some(list) = f.list("stack")? {
            for frame in tuples(list, "-stack-list-frames", "stack")? {
                out.push(Frame::from_results(frame)?);
            }
        }
        if let Some(args) = args {
            let a = Fields::new(args, "-stack-list-arguments");
            if let Some(list) = a.list("stack-args")? {
                for entry in tuples(list, "-stack-list-arguments", "stack-args")? {
                    let e = Fields::new(entry, "-stack-list-arguments");
                    let Some(level) = e.number("level")? else {
                        continue;
                    };
                    let frame_args = match e.list("args")? {
                        Some(list) => parse_args(list)?,
                        None => Vec::new(),
                    };
                    if let Some(frame) = out.iter_mut().find(|fr| fr.level == Some(level)) {
                        frame.args = frame_args;
                    }
                }
            }
        }
        Ok(Backtrace(out))
    }
}

/// One location of a breakpoint set on several places (an inlined function).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BreakpointLocation {
    /// `1.2`: breakpoint 1, location 2.
    pub number: String,
    pub enabled: bool,
    pub addr: Option<String>,
    #[serde(rename = "function")]
    pub func: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A breakpoint as `-break-insert`, `-break-list` and `=breakpoint-modified` describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Breakpoint {
    pub number: u32,
    /// `breakpoint`, `hw breakpoint`, `watchpoint`, ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// What the user asked for (`reject_tg`, `prog.c:23`).
    #[serde(rename = "location")]
    pub original_location: Option<String>,
    #[serde(rename = "function")]
    pub func: Option<String>,
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fullname: Option<String>,
    pub line: Option<u32>,
    /// An address, or gdb's `<PENDING>` / `<MULTIPLE>`.
    pub addr: Option<String>,
    pub times: u32,
    pub enabled: bool,
    /// `del` for a temporary breakpoint, else `keep`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disp: Option<String>,
    pub cond: Option<String>,
    /// For a pending breakpoint: the location gdb will retry when symbols arrive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<BreakpointLocation>,
}

impl Breakpoint {
    /// From a `bkpt={...}` tuple.
    pub fn from_tuple(bkpt: &Results) -> Result<Breakpoint, ExtractError> {
        let f = Fields::new(bkpt, "breakpoint");
        let number_text = f.required_str("number")?;
        let number = number_text.parse().map_err(|_| ExtractError::BadNumber {
            context: "breakpoint",
            field: "number",
            value: number_text.clone(),
        })?;
        let mut locations = Vec::new();
        if let Some(list) = f.list("locations")? {
            for loc in tuples(list, "breakpoint", "locations")? {
                let l = Fields::new(loc, "breakpoint location");
                locations.push(BreakpointLocation {
                    number: l.required_str("number")?,
                    enabled: l.str("enabled")?.as_deref() == Some("y"),
                    addr: l.str("addr")?,
                    func: l.str("func")?,
                    file: l.str("file")?,
                    line: l.number("line")?,
                });
            }
        }
        Ok(Breakpoint {
            number,
            kind: f.str("type")?,
            original_location: f.str("original-location")?,
            func: f.str("func")?,
            file: f.str("file")?,
            fullname: f.str("fullname")?,
            line: f.number("line")?,
            addr: f.str("addr")?,
            times: f.number("times")?.unwrap_or(0),
            enabled: f.str("enabled")?.as_deref() == Some("y"),
            disp: f.str("disp")?,
            cond: f.str("cond")?,
            pending: f.str("pending")?,
            locations,
        })
    }

    /// From the results of `-break-insert` or `=breakpoint-modified` (`bkpt={...}`).
    pub fn from_results(results: &Results) -> Result<Breakpoint, ExtractError> {
        let f = Fields::new(results, "-break-insert");
        let bkpt = f.tuple("bkpt")?.ok_or(ExtractError::Missing {
            context: "-break-insert",
            field: "bkpt",
        })?;
        Breakpoint::from_tuple(bkpt)
    }

    /// From the results of `-break-list` (`BreakpointTable={..., body=[bkpt={..},..]}`).
    pub fn list_from_results(results: &Results) -> Result<Vec<Breakpoint>, ExtractError> {
        let f = Fields::new(results, "-break-list");
        let table = f.tuple("BreakpointTable")?.ok_or(ExtractError::Missing {
            context: "-break-list",
            field: "BreakpointTable",
        })?;
        let t = Fields::new(table, "-break-list");
        match t.list("body")? {
            None => Ok(Vec::new()),
            Some(body) => tuples(body, "-break-list", "body")?
                .into_iter()
                .map(Breakpoint::from_tuple)
                .collect(),
        }
    }
}

/// One function from `-symbol-info-functions`: with debug info it has a file and line, without
/// (`--include-nondebug`) only an address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FunctionSymbol {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The C declaration gdb prints (`int walk(struct point *, int);`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

impl FunctionSymbol {
    /// From the results of `-symbol-info-functions`
    /// (`symbols={debug=[{filename,symbols=[..]}],nondebug=[{address,name}]}`).
    pub fn list_from_results(results: &Results) -> Result<Vec<FunctionSymbol>, ExtractError> {
        const CTX: &str = "-symbol-info-functions";
        let f = Fields::new(results, CTX);
        let mut out = Vec::new();
        let Some(symbols) = f.tuple("symbols")? else {
            return Ok(out);
        };
        let s = Fields::new(symbols, CTX);
        if let Some(files) = s.list("debug")? {
            for file in tuples(files, CTX, "debug")? {
                let ff = Fields::new(file, CTX);
                let filename = ff.str("filename")?;
                if let Some(list) = ff.list("symbols")? {
                    for sym in tuples(list, CTX, "symbols")? {
                        let sf = Fields::new(sym, CTX);
                        out.push(FunctionSymbol {
                            name: sf.required_str("name")?,
                            file: filename.clone(),
                            line: sf.number("line")?,
                            description: sf.str("description")?,
                            addr: None,
                        });
                    }
                }
            }
        }
        if let Some(list) = s.list("nondebug")? {
            for sym in tuples(list, CTX, "nondebug")? {
                let sf = Fields::new(sym, CTX);
                out.push(FunctionSymbol {
                    name: sf.required_str("name")?,
                    addr: sf.str("address")?,
                    ..Default::default()
                });
            }
        }
        Ok(out)
    }
}

/// The `value` of a `-data-evaluate-expression` answer.
pub fn evaluated_value(results: &Results) -> Result<String, ExtractError> {
    Fields::new(results, "-data-evaluate-expression").required_str("value")
}
