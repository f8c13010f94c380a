//! The console framing: how a script reaches a shell on a UML console line and how its output and
//! exit status come back, sans-IO. Two peers speak it:
//!
//! * a lab machine's init (the main crate's `lab::init`), which reads request lines on `con0`:
//!   `RUN <id> <nonce> <timeout> <base64 of a script>` ([`run_request`]) or
//!   `FILE <id> <nonce> <timeout> <path>` ([`file_request`], for a script longer than
//!   [`INLINE_MAX`] that the supervisor wrote where the guest can read it);
//! * any POSIX shell on a console pty of a machine started by hand (the main crate's
//!   `uml::console`), which is typed the lines of [`shell_lines`]: they make the shell print the
//!   same frame, and send a long script in parts of [`CHUNK`] base64 characters, each answered by
//!   an acknowledgement `\x01A<id> <part>` before the next goes (the guest tty holds 4 KiB of
//!   typed input).
//!
//! The reply is one frame: `\x01B<id>`, the output as base64 lines, `\x01E<id> <nonce> <status>`.
//! Base64 keeps every byte of the output exact through a tty (no `\r\n`, no control bytes that
//! could look like a marker); only an end marker with the command's nonce ends its frame, and the
//! guest learns the nonce from the request, so nothing a command prints can end a frame early.
//! Markers are printed by `printf` from escapes, so a tty's echo of a typed line never contains
//! one. [`ConsoleFramer`] turns the byte stream into [`ConsoleEvent`]s; [`Exchange`] is one
//! script's round trip over a shell.

use std::collections::HashMap;
use std::fmt;

use crate::base64;

/// Printed by a lab machine's init once its startup has run and its console serves commands.
pub const READY: &str = "\x01READY";
/// Scripts up to this size travel inline; the line (base64 and, over a shell, the few hundred
/// bytes of [`shell_lines`] around it) stays well under the tty's 4 KiB input buffer.
pub const INLINE_MAX: usize = 1536;
/// Base64 characters per typed line when a script goes to a shell in parts.
pub const CHUNK: usize = 1024;
/// Longer scripts are refused over a shell: they would take many round trips, and `sh -c` takes
/// one argument of at most 128 KiB.
pub const SCRIPT_MAX: usize = 64 * 1024;
/// Longest line the framer holds while waiting for its newline; longer runs are passed on.
pub const MAX_LINE: usize = 64 * 1024;

/// The shell variable that collects a script sent in parts.
const VAR: &str = "__umldbg_script";

/// A script that cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("a script of {len} bytes is too long to send over a console (at most {SCRIPT_MAX})")]
    TooLong { len: usize },
}

/// The per-command secret that ends a command's frame. The guest learns it from the request and
/// prints it only after the command has exited, so nothing the command prints can end its own
/// frame early (or end another command's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce(pub u64);

