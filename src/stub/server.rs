//! `umldbg serve`: the gdb remote serial protocol over TCP or a Unix socket.
//!
//! Three layers, innermost first:
//! - [`Framer`]: sans-IO packet framing. It checks each packet's checksum and length before
//!   gdbstub sees it, answers a bad one with `-` (gdb resends) and retransmits our last packet
//!   when gdb answers `-`.
//! - [`Session`]: gdbstub's state machine over a [`UmlTarget`]. It takes bytes and stop polls,
//!   writes replies to any `Write`, and survives what gdbstub treats as fatal (a malformed
//!   command): it answers `E.<why>` and starts a fresh protocol state over the same target.
//!   Tests and the fuzzer drive it with a fake machine.
//! - [`serve`]: the sockets. One client at a time: while a session runs, another client gets a
//!   refusal it can read (`E.` reply to its first packet). A session attaches to the machine
//!   when its client connects and detaches when it leaves, with every byte put back.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStubBuilder};

use super::target::{MachineError, RunControl, StopReason, UmlTarget};

/// Packet buffer of gdbstub, advertised to gdb as PacketSize.
pub const PACKET_SIZE: usize = 0x4000;

/// One unit of the byte stream from gdb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole `$...#xx` packet with a good checksum.
    Packet(Vec<u8>),
    /// `0x03`: Ctrl-C.
    Interrupt,
    Ack,
    Nack,
    /// A packet that failed its checksum or did not fit: gdb should send it again.
    Bad(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameState {
    Between,
    Body,
    Sum1,
    Sum2,
}

/// Splits gdb's byte stream into frames.
#[derive(Debug)]
pub struct Framer {
    state: FrameState,
    buf: Vec<u8>,
    max: usize,
    overflow: bool,
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

impl Framer {
    /// `max` is the longest whole packet (`$`, body, `#`, two digits) accepted.
    pub fn new(max: usize) -> Framer {
        Framer {
            state: FrameState::Between,
            buf: Vec::new(),
            max,
            overflow: false,
        }
    }

    pub fn push(&mut self, b: u8) -> Option<Frame> {
        match self.state {
            FrameState::Between => match b {
                b'$' => {
                    self.buf.clear();
                    self.buf.push(b);
                    self.overflow = false;
                    self.state = FrameState::Body;
                    None
                }
                0x03 => Some(Frame::Interrupt),
                b'+' => Some(Frame::Ack),
                b'-' => Some(Frame::Nack),
                // Line noise between packets is ignored, as gdb does.
                _ => None,
            },
            FrameState::Body => {
                if b == b'#' {
                    self.state = FrameState::Sum1;
                }
                self.keep(b);
                None
            }
            FrameState::Sum1 => {
                self.keep(b);
                self.state = FrameState::Sum2;
                None
            }
            FrameState::Sum2 => {
                self.keep(b);
                self.state = FrameState::Between;
                let buf = std::mem::take(&mut self.buf);
                if self.overflow {
                    return Some(Frame::Bad(format!("packet longer than {} bytes", self.max)));
                }
                let n = buf.len();
                let body = &buf[1..n - 3];
                let sum = body.iter().fold(0u8, |a, &c| a.wrapping_add(c));
                match (hex_val(buf[n - 2]), hex_val(buf[n - 1])) {
                    (Some(h), Some(l)) if (h << 4 | l) == sum => Some(Frame::Packet(buf)),
                    _ => Some(Frame::Bad(format!(
                        "checksum mismatch (computed {sum:02x})"
                    ))),
                }
            }
        }
    }

    fn keep(&mut self, b: u8) {
        if self.buf.len() < self.max {
            self.buf.push(b);
        } else {
            self.overflow = true;
            // Keep the checksum bytes in place so the frame still ends where gdb ended it.
            let n = self.buf.len();
            self.buf[n - 1] = b;
        }
    }
}

/// Encode one packet.
pub fn packet(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |a, &c| a.wrapping_add(c));
    let mut v = Vec::with_capacity(body.len() + 4);
    v.push(b'$');
    v.extend_from_slice(body);
    v.extend_from_slice(format!("#{sum:02x}").as_bytes());
    v
}

/// Text to add to the body of the next packet gdbstub sends, when that body starts with
/// `prefix`: our additions to gdbstub's answers (features in `qSupported`, registers in stop
/// replies).
struct Append {
    prefix: &'static [u8],
    text: String,
}

/// The writing side shared by every protocol state of a session.
struct Sink<W: Write> {
    w: W,
    out: Vec<u8>,
    last_packet: Vec<u8>,
    broken: bool,
    append: Option<Append>,
    /// Swallow what is flushed (while a restarted gdbstub is brought back to no-ack mode).
    mute: bool,
}

impl<W: Write> Sink<W> {
    /// Apply `append` to the last packet in `out`.
    fn edit(&mut self) {
        let Some(start) = self.out.iter().rposition(|&b| b == b'$') else {
            return;
        };
        let n = self.out.len();
        if n < start + 4 || self.out[n - 3] != b'#' {
            return;
        }
        let applies = self
            .append
            .as_ref()
            .is_some_and(|a| self.out[start + 1..n - 3].starts_with(a.prefix));
        if !applies {
            return;
        }
        let a = self.append.take().expect("checked");
        let mut body = self.out[start + 1..n - 3].to_vec();
        body.extend_from_slice(a.text.as_bytes());
        self.out.truncate(start);
        self.out.extend(packet(&body));
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.mute {
            self.out.clear();
            return Ok(());
        }
        if self.out.is_empty() {
            return Ok(());
        }
        if self.append.is_some() {
            self.edit();
        }
        if let Some(start) = self.out.iter().rposition(|&b| b == b'$') {
            self.last_packet = self.out[start..].to_vec();
        }
        let r = self.w.write_all(&self.out).and_then(|()| self.w.flush());
        self.out.clear();
        if r.is_err() {
            self.broken = true;
        }
        r
    }
}

/// gdbstub's connection: buffers a reply and sends it whole.
pub struct Conn<W: Write>(Rc<RefCell<Sink<W>>>);

impl<W: Write> Connection for Conn<W> {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.0.borrow_mut().out.push(byte);
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().out.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.borrow_mut().flush()
    }
}

