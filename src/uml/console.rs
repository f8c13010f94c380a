//! A root shell on a UML console line, reached through the host side of its pty (`ssl0=pts`
//! gives `/dev/pts/N`): run a shell script there and get its output and exit status.
//!
//! This is how umldbg reads `/sys/module` on a machine started by hand; lab machines have their
//! lab supervisor instead (`crate::lab`). One request is one line typed at the shell:
//!
//! ```text
//! printf '\001umldbg:B:%s\n' T; sh -c "$(printf %s 'BASE64' | base64 -d)" </dev/null 2>&1; printf '\001umldbg:E:%s:%d\n' T $?
//! ```
//!
//! The markers are built by `printf` from escapes, so the guest tty's echo of the line (ttys echo
//! input by default) never contains them: whatever comes before the start marker, prompts and
//! echo included, is dropped, and the token `T` is new for every request, so the tail of an
//! earlier request that timed out is never taken for this one's output. The script travels in
//! base64 so quotes, pipes and newlines cross the tty unharmed. The guest tty keeps at most
//! 4 KiB of typed input, so a script whose base64 is longer than [`INLINE_MAX`] is sent as
//! several short lines that each append to a shell variable and answer with an acknowledgement
//! marker before the next line goes.
//!
//! [`Exchange`] is the sans-IO part: it builds the lines and parses what comes back.
//! [`PtyConsole`] owns the pty. Keep one open for as long as it is used: the guest hangs the
//! line up when the host side closes, and the next open of the line gets a new pty.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::mconsole::{CONSOLE_LINES, Mconsole, MconsoleError};

/// Base64 text up to this length travels in the request line itself; the line, its echo and the
/// prompt then stay far below the guest tty's 4 KiB input buffer.
pub const INLINE_MAX: usize = 1400;
/// Base64 characters per line when a script is sent in parts.
pub const CHUNK: usize = 1024;
/// Longer scripts are refused: they would take many round trips, and `sh -c` takes one argument
/// of at most 128 KiB.
pub const SCRIPT_MAX: usize = 64 * 1024;
/// How long [`PtyConsole::probe`] waits for a shell to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

const MARK: &str = "umldbg:";
/// The shell variable that collects a script sent in parts.
const VAR: &str = "__umldbg_script";

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
    #[error("a script of {len} bytes is too long to send over a console (at most {SCRIPT_MAX})")]
    TooLong { len: usize },
}

/// The result of a script that ran to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptOutput {
    pub status: i32,
    /// Standard output and error, with the tty's `\r\n` turned back into `\n`.
    pub output: String,
}

/// What the bytes pushed into an [`Exchange`] completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Nothing of ours yet.
    Pending,
    /// The shell took part `n` of a script sent in parts: send the next line.
    Acked(usize),
    /// The shell began to run the script.
    Started,
    /// The script ended.
    Done(ScriptOutput),
}

/// Sans-IO: the lines that carry one script to a shell on a tty, and the parser of what the tty
/// sends back.
#[derive(Debug)]
pub struct Exchange {
    token: String,
    lines: Vec<String>,
    /// Bytes not parsed yet (an incomplete marker line).
    pending: Vec<u8>,
    acked: usize,
    started: bool,
    output: Vec<u8>,
    done: Option<ScriptOutput>,
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);

/// A token no earlier request of any process has used (pid, time, counter).
pub fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
    )
}

