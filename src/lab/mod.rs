//! A lab: several UML machines joined by Linux bridges inside a network namespace of its own.

pub mod builtin;
pub mod graph;
pub mod kathara;
pub mod spec;
pub mod client;
pub mod init;
pub mod netns;
pub mod state;
pub mod supervisor;
