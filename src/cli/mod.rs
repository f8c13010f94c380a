//! One file per subcommand; `main.rs` parses and dispatches.

pub mod debug;
pub mod doctor;
pub mod kernel;
pub mod ko;
pub mod ptype;
pub mod symfile;
pub mod lab;
pub mod shell;
