//! umldbg: see inside the Linux network stack with User-Mode Linux.
//!
//! The library is organised by external peer: the kernel build (`kernel`), a lab of UML machines
//! (`lab`), one UML instance (`uml`), kernel module files (`kmod`), DWARF type layouts (`dwarf`),
//! gdb over GDB/MI (`gdbmi`), the debug session daemon (`daemon`), packet decoding (`net`) and the
//! gdb remote-protocol server with its ptrace run-control (`stub`), tracing
//! at line rate (`trace`), debugger configurations (`ide`) and root filesystem images (`image`).
//!
//! What only turns bytes into values (the GDB/MI parser, the mconsole codec, the console framing,
//! the packet decoders, the `.ko` and DWARF parsers) is the workspace's codec crate,
//! `umldbg_codec`; `gdbmi`, `net`, `kmod`, `dwarf` and `uml::mconsole` re-export it and add the
//! I/O around it.

pub mod daemon;
pub mod dwarf;
pub mod gdbmi;
pub mod guest;
pub mod ide;
pub mod image;
pub mod kernel;
pub mod kmod;
pub mod lab;
pub mod manifest_file;
pub mod net;
pub mod ptrace;
pub mod stub;
pub mod trace;
pub mod uml;
pub mod util;
