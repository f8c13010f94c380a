//! IPv4 header (RFC 791), with the header checksum verified.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;

use serde::Serialize;

use crate::net::names::ip_protocol_name;
use crate::net::warning::{Layer, Warning};
use crate::net::wire::{internet_checksum, prefix};

/// Length of a header without options.
pub const IPV4_MIN_HLEN: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub version: u8,
    /// Header length in 32-bit words, as on the wire.
    pub ihl: u8,
    pub dscp: u8,
    pub ecn: u8,
    pub tot_len: u16,
    pub id: u16,
    /// Don't Fragment.
    pub df: bool,
    /// More Fragments.
    pub mf: bool,
    /// Fragment offset in bytes (the wire field times 8), as Wireshark shows it.
    pub frag_offset: u16,
    pub ttl: u8,
    pub protocol: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<&'static str>,
    pub checksum: u16,
    /// `None` when the header is cut short or its IHL is invalid, so there is nothing to verify.
    pub checksum_ok: Option<bool>,
    #[serde(skip_serializing_if = "is_zero")]
    pub options_len: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// Where the IP payload lies in the decoded bytes: bounded by `tot_len` (dropping link-layer
    /// padding) and by the bytes present. `None` when the header length is unusable.
    #[serde(skip)]
    pub payload: Option<Range<usize>>,
    /// False when the payload range is shorter than `tot_len` promises (or `tot_len` is unusable),
    /// so payload checksums cannot be verified.
    #[serde(skip)]
    pub payload_complete: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Ipv4Header {
    /// Header length in bytes, from the IHL.
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl) * 4
    }

    /// A fragment other than the first holds no transport header.
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset != 0
    }
}

/// Decodes an IPv4 header at the start of `bytes` (which run to the end of the captured data).
pub fn decode(bytes: &[u8]) -> Result<Ipv4Header, Warning> {
    let have = bytes.len();
    let h: &[u8; IPV4_MIN_HLEN] = prefix(bytes).ok_or(Warning::Truncated {
        layer: Layer::Ipv4,
        need: IPV4_MIN_HLEN,
        have,
    })?;
    let version = h[0] >> 4;
    if version != 4 {
        return Err(Warning::WrongVersion {
            layer: Layer::Ipv4,
            version,
            expected: 4,
        });
    }
    let ihl = h[0] & 0x0f;
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let protocol = h[9];
    let mut ip = Ipv4Header {
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        version,
        ihl,
        dscp: h[1] >> 2,
        ecn: h[1] & 0x03,
        tot_len: u16::from_be_bytes([h[2], h[3]]),
        id: u16::from_be_bytes([h[4], h[5]]),
        df: frag & 0x4000 != 0,
        mf: frag & 0x2000 != 0,
        frag_offset: (frag & 0x1fff) << 3,
        ttl: h[8],
        protocol,
        protocol_name: ip_protocol_name(protocol),
        checksum: u16::from_be_bytes([h[10], h[11]]),
        checksum_ok: None,
        options_len: 0,
        warnings: Vec::new(),
        payload: None,
        payload_complete: false,
    };
    let hlen = ip.header_len();
    if hlen < IPV4_MIN_HLEN {
        ip.warnings.push(Warning::BadIhl { ihl });
        return Ok(ip);
    }
    let Some(header) = bytes.get(..hlen) else {
        ip.warnings.push(Warning::Truncated {
            layer: Layer::Ipv4,
            need: hlen,
            have,
        });
        return Ok(ip);
    };
    ip.checksum_ok = Some(internet_checksum(&[header]) == 0);
    ip.options_len = hlen - IPV4_MIN_HLEN;

    let tot = usize::from(ip.tot_len);
    let (end, complete) = if tot == 0 {
        ip.warnings.push(Warning::LengthZero {
            layer: Layer::Ipv4,
            have,
        });
        (have, false)
    } else if tot < hlen {
        ip.warnings.push(Warning::LengthTooShort {
            layer: Layer::Ipv4,
            claimed: tot,
            min: hlen,
        });
        (have, false)
    } else if tot > have {
        ip.warnings.push(Warning::LengthPastBuffer {
            layer: Layer::Ipv4,
            claimed: tot,
            have,
        });
        (have, false)
    } else {
        (tot, true)
    };
    ip.payload = Some(hlen..end);
    ip.payload_complete = complete;
    Ok(ip)
}

impl fmt::Display for Ipv4Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 {} > {} ttl {} id {}",
            self.src, self.dst, self.ttl, self.id
        )?;
        if self.df {
            f.write_str(" DF")?;
        }
        if self.mf {
            f.write_str(" MF")?;
        }
        if self.frag_offset != 0 {
            write!(f, " frag {}", self.frag_offset)?;
        }
        write!(f, " len {}", self.tot_len)?;
        if self.ihl != 5 {
            write!(f, " ihl {}", self.ihl)?;
        }
        match self.protocol_name {
            Some(name) => write!(f, " proto {name}")?,
            None => write!(f, " proto {}", self.protocol)?,
        }
        match self.checksum_ok {
            Some(true) => f.write_str(" csum ok"),
            Some(false) => write!(f, " csum BAD {:#06x}", self.checksum),
            None => f.write_str(" csum unchecked"),
        }
    }
}
