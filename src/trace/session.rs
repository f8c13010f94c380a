//! One trace of one machine: resolve the functions, attach, put probes (or breakpoints) in,
//! turn hits into [`Hit`]s for a sink, take everything out again, and sum up.
//!
//! Probe mode (the default) lets go of ptrace while the probes record into the hit ring, so the
//! machine runs at nearly its own speed; stop mode (`stop: true`, or when a function's entry
//! cannot take a probe) keeps the threads attached and stops on an `int3` per hit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::net::layout::SkbLayout;
use crate::net::skb::{MemoryReader, SkbOptions, SkbView, read_skb_with};
use crate::stub::guard::journal_path;
use crate::stub::runctl::{RunError, StopEvent, Tracee};
use crate::trace::args;
use crate::trace::functions::{Function, SymbolTable, guest_modules, modules_dir_of};
use crate::trace::hit::{Hit, Summary, TscClock, rdtsc};
use crate::trace::ring::{RingLayout, RingReader, SkbCopy, probe_body};

/// Slots in the hit ring (32 MiB of the kernel process's address space, touched as used): at
/// 20,000 hits a second a tracer that the host does not schedule for 0.4 s loses nothing.
pub const RING_SLOTS: u64 = 8192;

#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub umid: String,
    /// The name hits carry (default: the umid).
    pub label: Option<String>,
    pub functions: Vec<String>,
    /// Skip functions the machine does not have (instead of failing), as long as one is left.
    pub skip_missing: bool,
    pub skb: bool,
    /// The skb argument for functions the table and DWARF do not know.
    pub skb_arg: Option<u8>,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// ptrace breakpoints instead of probes.
    pub stop: bool,
    pub uml_dir: PathBuf,
    pub cache: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{0}")]
    Instance(#[from] crate::uml::instance::InstanceError),
    #[error("{0}")]
    Id(#[from] crate::uml::ids::IdError),
    #[error(transparent)]
    Resolve(#[from] crate::trace::functions::ResolveError),
    #[error("{umid}: {source}")]
    Run {
        umid: String,
        #[source]
        source: RunError,
    },
    #[error("sk_buff layout of {}: {reason}", image.display())]
    Layout { image: PathBuf, reason: String },
    #[error("{0}")]
    Other(String),
}

/// What the sink says after a hit.
#[derive(Debug)]
pub enum SinkError {
    /// Stop tracing quietly (the reader went away: a closed pipe).
    Stop,
    /// Stop tracing and report this (a full disk under the pcap file).
    Fail(String),
}

/// Set by SIGINT, SIGTERM and SIGHUP while a trace runs.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Catches Ctrl-C (and SIGTERM, SIGHUP) so the trace ends with its summary and a clean
/// detach; SIGPIPE is ignored so that a closed output ends it the same way.
pub fn install_stop_handlers() {
    // SAFETY: installing a handler that only stores to an atomic; no SA_RESTART, so blocking
    // calls return EINTR and the loops look at the flag.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Asks running traces to end (as Ctrl-C does).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Snapshot memory of one ring hit: the copied struct and linear data, and device names read
/// live (net_devices outlive packets) with a cache.
struct Snapshot<'a> {
    skb: u64,
    skb_bytes: &'a [u8],
    head: u64,
    data: &'a [u8],
    live: &'a mut LiveMemory,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SnapError(String);

impl MemoryReader for Snapshot<'_> {
    type Error = SnapError;

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, SnapError> {
        let within = |base: u64, bytes: &[u8]| -> Option<Vec<u8>> {
            let off = addr.checked_sub(base)? as usize;
            bytes.get(off..off.checked_add(len)?).map(<[u8]>::to_vec)
        };
        if let Some(v) = within(self.skb, self.skb_bytes) {
            return Ok(v);
        }
        if let Some(v) = within(self.head, self.data) {
            return Ok(v);
        }
        if len <= 64 {
            return self.live.read_cached(addr, len).map_err(SnapError);
        }
        Err(SnapError(format!(
            "{len} bytes at {addr:#x} were not copied at the hit"
        )))
    }
}

/// The kernel process's memory through `/proc/<pid>/mem`, small reads cached (device names).
struct LiveMemory {
    mem: Option<std::fs::File>,
    cache: HashMap<(u64, usize), Vec<u8>>,
}

impl LiveMemory {
    fn new(pid: i32) -> LiveMemory {
        LiveMemory {
            mem: std::fs::File::open(format!("/proc/{pid}/mem")).ok(),
            cache: HashMap::new(),
        }
    }

    fn read_cached(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        if let Some(v) = self.cache.get(&(addr, len)) {
            return Ok(v.clone());
        }
        let v = self.read(addr, len)?;
        if self.cache.len() < 4096 {
            self.cache.insert((addr, len), v.clone());
        }
        Ok(v)
    }

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        use std::os::unix::fs::FileExt;
        let f = self.mem.as_ref().ok_or("no /proc/<pid>/mem")?;
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, addr)
            .map_err(|e| format!("read {len} bytes at {addr:#x}: {e}"))?;
        Ok(b)
    }
}

