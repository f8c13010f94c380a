//! IPv6 header (RFC 8200), walking the extension headers to find the upper-layer protocol.

use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;

use serde::Serialize;

use crate::net::names::ip_protocol_name;
use crate::net::warning::{Layer, Warning};
use crate::net::wire::{array_at, be16_at, be32_at, prefix};

/// Length of the fixed header.
pub const IPV6_HLEN: usize = 40;

/// More than this many extension headers is not a packet anyone sends on purpose; stopping bounds
/// the walk over hostile bytes.
const MAX_EXT_HEADERS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipv6Header {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub version: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    pub payload_len: u16,
    /// The fixed header's Next Header: an extension header or the upper-layer protocol.
    pub next_header: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_header_name: Option<&'static str>,
    pub hop_limit: u8,
    /// Extension headers walked, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ext_headers: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragment: Option<Ipv6Fragment>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// Protocol after the extension headers, or `None` if the walk did not reach it.
    #[serde(skip)]
    pub upper_protocol: Option<u8>,
    /// Where the upper-layer payload lies in the decoded bytes, bounded by `payload_len` and the
    /// bytes present; `None` when the extension headers could not be walked.
    #[serde(skip)]
    pub payload: Option<Range<usize>>,
    /// False when the bytes present are fewer than `payload_len` promises.
    #[serde(skip)]
    pub payload_complete: bool,
}

/// Contents of a Fragment extension header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ipv6Fragment {
    /// Offset in bytes.
    pub offset: u16,
    pub more: bool,
    pub id: u32,
}

fn ext_header_name(next: u8) -> Option<&'static str> {
    Some(match next {
        0 => "hop-by-hop",
        43 => "routing",
        44 => "fragment",
        51 => "AH",
        60 => "destination-options",
        _ => return None,
    })
}

impl Ipv6Header {
    /// A fragment other than the first holds no transport header.
    pub fn is_later_fragment(&self) -> bool {
        self.fragment.is_some_and(|f| f.offset != 0)
    }
}

/// Decodes an IPv6 header and its extension headers at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Ipv6Header, Warning> {
    let have = bytes.len();
    let h: &[u8; IPV6_HLEN] = prefix(bytes).ok_or(Warning::Truncated {
        layer: Layer::Ipv6,
        need: IPV6_HLEN,
        have,
    })?;
    let version = h[0] >> 4;
    if version != 6 {
        return Err(Warning::WrongVersion {
            layer: Layer::Ipv6,
            version,
            expected: 6,
        });
    }
    let vtf = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let addr = |at| array_at::<16>(h, at).map_or(Ipv6Addr::UNSPECIFIED, |a| Ipv6Addr::from(*a));
    let next_header = h[6];
    let mut ip = Ipv6Header {
        src: addr(8),
        dst: addr(24),
        version,
        traffic_class: (vtf >> 20) as u8,
        flow_label: vtf & 0x000f_ffff,
        payload_len: u16::from_be_bytes([h[4], h[5]]),
        next_header,
        next_header_name: ip_protocol_name(next_header),
        hop_limit: h[7],
        ext_headers: Vec::new(),
        fragment: None,
        warnings: Vec::new(),
        upper_protocol: None,
        payload: None,
        payload_complete: false,
    };

    let claimed = IPV6_HLEN + usize::from(ip.payload_len);
    let (end, complete) = if ip.payload_len == 0 {
        ip.warnings.push(Warning::LengthZero {
            layer: Layer::Ipv6,
            have,
        });
        (have, false)
    } else if claimed > have {
        ip.warnings.push(Warning::LengthPastBuffer {
            layer: Layer::Ipv6,
            claimed,
            have,
        });
        (have, false)
    } else {
        (claimed, true)
    };
    ip.payload_complete = complete;

    let mut next = next_header;
    let mut at = IPV6_HLEN;
    while let Some(name) = ext_header_name(next) {
        if ip.ext_headers.len() == MAX_EXT_HEADERS {
            ip.warnings.push(Warning::Unsupported {
                layer: Layer::Ipv6,
                what: format!("more than {MAX_EXT_HEADERS} extension headers"),
            });
            return Ok(ip);
        }
        let Some(&[nh, len]) = array_at::<2>(bytes.get(..end).unwrap_or_default(), at) else {
            ip.warnings.push(Warning::Truncated {
                layer: Layer::Ipv6,
                need: at + 2,
                have: end,
            });
            return Ok(ip);
        };
        let ext_len = match next {
            44 => 8,
            51 => (usize::from(len) + 2) * 4,
            _ => (usize::from(len) + 1) * 8,
        };
        if at + ext_len > end {
            ip.warnings.push(Warning::Truncated {
                layer: Layer::Ipv6,
                need: at + ext_len,
                have: end,
            });
            return Ok(ip);
        }
        if next == 44 {
            // In range: checked against `end` just above.
            let off = be16_at(bytes, at + 2).unwrap_or(0);
            ip.fragment = Some(Ipv6Fragment {
                offset: off & 0xfff8,
                more: off & 1 != 0,
                id: be32_at(bytes, at + 4).unwrap_or(0),
            });
        }
        ip.ext_headers.push(name);
        next = nh;
        at += ext_len;
    }
    ip.upper_protocol = Some(next);
    ip.payload = Some(at..end);
    Ok(ip)
}

impl fmt::Display for Ipv6Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv6 {} > {} hlim {}",
            self.src, self.dst, self.hop_limit
        )?;
        if self.flow_label != 0 {
            write!(f, " flow {:#07x}", self.flow_label)?;
        }
        for ext in &self.ext_headers {
            write!(f, " +{ext}")?;
        }
        if let Some(frag) = &self.fragment {
            write!(
                f,
                " frag id {} off {}{}",
                frag.id,
                frag.offset,
                if frag.more { " MF" } else { "" }
            )?;
        }
        let upper = self.upper_protocol.unwrap_or(self.next_header);
        match ip_protocol_name(upper) {
            Some(name) => write!(f, " next {name}")?,
            None => write!(f, " next {upper}")?,
        }
        write!(f, " payload_len {}", self.payload_len)
    }
}
