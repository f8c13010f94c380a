//! Byte-level helpers shared by the decoders: fixed-size views that cannot index out of range,
//! the Internet checksum, and the MAC address type.

use std::fmt;

use serde::{Serialize, Serializer};

/// The first `N` bytes of `bytes` as an array, or `None` when fewer are present.
///
/// Decoders take their fixed header through this once and then index the array with constants,
/// which the compiler checks, so no decoder can panic on a short buffer.
pub fn prefix<const N: usize>(bytes: &[u8]) -> Option<&[u8; N]> {
    bytes.get(..N)?.try_into().ok()
}

/// `N` bytes of `bytes` starting at `at`, or `None` when the slice is shorter.
pub fn array_at<const N: usize>(bytes: &[u8], at: usize) -> Option<&[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Big-endian `u16` at `at`, if present.
pub fn be16_at(bytes: &[u8], at: usize) -> Option<u16> {
    array_at::<2>(bytes, at).map(|b| u16::from_be_bytes(*b))
}

/// Big-endian `u32` at `at`, if present.
pub fn be32_at(bytes: &[u8], at: usize) -> Option<u32> {
    array_at::<4>(bytes, at).map(|b| u32::from_be_bytes(*b))
}

/// The RFC 1071 Internet checksum over the concatenation of `chunks`.
///
/// Every chunk but the last must have an even length (pseudo-headers and fixed headers do), so
/// the 16-bit words line up without carrying a byte between chunks. Over a header that includes
/// its own checksum field the result is 0 exactly when the checksum is right.
pub fn internet_checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in chunks {
        let mut words = chunk.chunks_exact(2);
        for w in &mut words {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IEEE 802 MAC address; prints and serialises as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_rfc1071_example() {
        // The worked example of RFC 1071 section 3: the folded sum is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&[&data]), !0xddf2);
    }

    #[test]
    fn checksum_odd_tail_is_padded_with_zero() {
        assert_eq!(
            internet_checksum(&[&[0x12, 0x34, 0x56]]),
            !(0x1234u16 + 0x5600)
        );
    }

    #[test]
    fn short_buffers_give_none() {
        assert_eq!(be16_at(&[1], 0), None);
        assert_eq!(be32_at(&[1, 2, 3, 4], 1), None);
        assert_eq!(array_at::<2>(&[1, 2], usize::MAX), None);
        assert_eq!(prefix::<3>(&[1, 2]), None);
    }
}
