//! ARP (RFC 826). Addresses are decoded for the only pairing a UML lab uses, Ethernet and IPv4;
//! other hardware or protocol types keep their numbers and a warning.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::net::names::ethertype_name;
use crate::net::warning::{Layer, Warning};
use crate::net::wire::{MacAddr, array_at, prefix};

/// Fixed part before the addresses.
pub const ARP_FIXED_LEN: usize = 8;
/// Full length of an Ethernet/IPv4 ARP packet.
pub const ARP_ETH_IPV4_LEN: usize = 28;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArpPacket {
    pub htype: u16,
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    pub oper: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oper_name: Option<&'static str>,
    /// Sender and target addresses; `None` when the types are not Ethernet/IPv4 or the packet is
    /// cut short.
    pub sha: Option<MacAddr>,
    pub spa: Option<Ipv4Addr>,
    pub tha: Option<MacAddr>,
    pub tpa: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// Name of an ARP operation code.
pub fn oper_name(oper: u16) -> Option<&'static str> {
    Some(match oper {
        1 => "request",
        2 => "reply",
        3 => "rarp-request",
        4 => "rarp-reply",
        8 => "inarp-request",
        9 => "inarp-reply",
        _ => return None,
    })
}

/// Decodes an ARP packet at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<ArpPacket, Warning> {
    let h: &[u8; ARP_FIXED_LEN] = prefix(bytes).ok_or(Warning::Truncated {
        layer: Layer::Arp,
        need: ARP_FIXED_LEN,
        have: bytes.len(),
    })?;
    let oper = u16::from_be_bytes([h[6], h[7]]);
    let mut arp = ArpPacket {
        htype: u16::from_be_bytes([h[0], h[1]]),
        ptype: u16::from_be_bytes([h[2], h[3]]),
        hlen: h[4],
        plen: h[5],
        oper,
        oper_name: oper_name(oper),
        sha: None,
        spa: None,
        tha: None,
        tpa: None,
        warnings: Vec::new(),
    };
    if (arp.htype, arp.ptype, arp.hlen, arp.plen) != (1, 0x0800, 6, 4) {
        arp.warnings.push(Warning::Unsupported {
            layer: Layer::Arp,
            what: format!(
                "addresses of hardware type {} / protocol {} ({}-byte / {}-byte)",
                arp.htype,
                ethertype_name(arp.ptype)
                    .map_or_else(|| format!("{:#06x}", arp.ptype), str::to_owned),
                arp.hlen,
                arp.plen
            ),
        });
        return Ok(arp);
    }
    let mac = |at| array_at::<6>(bytes, at).map(|a| MacAddr(*a));
    let ip = |at| array_at::<4>(bytes, at).map(|a| Ipv4Addr::from(*a));
    arp.sha = mac(8);
    arp.spa = ip(14);
    arp.tha = mac(18);
    arp.tpa = ip(24);
    if bytes.len() < ARP_ETH_IPV4_LEN {
        arp.warnings.push(Warning::Truncated {
            layer: Layer::Arp,
            need: ARP_ETH_IPV4_LEN,
            have: bytes.len(),
        });
    }
    Ok(arp)
}

fn or_q<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "?".to_owned(), T::to_string)
}

impl fmt::Display for ArpPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.oper {
            1 => write!(
                f,
                "ARP request who-has {} tell {}",
                or_q(&self.tpa),
                or_q(&self.spa)
            ),
            2 => write!(f, "ARP reply {} is-at {}", or_q(&self.spa), or_q(&self.sha)),
            op => write!(
                f,
                "ARP {} sender {} {} target {} {}",
                self.oper_name
                    .map_or_else(|| format!("oper {op}"), str::to_owned),
                or_q(&self.sha),
                or_q(&self.spa),
                or_q(&self.tha),
                or_q(&self.tpa)
            ),
        }
    }
}