impl Exchange {
    /// The exchange for `script` under `token` (letters, digits and `-` only).
    pub fn new(script: &str, token: &str) -> Result<Exchange, ConsoleError> {
        if script.len() > SCRIPT_MAX {
            return Err(ConsoleError::TooLong { len: script.len() });
        }
        debug_assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        );
        let b64 = base64(script.as_bytes());
        let marker = |kind: &str| format!("printf '\\001{MARK}{kind}:%s\\n' {token}");
        let run = |arg: &str| {
            format!(
                "{}; sh -c \"$(printf %s {arg} | base64 -d)\" </dev/null 2>&1; printf '\\001{MARK}E:%s:%d\\n' {token} $?",
                marker("B")
            )
        };
        // No Ctrl-U or other control byte to clear the line first: a shell reading a raw tty
        // would take it for part of the command.
        let mut lines = Vec::new();
        if b64.len() <= INLINE_MAX {
            lines.push(format!("{}\n", run(&format!("'{b64}'"))));
        } else {
            for (i, chunk) in b64.as_bytes().chunks(CHUNK).enumerate() {
                let chunk = std::str::from_utf8(chunk).expect("base64 is ASCII");
                let prev = if i == 0 {
                    String::new()
                } else {
                    format!("${VAR}")
                };
                lines.push(format!(
                    "{VAR}={prev}'{chunk}'; printf '\\001{MARK}A:%s:%d\\n' {token} {i}\n"
                ));
            }
            lines.push(format!("{}; {VAR}=\n", run(&format!("\"${VAR}\""))));
        }
        Ok(Exchange {
            token: token.to_string(),
            lines,
            pending: Vec::new(),
            acked: 0,
            started: false,
            output: Vec::new(),
            done: None,
        })
    }

    /// The lines to type, in order; line `i + 1` goes once part `i` is acknowledged.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Whether the shell has begun to run the script.
    pub fn started(&self) -> bool {
        self.started
    }

    /// How many leading lines the shell has acknowledged (parts of a long script).
    pub fn acked(&self) -> usize {
        self.acked
    }

    /// Feed bytes read from the tty; returns the furthest step they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Progress {
        self.pending.extend_from_slice(bytes);
        let mut progress = Progress::Pending;
        while self.done.is_none() {
            let Some(pos) = self.pending.iter().position(|&b| b == 1) else {
                let all = std::mem::take(&mut self.pending);
                self.plain(&all);
                break;
            };
            if pos > 0 {
                let head: Vec<u8> = self.pending.drain(..pos).collect();
                self.plain(&head);
            }
            let Some(nl) = self.pending.iter().position(|&b| b == b'\n') else {
                // A marker line not yet whole, unless it cannot be one of ours.
                let could_be = self.pending.len() <= 1 + MARK.len() + 2 + self.token.len() + 16;
                if could_be {
                    break;
                }
                let all = std::mem::take(&mut self.pending);
                self.plain(&all);
                break;
            };
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            match self.marker(&line) {
                Some(p) => progress = p,
                None => self.plain(&line),
            }
        }
        if let Some(d) = &self.done {
            progress = Progress::Done(d.clone());
        }
        progress
    }

    /// The result, once [`Exchange::push`] has returned [`Progress::Done`].
    pub fn result(&self) -> Option<&ScriptOutput> {
        self.done.as_ref()
    }

    fn plain(&mut self, bytes: &[u8]) {
        if self.started {
            self.output.extend_from_slice(bytes);
        }
    }

    /// Our marker in `line` (which starts with `\x01` and ends with `\n`), or None.
    fn marker(&mut self, line: &[u8]) -> Option<Progress> {
        let text = std::str::from_utf8(&line[1..]).ok()?;
        let text = text.trim_end_matches('\n').trim_end_matches('\r');
        let rest = text.strip_prefix(MARK)?;
        let (kind, rest) = rest.split_once(':')?;
        let (token, arg) = match rest.split_once(':') {
            Some((t, a)) => (t, Some(a)),
            None => (rest, None),
        };
        if token != self.token {
            return None;
        }
        match (kind, arg) {
            ("A", Some(n)) => {
                let n: usize = n.parse().ok()?;
                self.acked = self.acked.max(n + 1);
                Some(Progress::Acked(n))
            }
            ("B", None) => {
                self.started = true;
                self.output.clear();
                Some(Progress::Started)
            }
            ("E", Some(rc)) if self.started => {
                let status = rc.parse().ok()?;
                let raw = String::from_utf8_lossy(&self.output);
                self.done = Some(ScriptOutput {
                    status,
                    output: raw.replace("\r\n", "\n"),
                });
                Some(Progress::Done(self.done.clone().expect("just set")))
            }
            _ => None,
        }
    }
}