type Machine<R, W> = GdbStubStateMachine<'static, UmlTarget<R>, Conn<W>>;

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The machine is stopped; gdb sends commands.
    Stopped,
    /// The machine runs; gdb waits for a stop (and may send Ctrl-C).
    Running,
    /// Over: gdb detached or killed, the machine exited, or the connection broke.
    Over,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Detached,
    /// gdb's `kill`: umldbg never kills a machine, so this is a detach too.
    Killed,
    MachineExited(String),
    ClientGone,
    Error(String),
}

/// One gdb client's session over a target.
pub struct Session<R: RunControl, W: Write> {
    target: UmlTarget<R>,
    sink: Rc<RefCell<Sink<W>>>,
    machine: Option<Machine<R, W>>,
    framer: Framer,
    end: Option<End>,
    /// The client asked for no-ack mode (gdbstub then sends and expects no `+`).
    no_ack: bool,
    /// The client speaks multiprocess thread ids (`pPID.TID`).
    multiprocess: bool,
    /// Host thread names for the thread list, read once.
    thread_names: std::collections::HashMap<usize, String>,
    /// Protocol problems survived (for the log).
    pub protocol_errors: Vec<String>,
}

/// Features we answer ourselves, added to gdbstub's `qSupported` reply.
const OUR_FEATURES: &str = ";qXfer:threads:read+";

fn hex_decode(h: &[u8]) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    h.chunks(2)
        .map(|p| Some(hex_val(p[0])? << 4 | hex_val(p[1])?))
        .collect()
}

fn hex_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{x:02x}"));
    }
    s
}

/// `OFFSET,LENGTH` (hex) of a qXfer read.
fn xfer_range(s: &[u8]) -> Option<(usize, usize)> {
    let t = std::str::from_utf8(s).ok()?;
    let (o, l) = t.split_once(',')?;
    Some((
        usize::from_str_radix(o, 16).ok()?,
        usize::from_str_radix(l, 16).ok()?,
    ))
}

fn fresh<R: RunControl, W: Write>(
    sink: &Rc<RefCell<Sink<W>>>,
    target: &mut UmlTarget<R>,
) -> Result<Machine<R, W>, ServeError> {
    let stub = GdbStubBuilder::new(Conn(sink.clone()))
        .packet_buffer_size(PACKET_SIZE)
        .build()
        .map_err(|e| ServeError::Protocol(e.to_string()))?;
    stub.run_state_machine(target)
        .map_err(|e| ServeError::Protocol(e.to_string()))
}

