//! Probes: a function's first instructions replaced by a `jmp` to a stub that runs code of the
//! caller's (recording a hit, say), then the displaced instructions, then jumps back. Unlike a
//! breakpoint a probe never stops the thread, so the tracer can let go of ptrace altogether
//! while probes fire: no stop per hit and none per UML signal.
//!
//! Probes go in and out while every thread is stopped (all-stop), so the five bytes change
//! while nothing runs them. Once ptrace is let go ([`Tracee::detach_keep_probes`]) the guard
//! holds the original bytes; it and [`ProbeLease::remove`] without ptrace put them back `int3`
//! first (see `guard.rs`), which the kernel patch makes safe for a thread that runs into them.
//!
//! Scratch memory for the caller's data (a ring buffer) is mapped into the kernel process by
//! making its main thread run an `mmap` stub from an interrupt stop, returning to where it was
//! (re-issuing an interrupted system call as the kernel's restart would).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::insn::{self, displaced, relocate_body};
use super::{Inner, NOP, RunError, STUB_SIZE, Stop, StubArea, Tracee, pt, raw_waitpid};
use crate::ptrace::guard::{Guard, TraceJournal, restore_bytes};

/// Bytes of the `jmp rel32` written at a probed function's entry.
pub const PROBE_JMP: usize = 5;

#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub original: Vec<u8>,
    pub patched: Vec<u8>,
}

/// A probe whose stub is written and whose jump is not.
struct Prepared {
    info: ProbeInfo,
    original: Vec<u8>,
    jmp: Vec<u8>,
}

/// Where a probe's stub sits and what it displaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeInfo {
    pub addr: u64,
    pub stub: u64,
    /// Bytes of original instructions the stub runs (at least the jump's 5).
    pub displaced: usize,
}

/// Scratch memory mapped into the tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scratch {
    pub addr: u64,
    pub len: u64,
}

/// The start and end of each mapping in `/proc/<pid>/maps`.
pub fn mappings(pid: i32) -> Vec<(u64, u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (range, rest) = l.split_once(' ')?;
            let (a, b) = range.split_once('-')?;
            let name = rest.split_whitespace().nth(4).unwrap_or("").to_string();
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                name,
            ))
        })
        .collect()
}

/// A hole of `len` bytes in the address space at 0x3f00_0000_0000 or above, far from UML's own mappings (its image, physical memory and vmalloc area sit near
/// 0x6000_0000) and below the host's top-down area for libraries and stacks.
fn free_range(pid: i32, len: u64) -> Option<u64> {
    let maps = mappings(pid);
    let mut at = 0x3f00_0000_0000u64;
    for _ in 0..64 {
        if maps.iter().all(|&(s, e, _)| e <= at || s >= at + len) {
            return Some(at);
        }
        at += 0x10_0000_0000;
    }
    None
}

/// Whether `[addr, addr + len)` is one mapping's start in `pid`.
fn mapped(pid: i32, addr: u64, len: u64) -> bool {
    mappings(pid)
        .iter()
        .any(|&(s, e, _)| s == addr && e >= addr + len)
}

/// A hole of `len` bytes below the kernel image (its lowest file mapping), as close as one is
/// free, so that rel32 jumps reach from it to kernel and module text.
fn near_image_range(pid: i32, len: u64) -> Option<u64> {
    let maps = mappings(pid);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let exe = exe.to_string_lossy();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_string();
    let image = maps.iter().filter(|m| m.2 == exe).map(|m| m.0).min()?;
    let mut at = image.checked_sub(len + 0x10_0000)? & !0xf_ffff;
    for _ in 0..64 {
        if at < 0x1000_0000 {
            return None;
        }
        if maps.iter().all(|&(s, e, _)| e <= at || s >= at + len) {
            return Some(at);
        }
        at = at.checked_sub(len.max(0x100_0000))?;
    }
    None
}

const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;
const NR_RESTART_SYSCALL: u64 = 219;

impl Inner {
    fn all_stopped(&self) -> bool {
        self.threads.values().all(|t| t.stop.is_some())
    }

