//! UML's management console (mconsole): a sans-IO codec for its datagrams and a small blocking
//! client over the machine's `<uml_dir>/<umid>/mconsole` Unix datagram socket.
//!
//! Wire format, as in the kernel's `arch/um/include/shared/mconsole.h` (all fields `u32` in the
//! host's byte order, since both ends run on the same host):
//! - request: `magic` (0xcafebabe), `version` (2), `len`, then 512 bytes of command text; the
//!   kernel NUL-terminates at `len`, so `len` must be at most 511;
//! - reply: `err`, `more`, `len`, then `len` bytes of text including a final NUL. The kernel sends
//!   only `12 + len` bytes, splits long texts into parts of at most 511 characters with `more`
//!   set on all but the last, and sets `err` only on the first part.
//!
//! The client binds its own socket to a temporary path because the kernel answers to the
//! sender's address; an abstract address would not do, since a lab's machines run in another
//! network namespace and abstract socket names are per namespace. Every receive has a deadline:
//! a stopped machine, or one that `halt` has just ended, never answers.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

fn u32_at(buf: &[u8], at: usize) -> u32 {
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

/// Failures of the mconsole client. Each names the socket, so the machine is known.
#[derive(Debug, thiserror::Error)]
pub enum MconsoleError {
    #[error("mconsole {}: no machine listens there (not running, or started with another uml_dir)", path.display())]
    NotListening { path: PathBuf },
    #[error("mconsole {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "mconsole {}: no answer to `{command}` within {} ms: the machine may be stopped, hung or gone",
        path.display(), timeout.as_millis()
    )]
    Timeout {
        path: PathBuf,
        command: String,
        timeout: Duration,
    },
    #[error("mconsole {}: `{command}` failed: {message}", path.display())]
    Refused {
        path: PathBuf,
        command: String,
        message: String,
    },
    #[error("mconsole {}: {source}", path.display())]
    Codec {
        path: PathBuf,
        #[source]
        source: CodecError,
    },
}

/// A client for one machine's mconsole socket.
#[derive(Debug)]
pub struct Mconsole {
    sock: UnixDatagram,
    local: PathBuf,
    target: PathBuf,
    timeout: Duration,
}

static NEXT_LOCAL: AtomicU64 = AtomicU64::new(0);

/// The path our side binds to. `sun_path` holds 107 bytes, so a long `$TMPDIR` falls back to /tmp.
fn local_socket_path() -> PathBuf {
    let name = format!(
        "umldbg-mc-{}-{}.sock",
        std::process::id(),
        NEXT_LOCAL.fetch_add(1, Ordering::Relaxed)
    );
    let p = std::env::temp_dir().join(&name);
    if p.as_os_str().len() < 100 {
        p
    } else {
        PathBuf::from("/tmp").join(name)
    }
}

/// The machine's socket is gone or closed: refused once after its owner closed it, "not
/// connected" on every send after that.
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused | io::ErrorKind::NotConnected
    )
}