impl<R: RunControl, W: Write> Session<R, W> {
    pub fn new(mut target: UmlTarget<R>, w: W) -> Result<Session<R, W>, ServeError> {
        let sink = Rc::new(RefCell::new(Sink {
            w,
            out: Vec::new(),
            last_packet: Vec::new(),
            broken: false,
            append: None,
            mute: false,
        }));
        let machine = fresh(&sink, &mut target)?;
        Ok(Session {
            target,
            sink,
            machine: Some(machine),
            framer: Framer::new(PACKET_SIZE),
            end: None,
            no_ack: false,
            multiprocess: false,
            thread_names: std::collections::HashMap::new(),
            protocol_errors: Vec::new(),
        })
    }

    pub fn target(&self) -> &UmlTarget<R> {
        &self.target
    }

    pub fn phase(&self) -> Phase {
        if self.end.is_some() {
            return Phase::Over;
        }
        match &self.machine {
            Some(GdbStubStateMachine::Running(_))
            | Some(GdbStubStateMachine::CtrlCInterrupt(_)) => Phase::Running,
            Some(GdbStubStateMachine::Idle(_)) => Phase::Stopped,
            _ => Phase::Over,
        }
    }

    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// Bytes from gdb.
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.end.is_some() {
                return;
            }
            match self.framer.push(b) {
                None => {}
                Some(Frame::Ack) => {}
                Some(Frame::Nack) => {
                    let mut s = self.sink.borrow_mut();
                    let p = s.last_packet.clone();
                    s.out.extend_from_slice(&p);
                    let _ = s.flush();
                }
                Some(Frame::Bad(why)) => {
                    let mut s = self.sink.borrow_mut();
                    if why.starts_with("packet longer") {
                        // Resending cannot help: take it and refuse it.
                        if !self.no_ack {
                            s.out.push(b'+');
                        }
                        s.out.extend(packet(
                            format!("E.umldbg serve: {why} (PacketSize)").as_bytes(),
                        ));
                    } else if self.no_ack {
                        // Nobody resends in no-ack mode: answer, so the client is not left
                        // waiting.
                        s.out
                            .extend(packet(format!("E.umldbg serve: {why}").as_bytes()));
                    } else {
                        s.out.push(b'-');
                    }
                    let _ = s.flush();
                    drop(s);
                    self.protocol_errors.push(why);
                }
                Some(Frame::Interrupt) => self.pump(&[0x03]),
                Some(Frame::Packet(p)) => self.packet(&p),
            }
            if self.sink.borrow().broken {
                self.end.get_or_insert(End::ClientGone);
            }
        }
    }

    /// One whole packet: the few we answer ourselves, the rest to gdbstub.
    fn packet(&mut self, p: &[u8]) {
        let body = &p[1..p.len() - 3];
        let stopped = self.phase() == Phase::Stopped;
        if stopped && let Some(hex) = body.strip_prefix(b"qRcmd,") {
            self.ack();
            self.monitor(hex);
            return;
        }
        if stopped && let Some(range) = body.strip_prefix(b"qXfer:threads:read::") {
            self.ack();
            self.thread_list(range);
            return;
        }
        if stopped && let Some(args) = body.strip_prefix(b"_M") {
            // LLDB: allocate memory (`_Msize,permissions`).
            self.ack();
            let size = std::str::from_utf8(args)
                .ok()
                .and_then(|a| a.split(',').next())
                .and_then(|n| u64::from_str_radix(n, 16).ok());
            match size.and_then(|n| self.target.allocate(n)) {
                Some(a) => self.reply(format!("{a:x}").as_bytes()),
                None => self.reply(b"E01"),
            }
            return;
        }
        if stopped && let Some(args) = body.strip_prefix(b"_m") {
            self.ack();
            let freed = std::str::from_utf8(args)
                .ok()
                .and_then(|a| u64::from_str_radix(a, 16).ok())
                .is_some_and(|a| self.target.deallocate(a));
            self.reply(if freed { b"OK" } else { b"E01" });
            return;
        }
        if body.starts_with(b"qSupported") {
            self.multiprocess = body.windows(13).any(|w| w == b"multiprocess+");
            self.sink.borrow_mut().append = Some(Append {
                prefix: b"PacketSize=",
                text: OUR_FEATURES.into(),
            });
        }
        self.pump(p);
        self.sink.borrow_mut().append = None;
        if body == b"QStartNoAckMode" && self.end.is_none() {
            self.no_ack = true;
        }
    }

    /// The `+` gdbstub would have sent for a packet we answer ourselves.
    fn ack(&mut self) {
        if !self.no_ack {
            self.sink.borrow_mut().out.push(b'+');
        }
    }

    fn reply(&mut self, body: &[u8]) {
        let mut s = self.sink.borrow_mut();
        s.out.extend(packet(body));
        let _ = s.flush();
    }

    /// `monitor CMD`: its text as console output (`O` packets) as it comes, then `OK`, or `E01`
    /// when it failed, which stops a gdb script and makes MI answer `^error`.
    fn monitor(&mut self, hex: &[u8]) {
        let Some(cmd) = hex_decode(hex) else {
            self.reply(b"E.umldbg serve: qRcmd: the command is not hex");
            return;
        };
        let sink = self.sink.clone();
        let mut out = |line: &str| {
            let mut text = line.as_bytes().to_vec();
            text.push(b'\n');
            let mut s = sink.borrow_mut();
            // Well under the packet size once hex-encoded.
            for chunk in text.chunks(PACKET_SIZE / 4) {
                let body = format!("O{}", hex_encode(chunk));
                s.out.extend(packet(body.as_bytes()));
            }
            let _ = s.flush();
        };
        let ok = self.target.monitor(&cmd, &mut out);
        self.reply(if ok { b"OK" } else { b"E01" });
    }

    /// `qXfer:threads:read`: the thread list in one round trip (gdb asks for it at every stop;
    /// `qfThreadInfo`/`qsThreadInfo` take two).
    fn thread_list(&mut self, range: &[u8]) {
        let Some((offset, length)) = xfer_range(range) else {
            self.reply(b"E.umldbg serve: qXfer:threads:read: bad offset or length");
            return;
        };
        let pid = self.target.pid();
        let mut doc = String::from("<?xml version=\"1.0\"?>\n<threads>\n");
        for tid in self.target.thread_ids() {
            let name = self.thread_names.entry(tid).or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                    .unwrap_or_default()
                    .trim()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "-_.:/ ".contains(*c))
                    .collect()
            });
            // gdbstub's process id (1) in multiprocess ids, as in its stop replies. The real pid
            // would read better, but LLDB, given the pid of a process on its own host, takes
            // the executable and libraries from that process and drops the server's list.
            let id = if self.multiprocess {
                format!("p1.{tid:x}")
            } else {
                format!("{tid:x}")
            };
            doc.push_str(&format!("<thread id=\"{id}\" name=\"{name}\"/>\n"));
        }
        doc.push_str("</threads>\n");
        let bytes = doc.as_bytes();
        let start = offset.min(bytes.len());
        let end = start
            .saturating_add(length.min(PACKET_SIZE - 16))
            .min(bytes.len());
        let mut body = vec![if end == bytes.len() { b'l' } else { b'm' }];
        body.extend_from_slice(&bytes[start..end]);
        self.reply(&body);
    }

    /// Feed one checked frame to gdbstub.
    fn pump(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let Some(m) = self.machine.take() else { return };
            let next = match m {
                GdbStubStateMachine::Idle(g) => g.incoming_data(&mut self.target, b),
                GdbStubStateMachine::Running(g) => g.incoming_data(&mut self.target, b),
                other => Ok(other),
            };
            match next {
                Ok(m) => self.machine = Some(self.settle(m)),
                Err(e) => {
                    self.recover(e.to_string(), e.is_target_error());
                    return;
                }
            }
        }
        // Acks of resume packets are not flushed by gdbstub until the stop; gdb wants them now.
        let _ = self.sink.borrow_mut().flush();
    }

    /// Handle the states that need an answer from us at once (Ctrl-C, disconnect).
    fn settle(&mut self, m: Machine<R, W>) -> Machine<R, W> {
        match m {
            GdbStubStateMachine::CtrlCInterrupt(g) => {
                if let Err(e) = self.target.interrupt() {
                    self.end = Some(End::Error(e.0));
                }
                match g.interrupt_handled(&mut self.target, None::<StopReason>) {
                    Ok(m) => m,
                    Err(e) => {
                        self.end = Some(End::Error(e.to_string()));
                        // Nothing sensible is left of the protocol state; `end` ends it.
                        match fresh(&self.sink, &mut self.target) {
                            Ok(m) => m,
                            Err(_) => unreachable_machine(),
                        }
                    }
                }
            }
            GdbStubStateMachine::Disconnected(g) => {
                self.end = Some(match g.get_reason() {
                    DisconnectReason::Disconnect => End::Detached,
                    DisconnectReason::Kill => End::Killed,
                    DisconnectReason::TargetExited(c) => {
                        End::MachineExited(format!("exit status {c}"))
                    }
                    DisconnectReason::TargetTerminated(s) => {
                        End::MachineExited(format!("signal {}", s.0))
                    }
                });
                GdbStubStateMachine::Disconnected(g)
            }
            m => m,
        }
    }

    /// gdbstub gave up on a packet (a malformed command, an unsupported request). Tell gdb,
    /// and carry on with a fresh protocol state; a target error ends the session.
    fn recover(&mut self, why: String, fatal: bool) {
        if fatal {
            self.end = Some(End::Error(why));
            return;
        }
        self.protocol_errors.push(why.clone());
        if self.target.is_running() {
            // A fresh state is a stopped one; make it true. gdb is told below.
            let _ = self.target.interrupt();
            let _ = self.target.poll(Duration::from_secs(5));
        }
        {
            let mut s = self.sink.borrow_mut();
            s.out.clear();
            let msg: String = why
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(200)
                .collect();
            let reply = packet(format!("E.umldbg serve: {msg}").as_bytes());
            s.out.extend_from_slice(&reply);
            let _ = s.flush();
        }
        match fresh(&self.sink, &mut self.target) {
            Ok(m) => self.machine = Some(m),
            Err(e) => self.end = Some(End::Error(e.to_string())),
        }
        if self.no_ack {
            // The new gdbstub starts in ack mode; bring it where the client is, silently.
            self.sink.borrow_mut().mute = true;
            for &b in packet(b"QStartNoAckMode").iter() {
                let g = match self.machine.take() {
                    Some(GdbStubStateMachine::Idle(g)) => g,
                    other => {
                        self.machine = other;
                        break;
                    }
                };
                match g.incoming_data(&mut self.target, b) {
                    Ok(m) => self.machine = Some(m),
                    Err(e) => {
                        self.end = Some(End::Error(e.to_string()));
                        break;
                    }
                }
            }
            let mut s = self.sink.borrow_mut();
            s.mute = false;
            s.out.clear();
        }
    }

    /// While running: wait up to `timeout` for a stop and report it.
    pub fn poll(&mut self, timeout: Duration) {
        if self.phase() != Phase::Running {
            return;
        }
        let stop = match self.target.poll(timeout) {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                self.end = Some(End::Error(e.0));
                return;
            }
        };
        let Some(m) = self.machine.take() else { return };
        // The stopped thread's registers go with the stop reply: gdb and LLDB need no `g`.
        if let Some(regs) = self.target.expedite(&stop) {
            self.sink.borrow_mut().append = Some(Append {
                prefix: b"T",
                text: regs,
            });
        }
        let next = match m {
            GdbStubStateMachine::Running(g) => g.report_stop(&mut self.target, stop),
            other => Ok(other),
        };
        self.sink.borrow_mut().append = None;
        match next {
            Ok(m) => self.machine = Some(self.settle(m)),
            Err(e) => self.recover(e.to_string(), e.is_target_error()),
        }
        if self.sink.borrow().broken {
            self.end.get_or_insert(End::ClientGone);
        }
    }

    /// The client went away.
    pub fn client_gone(&mut self) {
        self.end.get_or_insert(End::ClientGone);
    }

    /// End the session: the machine runs on with every byte we changed put back.
    pub fn finish(mut self) -> (End, Result<usize, MachineError>) {
        let end = self.end.take().unwrap_or(End::ClientGone);
        self.machine = None;
        (end, self.target.finish())
    }
}