use crate::util::base64;

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
        let mut ex = Exchange::new(script, &new_token())?;
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

    /// What a Debian guest's `sh -i` on ttyS0 sent back for `echo hi` (recorded on UML 7.2):
    /// the echo of the line, the markers, CRLF line ends, the next prompt.
    const ECHOING: &[u8] = b"printf '\\001umldbg:B:%s\\n' t1; sh -c \"$(printf %s 'ZWNobyBoaQ==' | base64 -d)\" </dev/null 2>&1; printf '\\001umldbg:E:%s:%d\\n' t1 $?\r\n\x01umldbg:B:t1\r\nhi\r\n\x01umldbg:E:t1:0\r\n# ";

    #[test]
    fn echoed_line_and_prompt_are_dropped() {
        let mut ex = Exchange::new("echo hi", "t1").unwrap();
        assert_eq!(
            ex.push(ECHOING),
            Progress::Done(ScriptOutput {
                status: 0,
                output: "hi\n".into()
            })
        );
    }

    #[test]
    fn markers_split_across_reads() {
        let mut ex = Exchange::new("echo hi", "t1").unwrap();
        let mut last = Progress::Pending;
        for b in ECHOING.chunks(3) {
            let p = ex.push(b);
            if p != Progress::Pending {
                last = p;
            }
        }
        assert!(ex.started());
        assert_eq!(ex.result().unwrap().output, "hi\n");
        assert!(matches!(last, Progress::Done(_)));
    }

    #[test]
    fn tty_without_echo_and_no_final_newline() {
        let mut ex = Exchange::new("printf x; exit 3", "t2").unwrap();
        let p = ex.push(b"\x01umldbg:B:t2\nx\x01umldbg:E:t2:3\n$ ");
        assert_eq!(
            p,
            Progress::Done(ScriptOutput {
                status: 3,
                output: "x".into()
            })
        );
    }

    #[test]
    fn other_tokens_and_stray_control_bytes_are_not_ours() {
        let mut ex = Exchange::new("true", "new").unwrap();
        // The tail of an earlier request that timed out, then ours with a \x01 in its output.
        let p = ex.push(
            b"late\r\n\x01umldbg:E:old:130\r\n\x01umldbg:B:new\r\na\x01b\r\n\x01umldbg:E:new:0\r\n",
        );
        assert_eq!(
            p,
            Progress::Done(ScriptOutput {
                status: 0,
                output: "a\x01b\n".into()
            })
        );
    }

    #[test]
    fn end_before_start_is_ignored() {
        let mut ex = Exchange::new("true", "t").unwrap();
        assert_eq!(ex.push(b"\x01umldbg:E:t:0\r\n"), Progress::Pending);
        assert!(ex.result().is_none());
    }

    #[test]
    fn short_script_is_one_line_and_never_contains_the_markers() {
        let ex = Exchange::new("cat /proc/kallsyms", "tok-1").unwrap();
        assert_eq!(ex.lines().len(), 1);
        let line = &ex.lines()[0];
        assert!(line.ends_with('\n'));
        assert!(!line.bytes().any(|b| b.is_ascii_control() && b != b'\n'));
        assert!(!line.contains("umldbg:B:tok-1"));
        assert!(line.len() < 2048);
    }

    #[test]
    fn long_script_goes_in_acknowledged_parts() {
        let script = "echo 0123456789abcdef\n".repeat(200); // 4200 bytes, 5600 in base64
        let mut ex = Exchange::new(&script, "tk").unwrap();
        let n = ex.lines().len();
        assert_eq!(n, 5600usize.div_ceil(CHUNK) + 1);
        assert!(ex.lines().iter().all(|l| l.len() < CHUNK + 200));
        // The parts put the whole base64 back together.
        let joined: String = ex.lines()[..n - 1]
            .iter()
            .map(|l| l.split('\'').nth(1).unwrap())
            .collect();
        assert_eq!(joined, base64(script.as_bytes()));
        assert_eq!(ex.push(b"\x01umldbg:A:tk:0\r\n"), Progress::Acked(0));
        assert_eq!(ex.acked(), 1);
        ex.push(b"# \x01umldbg:A:tk:1\r\n# ");
        assert_eq!(ex.acked(), 2);
    }

    #[test]
    fn too_long_is_refused() {
        let e = Exchange::new(&"x".repeat(SCRIPT_MAX + 1), "t").unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
    }

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
    /// tty does not echo (the recorded fixtures above cover echo); a long script goes in parts.
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
