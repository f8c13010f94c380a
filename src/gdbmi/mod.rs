//! GDB/MI: talking to gdb through its machine interface (`--interpreter=mi3`).
//!
//! The sans-IO core (framer, parser, records, C strings, commands, typed views) is the codec
//! crate's `umldbg_codec::gdbmi`, re-exported here; this module adds the IO shell:
//! [`process`], gdb as a child process or over any byte stream, and [`replay`], a recorded
//! transcript played back as such a stream.

pub mod process;
pub mod replay;

pub use process::{AsyncEvent, ExitInfo, Gdb, GdbConfig, GdbError, Response};
pub use umldbg_codec::gdbmi::*;
