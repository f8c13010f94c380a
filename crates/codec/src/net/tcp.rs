//! TCP header (RFC 9293): ports, sequence numbers, flags by name, window.

use std::fmt;

use serde::Serialize;

use crate::net::warning::{Layer, Warning};
use crate::net::wire::prefix;

/// Length of a header without options.
pub const TCP_MIN_HLEN: usize = 20;

/// Flag names in bit order, lowest first, as the kernel's `tcp_flag_byte` holds them.
pub const FLAG_NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpHeader {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// Header length in 32-bit words, as on the wire.
    pub data_offset: u8,
    /// Names of the flags set, from [`FLAG_NAMES`].
    pub flags: Vec<&'static str>,
    pub window: u16,
    pub checksum: u16,
    pub urgent: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// The flags byte as on the wire.
    #[serde(skip)]
    pub flag_bits: u8,
    /// Where the segment's data starts in the decoded bytes; `None` when the data offset is bad
    /// or the options are cut short.
    #[serde(skip)]
    pub payload_start: Option<usize>,
}

/// Names of the flags set in a TCP flags byte.
pub fn flag_names(bits: u8) -> Vec<&'static str> {
    FLAG_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Decodes a TCP header at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<TcpHeader, Warning> {
    let h: &[u8; TCP_MIN_HLEN] = prefix(bytes).ok_or(Warning::Truncated {
        layer: Layer::Tcp,
        need: TCP_MIN_HLEN,
        have: bytes.len(),
    })?;
    let doff = h[12] >> 4;
    let mut tcp = TcpHeader {
        sport: u16::from_be_bytes([h[0], h[1]]),
        dport: u16::from_be_bytes([h[2], h[3]]),
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        data_offset: doff,
        flags: flag_names(h[13]),
        window: u16::from_be_bytes([h[14], h[15]]),
        checksum: u16::from_be_bytes([h[16], h[17]]),
        urgent: u16::from_be_bytes([h[18], h[19]]),
        warnings: Vec::new(),
        flag_bits: h[13],
        payload_start: None,
    };
    let hlen = usize::from(doff) * 4;
    if hlen < TCP_MIN_HLEN {
        tcp.warnings.push(Warning::BadDataOffset { doff });
    } else if hlen > bytes.len() {
        tcp.warnings.push(Warning::Truncated {
            layer: Layer::Tcp,
            need: hlen,
            have: bytes.len(),
        });
    } else {
        tcp.payload_start = Some(hlen);
    }
    Ok(tcp)
}

impl fmt::Display for TcpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TCP {} > {} [{}] seq {}",
            self.sport,
            self.dport,
            self.flags.join(","),
            self.seq
        )?;
        if self.flag_bits & 0x10 != 0 {
            write!(f, " ack {}", self.ack)?;
        }
        write!(f, " win {}", self.window)?;
        if self.data_offset != 5 {
            write!(f, " doff {}", self.data_offset)?;
        }
        if self.flag_bits & 0x20 != 0 {
            write!(f, " urg {}", self.urgent)?;
        }
        Ok(())
    }
}
