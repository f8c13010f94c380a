//! One file per subcommand; `main.rs` parses and dispatches.

pub mod debug;
pub mod doctor;
pub mod kernel;
pub mod lab;
pub mod shell;