impl Nonce {
    /// A nonce no guest program can guess: std's per-process random hash keys over a counter and
    /// the clock.
    pub fn random() -> Nonce {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        h.write_u128(t.as_nanos());
        Nonce(h.finish())
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A command id for a peer that other processes may also have talked to (a pty console): random,
/// so that the tail of an earlier process's request is never taken for this one's. A lab
/// supervisor, the only writer of its console, counts from 1 instead.
pub fn random_id() -> u64 {
    // Below 2^53: ids stay exact in JSON and short on the line.
    Nonce::random().0 >> 11
}

/// One request line for a lab init, for a script short enough to travel inline.
pub fn run_request(id: u64, nonce: Nonce, timeout_s: u64, script: &str) -> Option<String> {
    (script.len() <= INLINE_MAX).then(|| {
        format!(
            "RUN {id} {nonce} {timeout_s} {}\n",
            base64::encode(script.as_bytes())
        )
    })
}

/// The request line for a script the supervisor wrote to `path` (a path the guest can read).
pub fn file_request(id: u64, nonce: Nonce, timeout_s: u64, path: &str) -> String {
    format!("FILE {id} {nonce} {timeout_s} {path}\n")
}

/// The lines to type at a POSIX shell so that it runs `script` with `sh -c` and answers with one
/// frame. A script up to [`INLINE_MAX`] bytes is one line; a longer one is sent in parts, line
/// `i + 1` once the shell has acknowledged part `i` (see [`ConsoleFramer::acked`]).
///
/// The shell pipes the script's output through `base64` while it runs and hands the exit status
/// out through a spare descriptor, so that nothing is written to the guest's file systems.
pub fn shell_lines(id: u64, nonce: Nonce, script: &str) -> Result<Vec<String>, FramingError> {
    if script.len() > SCRIPT_MAX {
        return Err(FramingError::TooLong { len: script.len() });
    }
    let b64 = base64::encode(script.as_bytes());
    let run = |arg: &str| {
        format!(
            "printf '\\001B%s\\n' {id}; {{ __umldbg_rc=$( {{ {{ sh -c \"$(printf %s {arg} | base64 -d)\" </dev/null 2>&1 3>&- 4>&-; echo $? >&3; }} | base64 >&4; }} 3>&1 ); }} 4>&1; printf '\\001E%s %s %d\\n' {id} {nonce} \"$__umldbg_rc\""
        )
    };
    // No Ctrl-U or other control byte to clear the line first: a shell reading a raw tty would
    // take it for part of the command.
    let mut lines = Vec::new();
    if script.len() <= INLINE_MAX {
        lines.push(format!("{}\n", run(&format!("'{b64}'"))));
    } else {
        // base64 is ASCII, so byte chunks are whole characters.
        for (i, chunk) in b64.as_bytes().chunks(CHUNK).enumerate() {
            let chunk = String::from_utf8_lossy(chunk);
            let prev = if i == 0 {
                String::new()
            } else {
                format!("${VAR}")
            };
            lines.push(format!(
                "{VAR}={prev}'{chunk}'; printf '\\001A%s %d\\n' {id} {i}\n"
            ));
        }
        lines.push(format!("{}; {VAR}=\n", run(&format!("\"${VAR}\""))));
    }
    Ok(lines)
}

/// What the console framer found in the guest's output.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleEvent {
    Ready,
    /// Output of command `id`, exactly the bytes it wrote.
    Output(u64, Vec<u8>),
    Done(u64, i32),
    /// Anything outside a frame (kernel messages, startup output, a tty's echo and prompts), and
    /// lines inside a frame that are not the frame's own (a guest program writing to the console
    /// directly).
    Stray(Vec<u8>),
}

/// Sans-IO framer over the console byte stream. It is told each command's nonce before the
/// command's request is sent ([`ConsoleFramer::expect`]); frames of commands it was not told of
/// are stray bytes.
#[derive(Debug, Default)]
pub struct ConsoleFramer {
    buf: Vec<u8>,
    current: Option<u64>,
    nonces: HashMap<u64, Nonce>,
    /// Parts acknowledged per expected command (`\x01A<id> <part>`).
    acks: HashMap<u64, usize>,
}

impl ConsoleFramer {
    /// The nonce that will end command `id`'s frame.
    pub fn expect(&mut self, id: u64, nonce: Nonce) {
        self.nonces.insert(id, nonce);
    }

    /// Forget a command (its caller gave up on it).
    pub fn forget(&mut self, id: u64) {
        self.nonces.remove(&id);
        self.acks.remove(&id);
        if self.current == Some(id) {
            self.current = None;
        }
    }

    /// The command whose frame is open (its begin marker seen, its end not yet).
    pub fn in_frame(&self) -> Option<u64> {
        self.current
    }

    /// How many leading parts of command `id`'s script the shell has acknowledged.
    pub fn acked(&self, id: u64) -> usize {
        self.acks.get(&id).copied().unwrap_or(0)
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<ConsoleEvent> {
        self.buf.extend_from_slice(bytes);
        let mut ev = Vec::new();
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                // No whole line. Outside a frame, pass on what cannot start a marker (a prompt
                // without a newline, say); inside one, wait for the line's end.
                if self.current.is_none() {
                    let keep = match self.buf.iter().position(|&b| b == 1) {
                        Some(p) if self.buf.len() - p <= MAX_LINE => p,
                        _ => self.buf.len(),
                    };
                    if keep > 0 {
                        let data: Vec<u8> = self.buf.drain(..keep).collect();
                        ev.push(ConsoleEvent::Stray(data));
                    }
                } else if self.buf.len() > MAX_LINE {
                    let data: Vec<u8> = self.buf.drain(..).collect();
                    ev.push(ConsoleEvent::Stray(data));
                }
                break;
            };
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            self.line(line, &mut ev);
        }
        ev
    }

