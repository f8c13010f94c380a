//! UML's management console (mconsole) wire codec: request and reply datagrams, sans-IO.
//!
//! Wire format, as in the kernel's `arch/um/include/shared/mconsole.h` (all fields `u32` in the
//! host's byte order, since both ends run on the same host):
//! - request: `magic` (0xcafebabe), `version` (2), `len`, then 512 bytes of command text; the
//!   kernel NUL-terminates at `len`, so `len` must be at most 511;
//! - reply: `err`, `more`, `len`, then `len` bytes of text including a final NUL. The kernel sends
//!   only `12 + len` bytes, splits long texts into parts of at most 511 characters with `more`
//!   set on all but the last, and sets `err` only on the first part.
//!
//! The client over the machine's socket is the main crate's `uml::mconsole`.

use std::path::PathBuf;

/// Marks a versioned request; without it UML answers that version 0 clients are not supported.
pub const MAGIC: u32 = 0xcafe_babe;
/// The protocol version UML's mconsole driver speaks.
pub const VERSION: u32 = 2;
/// Size of the text field of requests and replies.
pub const MAX_DATA: usize = 512;
/// Three u32 fields before the text.
pub const HEADER_LEN: usize = 12;
/// A request as sent: header and the whole text field.
pub const REQUEST_LEN: usize = HEADER_LEN + MAX_DATA;

/// Bytes that are not a valid request or reply, or a command that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("mconsole command is {len} bytes long; UML takes at most {}", MAX_DATA - 1)]
    CommandTooLong { len: usize },
    #[error("mconsole command contains a NUL byte")]
    CommandHasNul,
    #[error("mconsole packet of {len} bytes is shorter than its {HEADER_LEN}-byte header")]
    Short { len: usize },
    #[error(
        "mconsole packet says its text is {declared} bytes, but {available} are there (at most {MAX_DATA})"
    )]
    BadLength { declared: u32, available: usize },
    #[error("mconsole request has magic {0:#x}, not {MAGIC:#x}")]
    BadMagic(u32),
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// The datagram for `command` (`version`, `config ssl0`, `halt`, ...).
pub fn encode_request(command: &str) -> Result<Vec<u8>, CodecError> {
    let text = command.as_bytes();
    if text.len() > MAX_DATA - 1 {
        return Err(CodecError::CommandTooLong { len: text.len() });
    }
    if text.contains(&0) {
        return Err(CodecError::CommandHasNul);
    }
    let mut buf = vec![0u8; REQUEST_LEN];
    buf[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    buf[4..8].copy_from_slice(&VERSION.to_ne_bytes());
    buf[8..12].copy_from_slice(&(text.len() as u32).to_ne_bytes());
    buf[HEADER_LEN..HEADER_LEN + text.len()].copy_from_slice(text);
    Ok(buf)
}

/// A request's command text and version (for fake machines in tests and for tracing).
pub fn decode_request(buf: &[u8]) -> Result<(u32, String), CodecError> {
    if buf.len() < HEADER_LEN {
        return Err(CodecError::Short { len: buf.len() });
    }
    let magic = u32_at(buf, 0);
    if magic != MAGIC {
        return Err(CodecError::BadMagic(magic));
    }
    let version = u32_at(buf, 4);
    let len = u32_at(buf, 8);
    let available = buf.len() - HEADER_LEN;
    if len as usize >= MAX_DATA || len as usize > available {
        return Err(CodecError::BadLength {
            declared: len,
            available,
        });
    }
    let text = &buf[HEADER_LEN..HEADER_LEN + len as usize];
    Ok((version, String::from_utf8_lossy(text).into_owned()))
}

/// One reply datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyPacket {
    /// Non-zero when the command failed (only ever set on a reply's first part).
    pub err: u32,
    /// More parts of the same reply follow.
    pub more: bool,
    /// The text of this part, without its terminating NUL.
    pub data: Vec<u8>,
}

/// Parses one reply datagram, short (as the kernel sends it) or padded to full size.
pub fn decode_reply(buf: &[u8]) -> Result<ReplyPacket, CodecError> {
    if buf.len() < HEADER_LEN {
        return Err(CodecError::Short { len: buf.len() });
    }
    let err = u32_at(buf, 0);
    let more = u32_at(buf, 4) != 0;
    let len = u32_at(buf, 8);
    let available = buf.len() - HEADER_LEN;
    if len as usize > MAX_DATA || len as usize > available {
        return Err(CodecError::BadLength {
            declared: len,
            available,
        });
    }
    let text = &buf[HEADER_LEN..HEADER_LEN + len as usize];
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    Ok(ReplyPacket {
        err,
        more,
        data: text[..end].to_vec(),
    })
}

/// The datagrams the kernel sends for a reply `text`, split the way it splits them. Used by fake
/// machines in tests; kept here so that it sits beside the decoder it must agree with.
pub fn encode_reply(text: &[u8], err: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunks: Vec<&[u8]> = text.chunks(MAX_DATA - 1).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut buf = Vec::with_capacity(HEADER_LEN + chunk.len() + 1);
        let e = if i == 0 { err } else { 0 };
        buf.extend_from_slice(&e.to_ne_bytes());
        buf.extend_from_slice(&u32::from(i + 1 < n).to_ne_bytes());
        buf.extend_from_slice(&(chunk.len() as u32 + 1).to_ne_bytes());
        buf.extend_from_slice(chunk);
        buf.push(0);
        out.push(buf);
    }
    out
}

