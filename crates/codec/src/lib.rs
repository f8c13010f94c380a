//! umldbg's I/O-free core: bytes in, values out.
//!
//! Everything a fuzz target or a benchmark can drive without a machine: the GDB/MI parser
//! ([`gdbmi`]), the mconsole datagram codec ([`mconsole`]), the console framing shared by the
//! lab supervisor and the pty console ([`console`]), the packet decoders and the sk_buff view over
//! a memory trait ([`net`]), the kernel module and symbol-file parsers ([`kmod`]), the DWARF
//! layout reader ([`dwarf`]), the near-name suggester ([`suggest`]) and the XML escaper
//! ([`xml`]). No async runtime, no system calls, no process spawning: the `umldbg` crate owns
//! the pipes, sockets, files and processes around these.

pub mod base64;
pub mod console;
pub mod dwarf;
pub mod gdbmi;
pub mod kmod;
pub mod mconsole;
pub mod net;
pub mod suggest;
pub mod xml;
