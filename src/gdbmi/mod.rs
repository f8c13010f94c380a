//! GDB/MI: talking to gdb through its machine interface (`--interpreter=mi3`).
//!
//! Sans-IO core, one file per concern:
//! * [`framer`]: cuts the byte stream from gdb into lines.
//! * [`parse`]: turns one line into a [`Record`], or an error naming the line.
//! * [`record`]: records, results and values, written back as MI text or as JSON.
//! * [`cstring`]: the C-string escaping MI uses in both directions.
//! * [`command`]: typed commands and the quoting rules of MI input.
//! * [`types`]: typed views of records (stop events, frames, breakpoints, symbols) with the JSON
//!   form the CLI and the socket print.
//!
//! And the IO shell: [`process`], gdb as a child process or over any byte stream, and
//! [`replay`], a recorded transcript played back as such a stream.

pub mod command;
pub mod cstring;
pub mod framer;
pub mod parse;
pub mod process;
pub mod record;
pub mod replay;
pub mod types;

pub use command::{Arg, BreakOptions, Command, CommandError, PrintValues};
pub use framer::{FrameError, LineFramer};
pub use parse::{ParseError, ParseErrorKind, parse_line, parse_str};
pub use process::{AsyncEvent, ExitInfo, Gdb, GdbConfig, GdbError, Response};
pub use record::{
    AsyncKind, AsyncRecord, List, Record, ResultClass, ResultRecord, Results, StreamKind,
    StreamRecord, Token, Value,
};
pub use types::{
    Backtrace, Breakpoint, BreakpointLocation, ExtractError, Frame, FunctionSymbol, StopEvent,
    StopReason,
};