// `fresh` only fails when gdbstub's own builder does (a zero-sized buffer); the constant buffer
// size rules that out, so this is never reached.
fn unreachable_machine<M>() -> M {
    panic!("gdbstub refused a fresh protocol state")
}

/// Where to listen.
#[derive(Debug, Clone)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {0}: not a loopback address (gdb's protocol has no authentication; \
         pass --allow-remote to accept other hosts)"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    /// gdbstub refused a protocol state (its own error types are generic over the target).
    #[error("{0}")]
    Protocol(String),
    #[error("{umid} is now traced by process {tracer} ({name}): another debugger")]
    TracedByOther {
        umid: String,
        tracer: i32,
        name: String,
    },
    #[error("attach to {umid} (pid {pid}): {source}")]
    Attach {
        umid: String,
        pid: i32,
        #[source]
        source: crate::ptrace::runctl::RunError,
    },
    #[error("blocking SIGCHLD: {0}")]
    BlockSigchld(#[source] nix::Error),
    #[error("signalfd: {0}")]
    Signalfd(#[source] nix::Error),
    #[error("poll: {0}")]
    Poll(#[source] nix::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Machine(#[from] MachineError),
}

/// A client stream of either kind.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    fn set_read_timeout(&self, d: Option<Duration>) {
        let _ = match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        };
    }

    fn peer(&self) -> String {
        match self {
            Stream::Tcp(s) => s
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Stream::Unix(_) => "a local client".into(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => Write::write(s, buf),
            Stream::Unix(s) => Write::write(s, buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => Write::flush(s),
            Stream::Unix(s) => Write::flush(s),
        }
    }
}

/// A bound listener.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    pub fn bind(at: &Listen, allow_remote: bool) -> Result<Listener, ServeError> {
        match at {
            Listen::Tcp(a) => {
                if !a.ip().is_loopback() && !allow_remote {
                    return Err(ServeError::NotLoopback(*a));
                }
                TcpListener::bind(a)
                    .map(Listener::Tcp)
                    .map_err(|e| ServeError::Bind(a.to_string(), e))
            }
            Listen::Unix(p) => {
                // A socket file left by a server that is gone; a live one refuses the bind below,
                // and anything that is not a socket is the user's and stays (the bind fails).
                use std::os::unix::fs::FileTypeExt;
                let stale_socket = std::fs::symlink_metadata(p)
                    .is_ok_and(|m| m.file_type().is_socket())
                    && UnixStream::connect(p).is_err();
                if stale_socket {
                    let _ = std::fs::remove_file(p);
                }
                let l = UnixListener::bind(p)
                    .map_err(|e| ServeError::Bind(p.display().to_string(), e))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
                Ok(Listener::Unix(l, p.clone()))
            }
        }
    }

    /// The address gdb should use (the real port when 0 was asked for).
    pub fn address(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(_, p) => p.display().to_string(),
        }
    }

    fn accept(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
            Listener::Unix(l, _) => Stream::Unix(l.accept()?.0),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Answer a client that came while another one is served: read its first packet, answer it
/// with an `E.` error it prints, close.
fn refuse(mut s: Stream, why: &str) {
    s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut f = Framer::new(PACKET_SIZE);
    let mut buf = [0u8; 512];
    'read: loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for &b in &buf[..n] {
                    if let Some(Frame::Packet(_)) = f.push(b) {
                        break 'read;
                    }
                }
            }
        }
    }
    let mut reply = b"+".to_vec();
    reply.extend(packet(format!("E.{why}").as_bytes()));
    let _ = s.write_all(&reply);
    let _ = s.flush();
    std::thread::sleep(Duration::from_millis(100));
    s.shutdown();
}

