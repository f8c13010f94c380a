//! UDP header (RFC 768).

use std::fmt;
use std::ops::Range;

use serde::Serialize;

use crate::net::warning::{Layer, Warning};
use crate::net::wire::prefix;

pub const UDP_HLEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpHeader {
    pub sport: u16,
    pub dport: u16,
    /// Length of header plus data, as on the wire.
    pub len: u16,
    pub checksum: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// Where the datagram's data lies in the decoded bytes, bounded by `len` and the bytes present.
    #[serde(skip)]
    pub payload: Range<usize>,
}

/// Decodes a UDP header at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<UdpHeader, Warning> {
    let have = bytes.len();
    let h: &[u8; UDP_HLEN] = prefix(bytes).ok_or(Warning::Truncated {
        layer: Layer::Udp,
        need: UDP_HLEN,
        have,
    })?;
    let len = u16::from_be_bytes([h[4], h[5]]);
    let mut udp = UdpHeader {
        sport: u16::from_be_bytes([h[0], h[1]]),
        dport: u16::from_be_bytes([h[2], h[3]]),
        len,
        checksum: u16::from_be_bytes([h[6], h[7]]),
        warnings: Vec::new(),
        payload: UDP_HLEN..have,
    };
    let claimed = usize::from(len);
    if claimed < UDP_HLEN {
        // 0 is legal only for IPv6 jumbograms; either way the bytes present are all we have.
        udp.warnings.push(Warning::LengthTooShort {
            layer: Layer::Udp,
            claimed,
            min: UDP_HLEN,
        });
    } else if claimed > have {
        udp.warnings.push(Warning::LengthPastBuffer {
            layer: Layer::Udp,
            claimed,
            have,
        });
    } else {
        udp.payload = UDP_HLEN..claimed;
    }
    Ok(udp)
}

impl fmt::Display for UdpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UDP {} > {} len {}", self.sport, self.dport, self.len)
    }
}