    /// Maps `len` bytes of anonymous read-write memory into the kernel process, or finds the
    /// mapping an earlier tracer made (kept in the journal).
    pub(super) fn map_scratch(&mut self, len: u64) -> Result<Scratch, RunError> {
        if let Some((addr, l)) = self.journal.scratch()
            && l >= len
            && mapped(self.pid, addr, l)
        {
            return Ok(Scratch { addr, len: l });
        }
        let addr = free_range(self.pid, len)
            .ok_or_else(|| RunError::Stubs("no free address range for scratch memory".into()))?;
        self.map_at(addr, len, libc::PROT_READ | libc::PROT_WRITE)?;
        self.journal.set_scratch((addr, len));
        Ok(Scratch { addr, len })
    }

    /// Maps `len` bytes of executable memory for probe stubs just below the kernel image
    /// (within a rel32 jump of kernel and module text), or takes back the mapping an earlier
    /// tracer made; from then on probes put their stubs there instead of in `.init.text`,
    /// whose few pages would hold a few dozen probes at most. The memory is never unmapped: a
    /// thread may still be inside a stub when a tracer dies, and the next tracer goes on where
    /// the last one's cursor stopped (as in `.init.text`).
    pub(super) fn map_probe_text(&mut self, len: u64) -> Result<Scratch, RunError> {
        if let Some(area) = &self.probe_area {
            return Ok(Scratch {
                addr: area.start,
                len: area.end - area.start,
            });
        }
        let (addr, len) = match self.journal.probe_text() {
            Some((addr, l)) if l >= len && mapped(self.pid, addr, l) => (addr, l),
            _ => {
                let addr = near_image_range(self.pid, len).ok_or_else(|| {
                    RunError::Stubs("no free address range below the kernel image".into())
                })?;
                self.map_at(
                    addr,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                )?;
                self.journal.set_probe_text((addr, len), 0);
                (addr, len)
            }
        };
        let mut area = StubArea::region(addr, addr + len);
        area.set_cursor(self.journal.next_probe_stub());
        self.probe_area = Some(area);
        Ok(Scratch { addr, len })
    }

    /// Writes `code` into the probe text (see [`Inner::map_probe_text`]); returns its address.
    pub(super) fn place_code(&mut self, code: &[u8]) -> Result<u64, RunError> {
        let area = self
            .probe_area
            .as_mut()
            .ok_or_else(|| RunError::Stubs("no probe text mapped".into()))?;
        let at = area
            .allocate_n((code.len() as u64).div_ceil(STUB_SIZE))
            .ok_or_else(|| RunError::Stubs("probe text full".into()))?;
        let cursor = area.cursor();
        self.raw_write(at, code)?;
        self.journal.set_next_probe_stub(cursor);
        Ok(at)
    }

