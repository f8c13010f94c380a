//! A root shell on a UML console line, reached through the host side of its pty (`ssl0=pts`
//! gives `/dev/pts/N`): run a shell script there and get its output and exit status.
//!
//! This is how umldbg reads `/sys/module` on a machine started by hand; lab machines have their
//! lab supervisor instead (`crate::lab`). Both speak the one console framing of the codec crate
//! (`umldbg_codec::console`): here the request is typed at the shell as the lines of
//! [`shell_lines`], which make the shell print the same frame a lab machine's init prints
//! (`\x01B<id>`, the output in base64, `\x01E<id> <nonce> <status>`), and a long script goes in
//! acknowledged parts because the guest tty keeps at most 4 KiB of typed input. Each request has
//! a random id and nonce, so the tail of an earlier request that timed out, or of another
//! process's, is never taken for this one's output.
//!
//! [`Exchange`] is the sans-IO part (in the codec crate). [`PtyConsole`] owns the pty. Keep one
//! open for as long as it is used: the guest hangs the line up when the host side closes, and the
//! next open of the line gets a new pty.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::mconsole::{CONSOLE_LINES, Mconsole, MconsoleError};

pub use umldbg_codec::console::{
    CHUNK, Exchange, FramingError, INLINE_MAX, Nonce, Progress, SCRIPT_MAX, ScriptOutput,
    random_id, shell_lines,
};

/// How long [`PtyConsole::probe`] waits for a shell to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Failures of a console. Each names the pty, so that the user knows which line is meant.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console {}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("console {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("console {} is not a terminal", path.display())]
    NotATerminal { path: PathBuf },
    #[error(
        "console {} is also open in process {pid} ({name}): close it there first, or both would read its output",
        path.display()
    )]
    Busy {
        path: PathBuf,
        pid: i32,
        name: String,
    },
    #[error(
        "console {} did not answer within {} s: the machine may be stopped, or the console shows a login prompt (log in first)",
        path.display(), timeout.as_secs_f64()
    )]
    NoAnswer { path: PathBuf, timeout: Duration },
    #[error(
        "console {}: `{first_line}` did not finish within {} s (interrupted with Ctrl-C)",
        path.display(), timeout.as_secs_f64()
    )]
    Timeout {
        path: PathBuf,
        first_line: String,
        timeout: Duration,
    },
    #[error(
        "console {} hung up (the guest closed the line; it gets a new pty when the guest opens it again)",
        path.display()
    )]
    HungUp { path: PathBuf },
    #[error(
        "console line {line} is on a pty, but it has none at the moment (the guest has not opened it again since it hung up)"
    )]
    NoPty { line: String },
    #[error(transparent)]
    Framing(#[from] FramingError),
}

/// Processes other than `except` that hold `path` open, with their command names.
pub fn holders(path: &Path, except: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == except {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == path))
        {
            let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            out.push((pid, name.trim().to_string()));
        }
    }
    out
}

/// The host side of a console line, open for the life of the value.
#[derive(Debug)]
pub struct PtyConsole {
    path: PathBuf,
    file: File,
}

impl PtyConsole {
    /// Opens the pty (never as our controlling terminal) and puts our side in raw mode, so that
    /// the host's line discipline neither echoes the guest's output back to it nor changes bytes.
    /// Refused when another process has the pty open: it would read part of the answers.
    pub fn open(path: &Path) -> Result<PtyConsole, ConsoleError> {
        if let Some((pid, name)) = holders(path, std::process::id() as i32).into_iter().next() {
            return Err(ConsoleError::Busy {
                path: path.to_owned(),
                pid,
                name,
            });
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| ConsoleError::Open {
                path: path.to_owned(),
                source,
            })?;
        PtyConsole::from_file(path, file)
    }

