//! Packet decoding (Ethernet, ARP, IPv4/6, ICMP/ICMPv6, TCP, UDP) and the sk_buff view.
//!
//! Everything here is sans-IO: the decoders are plain functions over byte slices, and the skb view
//! reads guest memory only through the small [`skb::MemoryReader`] trait, so the whole module is
//! tested on byte fixtures and fake memory. One file per header kind; [`packet`] chains them.
//!
//! Bad input never panics and rarely fails: a header that is too short to decode at all is left
//! out and named in the packet's `warnings`; a header whose length fields disagree with the bytes
//! present is decoded as far as the bytes go, with a warning on that header.

pub mod arp;
pub mod ethernet;
pub mod hexdump;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod layout;
pub mod names;
pub mod packet;
pub mod skb;
pub mod tcp;
pub mod udp;
pub mod warning;
pub mod wire;

pub use hexdump::{HexDump, HexLine, hex_string, hexdump};
pub use layout::{FieldLoc, SkbLayout};
pub use packet::{Packet, decode_ethernet, decode_ip, decode_network};
pub use skb::{MemoryReader, SkbError, SkbOptions, SkbView, read_skb, read_skb_with};
pub use warning::{Layer, Warning};
pub use wire::MacAddr;