    /// Maps anonymous memory at `addr` in the kernel process by making its main thread run an
    /// `mmap` stub from its interrupt stop.
    fn map_at(&mut self, addr: u64, len: u64, prot: i32) -> Result<(), RunError> {
        let main = self.pid;
        let stop = self.threads.get(&main).and_then(|t| t.stop);
        if stop != Some(Stop::Parked) {
            return Err(RunError::Stubs(
                "the main thread is not in an interrupt stop".into(),
            ));
        }
        let regs = self.kernel_regs(main)?;
        // Where the thread goes after the stub: an interrupted system call is issued again
        // (what the kernel's restart would do), anything else continues at rip.
        let rax = regs.rax as i64;
        let in_syscall = (regs.orig_rax as i64) >= 0;
        let (ret, new_rax) = match rax {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND if in_syscall => {
                (regs.rip - 2, regs.orig_rax)
            }
            ERESTART_RESTARTBLOCK if in_syscall => (regs.rip - 2, NR_RESTART_SYSCALL),
            _ => (regs.rip, regs.rax),
        };
        if ret != regs.rip && self.raw_read(ret, 2)? != [0x0f, 0x05] {
            return Err(RunError::Stubs(format!(
                "no syscall instruction before {:#x}",
                regs.rip
            )));
        }
        let mut code = vec![NOP, 0x9c]; // nop; pushfq
        code.extend_from_slice(&[
            0x50, 0x51, 0x52, 0x56, 0x57, 0x41, 0x50, 0x41, 0x51, 0x41, 0x52, 0x41, 0x53,
        ]);
        code.extend_from_slice(&[0xb8, 9, 0, 0, 0]); // mov eax, SYS_mmap
        code.extend_from_slice(&[0x48, 0xbf]); // movabs rdi, addr
        code.extend_from_slice(&addr.to_le_bytes());
        code.extend_from_slice(&[0x48, 0xbe]); // movabs rsi, len
        code.extend_from_slice(&len.to_le_bytes());
        code.extend_from_slice(&[0xba]); // mov edx, prot
        code.extend_from_slice(&(prot as u32).to_le_bytes());
        let flags = (libc::MAP_PRIVATE
            | libc::MAP_ANONYMOUS
            | libc::MAP_NORESERVE
            | libc::MAP_FIXED_NOREPLACE) as u32;
        code.extend_from_slice(&[0x41, 0xba]); // mov r10d, flags
        code.extend_from_slice(&flags.to_le_bytes());
        code.extend_from_slice(&[0x49, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff]); // mov r8, -1
        code.extend_from_slice(&[0x45, 0x31, 0xc9]); // xor r9d, r9d
        code.extend_from_slice(&[0x0f, 0x05]); // syscall
        code.extend_from_slice(&[
            0x41, 0x5b, 0x41, 0x5a, 0x41, 0x59, 0x41, 0x58, 0x5f, 0x5e, 0x5a, 0x59, 0x58,
        ]);
        code.push(0x9d); // popfq
        let slots = (code.len() as u64 + 16).div_ceil(STUB_SIZE);
        let at = self
            .stubs
            .allocate_n(slots)
            .ok_or_else(|| RunError::Stubs("stub area full".into()))?;
        let mut tail = Vec::new();
        if insn::push_jmp(&mut tail, at + code.len() as u64, ret).is_err() {
            tail = vec![0xff, 0x25, 0, 0, 0, 0];
            tail.extend_from_slice(&ret.to_le_bytes());
        }
        code.extend_from_slice(&tail);
        self.raw_write(at, &code)?;
        self.journal.set_next_stub(self.stubs.cursor());
        let mut w = regs;
        w.rip = at + 1;
        w.rax = new_rax;
        w.orig_rax = u64::MAX;
        nix::sys::ptrace::setregs(nix::unistd::Pid::from_raw(main), w).map_err(|source| {
            RunError::Ptrace {
                op: "PTRACE_SETREGS",
                tid: main,
                source,
            }
        })?;
        if let Some(th) = self.threads.get_mut(&main) {
            th.regs = None;
        }
        self.cont(main, 0)?;
        // The main thread runs the stub; serve its stops meanwhile.
        let end = Instant::now() + Duration::from_secs(3);
        let mapped = loop {
            if mapped(self.pid, addr, len) {
                break true;
            }
            if Instant::now() > end {
                break false;
            }
            let all = self.all_stop;
            self.all_stop = false;
            let r = self.wait(Some(Duration::from_millis(2)));
            self.all_stop = all;
            match r {
                Ok(super::StopEvent::Exited { .. }) => return Err(RunError::Exited),
                Ok(_) | Err(RunError::Timeout(_)) => {}
                Err(e) => return Err(e),
            }
        };
        self.stop_all(false)?;
        if !mapped {
            return Err(RunError::Stubs(format!(
                "mmap of {len} bytes at {addr:#x} in the kernel process did not happen"
            )));
        }
        Ok(())
    }

    /// Puts a probe at `addr`: `body` (code that keeps every register and the flags, and
    /// refers to nothing by its own address) runs before the displaced instructions. `func`
    /// holds the function's bytes from `addr` on (its whole body if known), for the check that
    /// nothing jumps into the patched bytes. Every thread must be stopped.
    pub(super) fn insert_probe(
        &mut self,
        addr: u64,
        func_len: usize,
        body: &[u8],
    ) -> Result<ProbeInfo, RunError> {
        let p = self.prepare_probe(addr, func_len, body)?;
        let info = p.info.clone();
        if let Some(g) = self.guard.as_mut() {
            g.arm_bytes(addr, &p.original, &p.jmp)?;
        }
        self.journal.record_bytes(addr, &p.original, &p.jmp);
        self.commit_probe(p)?;
        Ok(info)
    }