    /// A console over an open tty `file` (non-blocking and raw from here on).
    pub fn from_file(path: &Path, file: File) -> Result<PtyConsole, ConsoleError> {
        let io = |what, source| ConsoleError::Io {
            path: path.to_owned(),
            what,
            source,
        };
        let mut t =
            nix::sys::termios::tcgetattr(file.as_fd()).map_err(|_| ConsoleError::NotATerminal {
                path: path.to_owned(),
            })?;
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(file.as_fd(), nix::sys::termios::SetArg::TCSANOW, &t)
            .map_err(|e| io("cannot set raw mode", e.into()))?;
        let fl = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| io("cannot read its flags", e.into()))?;
        let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(fl))
            .map_err(|e| io("cannot make it non-blocking", e.into()))?;
        Ok(PtyConsole {
            path: path.to_owned(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that a shell answers within `timeout`.
    pub fn probe(&mut self, timeout: Duration) -> Result<(), ConsoleError> {
        self.run(":", timeout).map(|_| ())
    }

    /// Runs `script` with `sh -c` in the guest; its output and exit status.
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<ScriptOutput, ConsoleError> {
        let mut ex = Exchange::new(script, random_id(), Nonce::random())?;
        let deadline = Instant::now() + timeout;
        let lines = ex.lines().to_vec();
        let mut buf = vec![0u8; 64 * 1024];
        for (i, line) in lines.iter().enumerate() {
            self.write_all(line.as_bytes(), deadline)
                .map_err(|e| self.no_answer_if_timeout(e, timeout))?;
            let last = i + 1 == lines.len();
            loop {
                let enough = if last {
                    ex.result().is_some()
                } else {
                    ex.acked() > i
                };
                if enough {
                    break;
                }
                match self.read_some(&mut buf, deadline)? {
                    Some(n) => {
                        ex.push(&buf[..n]);
                    }
                    None if ex.started() => {
                        // Our script runs but takes too long: stop it, or the shell stays busy.
                        let _ = (&self.file).write(b"\x03");
                        return Err(ConsoleError::Timeout {
                            path: self.path.clone(),
                            first_line: script.lines().next().unwrap_or("").to_string(),
                            timeout,
                        });
                    }
                    None => {
                        return Err(ConsoleError::NoAnswer {
                            path: self.path.clone(),
                            timeout,
                        });
                    }
                }
            }
        }
        Ok(ex.result().cloned().expect("loop ends on a result"))
    }

    fn no_answer_if_timeout(&self, e: ConsoleError, timeout: Duration) -> ConsoleError {
        match e {
            ConsoleError::Io { source, .. } if source.kind() == io::ErrorKind::TimedOut => {
                ConsoleError::NoAnswer {
                    path: self.path.clone(),
                    timeout,
                }
            }
            other => other,
        }
    }

    fn io(&self, what: &'static str, source: io::Error) -> ConsoleError {
        // EIO: the guest closed its end of the line.
        if source.raw_os_error() == Some(libc::EIO) {
            return ConsoleError::HungUp {
                path: self.path.clone(),
            };
        }
        ConsoleError::Io {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// Waits until the pty is ready for `events` or `deadline` passes (false then).
    fn wait(&self, events: nix::poll::PollFlags, deadline: Instant) -> Result<bool, ConsoleError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let ms = left.as_millis().min(60_000) as u16;
            let mut fds = [nix::poll::PollFd::new(self.file.as_fd(), events)];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms.max(1))) {
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(self.io("poll", e.into())),
            }
        }
    }

    fn write_all(&self, mut bytes: &[u8], deadline: Instant) -> Result<(), ConsoleError> {
        while !bytes.is_empty() {
            match (&self.file).write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait(nix::poll::PollFlags::POLLOUT, deadline)? {
                        return Err(self.io("write", io::ErrorKind::TimedOut.into()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io("write", e)),
            }
        }
        Ok(())
    }

    /// Some bytes, or None when the deadline passed first.
    fn read_some(&self, buf: &mut [u8], deadline: Instant) -> Result<Option<usize>, ConsoleError> {
        loop {
            match (&self.file).read(buf) {
                Ok(0) => {
                    return Err(ConsoleError::HungUp {
                        path: self.path.clone(),
                    });
                }
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait(nix::poll::PollFlags::POLLIN, deadline)? {
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io("read", e)),
            }
        }
    }
}

impl AsRawFd for PtyConsole {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// Why no shell was found on a machine's console lines.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(
        "no console line of the machine is on a host pty (asked mconsole `config` for {})",
        CONSOLE_LINES.join(", ")
    )]
    NoPty,
    #[error(transparent)]
    Mconsole(#[from] MconsoleError),
    #[error("{}", .0.iter().map(|(line, e)| format!("{line}: {e}")).collect::<Vec<_>>().join("; "))]
    NoShell(Vec<(String, ConsoleError)>),
}

