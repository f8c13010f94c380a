//! ptrace run-control of a UML kernel process, usable without gdb: attach to every host thread
//! of the kernel, read and write its memory (kernel text included), registers, software
//! breakpoints, continue, single step, interrupt, detach.
//!
//! # A dead tracer must not crash the machine
//! A tracer can be killed at any instant. The host then detaches the threads and each runs on
//! from where it is. A thread that sat in the SIGTRAP stop of an `int3` may or may not get that
//! SIGTRAP delivered afterwards (both were seen here on host 6.18: it depends on what the tracer
//! did during the stop). Our UML kernel (patch 0001) answers a delivered kernel-mode SIGTRAP by
//! waiting, up to two seconds, for the byte before `rip` to stop being `int3` and resuming there;
//! the guard process (`guard.rs`) puts the bytes back the moment the tracer dies. So every state
//! a stopped thread can be left in is chosen to be right *both* with and without that SIGTRAP:
//!
//! - Breakpoints step over their instruction out of line: a step-over stub holds `nop`, the
//!   original instruction relocated (`runctl/insn.rs`) and a jump back (`runctl/stubs.rs`).
//!   As soon as a breakpoint stop is seen, `rip` goes to `stub + 1`: run on, it executes the
//!   instruction; rewound by the kernel, it lands on the `nop`, which is as good. Only the first
//!   microseconds of the stop, before that, are left to the kernel's rewind (`rip == addr + 1`).
//!   [`Tracee::regs`] shows `rip == addr` throughout. The `int3` stays in the text, so other
//!   threads never miss it, and resuming is a `PTRACE_CONT`.
//! - Trap probes ([`Tracee::insert_trap_probe`]) leave no such microseconds: the function's
//!   entry jumps to a stub `nop; int3; displaced instructions; jmp back`, so the trap already
//!   leaves `rip` in the right place; the guard turns that `int3` into a `nop`.
//! - Probes ([`Tracee::insert_probe`]) never stop at all: the tracer can let go of ptrace
//!   ([`Tracee::detach_keep_probes`]) while they record.
//! - A changed `rip` at a trap stop goes through a jump stub (`nop; jmp target`) the same way.
//! - After a single step the thread is parked in an interrupt stop (no signal pending, trap
//!   flag cleared), where dying just resumes it.
//!
//! What stays unsafe: the microseconds of a single step itself, and instructions that cannot
//! run out of line (`loop`, VEX-encoded), which fall back to stepping in place.
//!
//! # UML specifics
//! Only the kernel's own threads (`/proc/<pid>/task`) are traced; the host processes of the
//! guest's processes are UML's own tracees and are left alone (no `PTRACE_O_TRACECLONE`, which
//! would steal them from UML). UML's signals (SIGSEGV, SIGALRM, SIGIO, SIGUSR1, SIGCHLD,
//! SIGWINCH, SIGVTALRM, ...) are passed straight back and never reported.
//!
//! `wait` collects with `waitpid(-1, __WALL | __WNOTHREAD)`: the calling thread's tracees only,
//! so one thread per machine can trace several machines; that thread should not have other
//! children of its own to wait for.

mod insn;
mod probe;
mod stubs;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

pub use insn::{InsnError, decode, relocate};
pub use probe::{PROBE_JMP, ProbeInfo, ProbeLease, Scratch, mappings};
pub use stubs::{STUB_SIZE, StubArea};

use crate::ptrace::guard::{Guard, GuardError, TextLock, TraceJournal};
use crate::ptrace::mem::Mem;

const INT3: u8 = 0xcc;
const NOP: u8 = 0x90;
/// Offset of `rip` in `struct user_regs_struct` (x86_64), for PTRACE_POKEUSER.
const RIP_OFFSET: u64 = 16 * 8;

/// What [`Tracee::wait`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopEvent {
    /// A thread hit the breakpoint at `addr`; its registers show `rip == addr`.
    Breakpoint { tid: i32, addr: u64 },
    /// A single step finished.
    Stepped { tid: i32 },
    /// A thread stopped because of [`Tracee::interrupt`].
    Interrupted { tid: i32 },
    /// The kernel process is gone.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no process {0}")]
    NoProcess(i32),
    #[error(
        "process {pid} (thread {tid}) is already traced by process {tracer} ({tracer_name}): \
         detach that debugger first"
    )]
    AlreadyTraced {
        pid: i32,
        tid: i32,
        tracer: i32,
        tracer_name: String,
    },
    #[error("{op} on thread {tid}: {source}")]
    Ptrace {
        op: &'static str,
        tid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot {op} {len} bytes at {addr:#x} of process {pid}: {source}")]
    Memory {
        op: &'static str,
        pid: i32,
        addr: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("no breakpoint at {0:#x}")]
    NoBreakpoint(u64),
    #[error("cannot put a breakpoint at {addr:#x}: {reason}")]
    BadBreakpoint { addr: u64, reason: String },
    #[error("thread {0} is not a thread of the traced process")]
    NoThread(i32),
    #[error("thread {0} is running; stop it first")]
    NotStopped(i32),
    #[error("the traced process has exited")]
    Exited,
    #[error("interrupted by a signal while waiting")]
    Interrupted,
    #[error("nothing happened within {0:?}")]
    Timeout(Duration),
    #[error(
        "process {pid} is being traced by umldbg process {}: stop that trace first",
        holder.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
    )]
    Busy { pid: i32, holder: Option<i32> },
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("step-over stubs: {0}")]
    Stubs(String),
    #[error("step-over stubs: {0}")]
    StubArea(#[source] stubs::StubsError),
}

fn ptrace_err(op: &'static str, tid: i32) -> impl FnOnce(nix::Error) -> RunError {
    move |source| RunError::Ptrace { op, tid, source }
}

/// How a stopped thread stopped, which decides how it resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Signal-delivery stop of SIGTRAP from an `int3`. `bp` is the breakpoint while the kernel's
    /// rip is still `bp + 1`; `None` once rip points into a stub (resume with signal 0).
    Trap { bp: Option<u64> },
    /// Interrupt (event) stop: nothing pending.
    Parked,
    /// Signal-delivery stop of a signal of UML's, delivered on resume.
    Signal(i32),
}

#[derive(Debug)]
struct Thread {
    stop: Option<Stop>,
    /// Registers as the kernel has them, fetched at most once per stop.
    regs: Option<libc::user_regs_struct>,
    /// The rip to show instead of the kernel's (a trap stop's address, or a jump stub's target).
    shown_rip: Option<u64>,
    /// PTRACE_INTERRUPT sent, its stop not seen yet.
    interrupting: bool,
    /// Report the interrupt stop (asked for by `interrupt`), or keep it quiet (all-stop).
    report_interrupt: bool,
    /// UML signals that arrived during a single step, for the next resume.
    held: VecDeque<i32>,
}