    /// Many probes at once (every thread stopped): the stubs are written first, then the guard
    /// and the journal learn every site (the journal in one write), then the jumps go in. A
    /// site that cannot take a probe gets its error and the others go on.
    pub(super) fn insert_probes(
        &mut self,
        sites: &[(u64, usize, Vec<u8>)],
    ) -> Vec<Result<ProbeInfo, RunError>> {
        let mut out: Vec<Result<ProbeInfo, RunError>> = Vec::with_capacity(sites.len());
        let mut ready = Vec::new();
        for (addr, len, body) in sites {
            match self.prepare_probe(*addr, *len, body) {
                Ok(p) => {
                    out.push(Ok(p.info.clone()));
                    ready.push((out.len() - 1, p));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let mut armed = Vec::new();
        for (i, p) in ready {
            let r = match self.guard.as_mut() {
                Some(g) => g.arm_bytes(p.info.addr, &p.original, &p.jmp),
                None => Ok(()),
            };
            match r {
                Ok(()) => armed.push((i, p)),
                Err(e) => out[i] = Err(e.into()),
            }
        }
        let cursor = self.probe_area.as_ref().map_or(0, |a| a.cursor());
        let records: Vec<(u64, Vec<u8>, Vec<u8>)> = armed
            .iter()
            .map(|(_, p)| (p.info.addr, p.original.clone(), p.jmp.clone()))
            .collect();
        self.journal.record_many(&records, cursor);
        for (i, p) in armed {
            let addr = p.info.addr;
            if let Err(e) = self.commit_probe(p) {
                if let Some(g) = self.guard.as_mut() {
                    let _ = g.disarm(addr);
                }
                out[i] = Err(e);
            }
        }
        out
    }

    /// Checks a site, writes its stub; the jump is not written yet.
    fn prepare_probe(
        &mut self,
        addr: u64,
        func_len: usize,
        body: &[u8],
    ) -> Result<Prepared, RunError> {
        if self.probes.contains_key(&addr) || self.breakpoints.contains_key(&addr) {
            return Err(RunError::BadBreakpoint {
                addr,
                reason: "there is already a probe or breakpoint there".into(),
            });
        }
        if !self.all_stopped() {
            return Err(RunError::NotStopped(self.pid));
        }
        let func = self.read_mem(addr, func_len.max(16))?;
        let bad = |e: insn::InsnError| RunError::BadBreakpoint {
            addr,
            reason: e.to_string(),
        };
        let insns = displaced(&func, addr).map_err(bad)?;
        let total: usize = insns.iter().map(|i| i.len).sum();
        if self
            .breakpoints
            .range(addr..addr + total as u64)
            .next()
            .is_some()
        {
            return Err(RunError::BadBreakpoint {
                addr,
                reason: "a breakpoint sits in the bytes a probe displaces".into(),
            });
        }
        // A thread stopped inside the bytes about to change would resume in the middle of the jump.
        let tids: Vec<i32> = self.threads.keys().copied().collect();
        for tid in tids {
            let rip = self.regs(tid)?.rip;
            if rip > addr && rip < addr + total as u64 {
                return Err(RunError::BadBreakpoint {
                    addr,
                    reason: format!("thread {tid} stands inside the bytes to patch"),
                });
            }
        }
        let estimate = 1 + body.len() + insns.len() * 32 + 16;
        let slots = (estimate as u64).div_ceil(STUB_SIZE);
        let in_text = self.probe_area.is_some();
        let area = match self.probe_area.as_mut() {
            Some(a) => a,
            None => &mut self.stubs,
        };
        let at = area
            .allocate_n(slots)
            .ok_or_else(|| RunError::Stubs("stub area full".into()))?;
        let mut code = vec![NOP];
        code.extend_from_slice(body);
        let mut from = addr;
        let mut falls_through = true;
        for i in &insns {
            let here = at + code.len() as u64;
            code.extend_from_slice(&relocate_body(i, from, here).map_err(bad)?);
            from += i.len as u64;
            falls_through = !i.ends_flow();
        }
        if falls_through {
            insn::push_jmp(&mut code, at, addr + total as u64).map_err(bad)?;
        }
        if code.len() as u64 > slots * STUB_SIZE {
            return Err(RunError::Stubs("probe stub larger than estimated".into()));
        }
        let mut jmp = Vec::new();
        insn::push_jmp(&mut jmp, addr, at + 1).map_err(bad)?;
        self.raw_write(at, &code)?;
        if !in_text {
            self.journal.set_next_stub(self.stubs.cursor());
        }
        let original = func[..jmp.len()].to_vec();
        Ok(Prepared {
            info: ProbeInfo {
                addr,
                stub: at,
                displaced: total,
            },
            original,
            jmp,
        })
    }

    /// Writes a prepared probe's jump (the guard and journal know it already).
    fn commit_probe(&mut self, p: Prepared) -> Result<(), RunError> {
        self.raw_write(p.info.addr, &p.jmp)?;
        self.probes.insert(
            p.info.addr,
            Probe {
                original: p.original,
                patched: p.jmp,
            },
        );
        Ok(())
    }

    /// Takes a probe out (every thread stopped).
    pub(super) fn remove_probe(&mut self, addr: u64) -> Result<(), RunError> {
        if !self.all_stopped() {
            return Err(RunError::NotStopped(self.pid));
        }
        let p = self
            .probes
            .remove(&addr)
            .ok_or(RunError::NoBreakpoint(addr))?;
        self.raw_write(addr, &p.original)?;
        if let Some(g) = self.guard.as_mut() {
            g.disarm(addr)?;
        }
        self.journal.forget(addr);
        let traps: Vec<u64> = self
            .trap_probes
            .iter()
            .filter(|(_, f)| **f == addr)
            .map(|(t, _)| *t)
            .collect();
        for t in traps {
            self.trap_probes.remove(&t);
            self.raw_write(t, &[NOP])?;
            if let Some(g) = self.guard.as_mut() {
                g.disarm(t)?;
            }
        }
        Ok(())
    }

    /// A probe whose body is an `int3`: a breakpoint that stops the thread inside the stub,
    /// where both a resume and a dead tracer leave it right (see `handle` in runctl.rs). The
    /// guard learns to turn that `int3` into a `nop`.
    pub(super) fn insert_trap_probe(
        &mut self,
        addr: u64,
        func_len: usize,
    ) -> Result<ProbeInfo, RunError> {
        let info = self.insert_probe(addr, func_len, &[0xcc])?;
        let trap = info.stub + 1;
        if let Some(g) = self.guard.as_mut() {
            g.arm(trap, NOP)?;
        }
        self.trap_probes.insert(trap, addr);
        Ok(info)
    }
}

/// Probes left in place after ptrace let go; the guard still watches them. Dropping the lease
/// without [`ProbeLease::remove`] leaves the removal to the guard (as after a crash).
#[derive(Debug)]
pub struct ProbeLease {
    pid: i32,
    int3_first: bool,
    _lock: Option<crate::ptrace::guard::TextLock>,
    probes: BTreeMap<u64, Probe>,
    guard: Option<Guard>,
    journal: TraceJournal,
}

impl ProbeLease {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Takes every probe out and dismisses the guard. The threads are stopped with ptrace
    /// while the bytes change when possible; when another tracer holds them now, the bytes go
    /// back `int3` first, as the guard would.
    pub fn remove(mut self) -> Result<(), RunError> {
        let frozen = freeze(self.pid);
        let mut first_err = None;
        for (addr, p) in std::mem::take(&mut self.probes) {
            let r = match &frozen {
                Ok(_) => {
                    let cur = read_bytes(self.pid, addr, p.patched.len());
                    if cur.as_deref() == Some(&p.patched[..]) {
                        write_bytes(self.pid, addr, &p.original)
                    } else {
                        Ok(())
                    }
                }
                Err(_) => restore_bytes(self.pid, addr, &p.original, &p.patched, self.int3_first)
                    .map(|_| ()),
            };
            if let Err(e) = r
                && crate::util::pid_alive(self.pid)
            {
                first_err.get_or_insert(RunError::Memory {
                    op: "restore",
                    pid: self.pid,
                    addr,
                    len: p.original.len(),
                    source: e,
                });
            }
        }
        if let Ok(tids) = frozen {
            thaw(&tids);
        }
        super::dismiss_unless_failed(first_err, &mut self.journal, &mut self.guard)
    }
}

fn read_bytes(pid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    crate::ptrace::mem::read(pid, addr, &mut b).ok()?;
    Some(b)
}

fn write_bytes(pid: i32, addr: u64, data: &[u8]) -> std::io::Result<()> {
    Ok(crate::ptrace::mem::write(pid, addr, data)?)
}

/// Seizes and stops every thread of `pid` (no guard, no journal): for short edits of text.
/// UML signals that arrive first are passed on.
fn freeze(pid: i32) -> Result<Vec<i32>, RunError> {
    let mut tids = Vec::new();
    for t in super::thread_ids(pid).map_err(|_| RunError::NoProcess(pid))? {
        match pt(libc::PTRACE_SEIZE, t, 0, 0) {
            Ok(_) => tids.push(t),
            Err(nix::Error::ESRCH) => {}
            Err(e) => {
                thaw(&tids);
                return Err(RunError::Ptrace {
                    op: "PTRACE_SEIZE",
                    tid: t,
                    source: e,
                });
            }
        }
    }
    for &t in &tids {
        let _ = pt(libc::PTRACE_INTERRUPT, t, 0, 0);
    }
    let mut stopped = Vec::new();
    for &t in &tids {
        loop {
            match raw_waitpid(t, 0) {
                Ok(Some((_, st))) if libc::WIFSTOPPED(st) => {
                    if st >> 16 == libc::PTRACE_EVENT_STOP {
                        stopped.push(t);
                        break;
                    }
                    let _ = pt(libc::PTRACE_CONT, t, 0, libc::WSTOPSIG(st) as u64);
                }
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => {}
            }
        }
    }
    Ok(stopped)
}

fn thaw(tids: &[i32]) {
    for &t in tids {
        let _ = pt(libc::PTRACE_DETACH, t, 0, 0);
    }
}

impl Tracee {
    /// Maps `len` bytes of read-write memory into the kernel process (reusing what an earlier
    /// tracer of this process mapped). Every thread must be stopped.
    pub fn map_scratch(&mut self, len: u64) -> Result<Scratch, RunError> {
        self.i().map_scratch(len)
    }

    /// Puts a probe at `addr` (see the module doc); `func_len` is the function's size when
    /// known (0 otherwise) for the check that nothing jumps into the patched bytes.
    pub fn insert_probe(
        &mut self,
        addr: u64,
        func_len: usize,
        body: &[u8],
    ) -> Result<ProbeInfo, RunError> {
        self.i().insert_probe(addr, func_len, body)
    }

    pub fn remove_probe(&mut self, addr: u64) -> Result<(), RunError> {
        self.i().remove_probe(addr)
    }

    /// Maps executable memory for probe stubs near the kernel image (see
    /// `Inner::map_probe_text`); later probes put their stubs there. Every thread stopped.
    pub fn map_probe_text(&mut self, len: u64) -> Result<Scratch, RunError> {
        self.i().map_probe_text(len)
    }

    /// Writes code that probes call (a shared recorder) into the probe text; its address.
    pub fn place_code(&mut self, code: &[u8]) -> Result<u64, RunError> {
        self.i().place_code(code)
    }

    /// Probes at many sites at once: `(addr, func_len, body)` each, one result each (see
    /// [`Tracee::insert_probe`]); a site that cannot take one does not stop the others.
    pub fn insert_probes(
        &mut self,
        sites: &[(u64, usize, Vec<u8>)],
    ) -> Vec<Result<ProbeInfo, RunError>> {
        self.i().insert_probes(sites)
    }

    /// A breakpoint made of a probe whose code is an `int3` (every thread stopped): hits are
    /// reported as [`super::StopEvent::Breakpoint`] at `addr`; resuming costs one PTRACE_CONT,
    /// and a tracer killed at any moment leaves the thread right. Needs the function's entry to
    /// take a 5-byte jump (see [`Tracee::insert_probe`]).
    pub fn insert_trap_probe(&mut self, addr: u64, func_len: usize) -> Result<ProbeInfo, RunError> {
        self.i().insert_trap_probe(addr, func_len)
    }

    /// Lets go of ptrace but leaves the probes in, under the guard's watch. Breakpoints are
    /// removed as by [`Tracee::detach`].
    pub fn detach_keep_probes(self) -> Result<ProbeLease, RunError> {
        let mut inner = self.inner.borrow_mut();
        let probes = std::mem::take(&mut inner.probes);
        let guard = inner.guard.take();
        // detach_inner dismisses no guard (taken above) and clears no probe entry.
        let r = inner.detach_threads();
        let pid = inner.pid;
        let journal = std::mem::replace(
            &mut inner.journal,
            TraceJournal::open(Path::new("/nonexistent/umldbg"), pid),
        );
        let int3_first = inner.kernel_patched;
        let lease = ProbeLease {
            pid,
            int3_first,
            _lock: inner.lock.take(),
            probes,
            guard,
            journal,
        };
        drop(inner);
        r.map(|()| lease)
    }
}