/// Lets another thread (a signal handler's) end the server cleanly: the current client's
/// connection is shut down, its session ends as if gdb had left (every byte put back, the
/// machine detached), and `serve` returns.
#[derive(Default)]
pub struct Control {
    stop: std::sync::atomic::AtomicBool,
    current: std::sync::Mutex<Option<Stream>>,
}

impl Control {
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut g) = self.current.lock()
            && let Some(s) = g.take()
        {
            s.shutdown();
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_current(&self, s: Option<Stream>) {
        if let Ok(mut g) = self.current.lock() {
            *g = s;
        }
        if self.stopping() {
            self.stop();
        }
    }
}

/// Block SIGCHLD in the calling thread (and the threads it spawns afterwards): the tracee's
/// stops then wake the session through a signalfd. Call before any thread starts.
pub fn block_sigchld() -> Result<(), ServeError> {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGCHLD);
    set.thread_block().map_err(ServeError::BlockSigchld)
}

/// How long a reply may wait for the client to read (see `serve_client`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest a running session sleeps without looking at the machine: a safety net for a
/// SIGCHLD that was collected before the wait it was meant for.
const SAFETY_POLL: Duration = Duration::from_millis(200);

impl Stream {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

/// Serve one client: attach (through `make_target`), run the session, detach. The calling
/// thread must have SIGCHLD blocked ([`block_sigchld`]); it waits for the client's bytes and the
/// machine's stops together with `poll` on the socket and a signalfd, so a breakpoint hit
/// reaches gdb with no polling delay and Ctrl-C reaches the machine at once.
pub fn serve_client<R: RunControl>(
    stream: Stream,
    make_target: &mut dyn FnMut() -> Result<UmlTarget<R>, ServeError>,
    log: &mut dyn FnMut(&str),
    control: &Control,
) -> Result<End, ServeError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signalfd::{SfdFlags, SignalFd};

