//! The gdb remote-protocol server and the ptrace run-control it stands on.
//!
//! `runctl` attaches to a UML kernel's host threads and controls them (memory, registers,
//! breakpoints, probes, continue, step, interrupt) without gdb; `guard` is the watchdog process
//! and the journal that keep a killed tracer's breakpoints from crashing the machine. The
//! server (`server`, `target`, `libraries`, `monitor`) speaks gdb's remote protocol over them.

pub mod libraries;
pub mod monitor;
pub mod registers;
pub mod server;
pub mod target;