    fn line(&mut self, line: Vec<u8>, ev: &mut Vec<ConsoleEvent>) {
        let without_nl = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = without_nl.strip_suffix(b"\r").unwrap_or(without_nl);
        // A marker may follow other bytes on its line outside a frame (a prompt, a tty's echo
        // without a newline): those bytes are stray, the marker is still the marker.
        let at = match self.current {
            None => body.iter().position(|&b| b == 1),
            Some(_) => (body.first() == Some(&1)).then_some(0),
        };
        if let Some(at) = at {
            let text = String::from_utf8_lossy(&body[at + 1..]).into_owned();
            if let Some(event) = self.marker(&text) {
                if at > 0 {
                    ev.push(ConsoleEvent::Stray(line[..at].to_vec()));
                }
                if let Some(e) = event {
                    ev.push(e);
                }
                return;
            }
            return ev.push(ConsoleEvent::Stray(line));
        }
        match self.current {
            Some(id) => match base64::decode(body) {
                Some(data) => ev.push(ConsoleEvent::Output(id, data)),
                None => ev.push(ConsoleEvent::Stray(line)),
            },
            None => ev.push(ConsoleEvent::Stray(line)),
        }
    }

    /// The meaning of a marker line's text (after `\x01`): `Some(event or none)` when it is one of
    /// ours, None when it is stray.
    fn marker(&mut self, text: &str) -> Option<Option<ConsoleEvent>> {
        let mut it = text.split(' ');
        let word = it.next()?;
        let (kind, id) = word.split_at_checked(1)?;
        match (kind, self.current) {
            ("R", None) if word == "READY" => Some(Some(ConsoleEvent::Ready)),
            ("B", None) => {
                let id = id.parse::<u64>().ok()?;
                self.nonces.contains_key(&id).then_some(())?;
                self.current = Some(id);
                Some(None)
            }
            ("A", None) => {
                let id = id.parse::<u64>().ok()?;
                let part = it.next()?.parse::<usize>().ok()?;
                self.nonces.contains_key(&id).then_some(())?;
                let acked = self.acks.entry(id).or_default();
                *acked = (*acked).max(part + 1);
                Some(None)
            }
            ("E", Some(cur)) => {
                let id = id.parse::<u64>().ok()?;
                let nonce = u64::from_str_radix(it.next()?, 16).ok()?;
                let rc = it.next()?.parse::<i32>().ok()?;
                (id == cur && self.nonces.get(&id) == Some(&Nonce(nonce))).then_some(())?;
                self.nonces.remove(&id);
                self.acks.remove(&id);
                self.current = None;
                Some(Some(ConsoleEvent::Done(id, rc)))
            }
            _ => None,
        }
    }
}

/// The result of a script that ran to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptOutput {
    pub status: i32,
    /// Standard output and error, exactly as written (invalid UTF-8 replaced).
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

/// One script's round trip over a shell on a tty: the lines to type ([`shell_lines`]) and the
/// framer that reads the answer.
#[derive(Debug)]
pub struct Exchange {
    id: u64,
    lines: Vec<String>,
    framer: ConsoleFramer,
    started: bool,
    output: Vec<u8>,
    done: Option<ScriptOutput>,
}

