//! What went wrong while decoding, kept next to whatever could still be decoded.
//!
//! A packet captured at an arbitrary stop may be half-built, truncated or simply garbage; the
//! user still wants every field that can be read. So decoders return a [`Warning`] instead of
//! failing when a header cannot be decoded at all (the caller lists it and goes on), and attach
//! warnings to a header they could decode only in part. Warnings serialise as their message.

use std::fmt;

use serde::{Serialize, Serializer};

/// The header (or the skb itself) a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    Skb,
    /// The network layer before its type is known.
    Network,
    Ethernet,
    Vlan,
    Arp,
    Ipv4,
    Ipv6,
    Icmp,
    Icmpv6,
    Tcp,
    Udp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Skb => "skb",
            Layer::Network => "network",
            Layer::Ethernet => "ethernet",
            Layer::Vlan => "vlan",
            Layer::Arp => "arp",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Icmp => "icmp",
            Layer::Icmpv6 => "icmpv6",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
        })
    }
}

/// One problem met while decoding. Typed so tests and callers can match on it; its `Display`
/// (also its JSON form) is the sentence shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    #[error("{layer}: truncated: {have} of {need} header bytes present")]
    Truncated {
        layer: Layer,
        need: usize,
        have: usize,
    },

    #[error("{layer}: version {version} where {expected} was expected; not decoded")]
    WrongVersion {
        layer: Layer,
        version: u8,
        expected: u8,
    },

    #[error("ipv4: bad IHL {ihl} ({} header bytes, the minimum is 20); transport not decoded", *ihl as usize * 4)]
    BadIhl { ihl: u8 },

    #[error("tcp: bad data offset {doff} ({} header bytes, the minimum is 20)", *doff as usize * 4)]
    BadDataOffset { doff: u8 },

    #[error(
        "{layer}: length field says {claimed} bytes but only {have} are present; decoded what is there"
    )]
    LengthPastBuffer {
        layer: Layer,
        claimed: usize,
        have: usize,
    },

    #[error(
        "{layer}: length field {claimed} is shorter than the {min}-byte header; decoded what is there"
    )]
    LengthTooShort {
        layer: Layer,
        claimed: usize,
        min: usize,
    },

    #[error("{layer}: length field is 0 (GSO or jumbo packet?); decoded the {have} bytes present")]
    LengthZero { layer: Layer, have: usize },

    #[error("{layer}: fragment at byte offset {offset}: it carries no transport header")]
    LaterFragment { layer: Layer, offset: u32 },

    #[error("{layer}: {what}: not decoded")]
    Unsupported { layer: Layer, what: String },

    #[error(
        "skb: nonlinear: {data_len} of its {len} bytes are in page fragments; only the linear part is decoded"
    )]
    Nonlinear { len: u32, data_len: u32 },

    #[error("skb: linear data is {tail} bytes; read only the first {limit}")]
    LinearClipped { tail: u64, limit: usize },

    #[error(
        "skb: {header} header offset {offset} is past the {have} linear bytes; not decoded from it"
    )]
    HeaderOutOfRange {
        header: &'static str,
        offset: u16,
        have: usize,
    },

    #[error("skb: len - data_len = {expected} but data..tail holds {actual} bytes")]
    LinearLenMismatch { expected: u64, actual: u64 },

    #[error("skb: {why}; decoded {what} from skb->data")]
    DecodedFromData {
        why: &'static str,
        what: &'static str,
    },

    #[error("skb: protocol {protocol:#06x} and no header to guess from; packet not decoded")]
    UnknownProtocol { protocol: u16 },

    #[error("skb: device name unreadable at {addr:#x}: {reason}")]
    DevUnreadable { addr: u64, reason: String },
}

impl Serialize for Warning {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