impl Thread {
    fn new() -> Thread {
        Thread {
            stop: None,
            regs: None,
            shown_rip: None,
            interrupting: false,
            report_interrupt: false,
            held: VecDeque::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Breakpoint {
    original: u8,
    /// The step-over stub's address, when the instruction can run out of line.
    stub: Option<u64>,
}

/// Counters of the work done, for measuring the hot path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub waits: u64,
    pub ptrace_calls: u64,
    pub signals_passed: u64,
    pub breakpoint_stops: u64,
    pub mem_reads: u64,
}

/// All host threads of a UML kernel process, attached with ptrace.
///
/// The state sits in a `RefCell` so that the read-only looking calls (`regs`, `set_regs`,
/// `read_mem`) can keep their register cache and stub allocator up to date; a `Tracee` is used
/// from the one thread that attached (ptrace wants that anyway).
#[derive(Debug)]
pub struct Tracee {
    inner: std::cell::RefCell<Inner>,
}

#[derive(Debug)]
struct Inner {
    pid: i32,
    threads: BTreeMap<i32, Thread>,
    mem: Mem,
    breakpoints: BTreeMap<u64, Breakpoint>,
    probes: BTreeMap<u64, probe::Probe>,
    /// The int3 of each trap probe (in its stub) to the probed function.
    trap_probes: BTreeMap<u64, u64>,
    /// Removed breakpoints whose stubs a stopped thread may still need.
    retired: BTreeMap<u64, Breakpoint>,
    stubs: StubArea,
    /// Executable memory mapped for probe stubs (see `runctl/probe.rs`), once mapped.
    probe_area: Option<StubArea>,
    guard: Option<Guard>,
    journal: TraceJournal,
    all_stop: bool,
    /// With `all_stop` off: a breakpoint or step stops only its thread, the others are stopped
    /// when something of theirs is asked for (registers, a step), and an interrupt stops all.
    /// UML's host helper threads then keep sleeping in their syscalls through a breakpoint hit
    /// instead of being interrupted and resumed at every one.
    lazy_stop: bool,
    pending: VecDeque<StopEvent>,
    exited: Option<StopEvent>,
    repaired: Vec<u64>,
    counters: Counters,
    detached: bool,
    /// SIGCHLD as a file descriptor, for waits with a timeout.
    sigchld_fd: Option<std::os::fd::OwnedFd>,
    /// The kernel has patch 0001 (a stray int3 waits for its byte to come back).
    kernel_patched: bool,
    /// This tracer's claim on the machine's text.
    lock: Option<TextLock>,
}

/// Whether the kernel image carries umldbg's patch 0001 (its message is in `.rodata`): only then
/// does a kernel-mode trap on a left-over `int3` wait for the byte to come back instead of
/// panicking, which is what makes a killed tracer harmless.
pub fn kernel_waits_for_stray_traps(image: &Path) -> bool {
    use object::{Object, ObjectSection};
    const MARK: &[u8] = b"after a breakpoint left by a dead debugger";
    let Ok(file) = crate::kmod::loader::MappedFile::open(image) else {
        return false;
    };
    let Ok(obj) = object::File::parse(file.bytes()) else {
        return false;
    };
    obj.sections()
        .filter(|s| s.name().is_ok_and(|n| n.starts_with(".rodata")))
        .filter_map(|s| s.data().ok())
        .any(|d| d.windows(MARK.len()).any(|w| w == MARK))
}

/// The thread ids of a process.
pub fn thread_ids(pid: i32) -> io::Result<Vec<i32>> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

pub use crate::util::tracer_of;

fn raw_waitpid(pid: i32, flags: i32) -> Result<Option<(i32, i32)>, nix::Error> {
    let mut st = 0;
    // SAFETY: waitpid writes the status into our stack variable.
    // __WNOTHREAD: only this thread's tracees, so that several threads of one program can each
    // trace a machine.
    let r = unsafe { libc::waitpid(pid, &mut st, flags | libc::__WALL | libc::__WNOTHREAD) };
    match r {
        -1 => Err(nix::Error::last()),
        0 => Ok(None),
        p => Ok(Some((p, st))),
    }
}

fn pt(req: libc::c_uint, tid: i32, addr: u64, data: u64) -> Result<libc::c_long, nix::Error> {
    // SAFETY: requests that take integers (no pointers into our memory) or are given valid ones
    // by the callers below.
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        Err(nix::Error::last())
    } else {
        Ok(r)
    }
}

impl Inner {
    /// Attaches to every thread of `pid` (PTRACE_SEIZE, no EXITKILL: the machine outlives the
    /// tracer), stops them all, and starts the guard. `journal` is the machine's trace journal
    /// (see [`crate::ptrace::guard::journal_path`]); bytes a dead tracer left in are repaired first.
    fn attach(pid: i32, journal: &Path) -> Result<Inner, RunError> {
        let tids = thread_ids(pid).map_err(|_| RunError::NoProcess(pid))?;
        for &t in &tids {
            if let Some((tracer, tracer_name)) = tracer_of(t) {
                return Err(RunError::AlreadyTraced {
                    pid,
                    tid: t,
                    tracer,
                    tracer_name,
                });
            }
        }
        let lock = TextLock::take(journal).map_err(|holder| RunError::Busy { pid, holder })?;
        let journal = TraceJournal::open(journal, pid);
        let repaired = journal.repair().unwrap_or_default();
        let mut stubs = StubArea::from_image(Path::new(&format!("/proc/{pid}/exe")))
            .map_err(RunError::StubArea)?;
        stubs.set_cursor(journal.next_stub());
        let mem = Mem::open(pid, true).map_err(|e| RunError::Memory {
            op: "open the memory of",
            pid,
            addr: 0,
            len: 0,
            source: e.source,
        })?;
        let patched = kernel_waits_for_stray_traps(Path::new(&format!("/proc/{pid}/exe")));
        let guard = Guard::spawn_with(pid, patched)?;
        let mut t = Inner {
            pid,
            threads: BTreeMap::new(),
            mem,
            breakpoints: BTreeMap::new(),
            probes: BTreeMap::new(),
            trap_probes: BTreeMap::new(),
            retired: BTreeMap::new(),
            stubs,
            probe_area: None,
            guard: Some(guard),
            journal,
            all_stop: true,
            lazy_stop: false,
            pending: VecDeque::new(),
            exited: None,
            repaired,
            counters: Counters::default(),
            detached: false,
            sigchld_fd: None,
            kernel_patched: patched,
            lock: Some(lock),
        };
        // Threads may come and go while we seize: list until no new one shows up.
        loop {
            let now = thread_ids(pid).map_err(|_| RunError::NoProcess(pid))?;
            let new: Vec<i32> = now
                .into_iter()
                .filter(|x| !t.threads.contains_key(x))
                .collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                match pt(libc::PTRACE_SEIZE, tid, 0, 0) {
                    Ok(_) => {
                        t.threads.insert(tid, Thread::new());
                    }
                    Err(nix::Error::ESRCH) => {}
                    Err(e) => {
                        let err = match tracer_of(tid) {
                            Some((tracer, tracer_name)) => RunError::AlreadyTraced {
                                pid,
                                tid,
                                tracer,
                                tracer_name,
                            },
                            None => RunError::Ptrace {
                                op: "PTRACE_SEIZE",
                                tid,
                                source: e,
                            },
                        };
                        t.abort_attach();
                        return Err(err);
                    }
                }
            }
        }
        if t.threads.is_empty() {
            t.abort_attach();
            return Err(RunError::NoProcess(pid));
        }
        if let Err(e) = t.stop_all(false) {
            t.abort_attach();
            return Err(e);
        }
        Ok(t)
    }

