//! ICMPv6 (RFC 4443, with the neighbour-discovery and MLD types by name): echo id and sequence,
//! the quoted header of error messages, and the checksum over the IPv6 pseudo-header.
//!
//! Names follow ip6tables' `--icmpv6-type` spelling.

use std::fmt;
use std::net::Ipv6Addr;

use serde::Serialize;

use crate::net::icmp::describe;
use crate::net::ipv6::{self, Ipv6Header};
use crate::net::names::ip_protocol_name;
use crate::net::warning::{Layer, Warning};
use crate::net::wire::{array_at, be16_at, internet_checksum, prefix};

/// Length of the ICMPv6 header (type, code, checksum and 4 type-specific bytes).
pub const ICMPV6_HLEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Icmpv6Message {
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_name: Option<&'static str>,
    pub checksum: u16,
    /// Over the pseudo-header and the whole message; `None` when the message is cut short.
    pub checksum_ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u16>,
    /// Packet too big: the MTU of the next hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Parameter problem: the offending byte's offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<u32>,
    /// Neighbour solicitation/advertisement and redirect: the target address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<Box<QuotedIpv6>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// The IPv6 header (and ports, when the quote reaches them) quoted in an ICMPv6 error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotedIpv6 {
    pub ipv6: Ipv6Header,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
}

/// ip6tables' name of an ICMPv6 type.
pub fn type_name(icmp_type: u8) -> Option<&'static str> {
    Some(match icmp_type {
        1 => "destination-unreachable",
        2 => "packet-too-big",
        3 => "time-exceeded",
        4 => "parameter-problem",
        128 => "echo-request",
        129 => "echo-reply",
        130 => "mld-listener-query",
        131 => "mld-listener-report",
        132 => "mld-listener-done",
        133 => "router-solicitation",
        134 => "router-advertisement",
        135 => "neighbour-solicitation",
        136 => "neighbour-advertisement",
        137 => "redirect",
        143 => "mld2-listener-report",
        _ => return None,
    })
}

/// ip6tables' name of an ICMPv6 code, for the types whose codes have names.
pub fn code_name(icmp_type: u8, code: u8) -> Option<&'static str> {
    Some(match (icmp_type, code) {
        (1, 0) => "no-route",
        (1, 1) => "communication-prohibited",
        (1, 2) => "beyond-scope",
        (1, 3) => "address-unreachable",
        (1, 4) => "port-unreachable",
        (1, 5) => "failed-policy",
        (1, 6) => "reject-route",
        (3, 0) => "ttl-zero-during-transit",
        (3, 1) => "ttl-zero-during-reassembly",
        (4, 0) => "bad-header",
        (4, 1) => "unknown-header-type",
        (4, 2) => "unknown-option",
        _ => return None,
    })
}

/// Decodes an ICMPv6 message occupying `bytes`, verifying its checksum over the pseudo-header
/// built from `src` and `dst`. A caller holding only part of the message should set
/// `checksum_ok` to `None`.
pub fn decode(bytes: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<Icmpv6Message, Warning> {
    let h: &[u8; 4] = prefix(bytes).ok_or(Warning::Truncated {
        layer: Layer::Icmpv6,
        need: 4,
        have: bytes.len(),
    })?;
    let (icmp_type, code) = (h[0], h[1]);
    // A message past 4 GiB cannot exist here: the length came from a 64 KiB-bounded buffer.
    let upper_len = u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes();
    let pseudo_tail = [0, 0, 0, 58];
    let sum = internet_checksum(&[
        &src.octets(),
        &dst.octets(),
        &upper_len,
        &pseudo_tail,
        bytes,
    ]);
    let mut icmp = Icmpv6Message {
        icmp_type,
        code,
        type_name: type_name(icmp_type),
        code_name: code_name(icmp_type, code),
        checksum: u16::from_be_bytes([h[2], h[3]]),
        checksum_ok: Some(sum == 0),
        id: None,
        seq: None,
        mtu: None,
        pointer: None,
        target: None,
        original: None,
        warnings: Vec::new(),
    };
    let Some(rest) = array_at::<4>(bytes, 4) else {
        icmp.warnings.push(Warning::Truncated {
            layer: Layer::Icmpv6,
            need: ICMPV6_HLEN,
            have: bytes.len(),
        });
        return Ok(icmp);
    };
    match icmp_type {
        128 | 129 => {
            icmp.id = Some(u16::from_be_bytes([rest[0], rest[1]]));
            icmp.seq = Some(u16::from_be_bytes([rest[2], rest[3]]));
        }
        2 => icmp.mtu = Some(u32::from_be_bytes(*rest)),
        4 => icmp.pointer = Some(u32::from_be_bytes(*rest)),
        135..=137 => match array_at::<16>(bytes, ICMPV6_HLEN) {
            Some(t) => icmp.target = Some(Ipv6Addr::from(*t)),
            None => icmp.warnings.push(Warning::Truncated {
                layer: Layer::Icmpv6,
                need: ICMPV6_HLEN + 16,
                have: bytes.len(),
            }),
        },
        _ => {}
    }
    if (1..=4).contains(&icmp_type) {
        match quoted_ipv6(bytes.get(ICMPV6_HLEN..).unwrap_or_default()) {
            Ok(q) => icmp.original = Some(Box::new(q)),
            Err(w) => icmp.warnings.push(w),
        }
    }
    Ok(icmp)
}

/// Decodes the packet quoted by an ICMPv6 error, dropping the length warnings that quoting only
/// its start makes expected.
fn quoted_ipv6(quote: &[u8]) -> Result<QuotedIpv6, Warning> {
    let mut ipv6 = ipv6::decode(quote)?;
    ipv6.warnings.retain(|w| {
        !matches!(
            w,
            Warning::LengthPastBuffer { .. } | Warning::LengthZero { .. }
        )
    });
    let ports = match (&ipv6.payload, ipv6.upper_protocol) {
        (Some(p), Some(6 | 17 | 132 | 136)) if !ipv6.is_later_fragment() => quote
            .get(p.clone())
            .and_then(|t| Some((be16_at(t, 0)?, be16_at(t, 2)?))),
        _ => None,
    };
    Ok(QuotedIpv6 {
        sport: ports.map(|p| p.0),
        dport: ports.map(|p| p.1),
        ipv6,
    })
}

impl fmt::Display for QuotedIpv6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = &self.ipv6;
        write!(
            f,
            "quoted IPv6 {} > {} hlim {}",
            ip.src, ip.dst, ip.hop_limit
        )?;
        let upper = ip.upper_protocol.unwrap_or(ip.next_header);
        match ip_protocol_name(upper) {
            Some(name) => write!(f, " next {name}")?,
            None => write!(f, " next {upper}")?,
        }
        if let (Some(s), Some(d)) = (self.sport, self.dport) {
            write!(f, " {s} > {d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Icmpv6Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = describe(self.type_name, self.code_name, self.icmp_type, self.code);
        write!(f, "ICMPv6 {what}")?;
        if let (Some(id), Some(seq)) = (self.id, self.seq) {
            write!(f, " id {id} seq {seq}")?;
        }
        if let Some(t) = self.target {
            write!(f, " target {t}")?;
        }
        if let Some(mtu) = self.mtu {
            write!(f, " mtu {mtu}")?;
        }
        if let Some(p) = self.pointer {
            write!(f, " pointer {p}")?;
        }
        if self.checksum_ok == Some(false) {
            write!(f, " csum BAD {:#06x}", self.checksum)?;
        }
        if let Some(q) = &self.original {
            write!(f, "; {q}")?;
        }
        Ok(())
    }
}