impl Exchange {
    /// The exchange for `script` as command `id` (see [`random_id`]) ended by `nonce`.
    pub fn new(script: &str, id: u64, nonce: Nonce) -> Result<Exchange, FramingError> {
        let lines = shell_lines(id, nonce, script)?;
        let mut framer = ConsoleFramer::default();
        framer.expect(id, nonce);
        Ok(Exchange {
            id,
            lines,
            framer,
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
        self.framer.acked(self.id)
    }

    /// Feed bytes read from the tty; returns the furthest step they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Progress {
        if let Some(d) = &self.done {
            return Progress::Done(d.clone());
        }
        let acked_before = self.acked();
        let mut progress = Progress::Pending;
        for e in self.framer.push(bytes) {
            match e {
                ConsoleEvent::Output(id, data) if id == self.id => {
                    self.output.extend_from_slice(&data)
                }
                ConsoleEvent::Done(id, status) if id == self.id => {
                    self.started = true;
                    let out = ScriptOutput {
                        status,
                        output: String::from_utf8_lossy(&self.output).into_owned(),
                    };
                    self.done = Some(out.clone());
                    return Progress::Done(out);
                }
                _ => {}
            }
        }
        if self.framer.in_frame() == Some(self.id) && !self.started {
            self.started = true;
            progress = Progress::Started;
        } else if self.acked() > acked_before {
            progress = Progress::Acked(self.acked() - 1);
        }
        progress
    }

    /// The result, once [`Exchange::push`] has returned [`Progress::Done`].
    pub fn result(&self) -> Option<&ScriptOutput> {
        self.done.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u64, nonce: Nonce, out: &[u8], rc: i32) -> Vec<u8> {
        let mut v = format!("\x01B{id}\n").into_bytes();
        for chunk in out.chunks(57) {
            v.extend_from_slice(base64::encode(chunk).as_bytes());
            v.push(b'\n');
        }
        v.extend_from_slice(format!("\x01E{id} {nonce} {rc}\n").as_bytes());
        v
    }

    fn collect(ev: Vec<ConsoleEvent>) -> (Vec<u8>, Vec<(u64, i32)>, Vec<u8>) {
        let (mut out, mut done, mut stray) = (Vec::new(), Vec::new(), Vec::new());
        for e in ev {
            match e {
                ConsoleEvent::Output(_, d) => out.extend(d),
                ConsoleEvent::Done(id, rc) => done.push((id, rc)),
                ConsoleEvent::Stray(d) => stray.extend(d),
                ConsoleEvent::Ready => stray.extend_from_slice(b"<READY>"),
            }
        }
        (out, done, stray)
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64::encode(b""), "");
        assert_eq!(base64::encode(b"f"), "Zg==");
        assert_eq!(base64::encode(b"fo"), "Zm8=");
        assert_eq!(base64::encode(b"foo"), "Zm9v");
        assert_eq!(base64::encode(b"echo 'x'\n"), "ZWNobyAneCcK");
        assert_eq!(base64::decode(b"Zm9v\r\n").as_deref(), Some(&b"foo"[..]));
        assert_eq!(base64::decode(b"Zm9v!"), None);
    }

    #[test]
    fn framer_splits_frames_across_chunks() {
        let mut f = ConsoleFramer::default();
        let n = Nonce(0xfeed);
        f.expect(7, n);
        let mut all = b"boot noise\n\x01READY\n".to_vec();
        all.extend(frame(7, n, b"hello\nworld\n", 3));
        let mut ev = Vec::new();
        for c in all.chunks(5) {
            ev.extend(f.push(c));
        }
        let (out, done, stray) = collect(ev);
        assert_eq!(out, b"hello\nworld\n");
        assert_eq!(done, vec![(7, 3)]);
        assert_eq!(stray, b"boot noise\n<READY>");
    }

    #[test]
    fn every_byte_value_comes_back_exactly() {
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut f = ConsoleFramer::default();
        f.expect(1, Nonce(42));
        let (out, done, stray) = collect(f.push(&frame(1, Nonce(42), &data, 0)));
        assert_eq!(out, data);
        assert_eq!(done, vec![(1, 0)]);
        assert!(stray.is_empty());
    }

    #[test]
    fn an_end_marker_without_the_nonce_does_not_end_the_frame() {
        let mut f = ConsoleFramer::default();
        f.expect(3, Nonce(0xabc));
        let mut s = b"\x01B3\n".to_vec();
        // A guest program writing straight to the console, guessing the id.
        s.extend_from_slice(b"\x01E3 0000000000000000 0\n\x01E3 0\n");
        s.extend_from_slice(base64::encode(b"real").as_bytes());
        s.extend_from_slice(format!("\n\x01E3 {} 5\n", Nonce(0xabc)).as_bytes());
        let (out, done, stray) = collect(f.push(&s));
        assert_eq!(out, b"real");
        assert_eq!(done, vec![(3, 5)]);
        assert!(String::from_utf8_lossy(&stray).contains("E3 0\n"));
    }