impl MemoryReader for LiveMemory {
    type Error = SnapError;
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, SnapError> {
        LiveMemory::read(self, addr, len).map_err(SnapError)
    }
}

/// A function as traced: where, which argument is its skb.
#[derive(Debug, Clone)]
pub struct Target {
    pub func: Function,
    pub skb_arg: Option<u8>,
}

/// The kernel image a machine runs (its `/proc/<pid>/exe`), as a path that names the file.
fn running_image(pid: i32) -> PathBuf {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let s = link.to_string_lossy();
    let p = PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s));
    if p.is_file() {
        p
    } else {
        PathBuf::from(format!("/proc/{pid}/exe"))
    }
}

/// Resolves the functions on the machine; with `skip_missing`, names it lacks are dropped.
pub fn resolve_targets(opts: &TraceOptions, image: &Path) -> Result<Vec<Target>, TraceError> {
    let mut table = SymbolTable::load(image, &[], None)?;
    if opts
        .functions
        .iter()
        .any(|f| !table.contains(f) && !f.starts_with("0x"))
    {
        // Some are not in the image: read the loaded modules over the console.
        let mods = guest_modules(&opts.umid)
            .map_err(|e| TraceError::Other(format!("{}: cannot list modules: {e}", opts.umid)))?;
        let dir = modules_dir_of(image);
        table = SymbolTable::load(image, &mods, dir.as_deref())?;
    }
    let mut out = Vec::new();
    for name in &opts.functions {
        let funcs = match table.resolve(name) {
            Ok(f) => f,
            Err(_) if opts.skip_missing => continue,
            Err(e) => return Err(e.into()),
        };
        for func in funcs {
            let skb_arg = if opts.skb {
                args::known(&func.name)
                    .or_else(|| {
                        if func.module.is_none() {
                            args::skb_arg_from_dwarf(image, func.addr)
                        } else {
                            None
                        }
                    })
                    .or(opts.skb_arg)
            } else {
                None
            };
            out.push(Target { func, skb_arg });
        }
    }
    if out.is_empty() {
        return Err(TraceError::Other(format!(
            "none of {} is on {}",
            opts.functions.join(", "),
            opts.umid
        )));
    }
    Ok(out)
}

/// UML's kernel memory range in the process: its image through the end of its physical memory
/// and vmalloc mappings (pointers outside are not followed by probes).
fn kernel_range(pid: i32) -> (u64, u64) {
    let maps = crate::stub::runctl::mappings(pid);
    let lo = maps
        .iter()
        .filter(|m| m.2.contains("linux") || m.2.contains("exe"))
        .map(|m| m.0)
        .min()
        .unwrap_or(0x6000_0000);
    let hi = maps
        .iter()
        .filter(|m| {
            m.0 >= lo
                && m.0 < 0x1_0000_0000_0000
                && (m.2.starts_with("/dev/shm")
                    || m.2.contains("/vm_file")
                    || m.2.contains("linux")
                    || m.2.is_empty()
                    || m.2 == "[heap]")
        })
        .filter(|m| m.0 < lo + (1 << 36))
        .map(|m| m.1)
        .max()
        .unwrap_or(0x8000_0000);
    (lo, hi)
}

