//! One file per subcommand; `main.rs` parses and dispatches.

pub mod doctor;
pub mod kernel;
