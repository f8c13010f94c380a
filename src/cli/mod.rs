//! One file per subcommand; `main.rs` parses and dispatches.

pub mod debug;
pub mod doctor;
pub mod global;
pub mod ide;
pub mod image;
pub mod kernel;
pub mod ko;
pub mod lab;
pub mod ptype;
pub mod serve;
pub mod shell;
pub mod symfile;
pub mod trace;
pub mod usage;