    let peer = stream.peer();
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGCHLD);
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(ServeError::Signalfd)?;
    let target = match make_target() {
        Ok(t) => t,
        Err(e) => {
            refuse(stream, &format!("umldbg serve: {e}"));
            return Err(e);
        }
    };
    for w in &target.warnings {
        log(&format!("warning: {w}"));
    }
    log(&format!(
        "client {peer}: attached; {} modules as libraries",
        target
            .libraries()
            .iter()
            .filter(|l| matches!(l, super::libraries::Library::Module { .. }))
            .count()
    ));
    // A client that sends and never reads must not hold the machine: a reply that cannot be
    // written within this long ends the session (the machine is detached and runs on).
    let _ = match &stream {
        Stream::Tcp(s) => s.set_write_timeout(Some(WRITE_TIMEOUT)),
        Stream::Unix(s) => s.set_write_timeout(Some(WRITE_TIMEOUT)),
    };
    let mut reader = stream.try_clone()?;
    let poll_handle = stream.try_clone()?;
    control.set_current(stream.try_clone().ok());
    let mut session = Session::new(target, stream)?;
    let mut buf = vec![0u8; 65536];
    let mut read_client = |session: &mut Session<R, Stream>| match reader.read(&mut buf) {
        Ok(0) => session.client_gone(),
        Ok(n) => session.feed(&buf[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
        Err(_) => session.client_gone(),
    };
    loop {
        match session.phase() {
            Phase::Over => break,
            Phase::Stopped => {
                let mut fds = [PollFd::new(poll_handle.fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => read_client(&mut session),
                    Err(nix::Error::EINTR) => {}
                    Err(e) => return Err(ServeError::Poll(e)),
                }
            }
            Phase::Running => {
                // Whatever already happened (a stop queued while others were being stopped).
                session.poll(Duration::ZERO);
                if session.phase() != Phase::Running {
                    continue;
                }
                let mut fds = [
                    PollFd::new(poll_handle.fd(), PollFlags::POLLIN),
                    PollFd::new(std::os::fd::AsFd::as_fd(&sfd), PollFlags::POLLIN),
                ];
                let timeout = PollTimeout::try_from(SAFETY_POLL).unwrap_or(PollTimeout::MAX);
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(ServeError::Poll(e)),
                }
                if fds[1].any().unwrap_or(false) {
                    while let Ok(Some(_)) = sfd.read_signal() {}
                }
                let client = fds[0].any().unwrap_or(false);
                if client {
                    read_client(&mut session);
                }
            }
        }
    }
    for e in &session.protocol_errors {
        log(&format!("client {peer}: protocol error survived: {e}"));
    }
    let t = session.target();
    let stats = format!(
        "{} library events, {} steps by breakpoint, {} by trap flag",
        t.library_events, t.breakpoint_steps, t.trap_steps
    );
    let (end, restored) = session.finish();
    control.set_current(None);
    if matches!(end, End::Detached | End::Killed) {
        // gdb acknowledges our last reply after it reads it; closing first would make that
        // write fail on gdb's side (a Unix socket says EPIPE) and spoil a clean detach.
        poll_handle.set_read_timeout(Some(Duration::from_millis(500)));
        let mut sink = [0u8; 256];
        while matches!(reader_again(&poll_handle, &mut sink), Some(n) if n > 0) {}
    }
    poll_handle.shutdown();
    match &restored {
        Ok(n) => log(&format!(
            "client {peer}: {end:?}; {stats}; {n} breakpoints removed, machine detached and running"
        )),
        Err(e) => log(&format!("client {peer}: {end:?}; detach problem: {e}")),
    }
    Ok(restored.map(|_| end)?)
}

fn reader_again(s: &Stream, buf: &mut [u8]) -> Option<usize> {
    let mut s = s.try_clone().ok()?;
    s.read(buf).ok()
}

/// Accept clients one at a time until `once` is done or the process is stopped. The target is
/// made in this thread (ptrace requires the tracer thread to stay the same).
pub fn serve<R: RunControl>(
    listener: Listener,
    once: bool,
    control: std::sync::Arc<Control>,
    mut make_target: impl FnMut() -> Result<UmlTarget<R>, ServeError>,
    busy_text: impl Fn(&str) -> String + Send + 'static,
    mut log: impl FnMut(&str),
) -> Result<(), ServeError> {
    block_sigchld()?;
    let listener = std::sync::Arc::new(listener);
    // The accepting thread keeps its handle while it blocks in accept(): the socket file goes
    // when this function returns, whatever the listener's fate.
    struct RemoveOnReturn(Option<PathBuf>);
    impl Drop for RemoveOnReturn {
        fn drop(&mut self) {
            if let Some(p) = &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let _remove = RemoveOnReturn(match &*listener {
        Listener::Unix(_, p) => Some(p.clone()),
        Listener::Tcp(_) => None,
    });
    let (tx, rx) = mpsc::sync_channel::<Stream>(0);
    let busy = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let l2 = listener.clone();
    let b2 = busy.clone();
    std::thread::spawn(move || {
        let mut failures = 0u32;
        loop {
            let s = match l2.accept() {
                Ok(s) => {
                    failures = 0;
                    s
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!("serve: accept failed ({e}); trying again, slower");
                    }
                    std::thread::sleep(crate::util::accept_backoff(failures));
                    continue;
                }
            };
            let current = b2.lock().map(|g| g.clone()).unwrap_or(None);
            if let Some(who) = current {
                let why = busy_text(&who);
                std::thread::spawn(move || refuse(s, &why));
                continue;
            }
            if let Ok(mut g) = b2.lock() {
                *g = Some(s.peer());
            }
            if tx.send(s).is_err() {
                return;
            }
        }
    });
    loop {
        let s = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(s) => s,
            Err(mpsc::RecvTimeoutError::Timeout) if !control.stopping() => continue,
            Err(_) => return Ok(()),
        };
        if control.stopping() {
            return Ok(());
        }
        let r = serve_client(s, &mut make_target, &mut log, &control);
        if let Ok(mut g) = busy.lock() {
            *g = None;
        }
        match r {
            Ok(End::MachineExited(why)) => {
                log(&format!(
                    "the machine exited ({why}); nothing left to serve"
                ));
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => log(&format!("session: {e}")),
        }
        if once || control.stopping() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn serve_unix_on_a_regular_file_leaves_the_file_alone() {
        let dir = std::env::temp_dir().join(format!("umldbg-serve-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("precious.txt");
        std::fs::write(&file, "keep me").unwrap();
        let r = Listener::bind(&Listen::Unix(file.clone()), false);
        assert!(r.is_err(), "bound over a regular file");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        // A stale socket (its server gone) is replaced.
        let sock = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let l = Listener::bind(&Listen::Unix(sock.clone()), false).expect("stale socket replaced");
        drop(l);
        let _ = std::fs::remove_dir_all(&dir);
    }

    use super::*;

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut f = Framer::new(64);
        bytes.iter().filter_map(|&b| f.push(b)).collect()
    }

    #[test]
    fn framer_passes_good_packets_and_control_bytes() {
        let p = packet(b"qSupported");
        let mut input = b"+".to_vec();
        input.extend(&p);
        input.push(0x03);
        input.push(b'-');
        assert_eq!(
            frames(&input),
            [Frame::Ack, Frame::Packet(p), Frame::Interrupt, Frame::Nack]
        );
    }

    #[test]
    fn framer_rejects_bad_checksums_and_overlong_packets() {
        assert!(matches!(frames(b"$g#00").as_slice(), [Frame::Bad(w)] if w.contains("checksum")));
        assert!(matches!(frames(b"$g#zz").as_slice(), [Frame::Bad(_)]));
        let long = packet(&[b'a'; 100]);
        assert!(matches!(frames(&long).as_slice(), [Frame::Bad(w)] if w.contains("longer")));
        // The framer is back in step after both.
        let mut input = long.clone();
        input.extend(packet(b"g"));
        assert_eq!(frames(&input)[1], Frame::Packet(packet(b"g")));
    }

    #[test]
    fn packets_encode_with_their_checksum() {
        assert_eq!(packet(b"OK"), b"$OK#9a");
        assert_eq!(packet(b""), b"$#00");
    }
}