/// A whole reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub err: u32,
    pub text: String,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        self.err == 0
    }
}

/// Joins the parts of a multi-part reply.
#[derive(Debug, Default)]
pub struct Reassembler {
    err: u32,
    parts: usize,
    text: Vec<u8>,
}

impl Reassembler {
    /// Adds a part; returns the whole reply once the last part is in.
    pub fn push(&mut self, p: ReplyPacket) -> Option<Reply> {
        if self.parts == 0 {
            self.err = p.err;
        }
        self.parts += 1;
        self.text.extend_from_slice(&p.data);
        if p.more {
            return None;
        }
        // Parts are split at byte counts, possibly inside a UTF-8 sequence: decode only the whole.
        let text = String::from_utf8_lossy(&std::mem::take(&mut self.text)).into_owned();
        let err = self.err;
        self.parts = 0;
        Some(Reply { err, text })
    }
}

/// Console lines a shell may listen on, in the order umldbg looks for one: the first serial
/// line (where labs and the notes put a shell), the first virtual console, then the next ones.
pub const CONSOLE_LINES: &[&str] = &["ssl0", "con0", "con1", "ssl1"];

/// The host pty in a `config <line>` answer: `pts:/dev/pts/3` gives `/dev/pts/3`. Other channel
/// kinds (`fd:0,fd:1`, `null`, `xterm`, a `pts` line not opened yet) give None.
pub fn pty_of_config(answer: &str) -> Option<PathBuf> {
    let p = answer.trim().trim_end_matches('\0').strip_prefix("pts:")?;
    (p.starts_with("/dev/pts/") && p.len() > "/dev/pts/".len() && !p.contains(char::is_whitespace))
        .then(|| PathBuf::from(p))
}

/// Whether a `config <line>` answer is a pty line, with or without a pty at the moment (`pts`,
/// `pts:/dev/pts/3`).
pub fn is_pts_config(answer: &str) -> bool {
    let a = answer.trim().trim_end_matches('\0');
    a == "pts" || a.starts_with("pts:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptys_from_config_answers() {
        assert_eq!(
            pty_of_config("pts:/dev/pts/3"),
            Some(PathBuf::from("/dev/pts/3"))
        );
        assert_eq!(
            pty_of_config("pts:/dev/pts/12\n"),
            Some(PathBuf::from("/dev/pts/12"))
        );
        assert_eq!(pty_of_config("fd:0,fd:1"), None);
        assert_eq!(pty_of_config("null"), None);
        assert_eq!(pty_of_config("pts"), None);
        assert_eq!(pty_of_config("pts:/etc/passwd"), None);
        assert!(is_pts_config("pts") && is_pts_config("pts:/dev/pts/0"));
        assert!(!is_pts_config("fd:0,fd:1") && !is_pts_config("null"));
    }

    #[test]
    fn request_layout() {
        let b = encode_request("config ssl0").unwrap();
        assert_eq!(b.len(), 524);
        assert_eq!(u32_at(&b, 0), 0xcafe_babe);
        assert_eq!(u32_at(&b, 4), 2);
        assert_eq!(u32_at(&b, 8), 11);
        assert_eq!(&b[12..23], b"config ssl0");
        assert!(b[23..].iter().all(|&x| x == 0));
        assert_eq!(decode_request(&b).unwrap(), (2, "config ssl0".to_owned()));
    }

    #[test]
    fn request_limits() {
        assert!(encode_request(&"x".repeat(511)).is_ok());
        assert_eq!(
            encode_request(&"x".repeat(512)),
            Err(CodecError::CommandTooLong { len: 512 })
        );
        assert_eq!(encode_request("a\0b"), Err(CodecError::CommandHasNul));
    }

    #[test]
    fn reply_split_and_join() {
        let text: Vec<u8> = (0..1200).map(|i| b'a' + (i % 26) as u8).collect();
        let parts = encode_reply(&text, 0);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), 12 + 512);
        let mut asm = Reassembler::default();
        assert_eq!(asm.push(decode_reply(&parts[0]).unwrap()), None);
        assert_eq!(asm.push(decode_reply(&parts[1]).unwrap()), None);
        let r = asm.push(decode_reply(&parts[2]).unwrap()).unwrap();
        assert_eq!(r.text.as_bytes(), &text[..]);
        assert!(r.is_ok());
    }

    #[test]
    fn empty_reply_is_one_packet() {
        let parts = encode_reply(b"", 0);
        assert_eq!(
            parts,
            vec![
                [0u32.to_ne_bytes(), 0u32.to_ne_bytes(), 1u32.to_ne_bytes()]
                    .concat()
                    .into_iter()
                    .chain([0])
                    .collect::<Vec<u8>>()
            ]
        );
        assert_eq!(decode_reply(&parts[0]).unwrap().data, b"");
    }

    #[test]
    fn reply_rejects_bad_lengths() {
        assert_eq!(decode_reply(&[0; 5]), Err(CodecError::Short { len: 5 }));
        let mut b = encode_reply(b"abc", 0).remove(0);
        b.truncate(14);
        assert!(matches!(
            decode_reply(&b),
            Err(CodecError::BadLength { declared: 4, .. })
        ));
    }
}