/// A console line on a host pty where a shell answers, as mconsole names the lines (see
/// [`CONSOLE_LINES`]); returns the line's name and the open console. A pty line without a pty,
/// or whose pty cannot be opened, was just hung up (by an earlier user closing it): the guest
/// gets a new pty when it opens the line again, so such lines are asked again until `deadline`.
/// A pty where no shell answers is not used.
pub fn find_shell(mc: &Mconsole, deadline: Instant) -> Result<(String, PtyConsole), FindError> {
    let mut failed: Vec<(String, ConsoleError)> = Vec::new();
    loop {
        let ptys = mc.console_ptys()?;
        if ptys.is_empty() && failed.is_empty() {
            return Err(FindError::NoPty);
        }
        let mut stale = Vec::new();
        for (line, path) in ptys {
            if failed.iter().any(|(l, _)| *l == line) {
                continue;
            }
            let Some(path) = path else {
                stale.push((line, None));
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let r = PtyConsole::open(&path).and_then(|mut c| {
                c.probe(PROBE_TIMEOUT.min(left).max(Duration::from_millis(500)))
                    .map(|()| c)
            });
            match r {
                Ok(c) => return Ok((line, c)),
                Err(e @ (ConsoleError::Open { .. } | ConsoleError::HungUp { .. })) => {
                    stale.push((line, Some(e)))
                }
                Err(e) => failed.push((line, e)),
            }
        }
        if stale.is_empty() || Instant::now() >= deadline {
            failed.extend(stale.into_iter().map(|(line, e)| {
                let e = e.unwrap_or(ConsoleError::NoPty { line: line.clone() });
                (line, e)
            }));
            return Err(if failed.is_empty() {
                FindError::NoPty
            } else {
                FindError::NoShell(failed)
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_answer_names_the_pty_and_the_login_prompt() {
        let e = ConsoleError::NoAnswer {
            path: "/dev/pts/3".into(),
            timeout: Duration::from_secs(3),
        };
        let s = e.to_string();
        assert!(s.contains("/dev/pts/3") && s.contains("did not answer") && s.contains("log in"));
        assert_eq!(s.lines().count(), 1);
    }

    /// A fake guest: a real `sh -i` on the master side of a pty pair, we on the slave side. Its
    /// tty does not echo (`fixtures/console/pty-shell.transcript` covers echo); a long script goes in
    /// parts.
    #[test]
    fn runs_scripts_on_a_real_shell_behind_a_pty() {
        let pty = nix::pty::openpty(None, None).unwrap();
        // The "guest" shell reads and writes the master side; we open the slave path.
        let slave_path =
            std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
        let master: std::os::fd::OwnedFd = pty.master;
        // Raw before the shell starts: a slave that still echoes would send its first prompt
        // back to it as input, and `# ` would comment out our first line.
        let mut c = PtyConsole::from_file(&slave_path, File::from(pty.slave)).unwrap();
        let mut cmd = std::process::Command::new("sh");
        // `sh -i` prints prompts as a guest's shell does. Without job control (`+m`) and in a
        // session of its own it never stops itself for want of a terminal, nor takes the one
        // that runs the tests.
        cmd.args(["-i", "+m"])
            .stdin(std::process::Stdio::from(master.try_clone().unwrap()))
            .stdout(std::process::Stdio::from(master.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(master.try_clone().unwrap()));
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        drop(master);
        let r = c.run(
            "echo hello; echo 'it''s' \"$((6*7))\"; exit 4",
            Duration::from_secs(10),
        );
        let long = format!("printf '%s' {}", "y".repeat(3000));
        let r2 = c.run(&long, Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
        let r = r.unwrap();
        assert_eq!(r.status, 4);
        assert_eq!(r.output, "hello\nits 42\n");
        assert_eq!(r2.unwrap().output, "y".repeat(3000));
    }
}
