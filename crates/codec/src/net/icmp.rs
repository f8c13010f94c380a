//! ICMP for IPv4 (RFC 792): type and code by name, echo id and sequence, and for error messages
//! the quoted header of the packet that caused them.
//!
//! Names follow iptables' `--icmp-type` spelling, since that is how a lab's REJECT rules and
//! the user's filters name them.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::net::ipv4::{self, Ipv4Header};
use crate::net::names::ip_protocol_name;
use crate::net::warning::{Layer, Warning};
use crate::net::wire::{array_at, be16_at, internet_checksum, prefix};

/// Length of the ICMP header (type, code, checksum and the 4-byte rest-of-header).
pub const ICMP_HLEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IcmpMessage {
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_name: Option<&'static str>,
    pub checksum: u16,
    /// Over the whole message; `None` when the caller knows the message is cut short.
    pub checksum_ok: Option<bool>,
    /// Identifier and sequence number, for echo, timestamp, information and address-mask messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u16>,
    /// Redirect: the gateway to use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Fragmentation needed: the next-hop MTU (RFC 1191).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Parameter problem: the offending byte's offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<u8>,
    /// Error messages: the start of the datagram that caused the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<Box<QuotedIpv4>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// The IPv4 header (and ports, when the quote reaches them) quoted in an ICMP error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotedIpv4 {
    pub ipv4: Ipv4Header,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
}

/// iptables' name of an ICMP type.
pub fn type_name(icmp_type: u8) -> Option<&'static str> {
    Some(match icmp_type {
        0 => "echo-reply",
        3 => "destination-unreachable",
        4 => "source-quench",
        5 => "redirect",
        8 => "echo-request",
        9 => "router-advertisement",
        10 => "router-solicitation",
        11 => "time-exceeded",
        12 => "parameter-problem",
        13 => "timestamp-request",
        14 => "timestamp-reply",
        15 => "info-request",
        16 => "info-reply",
        17 => "address-mask-request",
        18 => "address-mask-reply",
        _ => return None,
    })
}

/// iptables' name of an ICMP code, for the types whose codes have names.
pub fn code_name(icmp_type: u8, code: u8) -> Option<&'static str> {
    Some(match (icmp_type, code) {
        (3, 0) => "network-unreachable",
        (3, 1) => "host-unreachable",
        (3, 2) => "protocol-unreachable",
        (3, 3) => "port-unreachable",
        (3, 4) => "fragmentation-needed",
        (3, 5) => "source-route-failed",
        (3, 6) => "network-unknown",
        (3, 7) => "host-unknown",
        (3, 9) => "network-prohibited",
        (3, 10) => "host-prohibited",
        (3, 11) => "TOS-network-unreachable",
        (3, 12) => "TOS-host-unreachable",
        (3, 13) => "communication-prohibited",
        (3, 14) => "host-precedence-violation",
        (3, 15) => "precedence-cutoff",
        (5, 0) => "network-redirect",
        (5, 1) => "host-redirect",
        (5, 2) => "TOS-network-redirect",
        (5, 3) => "TOS-host-redirect",
        (11, 0) => "ttl-zero-during-transit",
        (11, 1) => "ttl-zero-during-reassembly",
        (12, 0) => "ip-header-bad",
        (12, 1) => "required-option-missing",
        _ => return None,
    })
}

