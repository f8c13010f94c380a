//! One UML instance: its umid, pid file, mconsole socket.

pub mod ids;
pub mod instance;
pub mod mconsole;
