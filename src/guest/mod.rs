//! What every frontend needs of a running machine, whatever talks to it (gdb over GDB/MI, the
//! remote-protocol server, the tracer, the IDE configurations): its modules (the listing from
//! `/sys/module`, where each one's sections sit, finding their files), the symbol index of the
//! kernel image (near names come from the codec's suggester), the skb reader, and the guest shell.
//!
//! Nothing here knows a frontend: the layer test (`tests/layers.rs`) keeps it so.

pub mod load;
pub mod modules;
pub mod shell;
pub mod skb;
pub mod symbols;
