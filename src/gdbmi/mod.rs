//! GDB/MI: talking to gdb through its machine interface (`--interpreter=mi3`).
//!
//! * [`parse`]: sans-IO parser of gdb's output lines, and a framer that cuts a byte stream into
//!   lines.
//! * [`cstring`]: the C-string escaping MI uses in both directions.
//! * [`command`]: typed commands and the quoting rules of MI input.
//! * [`types`]: typed views of parsed records (stop events, frames, breakpoints, symbols), with
//!   the JSON form the CLI and socket print.
//! * [`process`]: the gdb child process, the only part that does IO.

pub mod command;
pub mod cstring;
pub mod parse;
pub mod process;
pub mod types;

pub use command::{Arg, BreakOptions, Command, CommandError, PrintValues};
pub use parse::{
    AsyncKind, AsyncRecord, FrameError, LineFramer, List, ParseError, ParseErrorKind, Record,
    ResultClass, ResultRecord, Results, StreamKind, StreamRecord, Token, Value, parse_line,
    parse_str,
};
pub use process::{AsyncEvent, ExitInfo, Gdb, GdbConfig, GdbError, Response};
pub use types::{
    Backtrace, Breakpoint, BreakpointLocation, ExtractError, Frame, FunctionSymbol, StopEvent,
    StopReason,
};
