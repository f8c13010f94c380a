//! One file per subcommand; `main.rs` parses and dispatches.

pub mod debug;
pub mod doctor;
pub mod kernel;
pub mod ko;
pub mod lab;
pub mod ptype;
pub mod shell;
pub mod symfile;