    fn abort_attach(&mut self) {
        for (&tid, th) in &self.threads {
            if th.stop.is_some() {
                let _ = pt(libc::PTRACE_DETACH, tid, 0, 0);
            } else {
                let _ = pt(libc::PTRACE_INTERRUPT, tid, 0, 0);
                let _ = raw_waitpid(tid, 0);
                let _ = pt(libc::PTRACE_DETACH, tid, 0, 0);
            }
        }
        self.threads.clear();
        self.detached = true;
        if let Some(g) = self.guard.take() {
            let _ = g.dismiss();
        }
    }

    fn threads(&self) -> Vec<i32> {
        self.threads.keys().copied().collect()
    }

    fn is_stopped(&self, tid: i32) -> bool {
        self.threads.get(&tid).is_some_and(|t| t.stop.is_some())
    }

    /// Breakpoint addresses.
    fn breakpoints(&self) -> Vec<u64> {
        self.breakpoints.keys().copied().collect()
    }

    /// The step-over stub area (in the kernel's `.init.text`).
    fn stub_area(&self) -> (u64, u64) {
        (self.stubs.start, self.stubs.end)
    }

    // ---- memory ----

    fn raw_read(&self, addr: u64, len: usize) -> Result<Vec<u8>, RunError> {
        let mut buf = vec![0u8; len];
        self.mem
            .read_at(addr, &mut buf)
            .map_err(|e| RunError::Memory {
                op: "read",
                pid: self.pid,
                addr,
                len,
                source: e.source,
            })?;
        Ok(buf)
    }

    fn raw_write(&self, addr: u64, data: &[u8]) -> Result<(), RunError> {
        self.mem.write_at(addr, data).map_err(|e| RunError::Memory {
            op: "write",
            pid: self.pid,
            addr,
            len: data.len(),
            source: e.source,
        })
    }

    /// Reads memory; breakpoint bytes read as the original instruction bytes.
    fn read_mem(&self, addr: u64, len: usize) -> Result<Vec<u8>, RunError> {
        let mut buf = self.raw_read(addr, len)?;
        let end = addr.saturating_add(len as u64);
        for (&a, bp) in self.breakpoints.range(addr..end) {
            buf[(a - addr) as usize] = bp.original;
        }
        Ok(buf)
    }

    /// Reads into `buf` without the breakpoint shadowing (for the hot path: packet data).
    fn read_into(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), RunError> {
        self.counters.mem_reads += 1;
        let len = buf.len();
        self.mem.read_at(addr, buf).map_err(|e| RunError::Memory {
            op: "read",
            pid: self.pid,
            addr,
            len,
            source: e.source,
        })
    }

