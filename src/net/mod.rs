//! Packet decoding and the sk_buff view: the decoders are the codec crate's
//! (`umldbg_codec::net`, re-exported here); [`pcap`] writes what they decoded to a file.

pub mod pcap;

pub use umldbg_codec::net::*;
