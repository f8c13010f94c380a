//! C-string escaping as GDB/MI uses it, in both directions.
//!
//! gdb writes every MI string (stream text, const values) as a C string: printable ASCII as is,
//! `\\` and `\"` escaped, common control characters by name (`\n`, `\t`, ...) and every other byte
//! as a three-digit octal escape (`\303\251` is "é" when gdb's host charset is ASCII). Octal
//! escapes stand for raw bytes, not characters, so unescaping produces bytes and only the caller
//! decides how to turn them into text. MI input parameters use the same syntax, which is why the
//! command builder shares [`escape_into`].

use std::fmt;

/// Why a C string could not be unescaped. Offsets are relative to the start of the escaped text
/// handed to [`unescape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnescapeError {
    /// A backslash was followed by a byte that starts no known escape.
    BadEscape { offset: usize, byte: u8 },
    /// `\x` was not followed by a hex digit.
    BadHexEscape { offset: usize },
    /// The text ended right after a backslash.
    DanglingBackslash { offset: usize },
}

impl fmt::Display for UnescapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UnescapeError::BadEscape { byte, .. } => {
                write!(f, "unknown escape \\{}", std::ascii::escape_default(byte))
            }
            UnescapeError::BadHexEscape { .. } => f.write_str("\\x without hex digits"),
            UnescapeError::DanglingBackslash { .. } => f.write_str("backslash at end of text"),
        }
    }
}

impl UnescapeError {
    /// Byte offset of the offending backslash.
    pub fn offset(&self) -> usize {
        match *self {
            UnescapeError::BadEscape { offset, .. }
            | UnescapeError::BadHexEscape { offset }
            | UnescapeError::DanglingBackslash { offset } => offset,
        }
    }
}

/// Unescape the body of a C string (the text between the quotes) and append the bytes to `out`.
///
/// Accepts everything gdb emits plus the rest of C's escapes (`\v`, `\'`, `\?`, `\xHH`) so that a
/// future gdb or a hand-written fixture does not trip us up.
pub fn unescape_into(escaped: &[u8], out: &mut Vec<u8>) -> Result<(), UnescapeError> {
    let mut i = 0;
    while i < escaped.len() {
        // Copy the run of plain bytes in one go: most MI text has no escapes at all.
        let run = escaped[i..]
            .iter()
            .position(|&b| b == b'\\')
            .unwrap_or(escaped.len() - i);
        out.extend_from_slice(&escaped[i..i + run]);
        i += run;
        if i == escaped.len() {
            break;
        }
        let backslash = i;
        let Some(&c) = escaped.get(i + 1) else {
            return Err(UnescapeError::DanglingBackslash { offset: backslash });
        };
        i += 2;
        let byte = match c {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'v' => 0x0b,
            b'a' => 0x07,
            b'e' => 0x1b,
            b'\\' | b'"' | b'\'' | b'?' => c,
            b'0'..=b'7' => {
                // Up to three octal digits; a value above 0o377 wraps like C's char would, and
                // gdb never writes one.
                let mut value: u32 = u32::from(c - b'0');
                let mut digits = 1;
                while digits < 3 {
                    match escaped.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                            digits += 1;
                        }
                        _ => break,
                    }
                }
                (value & 0xff) as u8
            }
            b'x' => {
                let mut value: u32 = 0;
                let mut digits = 0;
                while digits < 2 {
                    match escaped.get(i).and_then(|&d| (d as char).to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    return Err(UnescapeError::BadHexEscape { offset: backslash });
                }
                value as u8
            }
            other => {
                return Err(UnescapeError::BadEscape {
                    offset: backslash,
                    byte: other,
                });
            }
        };
        out.push(byte);
    }
    Ok(())
}

/// Unescape the body of a C string into bytes.
pub fn unescape(escaped: &[u8]) -> Result<Vec<u8>, UnescapeError> {
    let mut out = Vec::with_capacity(escaped.len());
    unescape_into(escaped, &mut out)?;
    Ok(out)
}

/// Turn unescaped bytes into text. gdb's strings are usually UTF-8 or ASCII, but memory dumps and
/// a non-UTF-8 host charset are not, and one bad byte must not lose the whole record.
pub fn decode_lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

/// Append `text` to `out` as a quoted C string in gdb's own style, so that a parsed record written
/// back out is byte-for-byte what gdb printed (with an ASCII host charset) and so that gdb's MI
/// input parser reads an argument back exactly.
pub fn escape_into(text: &str, out: &mut String) {
    out.push('"');
    for &b in text.as_bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            0x1b => out.push_str("\\e"),
            0x07 => out.push_str("\\a"),
            0x20..=0x7e => out.push(b as char),
            // Non-ASCII goes out as octal bytes: gdb does the same with an ASCII host charset,
            // and octal is the one form every gdb input path unescapes to the same bytes.
            _ => {
                out.push('\\');
                out.push((b'0' + (b >> 6)) as char);
                out.push((b'0' + ((b >> 3) & 7)) as char);
                out.push((b'0' + (b & 7)) as char);
            }
        }
    }
    out.push('"');
}

/// `text` as a quoted C string.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    escape_into(text, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_octal_escapes() {
        let bytes = unescape(br#"a\tb\n\"q\" \\ \303\251\001\x41\e"#).unwrap();
        assert_eq!(bytes, b"a\tb\n\"q\" \\ \xc3\xa9\x01A\x1b");
        assert_eq!(decode_lossy(bytes), "a\tb\n\"q\" \\ é\u{1}A\u{1b}");
    }

    #[test]
    fn short_octal_stops_at_non_digit() {
        assert_eq!(unescape(br"\0x\12z").unwrap(), b"\0x\nz");
    }

    #[test]
    fn bad_escapes_are_errors() {
        assert_eq!(
            unescape(br"ab\q"),
            Err(UnescapeError::BadEscape {
                offset: 2,
                byte: b'q'
            })
        );
        assert_eq!(
            unescape(br"ab\"),
            Err(UnescapeError::DanglingBackslash { offset: 2 })
        );
        assert_eq!(
            unescape(br"\xg"),
            Err(UnescapeError::BadHexEscape { offset: 0 })
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        assert_eq!(decode_lossy(unescape(br"a\377b").unwrap()), "a\u{fffd}b");
    }

    #[test]
    fn escape_round_trips() {
        let text = "tab\there \"q\" back\\slash é \u{1} \u{7f}";
        let escaped = escape(text);
        assert_eq!(
            escaped,
            r#""tab\there \"q\" back\\slash \303\251 \001 \177""#
        );
        let inner = &escaped.as_bytes()[1..escaped.len() - 1];
        assert_eq!(decode_lossy(unescape(inner).unwrap()), text);
    }
}
