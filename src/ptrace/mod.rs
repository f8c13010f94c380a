//! The host side of a UML kernel's processes: the ptrace run-control (`runctl`: attach,
//! memory, registers, breakpoints, probes, continue, step), and the one kernel-text guard
//! (`guard`: the journal with its pid check, the watchdog process, the text lock) that the gdb/MI
//! daemon, the remote-protocol server and the tracer all use.
//!
//! Nothing here knows a frontend: the layer test (`tests/layers.rs`) keeps it so.

pub mod guard;
pub mod mem;
pub mod runctl;
