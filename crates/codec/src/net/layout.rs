//! Where the members of `struct sk_buff` that packet decoding needs sit, as plain numbers.
//!
//! Filled from the kernel's DWARF by `crate::dwarf`, consumed by `crate::net::skb`. Keeping it a
//! plain value type lets the decoder be tested on byte fixtures without any ELF file.

use serde::{Deserialize, Serialize};

/// Location of one member inside its struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FieldLoc {
    /// Byte offset from the start of the struct (for a bitfield: of the byte holding its lowest bit).
    pub offset: u64,
    /// Size in bytes of the member's storage (for a bitfield: 1, the byte read).
    pub size: u64,
    /// For a bitfield: bit offset of its lowest bit inside the byte at `offset` (little-endian, x86).
    pub bit_offset: Option<u32>,
    /// For a bitfield: width in bits.
    pub bit_size: Option<u32>,
}

/// The `struct sk_buff` and `struct net_device` members that the skb view reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SkbLayout {
    /// `sizeof(struct sk_buff)`.
    pub size: u64,
    pub head: FieldLoc,
    pub data: FieldLoc,
    pub len: FieldLoc,
    pub data_len: FieldLoc,
    pub protocol: FieldLoc,
    pub pkt_type: FieldLoc,
    pub mark: FieldLoc,
    pub dev: FieldLoc,
    pub transport_header: FieldLoc,
    pub network_header: FieldLoc,
    pub mac_header: FieldLoc,
    pub tail: FieldLoc,
    pub end: FieldLoc,
    /// `struct net_device` member `name` (a `char[IFNAMSIZ]`).
    pub dev_name: FieldLoc,
}
