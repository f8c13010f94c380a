//! Ethernet II header, with at most one 802.1Q (or 802.1ad) tag.

use std::fmt;

use serde::Serialize;

use crate::net::names::ethertype_name;
use crate::net::warning::{Layer, Warning};
use crate::net::wire::{MacAddr, be16_at, prefix};

/// Length of an untagged Ethernet header.
pub const ETH_HLEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_HLEN: usize = 4;

/// EtherTypes that announce a VLAN tag rather than a payload.
fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(ethertype, 0x8100 | 0x88a8)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EthernetHeader {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// The EtherType of the payload: after the VLAN tag when there is one. Below 0x0600 it is an
    /// 802.3 length, not a type.
    #[serde(rename = "type")]
    pub ether_type: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<VlanTag>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// Bytes up to the payload: 14, or 18 with a tag.
    #[serde(skip)]
    pub header_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VlanTag {
    /// The tag protocol identifier: 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    pub id: u16,
    pub pcp: u8,
    pub dei: bool,
}

impl EthernetHeader {
    /// Whether `ether_type` names a payload protocol (not an 802.3 length, nor a second tag that
    /// was left undecoded).
    pub fn has_payload_type(&self) -> bool {
        self.ether_type >= 0x0600 && !is_vlan_tpid(self.ether_type)
    }
}

/// Decodes an Ethernet header at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<EthernetHeader, Warning> {
    let h: &[u8; ETH_HLEN] = prefix(bytes).ok_or(Warning::Truncated {
        layer: Layer::Ethernet,
        need: ETH_HLEN,
        have: bytes.len(),
    })?;
    let dst = MacAddr([h[0], h[1], h[2], h[3], h[4], h[5]]);
    let src = MacAddr([h[6], h[7], h[8], h[9], h[10], h[11]]);
    let outer = u16::from_be_bytes([h[12], h[13]]);
    let mut eth = EthernetHeader {
        dst,
        src,
        ether_type: outer,
        type_name: ethertype_name(outer),
        vlan: None,
        warnings: Vec::new(),
        header_len: ETH_HLEN,
    };
    if !is_vlan_tpid(outer) {
        return Ok(eth);
    }
    let (Some(tci), Some(inner)) = (be16_at(bytes, 14), be16_at(bytes, 16)) else {
        // The tag is cut off: report the frame as far as it goes, typed by its TPID.
        eth.warnings.push(Warning::Truncated {
            layer: Layer::Vlan,
            need: ETH_HLEN + VLAN_HLEN,
            have: bytes.len(),
        });
        return Ok(eth);
    };
    eth.vlan = Some(VlanTag {
        tpid: outer,
        id: tci & 0x0fff,
        pcp: (tci >> 13) as u8,
        dei: tci & 0x1000 != 0,
    });
    eth.ether_type = inner;
    eth.type_name = ethertype_name(inner);
    eth.header_len = ETH_HLEN + VLAN_HLEN;
    if is_vlan_tpid(inner) {
        eth.warnings.push(Warning::Unsupported {
            layer: Layer::Vlan,
            what: format!("second VLAN tag (TPID {inner:#06x})"),
        });
    }
    Ok(eth)
}

impl fmt::Display for EthernetHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ethernet {} > {}", self.src, self.dst)?;
        if let Some(v) = &self.vlan {
            write!(f, " vlan {} pcp {}", v.id, v.pcp)?;
            if v.dei {
                f.write_str(" DEI")?;
            }
        }
        if self.ether_type < 0x0600 {
            return write!(f, " 802.3 length {}", self.ether_type);
        }
        match self.type_name {
            Some(name) => write!(f, " type {name} ({:#06x})", self.ether_type),
            None => write!(f, " type {:#06x}", self.ether_type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_fields_split() {
        let mut f = vec![0xff; 6];
        f.extend([2, 0, 0, 0, 0, 1, 0x81, 0x00, 0xb0, 0x0a, 0x08, 0x00]);
        let eth = decode(&f).unwrap();
        let v = eth.vlan.unwrap();
        assert_eq!((v.id, v.pcp, v.dei), (10, 5, true));
        assert_eq!(eth.ether_type, 0x0800);
        assert_eq!(eth.header_len, 18);
        assert!(eth.dst.is_broadcast());
    }
}