    /// Writes memory through `/proc/<pid>/mem` (text too). Bytes under a breakpoint become its
    /// new original and the `int3` stays.
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), RunError> {
        let end = addr.saturating_add(data.len() as u64);
        let hit: Vec<u64> = self.breakpoints.range(addr..end).map(|(&a, _)| a).collect();
        if hit.is_empty() {
            return self.raw_write(addr, data);
        }
        let mut bytes = data.to_vec();
        for a in hit {
            let i = (a - addr) as usize;
            let new = bytes[i];
            bytes[i] = INT3;
            if let Some(g) = self.guard.as_mut() {
                g.arm(a, new)?;
            }
            self.journal.record(a, new);
            if let Some(bp) = self.breakpoints.get_mut(&a) {
                bp.original = new;
                // The stub copies the old instruction; make a new one for the new bytes.
                bp.stub = None;
            }
        }
        self.raw_write(addr, &bytes)?;
        let addrs: Vec<u64> = self.breakpoints.range(addr..end).map(|(&a, _)| a).collect();
        for a in addrs {
            let stub = self.make_stub(a).ok();
            if let Some(bp) = self.breakpoints.get_mut(&a) {
                bp.stub = stub;
            }
        }
        Ok(())
    }

    // ---- registers ----

    fn thread(&self, tid: i32) -> Result<&Thread, RunError> {
        self.threads.get(&tid).ok_or(RunError::NoThread(tid))
    }

    /// In lazy-stop mode, stop `tid` now if it runs (its stop is not reported; an event met on
    /// the way is queued for `wait`).
    fn ensure_stopped(&mut self, tid: i32) -> Result<(), RunError> {
        let running = self.threads.get(&tid).is_some_and(|t| t.stop.is_none());
        if running && self.lazy_stop && !self.all_stop && self.exited.is_none() {
            self.stop_threads(&[tid], true)?;
        }
        Ok(())
    }

    fn kernel_regs(&mut self, tid: i32) -> Result<libc::user_regs_struct, RunError> {
        self.ensure_stopped(tid)?;
        let th = self.threads.get(&tid).ok_or(RunError::NoThread(tid))?;
        if th.stop.is_none() {
            return Err(RunError::NotStopped(tid));
        }
        if let Some(r) = th.regs {
            return Ok(r);
        }
        let r = nix::sys::ptrace::getregs(nix::unistd::Pid::from_raw(tid))
            .map_err(ptrace_err("PTRACE_GETREGS", tid))?;
        self.counters.ptrace_calls += 1;
        if let Some(th) = self.threads.get_mut(&tid) {
            th.regs = Some(r);
        }
        Ok(r)
    }

    fn regs(&mut self, tid: i32) -> Result<libc::user_regs_struct, RunError> {
        let mut r = self.kernel_regs(tid)?;
        if let Some(rip) = self.threads.get(&tid).and_then(|t| t.shown_rip) {
            r.rip = rip;
        }
        Ok(r)
    }

    fn set_regs_mut(&mut self, tid: i32, r: &libc::user_regs_struct) -> Result<(), RunError> {
        self.ensure_stopped(tid)?;
        let th = self.thread(tid)?;
        let stop = th.stop.ok_or(RunError::NotStopped(tid))?;
        let shown = th.shown_rip;
        let kernel = self.kernel_regs(tid)?;
        let mut w = *r;
        let mut new_shown = None;
        let mut new_stop = stop;
        if let Stop::Trap { .. } = stop {
            let current = shown.unwrap_or(kernel.rip);
            if r.rip == current {
                w.rip = kernel.rip;
                new_shown = shown;
            } else {
                let j = self.jump_stub(r.rip)?;
                w.rip = j + 1;
                new_shown = Some(r.rip);
                new_stop = Stop::Trap { bp: None };
            }
        }
        nix::sys::ptrace::setregs(nix::unistd::Pid::from_raw(tid), w)
            .map_err(ptrace_err("PTRACE_SETREGS", tid))?;
        self.counters.ptrace_calls += 1;
        if let Some(th) = self.threads.get_mut(&tid) {
            th.regs = Some(w);
            th.shown_rip = new_shown;
            th.stop = Some(new_stop);
        }
        Ok(())
    }

    // ---- breakpoints ----

    /// Writes a step-over stub for the breakpoint at `addr` (its original bytes are read from
    /// memory with the breakpoint shadowed).
    fn make_stub(&mut self, addr: u64) -> Result<u64, RunError> {
        let mut orig = self
            .read_mem(addr, 16)
            .or_else(|_| self.read_mem(addr, 1))?;
        let insn = decode(&orig).map_err(|e| RunError::BadBreakpoint {
            addr,
            reason: e.to_string(),
        })?;
        orig.truncate(insn.len);
        if let Some(s) = self.stubs.existing(addr, &orig) {
            return Ok(s);
        }
        let at = self.stubs.allocate(Some((addr, &orig)));
        let code = relocate(&insn, addr, at + 1).map_err(|e| RunError::BadBreakpoint {
            addr,
            reason: e.to_string(),
        })?;
        if code.len() + 1 > STUB_SIZE as usize {
            return Err(RunError::BadBreakpoint {
                addr,
                reason: "relocated instruction too long".into(),
            });
        }
        let mut stub = Vec::with_capacity(STUB_SIZE as usize);
        stub.push(NOP);
        stub.extend_from_slice(&code);
        self.raw_write(at, &stub)?;
        self.journal.set_next_stub(self.stubs.cursor());
        Ok(at)
    }

    /// A stub `nop; jmp target` for moving a trap-stopped thread to `target`.
    fn jump_stub(&mut self, target: u64) -> Result<u64, RunError> {
        let at = self.stubs.allocate(None);
        let mut code = vec![NOP];
        if insn::push_jmp(&mut code, at, target).is_err() {
            // Out of rel32 reach: jmp *0(%rip) with the address after it.
            code.truncate(1);
            code.extend_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
            code.extend_from_slice(&target.to_le_bytes());
        }
        self.raw_write(at, &code)?;
        self.journal.set_next_stub(self.stubs.cursor());
        Ok(at)
    }

    /// Puts an `int3` at `addr` (kernel or module text). The guard and the journal learn the
    /// original byte before the `int3` is written. The original instruction is copied into a
    /// step-over stub; an instruction that cannot run out of line is stepped in place instead
    /// (slower, and not safe against a tracer killed during that step).
    fn insert_breakpoint(&mut self, addr: u64) -> Result<(), RunError> {
        if self.breakpoints.contains_key(&addr) {
            return Ok(());
        }
        let first = self.raw_read(addr, 1)?[0];
        let original = if first == INT3 {
            match self
                .retired
                .get(&addr)
                .map(|b| b.original)
                .or(self.journal.original(addr))
            {
                Some(o) => o,
                None => {
                    return Err(RunError::BadBreakpoint {
                        addr,
                        reason: "there is already an int3 there (another debugger's breakpoint?)"
                            .into(),
                    });
                }
            }
        } else {
            first
        };
        self.breakpoints.insert(
            addr,
            Breakpoint {
                original,
                stub: None,
            },
        );
        let stub = self.make_stub(addr).ok();
        if let Some(bp) = self.breakpoints.get_mut(&addr) {
            bp.stub = stub;
        }
        if let Some(g) = self.guard.as_mut()
            && let Err(e) = g.arm(addr, original)
        {
            self.breakpoints.remove(&addr);
            return Err(e.into());
        }
        self.journal.record(addr, original);
        if let Err(e) = self.raw_write(addr, &[INT3]) {
            self.breakpoints.remove(&addr);
            return Err(e);
        }
        self.retired.remove(&addr);
        Ok(())
    }

    /// Whether the breakpoint at `addr` steps over its instruction out of line.
    fn has_stub(&self, addr: u64) -> bool {
        self.breakpoints
            .get(&addr)
            .is_some_and(|b| b.stub.is_some())
    }

    /// Puts the original byte back.
    fn remove_breakpoint(&mut self, addr: u64) -> Result<(), RunError> {
        let bp = self
            .breakpoints
            .remove(&addr)
            .ok_or(RunError::NoBreakpoint(addr))?;
        self.raw_write(addr, &[bp.original])?;
        if let Some(g) = self.guard.as_mut() {
            g.disarm(addr)?;
        }
        self.journal.forget(addr);
        self.retired.insert(addr, bp);
        Ok(())
    }

    fn bp_info(&self, addr: u64) -> Option<&Breakpoint> {
        self.breakpoints
            .get(&addr)
            .or_else(|| self.retired.get(&addr))
    }

    // ---- run control ----

    fn resume(&mut self) -> Result<(), RunError> {
        let stopped: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, t)| t.stop.is_some())
            .map(|(&k, _)| k)
            .collect();
        // In all-stop, a thread whose event is still queued stays where it is.
        let queued: Vec<i32> = self
            .pending
            .iter()
            .filter_map(|e| match e {
                StopEvent::Breakpoint { tid, .. }
                | StopEvent::Stepped { tid }
                | StopEvent::Interrupted { tid } => Some(*tid),
                StopEvent::Exited { .. } => None,
            })
            .collect();
        for tid in stopped {
            if !queued.contains(&tid) {
                self.resume_thread(tid)?;
            }
        }
        Ok(())
    }

    /// Continues one stopped thread.
    fn resume_thread(&mut self, tid: i32) -> Result<(), RunError> {
        let th = self.threads.get_mut(&tid).ok_or(RunError::NoThread(tid))?;
        let stop = th.stop.ok_or(RunError::NotStopped(tid))?;
        let held = th.held.pop_front();
        let sig = match stop {
            Stop::Trap { bp: Some(addr) } => {
                self.leave_breakpoint(tid, addr)?;
                held.unwrap_or(0)
            }
            Stop::Trap { bp: None } | Stop::Parked => held.unwrap_or(0),
            Stop::Signal(s) => {
                if let Some(h) = held
                    && let Some(th) = self.threads.get_mut(&tid)
                {
                    th.held.push_front(h);
                }
                s
            }
        };
        self.cont(tid, sig)
    }

    fn cont(&mut self, tid: i32, sig: i32) -> Result<(), RunError> {
        self.counters.ptrace_calls += 1;
        match pt(libc::PTRACE_CONT, tid, 0, sig as u64) {
            Ok(_) | Err(nix::Error::ESRCH) => {}
            Err(e) => {
                return Err(RunError::Ptrace {
                    op: "PTRACE_CONT",
                    tid,
                    source: e,
                });
            }
        }
        if let Some(th) = self.threads.get_mut(&tid) {
            th.stop = None;
            th.regs = None;
            th.shown_rip = None;
        }
        Ok(())
    }

    /// Points a thread stopped on the breakpoint at `addr` at the breakpoint's stub (or steps
    /// the original instruction in place when it has none).
    fn leave_breakpoint(&mut self, tid: i32, addr: u64) -> Result<(), RunError> {
        let stub = self.bp_info(addr).and_then(|b| b.stub);
        match stub {
            Some(s) => {
                if self.kernel_regs(tid)?.rip != s + 1 {
                    self.poke_rip(tid, s + 1)?;
                }
                if let Some(th) = self.threads.get_mut(&tid) {
                    th.stop = Some(Stop::Trap { bp: None });
                    th.shown_rip = None;
                }
                Ok(())
            }
            None => self.step_in_place(tid, addr),
        }
    }

    fn poke_rip(&mut self, tid: i32, rip: u64) -> Result<(), RunError> {
        self.counters.ptrace_calls += 1;
        pt(libc::PTRACE_POKEUSER, tid, RIP_OFFSET, rip)
            .map_err(ptrace_err("PTRACE_POKEUSER rip", tid))?;
        if let Some(th) = self.threads.get_mut(&tid)
            && let Some(r) = th.regs.as_mut()
        {
            r.rip = rip;
        }
        Ok(())
    }

    /// The fallback step-over: original byte in, rip back, one step, int3 back.
    fn step_in_place(&mut self, tid: i32, addr: u64) -> Result<(), RunError> {
        let orig = self
            .bp_info(addr)
            .map(|b| b.original)
            .ok_or(RunError::NoBreakpoint(addr))?;
        let still = self.breakpoints.contains_key(&addr);
        if still {
            self.raw_write(addr, &[orig])?;
        }
        self.poke_rip(tid, addr)?;
        let r = self.step_once(tid);
        if still {
            self.raw_write(addr, &[INT3])?;
        }
        r?;
        if let Some(th) = self.threads.get_mut(&tid) {
            th.shown_rip = None;
        }
        Ok(())
    }

    /// One PTRACE_SINGLESTEP of a stopped thread, holding UML signals that arrive meanwhile.
    /// Leaves the thread in the single-step SIGTRAP stop.
    fn step_once(&mut self, tid: i32) -> Result<(), RunError> {
        loop {
            self.counters.ptrace_calls += 1;
            pt(libc::PTRACE_SINGLESTEP, tid, 0, 0).map_err(ptrace_err("PTRACE_SINGLESTEP", tid))?;
            if let Some(th) = self.threads.get_mut(&tid) {
                th.stop = None;
                th.regs = None;
            }
            let st = self.wait_stopped(tid)?;
            let sig = libc::WSTOPSIG(st);
            let event = st >> 16;
            if event == libc::PTRACE_EVENT_STOP {
                // A stop of ours (interrupt) or a group-stop arrived first: step again.
                if let Some(th) = self.threads.get_mut(&tid) {
                    th.stop = Some(Stop::Parked);
                    th.interrupting = false;
                }
                continue;
            }
            if sig == libc::SIGTRAP {
                if let Some(th) = self.threads.get_mut(&tid) {
                    th.stop = Some(Stop::Trap { bp: None });
                }
                return Ok(());
            }
            if let Some(th) = self.threads.get_mut(&tid) {
                th.held.push_back(sig);
                th.stop = Some(Stop::Signal(sig));
            }
        }
    }

    /// The next stop status of one thread; its exit is [`RunError::Exited`] (and it is forgotten).
    fn wait_stopped(&mut self, tid: i32) -> Result<i32, RunError> {
        loop {
            match raw_waitpid(tid, 0) {
                Ok(Some((_, st))) if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) => {
                    self.threads.remove(&tid);
                    return Err(RunError::Exited);
                }
                Ok(Some((_, st))) => return Ok(st),
                Ok(None) | Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    return Err(RunError::Ptrace {
                        op: "waitpid",
                        tid,
                        source: e,
                    });
                }
            }
        }
    }

    /// Turns a thread's signal-delivery stop into an interrupt stop without running it: no
    /// signal stays pending and the trap flag is cleared, so a dead tracer leaves it runnable.
    fn park(&mut self, tid: i32) -> Result<(), RunError> {
        self.counters.ptrace_calls += 2;
        pt(libc::PTRACE_INTERRUPT, tid, 0, 0).map_err(ptrace_err("PTRACE_INTERRUPT", tid))?;
        pt(libc::PTRACE_CONT, tid, 0, 0).map_err(ptrace_err("PTRACE_CONT", tid))?;
        loop {
            let st = self.wait_stopped(tid)?;
            if st >> 16 == libc::PTRACE_EVENT_STOP {
                break;
            }
            // A signal of UML's got in first: keep it for the resume, and wait for the
            // interrupt, which is still pending.
            let sig = libc::WSTOPSIG(st);
            if let Some(th) = self.threads.get_mut(&tid) {
                th.held.push_back(sig);
            }
            self.counters.ptrace_calls += 1;
            pt(libc::PTRACE_CONT, tid, 0, 0).map_err(ptrace_err("PTRACE_CONT", tid))?;
        }
        if let Some(th) = self.threads.get_mut(&tid) {
            th.stop = Some(Stop::Parked);
            th.regs = None;
            th.interrupting = false;
        }
        Ok(())
    }

    fn single_step(&mut self, tid: i32) -> Result<StopEvent, RunError> {
        self.ensure_stopped(tid)?;
        let th = self.thread(tid)?;
        let stop = th.stop.ok_or(RunError::NotStopped(tid))?;
        let shown = th.shown_rip;
        let kernel = self.kernel_regs(tid)?;
        let pc = shown.unwrap_or(kernel.rip);
        let bp = match stop {
            Stop::Trap { bp: Some(a) } => Some(a),
            _ if self.breakpoints.contains_key(&pc) => Some(pc),
            _ => None,
        };
        match bp.map(|a| (a, self.bp_info(a).and_then(|b| b.stub))) {
            Some((_, Some(stub))) => {
                // The instruction runs in its stub: the relocated instruction, then the jump
                // back (more steps for an emulated call), until rip is back in real code.
                self.poke_rip(tid, stub + 1)?;
                self.step_once(tid)?;
                for _ in 0..8 {
                    let rip = self.kernel_regs(tid)?.rip;
                    if !self.stubs.contains(rip) {
                        break;
                    }
                    // The stub's jump back: go there directly instead of stepping it.
                    if let Some(t) = self.stub_jump(rip) {
                        self.poke_rip(tid, t)?;
                        break;
                    }
                    self.step_once(tid)?;
                }
            }
            Some((a, None)) => self.step_in_place(tid, a)?,
            None => {
                if kernel.rip != pc && !self.stubs.contains(kernel.rip) {
                    // Redirected through a jump stub: go to the target itself.
                    self.poke_rip(tid, pc)?;
                }
                self.step_once(tid)?;
                // In a stub (a trap probe's): on to real code.
                for _ in 0..8 {
                    let rip = self.kernel_regs(tid)?.rip;
                    if !self.stubs.contains(rip) {
                        break;
                    }
                    self.step_once(tid)?;
                }
            }
        }
        if let Some(th) = self.threads.get_mut(&tid) {
            th.shown_rip = None;
        }
        if !self.kernel_patched {
            self.park(tid)?;
        }
        // With patch 0001 the single-step SIGTRAP stop is as safe as a parked one: a dead
        // tracer's pending trap and trap flag are dropped by the kernel, and our resume
        // suppresses the signal (`Stop::Trap { bp: None }`).
        Ok(StopEvent::Stepped { tid })
    }

    /// Where the `jmp` at `rip` inside a stub goes (a step-over stub's jump back), if it is one.
    fn stub_jump(&self, rip: u64) -> Option<u64> {
        let b = self.raw_read(rip, 5).ok()?;
        if b[0] != 0xe9 {
            return None;
        }
        let rel = i32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        Some(rip.wrapping_add(5).wrapping_add(rel as i64 as u64))
    }

    /// Sends PTRACE_INTERRUPT to every running thread; `wait` reports the stop.
    fn interrupt(&mut self) -> Result<(), RunError> {
        let running: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, t)| t.stop.is_none() && !t.interrupting)
            .map(|(&k, _)| k)
            .collect();
        for tid in running {
            self.counters.ptrace_calls += 1;
            match pt(libc::PTRACE_INTERRUPT, tid, 0, 0) {
                Ok(_) => {
                    if let Some(th) = self.threads.get_mut(&tid) {
                        th.interrupting = true;
                        th.report_interrupt = true;
                    }
                }
                Err(nix::Error::ESRCH) => {}
                Err(e) => {
                    return Err(RunError::Ptrace {
                        op: "PTRACE_INTERRUPT",
                        tid,
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits for the next event. UML's own signals are passed back to it on the way. With a
    /// timeout, [`RunError::Timeout`] when nothing happens in time; without one, a signal
    /// handler in the caller (installed without SA_RESTART) ends the wait with
    /// [`RunError::Interrupted`].
    fn wait(&mut self, timeout: Option<Duration>) -> Result<StopEvent, RunError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            if let Some(e) = self.exited {
                return Ok(e);
            }
            // Blocking without a deadline; with one, polling between SIGCHLDs until it passes.
            let flags = if deadline.is_some() { libc::WNOHANG } else { 0 };
            let got = loop {
                match raw_waitpid(-1, flags) {
                    Ok(Some(x)) => break Some(x),
                    Ok(None) if deadline.is_none() => break None,
                    Ok(None) => {}
                    Err(nix::Error::EINTR) => return Err(RunError::Interrupted),
                    Err(nix::Error::ECHILD) => return self.gone(),
                    Err(e) => {
                        return Err(RunError::Ptrace {
                            op: "waitpid",
                            tid: -1,
                            source: e,
                        });
                    }
                }
                if let Some(d) = deadline {
                    let now = Instant::now();
                    if now >= d {
                        return Err(RunError::Timeout(timeout.unwrap_or_default()));
                    }
                    self.sleep_for_child(d - now)?;
                }
            };
            let Some((tid, status)) = got else { continue };
            self.counters.waits += 1;
            if let Some(ev) = self.handle(tid, status)? {
                let everyone = self.all_stop
                    || (self.lazy_stop && matches!(ev, StopEvent::Interrupted { .. }));
                if everyone && !matches!(ev, StopEvent::Exited { .. }) {
                    self.stop_all(true)?;
                }
                return Ok(ev);
            }
        }
    }

    /// Sleeps until a SIGCHLD (a tracee stopped or exited) or `max`. SIGCHLD is blocked in this
    /// thread and read from a signalfd; in a program whose other threads take SIGCHLD, a
    /// notification can go there instead, so the sleep is cut into slices of at most 10 ms.
    fn sleep_for_child(&mut self, max: Duration) -> Result<(), RunError> {
        if self.sigchld_fd.is_none() {
            // SAFETY: plain signal-mask and signalfd calls on a local sigset.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGCHLD);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
                if fd >= 0 {
                    self.sigchld_fd = Some(std::os::fd::FromRawFd::from_raw_fd(fd));
                }
            }
        }
        let slice = max.min(Duration::from_millis(10));
        match &self.sigchld_fd {
            Some(fd) => {
                use std::os::fd::AsRawFd;
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = slice.as_micros().div_ceil(1000) as i32;
                // SAFETY: one pollfd on our stack.
                let r = unsafe { libc::poll(&mut p, 1, ms) };
                if r < 0 && nix::Error::last() == nix::Error::EINTR {
                    return Err(RunError::Interrupted);
                }
                let mut buf = [0u8; 128 * 4];
                // SAFETY: draining the signalfd into a stack buffer.
                while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0
                {
                }
            }
            None => std::thread::sleep(slice.min(Duration::from_micros(200))),
        }
        Ok(())
    }

    fn gone(&mut self) -> Result<StopEvent, RunError> {
        self.threads.clear();
        let e = StopEvent::Exited {
            code: None,
            signal: None,
        };
        self.exited = Some(e);
        Ok(e)
    }

    /// One waitpid result; Some when it is to be reported.
    fn handle(&mut self, tid: i32, st: i32) -> Result<Option<StopEvent>, RunError> {
        if !self.threads.contains_key(&tid) {
            // Not ours (a child of the calling program): nothing to do with it.
            return Ok(None);
        }
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            self.threads.remove(&tid);
            if tid == self.pid || self.threads.is_empty() {
                let e = if libc::WIFEXITED(st) {
                    StopEvent::Exited {
                        code: Some(libc::WEXITSTATUS(st)),
                        signal: None,
                    }
                } else {
                    StopEvent::Exited {
                        code: None,
                        signal: Some(libc::WTERMSIG(st)),
                    }
                };
                self.exited = Some(e);
                return Ok(Some(e));
            }
            return Ok(None);
        }
        if !libc::WIFSTOPPED(st) {
            return Ok(None);
        }
        let sig = libc::WSTOPSIG(st);
        let event = st >> 16;
        if event == libc::PTRACE_EVENT_STOP {
            let th = self.threads.get_mut(&tid).expect("checked");
            let group_stop = matches!(
                sig,
                libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
            );
            if th.interrupting {
                th.interrupting = false;
                th.stop = Some(Stop::Parked);
                th.regs = None;
                if std::mem::take(&mut th.report_interrupt) {
                    return Ok(Some(StopEvent::Interrupted { tid }));
                }
                return Ok(None);
            }
            if group_stop {
                // Someone stopped the machine with SIGSTOP: let the group-stop stand.
                self.counters.ptrace_calls += 1;
                let _ = pt(libc::PTRACE_LISTEN, tid, 0, 0);
                return Ok(None);
            }
            self.counters.ptrace_calls += 1;
            let _ = pt(libc::PTRACE_CONT, tid, 0, 0);
            return Ok(None);
        }
        if event != 0 {
            self.counters.ptrace_calls += 1;
            let _ = pt(libc::PTRACE_CONT, tid, 0, 0);
            return Ok(None);
        }
        if sig == libc::SIGTRAP {
            if let Some(th) = self.threads.get_mut(&tid) {
                th.stop = Some(Stop::Signal(sig));
                th.regs = None;
            }
            let r = self.kernel_regs(tid)?;
            let at = r.rip.wrapping_sub(1);
            if let Some(&func) = self.trap_probes.get(&at) {
                // A trap probe's int3 sits in its stub, before the displaced instructions:
                // the state is already right whether or not a dead tracer's SIGTRAP is ever
                // delivered, and resuming is a plain PTRACE_CONT.
                self.counters.breakpoint_stops += 1;
                let th = self.threads.get_mut(&tid).expect("checked");
                th.stop = Some(Stop::Trap { bp: None });
                th.shown_rip = Some(func);
                return Ok(Some(StopEvent::Breakpoint { tid, addr: func }));
            }
            if self.breakpoints.contains_key(&at)
                || (self.retired.contains_key(&at)
                    && self.raw_read(at, 1).is_ok_and(|b| b[0] != INT3))
            {
                self.counters.breakpoint_stops += 1;
                let th = self.threads.get_mut(&tid).expect("checked");
                th.stop = Some(Stop::Trap { bp: Some(at) });
                th.shown_rip = Some(at);
                // Into the stub at once: a tracer that dies with the thread at `at + 1` is
                // only safe if the kernel gets the SIGTRAP, which the host does not always
                // deliver after the tracer's death; at `stub + 1` both outcomes are right.
                if let Some(s) = self.bp_info(at).and_then(|b| b.stub) {
                    self.poke_rip(tid, s + 1)?;
                }
                return Ok(Some(StopEvent::Breakpoint { tid, addr: at }));
            }
            // Not ours: the kernel's business (UML decides what a stray trap means).
        }
        // A signal of UML's: straight back.
        self.counters.signals_passed += 1;
        self.counters.ptrace_calls += 1;
        if let Some(th) = self.threads.get_mut(&tid) {
            th.stop = None;
            th.regs = None;
        }
        match pt(libc::PTRACE_CONT, tid, 0, sig as u64) {
            Ok(_) | Err(nix::Error::ESRCH) => Ok(None),
            Err(e) => Err(RunError::Ptrace {
                op: "PTRACE_CONT",
                tid,
                source: e,
            }),
        }
    }

    /// Stops every running thread and waits until each has stopped; breakpoint hits met on the
    /// way are queued (`queue`) for `wait`.
    fn stop_all(&mut self, queue: bool) -> Result<(), RunError> {
        let running: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, t)| t.stop.is_none())
            .map(|(&k, _)| k)
            .collect();
        self.stop_threads(&running, queue)
    }

    /// Stops the given running threads and waits until each has stopped (see `stop_all`).
    fn stop_threads(&mut self, running: &[i32], queue: bool) -> Result<(), RunError> {
        let running = running.to_vec();
        for &tid in &running {
            let th = self.threads.get_mut(&tid).expect("listed");
            if !th.interrupting {
                self.counters.ptrace_calls += 1;
                match pt(libc::PTRACE_INTERRUPT, tid, 0, 0) {
                    Ok(_) => th.interrupting = true,
                    Err(nix::Error::ESRCH) => {}
                    Err(e) => {
                        return Err(RunError::Ptrace {
                            op: "PTRACE_INTERRUPT",
                            tid,
                            source: e,
                        });
                    }
                }
            }
        }
        for tid in running {
            while self.threads.get(&tid).is_some_and(|t| t.stop.is_none()) {
                let st = match raw_waitpid(tid, 0) {
                    Ok(Some((_, st))) => st,
                    Ok(None) | Err(nix::Error::EINTR) => continue,
                    Err(nix::Error::ECHILD) => {
                        self.threads.remove(&tid);
                        break;
                    }
                    Err(e) => {
                        return Err(RunError::Ptrace {
                            op: "waitpid",
                            tid,
                            source: e,
                        });
                    }
                };
                if let Some(ev) = self.handle(tid, st)? {
                    match ev {
                        StopEvent::Interrupted { .. } => {}
                        StopEvent::Exited { .. } => return Ok(()),
                        other => {
                            if queue {
                                self.pending.push_back(other);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Everything out: probes, breakpoints, threads detached, guard dismissed, journal cleared.
    fn detach_inner(&mut self) -> Result<(), RunError> {
        if self.detached {
            return Ok(());
        }
        let mut first_err = self.stop_all_unless_exited().err();
        let probes: Vec<u64> = self.probes.keys().copied().collect();
        for a in probes {
            if let Some(p) = self.probes.remove(&a)
                && let Err(e) = self.raw_write(a, &p.original)
                && self.exited.is_none()
            {
                first_err.get_or_insert(e);
            }
        }
        for (t, _) in std::mem::take(&mut self.trap_probes) {
            let _ = self.raw_write(t, &[NOP]);
        }
        if let Err(e) = self.detach_threads() {
            first_err.get_or_insert(e);
        }
        dismiss_unless_failed(first_err, &mut self.journal, &mut self.guard)
    }

    /// [`Inner::stop_all`] while the process lives; nothing to stop once it has exited.
    fn stop_all_unless_exited(&mut self) -> Result<(), RunError> {
        match self.exited {
            None => self.stop_all(false),
            Some(_) => Ok(()),
        }
    }

    /// Stops every thread, takes the breakpoints out, leaves each thread where it runs on
    /// correctly and detaches it. Probes, the guard and the journal are the caller's business.
    fn detach_threads(&mut self) -> Result<(), RunError> {
        if self.detached {
            return Ok(());
        }
        self.detached = true;
        let mut first_err = self.stop_all_unless_exited().err();
        let addrs: Vec<u64> = self.breakpoints.keys().copied().collect();
        for a in addrs {
            if let Some(bp) = self.breakpoints.remove(&a) {
                if let Err(e) = self.raw_write(a, &[bp.original])
                    && self.exited.is_none()
                {
                    first_err.get_or_insert(e);
                }
                if let Some(g) = self.guard.as_mut() {
                    let _ = g.disarm(a);
                }
                self.journal.forget(a);
                self.retired.insert(a, bp);
            }
        }
        let tids: Vec<i32> = self.threads.keys().copied().collect();
        for tid in tids {
            let Some(th) = self.threads.get(&tid) else {
                continue;
            };
            let held = th.held.front().copied();
            let sig = match th.stop {
                Some(Stop::Trap { bp: Some(addr) }) => {
                    // Byte is back: run on from the stub (or from addr when there is none).
                    match self.bp_info(addr).and_then(|b| b.stub) {
                        Some(s) => {
                            let _ = self.poke_rip(tid, s + 1);
                        }
                        None => {
                            let _ = self.poke_rip(tid, addr);
                        }
                    }
                    held.unwrap_or(0)
                }
                Some(Stop::Signal(s)) => s,
                Some(_) => held.unwrap_or(0),
                None => continue,
            };
            if let Err(e) = pt(libc::PTRACE_DETACH, tid, 0, sig as u64)
                && e != nix::Error::ESRCH
                && self.exited.is_none()
            {
                first_err.get_or_insert(RunError::Ptrace {
                    op: "PTRACE_DETACH",
                    tid,
                    source: e,
                });
            }
        }
        self.threads.clear();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The end of a removal that put bytes back: when all of it worked (`first_err` is `None`) the
/// journal is cleared and the guard dismissed; otherwise both stay, so that the guard restores
/// what is left, and the first error is returned.
fn dismiss_unless_failed(
    first_err: Option<RunError>,
    journal: &mut TraceJournal,
    guard: &mut Option<Guard>,
) -> Result<(), RunError> {
    if let Some(e) = first_err {
        return Err(e);
    }
    journal.clear();
    if let Some(g) = guard.take() {
        g.dismiss()?;
    }
    Ok(())
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.detach_inner();
    }
}

impl Tracee {
    /// Attaches to every thread of `pid` with PTRACE_SEIZE (no PTRACE_O_EXITKILL: the machine
    /// outlives the tracer) and stops them all; starts the guard. Refuses a process that another
    /// debugger traces, naming it. `journal` is the machine's trace journal
    /// ([`crate::ptrace::guard::journal_path`]); bytes a dead tracer left in are repaired first.
    pub fn attach(pid: i32, journal: &Path) -> Result<Tracee, RunError> {
        Ok(Tracee {
            inner: std::cell::RefCell::new(Inner::attach(pid, journal)?),
        })
    }

    fn i(&self) -> std::cell::RefMut<'_, Inner> {
        self.inner.borrow_mut()
    }

    pub fn pid(&self) -> i32 {
        self.i().pid
    }

    /// The traced threads (the kernel process's host threads still alive).
    pub fn threads(&self) -> Vec<i32> {
        self.i().threads()
    }

    /// Whether the kernel waits out a stray `int3` (patch 0001): without it, a tracer killed
    /// while a thread stands on a breakpoint crashes the machine.
    pub fn kernel_patched(&self) -> bool {
        self.i().kernel_patched
    }

    /// Addresses whose `int3` a dead tracer had left and `attach` put back.
    pub fn repaired(&self) -> Vec<u64> {
        self.i().repaired.clone()
    }

    /// All-stop (the default): when one thread stops, the others are stopped before `wait`
    /// reports it, and `resume` continues them all. Non-stop: only the thread that stopped is
    /// stopped, which is what a tracer of a busy kernel wants.
    pub fn set_all_stop(&mut self, all_stop: bool) {
        self.i().all_stop = all_stop;
    }

    /// Lazy all-stop (see `Inner::lazy_stop`): for a client that sees an all-stop machine but
    /// mostly looks at the thread that stopped.
    pub fn set_lazy_stop(&mut self) {
        let mut i = self.i();
        i.all_stop = false;
        i.lazy_stop = true;
    }

    /// Work done so far (waits, ptrace calls, signals passed back), for measurements.
    pub fn counters(&self) -> Counters {
        self.i().counters
    }

    pub fn is_stopped(&self, tid: i32) -> bool {
        self.i().is_stopped(tid)
    }

    pub fn breakpoints(&self) -> Vec<u64> {
        self.i().breakpoints()
    }

    /// Whether the breakpoint at `addr` steps over its instruction out of line (the kill-safe
    /// way) rather than in place.
    pub fn has_stub(&self, addr: u64) -> bool {
        self.i().has_stub(addr)
    }

    /// The step-over stub of the breakpoint at `addr` (its original instruction starts one byte
    /// in).
    pub fn stub_of(&self, addr: u64) -> Option<u64> {
        self.i().bp_info(addr).and_then(|b| b.stub)
    }

    /// Where the step-over stubs live (the tail of the kernel's `.init.text`).
    pub fn stub_area(&self) -> (u64, u64) {
        self.i().stub_area()
    }

    /// Reads memory; bytes under a breakpoint read as the original bytes.
    pub fn read_mem(&self, addr: u64, len: usize) -> Result<Vec<u8>, RunError> {
        self.i().read_mem(addr, len)
    }

    /// Reads memory into `buf` as it is (int3 bytes included): one `pread`, for packet data.
    pub fn read_into(&self, addr: u64, buf: &mut [u8]) -> Result<(), RunError> {
        self.i().read_into(addr, buf)
    }

    /// Writes memory through `/proc/<pid>/mem` (kernel text too). Bytes under a breakpoint
    /// become its new original; the `int3` stays.
    pub fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), RunError> {
        self.i().write_mem(addr, data)
    }

    /// A stopped thread's registers; at a breakpoint stop `rip` is the breakpoint's address.
    pub fn regs(&self, tid: i32) -> Result<libc::user_regs_struct, RunError> {
        self.i().regs(tid)
    }

    /// Sets a stopped thread's registers. A new `rip` at a breakpoint stop goes through a jump
    /// stub, so that the thread's state stays right if the tracer dies before it resumes.
    pub fn set_regs(&self, tid: i32, r: &libc::user_regs_struct) -> Result<(), RunError> {
        self.i().set_regs_mut(tid, r)
    }

    /// Puts an `int3` at `addr` (kernel or module text). The guard and the journal learn the
    /// original byte first. The original instruction goes into a step-over stub; one that
    /// cannot run out of line (`loop`, VEX-encoded, far calls) is stepped in place instead,
    /// which is slower and not safe against a tracer killed during that step ([`Tracee::has_stub`]).
    pub fn insert_breakpoint(&mut self, addr: u64) -> Result<(), RunError> {
        self.i().insert_breakpoint(addr)
    }

    /// Puts the original byte back.
    pub fn remove_breakpoint(&mut self, addr: u64) -> Result<(), RunError> {
        self.i().remove_breakpoint(addr)
    }

    /// From a stop: continues every stopped thread, stepping over the breakpoint a thread
    /// stopped on.
    pub fn resume(&mut self) -> Result<(), RunError> {
        self.i().resume()
    }

    /// Continues one stopped thread (non-stop use).
    pub fn resume_thread(&mut self, tid: i32) -> Result<(), RunError> {
        self.i().resume_thread(tid)
    }

    /// Executes one instruction of a stopped thread (the original one when it stands on a
    /// breakpoint); other threads stay as they are. The thread is then parked so that a dead
    /// tracer leaves it runnable.
    pub fn single_step(&mut self, tid: i32) -> Result<StopEvent, RunError> {
        self.i().single_step(tid)
    }

    /// Waits for the next event; UML's own signals are passed back on the way and never
    /// reported. With a timeout: [`RunError::Timeout`] when nothing happens in time. Without:
    /// a signal handler of the caller's installed without SA_RESTART ends the wait with
    /// [`RunError::Interrupted`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<StopEvent, RunError> {
        self.i().wait(timeout)
    }

    /// PTRACE_INTERRUPT to every running thread; `wait` reports [`StopEvent::Interrupted`].
    pub fn interrupt(&mut self) -> Result<(), RunError> {
        self.i().interrupt()
    }

    /// Removes every breakpoint byte, leaves each thread where it runs on correctly, detaches
    /// all threads and dismisses the guard. The machine keeps running.
    pub fn detach(self) -> Result<(), RunError> {
        self.inner.borrow_mut().detach_inner()
    }
}
