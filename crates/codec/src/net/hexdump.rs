//! Bounded hex dumps: a packet may be 64 KiB and a stop report must stay readable, so every dump
//! takes a byte limit and says how much it left out.

use std::fmt::{self, Write as _};

use serde::Serialize;

/// Bytes per dump line.
pub const BYTES_PER_LINE: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HexLine {
    pub offset: usize,
    /// Space-separated byte values.
    pub hex: String,
    /// The same bytes, printable ASCII as is and everything else as `.`.
    pub ascii: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HexDump {
    pub lines: Vec<HexLine>,
    /// Bytes shown.
    pub shown_len: usize,
    /// Bytes there were.
    pub total_len: usize,
}

/// Dumps at most `limit` bytes of `bytes`, 16 to a line.
pub fn hexdump(bytes: &[u8], limit: usize) -> HexDump {
    let shown = &bytes[..bytes.len().min(limit)];
    let lines = shown
        .chunks(BYTES_PER_LINE)
        .enumerate()
        .map(|(i, chunk)| {
            let mut hex = String::with_capacity(chunk.len() * 3);
            for (j, b) in chunk.iter().enumerate() {
                if j > 0 {
                    hex.push(' ');
                }
                // Writing to a String cannot fail.
                let _ = write!(hex, "{b:02x}");
            }
            let ascii = chunk
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        char::from(b)
                    } else {
                        '.'
                    }
                })
                .collect();
            HexLine {
                offset: i * BYTES_PER_LINE,
                hex,
                ascii,
            }
        })
        .collect();
    HexDump {
        lines,
        shown_len: shown.len(),
        total_len: bytes.len(),
    }
}

/// At most `limit` bytes of `bytes` as one lowercase hex string without separators.
pub fn hex_string(bytes: &[u8], limit: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let shown = &bytes[..bytes.len().min(limit)];
    let mut s = String::with_capacity(shown.len() * 2);
    for &b in shown {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

impl HexDump {
    pub fn is_truncated(&self) -> bool {
        self.shown_len < self.total_len
    }
}

impl fmt::Display for HexDump {
    /// One line per 16 bytes: offset, hex (with a gap after the eighth byte), ASCII; then a note
    /// of what the limit cut off.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            let mut hex = line.hex.clone();
            if hex.len() > 23 {
                hex.insert(23, ' ');
            }
            writeln!(f, "{:04x}  {hex:<48}  {}", line.offset, line.ascii)?;
        }
        if self.is_truncated() {
            writeln!(f, "... {} more bytes", self.total_len - self.shown_len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_and_ascii() {
        let bytes: Vec<u8> = (0x3c..0x3c + 40).collect();
        let d = hexdump(&bytes, 20);
        assert_eq!(d.lines.len(), 2);
        assert_eq!(d.lines[1].offset, 16);
        assert_eq!(d.lines[1].hex, "4c 4d 4e 4f");
        assert_eq!(d.lines[0].ascii, "<=>?@ABCDEFGHIJK");
        assert!(d.to_string().ends_with("... 20 more bytes\n"));
        assert_eq!(hex_string(&[0, 0xab, 0x10], 2), "00ab");
    }

    #[test]
    fn empty_input() {
        let d = hexdump(&[], 10);
        assert!(d.lines.is_empty() && !d.is_truncated());
        assert_eq!(d.to_string(), "");
    }
}