/// Runs a trace; `sink` gets each hit as it is read. `ready` is called once the probes are in.
pub fn run(
    opts: &TraceOptions,
    ready: &mut dyn FnMut(&str),
    sink: &mut dyn FnMut(&Hit) -> Result<(), SinkError>,
) -> Result<Summary, TraceError> {
    let umid = crate::uml::ids::Umid::new(opts.umid.clone())?;
    let inst = crate::uml::instance::UmlInstance::resolve(&umid, &opts.uml_dir)?;
    let pid = inst.pid.get();
    let image = running_image(pid);
    let targets = resolve_targets(opts, &image)?;
    let layout: Option<SkbLayout> = if opts.skb {
        let store = crate::dwarf::LayoutStore::new(&opts.cache);
        Some(
            store
                .net_layouts(&image)
                .and_then(|l| l.skb())
                .map_err(|e| TraceError::Layout {
                    image: image.clone(),
                    reason: e.to_string(),
                })?,
        )
    } else {
        None
    };
    let run_err = |source: RunError| TraceError::Run {
        umid: opts.umid.clone(),
        source,
    };
    let journal = journal_path(&opts.uml_dir, &opts.umid);
    let mut tracee = Tracee::attach(pid, &journal).map_err(run_err)?;
    let label = opts.label.clone().unwrap_or_else(|| opts.umid.clone());
    let mut summary = Summary {
        machine: label.clone(),
        ..Summary::default()
    };
    for t in &targets {
        summary.per_function.entry(t.func.name.clone()).or_insert(0);
    }

    // Probes first; any function whose entry will not take one sends the whole trace to stop mode.
    let mut stop_mode = opts.stop;
    let mut ring = None;
    let mut reader = None;
    if !stop_mode {
        let mapped = tracee
            .map_scratch(RingLayout::bytes(RING_SLOTS))
            .map_err(run_err)?;
        let r = RingLayout {
            base: mapped.addr,
            slots: RING_SLOTS,
        };
        let (lo, hi) = kernel_range(pid);
        reader = Some(
            RingReader::new(pid, r, layout.as_ref().map_or(0, |l| l.size as usize))
                .map_err(|e| TraceError::Other(e.to_string()))?,
        );
        for (i, t) in targets.iter().enumerate() {
            let copy = match (&layout, t.skb_arg) {
                (Some(l), Some(arg))
                    if l.tail.size == 4
                        && l.head.size == 8
                        && l.size as usize <= crate::trace::ring::STRUCT_MAX =>
                {
                    Some(SkbCopy {
                        arg,
                        size: l.size as u32,
                        head_off: l.head.offset as u32,
                        tail_off: l.tail.offset as u32,
                        lo,
                        hi,
                    })
                }
                _ => None,
            };
            let body = probe_body(&r, i as u32, copy.as_ref());
            if let Err(e) = tracee.insert_probe(t.func.addr, t.func.size as usize, &body) {
                eprintln!(
                    "umldbg: {}: {} cannot take a probe ({e}); tracing with breakpoints instead",
                    opts.umid, t.func.name
                );
                stop_mode = true;
                break;
            }
        }
        if stop_mode {
            for t in &targets {
                let _ = tracee.remove_probe(t.func.addr);
            }
            reader = None;
        } else {
            ring = Some(r);
        }
    }
    summary.mode = if stop_mode { "stop" } else { "probe" }.into();
    if stop_mode && !tracee.kernel_patched() {
        eprintln!(
            "umldbg: warning: {}'s kernel lacks umldbg's patch 0001: if this tracer is killed while a thread \
             stands on a breakpoint, the machine panics (rebuild with `umldbg kernel build`)",
            opts.umid
        );
    }
    let mut clock = TscClock::new(Duration::from_millis(10));
    let mut live = LiveMemory::new(pid);
    let mut lost = 0;
    let started;
    let ended_by;
    let mut result: Result<(), TraceError> = Ok(());

    let mut deliver = |raw_tsc: u64,
                       t: &Target,
                       view: Option<Result<SkbView, String>>,
                       clock: &TscClock,
                       summary: &mut Summary|
     -> Result<(), SinkError> {
        let (skb, skb_error) = match view {
            Some(Ok(v)) => (Some(v), None),
            Some(Err(e)) => {
                summary.decode_errors += 1;
                (None, Some(e))
            }
            None => (None, None),
        };
        let hit = Hit {
            time_ns: clock.wall_ns(raw_tsc),
            tsc: raw_tsc,
            machine: label.clone(),
            function: t.func.name.clone(),
            addr: t.func.addr,
            skb,
            skb_error,
        };
        summary.hits += 1;
        *summary.per_function.entry(t.func.name.clone()).or_insert(0) += 1;
        sink(&hit)
    };

    if let (Some(_), Some(mut rd)) = (ring, reader.take()) {
        let lease = tracee.detach_keep_probes().map_err(run_err)?;
        ready(&format!(
            "tracing {} function(s) on {} with probes",
            targets.len(),
            opts.umid
        ));
        started = Instant::now();
        let mut batch = Vec::new();
        let mut last_alive_check = Instant::now();
        ended_by = 'outer: loop {
            if stop_requested() {
                break 'outer "interrupted";
            }
            if opts.duration.is_some_and(|d| started.elapsed() >= d) {
                break 'outer "duration";
            }
            batch.clear();
            if let Err(e) = rd.poll(&mut batch) {
                if e.process_gone() || !crate::stub::guard::process_running(pid) {
                    break 'outer "exited";
                }
                result = Err(TraceError::Other(e.to_string()));
                break 'outer "error";
            }
            if batch.is_empty() {
                if last_alive_check.elapsed() > Duration::from_millis(200) {
                    last_alive_check = Instant::now();
                    clock.refine();
                    if !crate::stub::guard::process_running(pid) {
                        break 'outer "exited";
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            for h in &batch {
                let Some(t) = targets.get(h.probe as usize) else {
                    continue;
                };
                let view = match (&layout, t.skb_arg) {
                    (Some(l), Some(_)) => Some(match h.skb {
                        Some(skb) => {
                            let mut snap = Snapshot {
                                skb,
                                skb_bytes: &h.skb_struct,
                                head: h.head,
                                data: &h.data,
                                live: &mut live,
                            };
                            let o = SkbOptions {
                                linear_limit: h.data.len(),
                                ..SkbOptions::default()
                            };
                            read_skb_with(skb, l, &mut snap, o).map_err(|e| e.to_string())
                        }
                        None => Err(format!(
                            "argument {:#x} is not an skb pointer",
                            h.args[t.skb_arg.unwrap_or(0) as usize]
                        )),
                    }),
                    _ => None,
                };
                match deliver(h.tsc, t, view, &clock, &mut summary) {
                    Ok(()) => {}
                    Err(SinkError::Stop) => break 'outer "output closed",
                    Err(SinkError::Fail(m)) => {
                        result = Err(TraceError::Other(m));
                        break 'outer "error";
                    }
                }
                if opts.count.is_some_and(|c| summary.hits >= c) {
                    break 'outer "count";
                }
            }
        };
        lost = rd.lost();
        summary.seconds = started.elapsed().as_secs_f64();
        if ended_by != "exited" {
            lease.remove().map_err(run_err)?;
        } else {
            drop(lease);
        }
    } else {
        tracee.set_all_stop(false);
        for t in &targets {
            // A trap probe where the entry takes a jump (kill-safe at every instant), else a
            // plain int3 stepped over through its stub.
            if let Err(e) = tracee.insert_trap_probe(t.func.addr, t.func.size as usize) {
                if !matches!(e, RunError::BadBreakpoint { .. }) {
                    return Err(run_err(e));
                }
                tracee.insert_breakpoint(t.func.addr).map_err(run_err)?;
            }
        }
        tracee.resume().map_err(run_err)?;
        ready(&format!(
            "tracing {} function(s) on {} with breakpoints",
            targets.len(),
            opts.umid
        ));
        started = Instant::now();
        let by_addr: HashMap<u64, &Target> = targets.iter().map(|t| (t.func.addr, t)).collect();
        ended_by = loop {
            if stop_requested() {
                break "interrupted";
            }
            if opts.duration.is_some_and(|d| started.elapsed() >= d) {
                break "duration";
            }
            match tracee.wait(Some(Duration::from_millis(100))) {
                Ok(StopEvent::Breakpoint { tid, addr }) => {
                    let tsc = rdtsc();
                    let Some(t) = by_addr.get(&addr) else {
                        tracee.resume_thread(tid).map_err(run_err)?;
                        continue;
                    };
                    let view = match (&layout, t.skb_arg) {
                        (Some(l), Some(arg)) => Some(match tracee.regs(tid) {
                            Ok(r) => {
                                let skb = [r.rdi, r.rsi, r.rdx, r.rcx, r.r8, r.r9][arg as usize];
                                read_skb_with(skb, l, &mut live, SkbOptions::default())
                                    .map_err(|e| e.to_string())
                            }
                            Err(e) => Err(e.to_string()),
                        }),
                        _ => None,
                    };
                    let r = deliver(tsc, t, view, &clock, &mut summary);
                    tracee.resume_thread(tid).map_err(run_err)?;
                    match r {
                        Ok(()) => {}
                        Err(SinkError::Stop) => break "output closed",
                        Err(SinkError::Fail(m)) => {
                            result = Err(TraceError::Other(m));
                            break "error";
                        }
                    }
                    if opts.count.is_some_and(|c| summary.hits >= c) {
                        break "count";
                    }
                }
                Ok(StopEvent::Exited { .. }) => break "exited",
                Ok(_) => {}
                Err(RunError::Timeout(_)) | Err(RunError::Interrupted) => {}
                Err(e) => {
                    result = Err(run_err(e));
                    break "error";
                }
            }
        };
        summary.seconds = started.elapsed().as_secs_f64();
        if ended_by != "exited" {
            tracee.detach().map_err(run_err)?;
        }
    }
    summary.lost = lost;
    summary.ended_by = ended_by.to_string();
    summary.hits_per_second = if summary.seconds > 0.0 {
        summary.hits as f64 / summary.seconds
    } else {
        0.0
    };
    result.map(|()| summary)
}