/// Types whose body quotes the offending datagram.
fn is_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// Types whose rest-of-header holds an identifier and a sequence number.
fn has_id_seq(icmp_type: u8) -> bool {
    matches!(icmp_type, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
}

/// Decodes an ICMP message occupying `bytes` (the IP payload). The checksum is verified over
/// `bytes`; a caller holding only part of the message should set `checksum_ok` to `None`.
pub fn decode(bytes: &[u8]) -> Result<IcmpMessage, Warning> {
    let h: &[u8; 4] = prefix(bytes).ok_or(Warning::Truncated {
        layer: Layer::Icmp,
        need: 4,
        have: bytes.len(),
    })?;
    let (icmp_type, code) = (h[0], h[1]);
    let mut icmp = IcmpMessage {
        icmp_type,
        code,
        type_name: type_name(icmp_type),
        code_name: code_name(icmp_type, code),
        checksum: u16::from_be_bytes([h[2], h[3]]),
        checksum_ok: Some(internet_checksum(&[bytes]) == 0),
        id: None,
        seq: None,
        gateway: None,
        mtu: None,
        pointer: None,
        original: None,
        warnings: Vec::new(),
    };
    let Some(rest) = array_at::<4>(bytes, 4) else {
        icmp.warnings.push(Warning::Truncated {
            layer: Layer::Icmp,
            need: ICMP_HLEN,
            have: bytes.len(),
        });
        return Ok(icmp);
    };
    if has_id_seq(icmp_type) {
        icmp.id = Some(u16::from_be_bytes([rest[0], rest[1]]));
        icmp.seq = Some(u16::from_be_bytes([rest[2], rest[3]]));
    }
    match (icmp_type, code) {
        (5, _) => icmp.gateway = Some(Ipv4Addr::from(*rest)),
        (3, 4) => icmp.mtu = Some(u16::from_be_bytes([rest[2], rest[3]])),
        (12, _) => icmp.pointer = Some(rest[0]),
        _ => {}
    }
    if is_error(icmp_type) {
        let quote = bytes.get(ICMP_HLEN..).unwrap_or_default();
        match quoted_ipv4(quote) {
            Ok(q) => icmp.original = Some(Box::new(q)),
            Err(w) => icmp.warnings.push(w),
        }
    }
    Ok(icmp)
}

/// Decodes the datagram quoted by an ICMP error. Only its start is quoted, so the length
/// warnings its own decode raises are expected and dropped.
pub(crate) fn quoted_ipv4(quote: &[u8]) -> Result<QuotedIpv4, Warning> {
    let mut ipv4 = ipv4::decode(quote)?;
    ipv4.warnings.retain(|w| {
        !matches!(
            w,
            Warning::LengthPastBuffer { .. } | Warning::LengthZero { .. }
        )
    });
    let ports = match (&ipv4.payload, ipv4.protocol) {
        // TCP, UDP, SCTP and UDP-Lite all open with the two ports.
        (Some(p), 6 | 17 | 132 | 136) if !ipv4.is_later_fragment() => quote
            .get(p.clone())
            .and_then(|t| Some((be16_at(t, 0)?, be16_at(t, 2)?))),
        _ => None,
    };
    Ok(QuotedIpv4 {
        sport: ports.map(|p| p.0),
        dport: ports.map(|p| p.1),
        ipv4,
    })
}

/// Human name of a type/code pair for the one-line rendering: iptables' words with spaces.
pub(crate) fn describe(
    type_name: Option<&str>,
    code_name: Option<&str>,
    icmp_type: u8,
    code: u8,
) -> String {
    let mut s = type_name.map_or_else(|| format!("type {icmp_type}"), |n| n.replace('-', " "));
    match code_name {
        Some(c) => {
            s.push_str(" (");
            s.push_str(&c.replace('-', " "));
            s.push(')');
        }
        None if code != 0 => s.push_str(&format!(" code {code}")),
        None => {}
    }
    s
}

impl fmt::Display for QuotedIpv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = &self.ipv4;
        write!(
            f,
            "quoted IPv4 {} > {} id {} ttl {}",
            ip.src, ip.dst, ip.id, ip.ttl
        )?;
        match ip_protocol_name(ip.protocol) {
            Some(name) => write!(f, " proto {name}")?,
            None => write!(f, " proto {}", ip.protocol)?,
        }
        if let (Some(s), Some(d)) = (self.sport, self.dport) {
            write!(f, " {s} > {d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for IcmpMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = describe(self.type_name, self.code_name, self.icmp_type, self.code);
        write!(f, "ICMP {what}")?;
        if let (Some(id), Some(seq)) = (self.id, self.seq) {
            write!(f, " id {id} seq {seq}")?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " gateway {gw}")?;
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
