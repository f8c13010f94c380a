//! UML's management console (mconsole): a small blocking client over the machine's
//! `<uml_dir>/<umid>/mconsole` Unix datagram socket. The datagram codec is the codec crate's
//! (`umldbg_codec::mconsole`, re-exported here).
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

pub use umldbg_codec::mconsole::*;

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
