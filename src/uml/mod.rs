//! One UML instance: its umid, pid file, mconsole socket, a shell on its console.

pub mod console;
pub mod ids;
pub mod instance;
pub mod mconsole;