impl Mconsole {
    /// Opens a client for the socket at `socket`; `timeout` bounds each command's wait.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Mconsole, MconsoleError> {
        let local = local_socket_path();
        let io_err = |what, source| MconsoleError::Io {
            path: socket.to_owned(),
            what,
            source,
        };
        // A leftover from a crashed run of ours with the same pid and counter.
        let _ = std::fs::remove_file(&local);
        let sock =
            UnixDatagram::bind(&local).map_err(|e| io_err("cannot bind a reply socket", e))?;
        let client = Mconsole {
            sock,
            local,
            target: socket.to_owned(),
            timeout,
        };
        // Connecting makes the kernel drop datagrams from anyone but the machine.
        match client.sock.connect(socket) {
            Ok(()) => Ok(client),
            Err(e) if is_absent(&e) => Err(MconsoleError::NotListening {
                path: socket.to_owned(),
            }),
            Err(e) => Err(io_err("cannot connect", e)),
        }
    }

    /// The client for a running instance.
    pub fn for_instance(
        instance: &crate::uml::instance::UmlInstance,
        timeout: Duration,
    ) -> Result<Mconsole, MconsoleError> {
        Mconsole::connect(&instance.mconsole_path(), timeout)
    }

    /// The machine's socket this client talks to.
    pub fn socket_path(&self) -> &Path {
        &self.target
    }

    /// Our own socket, where replies arrive; removed when the client is dropped.
    pub fn reply_socket_path(&self) -> &Path {
        &self.local
    }

    fn io(&self, what: &'static str, source: io::Error) -> MconsoleError {
        MconsoleError::Io {
            path: self.target.clone(),
            what,
            source,
        }
    }

    /// Throws away replies that arrived after an earlier command timed out, so that they are
    /// not taken for the answer to the next one.
    fn drain(&self) -> Result<(), MconsoleError> {
        self.sock
            .set_nonblocking(true)
            .map_err(|e| self.io("cannot set non-blocking", e))?;
        let mut buf = [0u8; REQUEST_LEN + 64];
        while self.sock.recv(&mut buf).is_ok() {}
        self.sock
            .set_nonblocking(false)
            .map_err(|e| self.io("cannot set blocking", e))
    }

    fn send(&self, command: &str) -> Result<(), MconsoleError> {
        let packet = encode_request(command).map_err(|source| MconsoleError::Codec {
            path: self.target.clone(),
            source,
        })?;
        self.drain()?;
        let mut sent = self.sock.send(&packet);
        if sent.as_ref().is_err_and(is_absent) {
            // The machine may have been restarted with a new socket at the same path since we
            // connected: connect again once before giving up.
            sent = self
                .sock
                .connect(&self.target)
                .and_then(|()| self.sock.send(&packet));
        }
        match sent {
            Ok(_) => Ok(()),
            Err(e) if is_absent(&e) => Err(MconsoleError::NotListening {
                path: self.target.clone(),
            }),
            Err(e) => Err(self.io("cannot send", e)),
        }
    }

    /// Waits for one datagram until `deadline`; `None` when it passed.
    fn recv_until(
        &self,
        deadline: Instant,
        buf: &mut [u8],
    ) -> Result<Option<usize>, MconsoleError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| self.io("cannot set a timeout", e))?;
            match self.sock.recv(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_absent(&e) => {
                    return Err(MconsoleError::NotListening {
                        path: self.target.clone(),
                    });
                }
                Err(e) => return Err(self.io("cannot receive", e)),
            }
        }
    }

    /// Sends `command` and returns the whole reply, error flag included.
    pub fn request(&self, command: &str) -> Result<Reply, MconsoleError> {
        self.send(command)?;
        let deadline = Instant::now() + self.timeout;
        let mut asm = Reassembler::default();
        let mut buf = vec![0u8; REQUEST_LEN + 64];
        loop {
            let Some(n) = self.recv_until(deadline, &mut buf)? else {
                return Err(MconsoleError::Timeout {
                    path: self.target.clone(),
                    command: command.to_owned(),
                    timeout: self.timeout,
                });
            };
            let part = decode_reply(&buf[..n]).map_err(|source| MconsoleError::Codec {
                path: self.target.clone(),
                source,
            })?;
            if let Some(reply) = asm.push(part) {
                return Ok(reply);
            }
        }
    }

    /// Sends `command`; its text on success, `Refused` with the machine's message otherwise.
    pub fn command(&self, command: &str) -> Result<String, MconsoleError> {
        let reply = self.request(command)?;
        if reply.is_ok() {
            Ok(reply.text)
        } else {
            Err(MconsoleError::Refused {
                path: self.target.clone(),
                command: command.to_owned(),
                message: reply.text,
            })
        }
    }

    /// The guest kernel's uname line.
    pub fn version(&self) -> Result<String, MconsoleError> {
        self.command("version")
    }

    /// A device's configuration, e.g. `config ssl0` gives `pts:/dev/pts/3`.
    pub fn config(&self, device: &str) -> Result<String, MconsoleError> {
        self.command(&format!("config {device}"))
    }

    /// The console lines of [`CONSOLE_LINES`] that sit on a host pty, with that pty, in the order
    /// of that list. A pty line that has none at the moment (the guest hung it up and has not
    /// opened it again) comes with None. Lines that mconsole refuses or that are not ptys are
    /// left out.
    pub fn console_ptys(&self) -> Result<Vec<(String, Option<PathBuf>)>, MconsoleError> {
        let mut out = Vec::new();
        for line in CONSOLE_LINES {
            match self.config(line) {
                Ok(answer) => {
                    if let Some(p) = pty_of_config(&answer) {
                        out.push((line.to_string(), Some(p)));
                    } else if is_pts_config(&answer) {
                        out.push((line.to_string(), None));
                    }
                }
                Err(MconsoleError::Refused { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Halts the machine. UML usually exits before it answers, so no answer by the deadline is
    /// success when `is_gone()` says the machine's process has ended (checked every 50 ms).
    pub fn halt(&self, is_gone: impl Fn() -> bool) -> Result<(), MconsoleError> {
        match self.send("halt") {
            Ok(()) => {}
            Err(MconsoleError::NotListening { .. }) if is_gone() => return Ok(()),
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + self.timeout;
        let mut asm = Reassembler::default();
        let mut buf = vec![0u8; REQUEST_LEN + 64];
        loop {
            let slice = (Instant::now() + Duration::from_millis(50)).min(deadline);
            match self.recv_until(slice, &mut buf) {
                Ok(Some(n)) => {
                    if let Ok(part) = decode_reply(&buf[..n])
                        && let Some(reply) = asm.push(part)
                    {
                        if reply.is_ok() {
                            return Ok(());
                        }
                        return Err(MconsoleError::Refused {
                            path: self.target.clone(),
                            command: "halt".into(),
                            message: reply.text,
                        });
                    }
                }
                Ok(None) => {}
                // The socket vanished with the machine.
                Err(MconsoleError::NotListening { .. }) if is_gone() => return Ok(()),
                Err(e) => return Err(e),
            }
            if is_gone() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MconsoleError::Timeout {
                    path: self.target.clone(),
                    command: "halt".into(),
                    timeout: self.timeout,
                });
            }
        }
    }
}

impl Drop for Mconsole {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.local);
    }
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