    #[test]
    fn a_begin_marker_of_an_unknown_command_is_stray() {
        let mut f = ConsoleFramer::default();
        let (out, done, stray) = collect(f.push(b"\x01B9\nabc\n\x01E9 0 0\n"));
        assert!(out.is_empty() && done.is_empty());
        assert_eq!(stray, b"\x01B9\nabc\n\x01E9 0 0\n");
    }

    #[test]
    fn a_prompt_without_newline_is_passed_on_at_once() {
        let mut f = ConsoleFramer::default();
        let (_, _, stray) = collect(f.push(b"login: "));
        assert_eq!(stray, b"login: ");
        // A possible marker start is held until its line ends.
        let (_, _, stray) = collect(f.push(b"x\x01REA"));
        assert_eq!(stray, b"x");
        let (_, _, stray) = collect(f.push(b"DY\n"));
        assert_eq!(stray, b"<READY>");
    }

    #[test]
    fn a_marker_after_a_prompt_on_the_same_line_is_found() {
        let mut f = ConsoleFramer::default();
        f.expect(5, Nonce(1));
        let mut s = b"# \x01B5\r\n".to_vec();
        s.extend_from_slice(base64::encode(b"hi\n").as_bytes());
        s.extend_from_slice(b"\r\n# \x01E5 0000000000000001 0\r\n");
        let (out, done, stray) = collect(f.push(&s));
        assert_eq!(out, b"hi\n");
        assert!(
            done.is_empty(),
            "inside a frame a marker must start its line"
        );
        assert!(stray.starts_with(b"# "));
    }

    #[test]
    fn a_huge_line_without_newline_is_passed_on_not_held() {
        let mut f = ConsoleFramer::default();
        f.expect(1, Nonce(1));
        f.push(b"\x01B1\n");
        let (_, _, stray) = collect(f.push(&vec![b'A'; MAX_LINE + 1]));
        assert_eq!(stray.len(), MAX_LINE + 1);
    }

    #[test]
    fn short_script_is_one_line_and_never_contains_the_markers() {
        let lines = shell_lines(77, Nonce(9), "cat /proc/kallsyms").unwrap();
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert!(line.ends_with('\n'));
        assert!(!line.bytes().any(|b| b.is_ascii_control() && b != b'\n'));
        assert!(line.len() < 2048);
        let longest = shell_lines(77, Nonce(9), &"x".repeat(INLINE_MAX)).unwrap();
        assert_eq!(longest.len(), 1);
        assert!(longest[0].len() < 3 * 1024, "{}", longest[0].len());
    }

    #[test]
    fn long_script_goes_in_acknowledged_parts() {
        let script = "echo 0123456789abcdef\n".repeat(200); // 4200 bytes, 5600 in base64
        let mut ex = Exchange::new(&script, 12, Nonce(3)).unwrap();
        let n = ex.lines().len();
        assert_eq!(n, 5600usize.div_ceil(CHUNK) + 1);
        assert!(ex.lines().iter().all(|l| l.len() < CHUNK + 400));
        let joined: String = ex.lines()[..n - 1]
            .iter()
            .filter_map(|l| l.split('\'').nth(1))
            .collect();
        assert_eq!(joined, base64::encode(script.as_bytes()));
        assert_eq!(ex.push(b"\x01A12 0\r\n"), Progress::Acked(0));
        assert_eq!(ex.acked(), 1);
        ex.push(b"# \x01A12 1\r\n# ");
        assert_eq!(ex.acked(), 2);
        // Another command's acknowledgement is not ours.
        ex.push(b"\x01A13 2\r\n");
        assert_eq!(ex.acked(), 2);
    }

    #[test]
    fn too_long_is_refused() {
        let e = Exchange::new(&"x".repeat(SCRIPT_MAX + 1), 1, Nonce(1)).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
    }

    #[test]
    fn end_before_start_is_ignored() {
        let mut ex = Exchange::new("true", 4, Nonce(4)).unwrap();
        assert_eq!(ex.push(b"\x01E4 0000000000000004 0\r\n"), Progress::Pending);
        assert!(ex.result().is_none());
    }

    #[test]
    fn random_ids_and_nonces_differ() {
        let a: Vec<u64> = (0..64).map(|_| random_id()).collect();
        let mut b = a.clone();
        b.sort();
        b.dedup();
        assert_eq!(a.len(), b.len());
        assert_ne!(Nonce::random(), Nonce::random());
    }
}
