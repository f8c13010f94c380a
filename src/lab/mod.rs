//! A lab: several UML machines joined by Linux bridges inside a network namespace of its own.

pub mod builtin;
pub mod client;
pub mod graph;
pub mod init;
pub mod kathara;
pub mod load;
pub mod marks;
pub mod netns;
pub mod sandbox;
pub mod spec;
pub mod state;
pub mod supervisor;
