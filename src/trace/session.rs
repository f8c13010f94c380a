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
use crate::ptrace::guard::journal_path;
use crate::ptrace::runctl::{RunError, StopEvent, Tracee};
use crate::trace::args::{self, SkbDwarf};
use crate::trace::filter::{PacketFilter, Selected, Tracker};
use crate::trace::functions::{
    Function, SymbolTable, guest_modules, modules_dir_of, skb_functions,
};
use crate::trace::hit::{Hit, Summary, TscClock, rdtsc};
use crate::trace::ring::{KernelFilter, RingLayout, RingReader, SkbCopy, probe_prologue, recorder};

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
    /// Every function of the kernel and its loaded modules that takes a `struct sk_buff *`.
    pub all_skb: bool,
    /// Only the skb functions whose name matches (implies the skb functions as the set).
    pub match_re: Option<String>,
    /// A pcap-filter expression: only the packets it selects are reported, followed by address.
    pub filter: Option<String>,
    /// Packet bytes copied per hit.
    pub snaplen: usize,
    /// Record the kernel stack (return addresses through the frame pointers) at each hit.
    pub stack: bool,
    pub uml_dir: PathBuf,
    pub cache: PathBuf,
}

impl TraceOptions {
    /// Options for `umid` with everything else at its default.
    pub fn new(umid: &str, uml_dir: PathBuf, cache: PathBuf) -> TraceOptions {
        TraceOptions {
            umid: umid.to_string(),
            label: None,
            functions: Vec::new(),
            skip_missing: false,
            skb: false,
            skb_arg: None,
            count: None,
            duration: None,
            stop: false,
            all_skb: false,
            match_re: None,
            filter: None,
            snaplen: crate::trace::ring::DEFAULT_SNAPLEN,
            stack: false,
            uml_dir,
            cache,
        }
    }

    /// The set of functions comes from DWARF rather than from names alone.
    pub fn discovers(&self) -> bool {
        self.all_skb || self.match_re.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Instance(#[from] crate::uml::instance::InstanceError),
    #[error(transparent)]
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
    #[error(transparent)]
    Filter(#[from] crate::trace::filter::FilterError),
    #[error(transparent)]
    SkbDwarf(#[from] crate::trace::args::SkbDwarfError),
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
    /// The copied packet bytes start this far after `head`; the headroom before reads as zeros.
    start: u64,
    data: &'a [u8],
    live: &'a mut LiveMemory,
}

/// A read of the kernel's memory for a hit's sk_buff that could not be served.
#[derive(Debug, thiserror::Error)]
enum MemError {
    #[error("no /proc/<pid>/mem")]
    NoMem,
    #[error("read {len} bytes at {addr:#x}: {source}")]
    Read {
        len: usize,
        addr: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{len} bytes at {addr:#x} were not copied at the hit")]
    NotCopied { len: usize, addr: u64 },
}

/// Why a hit's sk_buff could not be shown.
#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error(transparent)]
    Skb(#[from] crate::net::skb::SkbError),
    #[error("argument {0:#x} is not an skb pointer")]
    NotSkb(u64),
}

impl MemoryReader for Snapshot<'_> {
    type Error = MemError;

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
        let within = |base: u64, bytes: &[u8]| -> Option<Vec<u8>> {
            let off = addr.checked_sub(base)? as usize;
            bytes.get(off..off.checked_add(len)?).map(<[u8]>::to_vec)
        };
        if let Some(v) = within(self.skb, self.skb_bytes) {
            return Ok(v);
        }
        let end = self.head + self.start + self.data.len() as u64;
        if addr >= self.head && addr + len as u64 <= end {
            let mut v = vec![0u8; len];
            for (i, b) in v.iter_mut().enumerate() {
                let a = addr + i as u64;
                if a >= self.head + self.start {
                    *b = self.data[(a - self.head - self.start) as usize];
                }
            }
            return Ok(v);
        }
        if len <= 64 {
            return self.live.read_cached(addr, len);
        }
        Err(MemError::NotCopied { len, addr })
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

    fn read_cached(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
        if let Some(v) = self.cache.get(&(addr, len)) {
            return Ok(v.clone());
        }
        let v = self.read(addr, len)?;
        if self.cache.len() < 4096 {
            self.cache.insert((addr, len), v.clone());
        }
        Ok(v)
    }

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
        use std::os::unix::fs::FileExt;
        let f = self.mem.as_ref().ok_or(MemError::NoMem)?;
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, addr)
            .map_err(|source| MemError::Read { len, addr, source })?;
        Ok(b)
    }
}

impl MemoryReader for LiveMemory {
    type Error = MemError;
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
        LiveMemory::read(self, addr, len)
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
/// `skb_dwarf` is the kernel image's (needed for `--all-skb` and `--match`).
pub fn resolve_targets(
    opts: &TraceOptions,
    image: &Path,
    skb_dwarf: Option<&SkbDwarf>,
) -> Result<(Vec<Target>, SymbolTable), TraceError> {
    let mut table = SymbolTable::load(image, &[], None)?;
    if opts.discovers()
        || opts
            .functions
            .iter()
            .any(|f| !table.contains(f) && !f.starts_with("0x"))
    {
        // Module functions too: read the loaded modules over the console.
        let mods = guest_modules(&opts.umid)
            .map_err(|e| TraceError::Other(format!("{}: cannot list modules: {e}", opts.umid)))?;
        let dir = modules_dir_of(image);
        table = SymbolTable::load(image, &mods, dir.as_deref())?;
    }
    let mut out = Vec::new();
    if opts.discovers() {
        let dw = skb_dwarf.ok_or_else(|| TraceError::Other("no DWARF of the kernel".into()))?;
        let re = match &opts.match_re {
            Some(r) => Some(regex::Regex::new(r).map_err(|e| {
                TraceError::Other(format!(
                    "bad --match regex `{r}`: {}",
                    e.to_string().lines().last().unwrap_or("")
                ))
            })?),
            None => None,
        };
        for f in skb_functions(&table, dw, &opts.cache) {
            if re.as_ref().is_none_or(|re| re.is_match(&f.func.name)) {
                out.push(Target {
                    skb_arg: Some(f.arg),
                    func: f.func,
                });
            }
        }
        if out.is_empty() {
            return Err(TraceError::Other(match &opts.match_re {
                Some(r) => format!(
                    "--match `{r}`: no function that takes a struct sk_buff * on {} matches it",
                    opts.umid
                ),
                None => format!("no function takes a struct sk_buff * on {}", opts.umid),
            }));
        }
    }
    for name in &opts.functions {
        let funcs = match table.resolve(name) {
            Ok(f) => f,
            Err(_) if opts.skip_missing => continue,
            Err(e) => return Err(e.into()),
        };
        for func in funcs {
            if out.iter().any(|t: &Target| t.func.addr == func.addr) {
                continue;
            }
            let skb_arg = if opts.skb {
                args::known(&func.name)
                    .or_else(|| {
                        if func.module.is_none() {
                            skb_dwarf.and_then(|d| d.by_addr.get(&func.addr).copied())
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
    Ok((out, table))
}

/// Names code addresses (`function+0xoff`) with a sorted copy of a symbol table.
#[derive(Debug, Default)]
pub struct Symbolizer {
    funcs: Vec<(u64, u64, String)>,
}

impl Symbolizer {
    /// The functions of `table` and every function symbol of the kernel `image` (compiler
    /// clones too, which the table leaves out).
    pub fn new(table: &SymbolTable, image: &Path) -> Symbolizer {
        let mut funcs: Vec<(u64, u64, String)> = table
            .all()
            .map(|f| (f.addr, f.size.max(1), f.name.clone()))
            .collect();
        if let Ok(file) = crate::kmod::loader::MappedFile::open(image) {
            funcs.extend(
                crate::trace::functions::all_text_symbols(file.bytes())
                    .into_iter()
                    .filter(|(n, ..)| n.contains('.'))
                    .map(|(n, a, s)| (a, s.max(1), n)),
            );
        }
        funcs.sort();
        Symbolizer { funcs }
    }

    pub fn name(&self, addr: u64) -> String {
        let i = self.funcs.partition_point(|f| f.0 <= addr);
        match i.checked_sub(1).map(|i| &self.funcs[i]) {
            Some((a, size, n)) if addr < a + size => format!("{n}+{:#x}", addr - a),
            _ => format!("{addr:#x}"),
        }
    }
}

/// How a hit ends its packet's story: `dropped` with the kernel's reason, or `freed`.
pub fn end_of(
    function: &str,
    args: &[u64; 6],
    dw: Option<&SkbDwarf>,
) -> Option<(String, Option<String>)> {
    let reason_arg = match function {
        "sk_skb_reason_drop" => Some(2),
        "kfree_skb_reason" | "__napi_kfree_skb" | "kfree_skb_list_reason" => Some(1),
        _ => None,
    };
    if let Some(i) = reason_arg {
        let v = args[i] & 0xffff_ffff;
        let name = dw
            .map(|d| d.reason_name(v))
            .unwrap_or_else(|| format!("reason {v}"));
        if name == "CONSUMED" {
            return Some(("freed".into(), None));
        }
        if name == "NOT_SPECIFIED" {
            // kfree_skb without a reason: also what consume_skb is in kernels built without
            // tracepoints (this one), so not necessarily a drop.
            return Some(("freed".into(), Some(name)));
        }
        return Some(("dropped".into(), Some(name)));
    }
    matches!(
        function,
        "consume_skb"
            | "napi_consume_skb"
            | "__kfree_skb"
            | "kfree_skbmem"
            | "__consume_stateless_skb"
            | "skb_attempt_defer_free"
            | "kfree_skb_partial"
    )
    .then(|| ("freed".into(), None))
}

/// UML's kernel memory range in the process: its image through the end of its physical memory
/// and vmalloc mappings (pointers outside are not followed by probes). Physical memory is a
/// file mapping whose name depends on where UML made it (`/dev/shm`, a deleted `/tmp` file in
/// the sandbox), so everything from the image up to 64 GiB above it counts.
fn kernel_range(pid: i32) -> (u64, u64) {
    let maps = crate::ptrace::runctl::mappings(pid);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_default();
    let lo = maps
        .iter()
        .filter(|m| m.2 == exe)
        .map(|m| m.0)
        .min()
        .unwrap_or(0x6000_0000);
    let hi = maps
        .iter()
        .filter(|m| m.0 >= lo && m.0 < lo + (1 << 36))
        .map(|m| m.1)
        .max()
        .unwrap_or(0x8000_0000);
    (lo, hi)
}

/// Bytes of executable memory for `n` probe stubs and the recorder (whole MiB, 4 MiB at least).
fn probe_text_bytes(n: usize) -> u64 {
    ((n as u64 * 320 + (1 << 20)).div_ceil(1 << 20) << 20).max(4 << 20)
}

/// `skb->len` of a copied `struct sk_buff`.
fn skb_len(raw: &[u8], l: &SkbLayout) -> u32 {
    raw.get(l.len.offset as usize..l.len.offset as usize + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// The header offsets of a copied `struct sk_buff`: (mac, network, data) from `head`.
fn headers_of(raw: &[u8], l: &SkbLayout, head: u64) -> (Option<u16>, Option<u16>, usize) {
    let u16_at = |off: u64| {
        raw.get(off as usize..off as usize + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .filter(|v| *v != u16::MAX)
    };
    let data = raw
        .get(l.data.offset as usize..l.data.offset as usize + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .unwrap_or(0);
    (
        u16_at(l.mac_header.offset),
        u16_at(l.network_header.offset),
        data.saturating_sub(head) as usize,
    )
}

/// What a trace of one machine needs before it attaches: its targets and the DWARF facts.
#[derive(Debug)]
pub struct Prepared {
    pub pid: i32,
    pub image: PathBuf,
    pub targets: Vec<Target>,
    pub layout: Option<SkbLayout>,
    pub skb_dwarf: Option<SkbDwarf>,
    pub symbols: Symbolizer,
}

/// Finds the machine, its functions and the sk_buff layout, without touching it.
pub fn prepare(opts: &TraceOptions) -> Result<Prepared, TraceError> {
    let umid = crate::uml::ids::Umid::new(opts.umid.clone())?;
    let inst = crate::uml::instance::UmlInstance::resolve(&umid, &opts.uml_dir)?;
    let pid = inst.pid.get();
    let image = running_image(pid);
    let skb = opts.skb || opts.filter.is_some() || opts.discovers();
    let skb_dwarf = if skb {
        Some(SkbDwarf::load(&image, &opts.cache)?)
    } else {
        None
    };
    let (targets, table) = resolve_targets(opts, &image, skb_dwarf.as_ref())?;
    let symbols = if opts.stack {
        Symbolizer::new(&table, &image)
    } else {
        Symbolizer::default()
    };
    let layout: Option<SkbLayout> = if skb {
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
    Ok(Prepared {
        pid,
        image,
        targets,
        layout,
        skb_dwarf,
        symbols,
    })
}

/// What a trace tells its caller besides its hits; the caller shows it (the library never
/// writes to the terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The probes are in: what is traced, on which machine, and how.
    Ready(String),
    /// What the user should know: a function traced another way or not at all, a kernel
    /// without umldbg's patch.
    Warning(String),
}

/// Runs a trace; `sink` gets each hit as it is read; `notice` hears of functions left out and,
/// once the probes are in, [`Notice::Ready`].
pub fn run(
    opts: &TraceOptions,
    notice: &mut dyn FnMut(Notice),
    sink: &mut dyn FnMut(&Hit) -> Result<(), SinkError>,
) -> Result<Summary, TraceError> {
    let filter = match &opts.filter {
        Some(f) => Some(PacketFilter::compile(f)?),
        None => None,
    };
    let Prepared {
        pid,
        targets,
        layout,
        skb_dwarf,
        symbols,
        ..
    } = prepare(opts)?;
    let run_err = |source: RunError| TraceError::Run {
        umid: opts.umid.clone(),
        source,
    };
    let journal = journal_path(&opts.uml_dir, &opts.umid);
    let t_attach = Instant::now();
    let mut tracee = Tracee::attach(pid, &journal).map_err(run_err)?;
    let label = opts.label.clone().unwrap_or_else(|| opts.umid.clone());
    let mut summary = Summary {
        machine: label.clone(),
        ..Summary::default()
    };
    // Which targets are in: a function that cannot take a probe is left out when the set came
    // from DWARF; a named one sends the whole trace to stop mode.
    let mut live: Vec<bool> = vec![true; targets.len()];

    let mut stop_mode = opts.stop;
    let mut ring = None;
    let mut reader = None;
    if !stop_mode {
        let want = RingLayout::new(0, RING_SLOTS, opts.snaplen, opts.stack);
        let mapped = tracee.map_scratch(want.bytes()).map_err(run_err)?;
        let r = RingLayout::new(mapped.addr, RING_SLOTS, opts.snaplen, opts.stack);
        // The scratch memory may be an earlier trace's (kept in the journal): nothing it
        // followed is followed now.
        tracee
            .write_mem(
                r.table(),
                &vec![0u8; (crate::trace::ring::FOLLOW_SLOTS * 8) as usize],
            )
            .map_err(run_err)?;
        tracee
            .map_probe_text(probe_text_bytes(targets.len()))
            .map_err(run_err)?;
        let (lo, hi) = kernel_range(pid);
        reader = Some(
            RingReader::new(pid, r, layout.as_ref().map_or(0, |l| l.size as usize))
                .map_err(|e| TraceError::Other(e.to_string()))?,
        );
        let copy = match &layout {
            Some(l)
                if l.tail.size == 4
                    && l.head.size == 8
                    && l.data.size == 8
                    && l.mac_header.size == 2
                    && l.network_header.size == 2
                    && l.len.size == 4
                    && l.size as usize <= crate::trace::ring::STRUCT_MAX =>
            {
                Some(SkbCopy {
                    size: l.size as u32,
                    head_off: l.head.offset as u32,
                    data_off: l.data.offset as u32,
                    tail_off: l.tail.offset as u32,
                    mac_off: l.mac_header.offset as u32,
                    net_off: l.network_header.offset as u32,
                    len_off: l.len.offset as u32,
                    snaplen: opts.snaplen as u32,
                    lo,
                    hi,
                })
            }
            _ => None,
        };
        // The filter runs in the kernel too, so that hits of packets it does not select cost
        // little there and never reach the ring.
        let kernel_filter = match (&filter, &copy) {
            (Some(f), Some(_)) => {
                let (eth, ip) = Tracker::programs_of(f);
                let mut place = |p: Option<&pcap::BpfProgram>| -> Result<Option<u64>, TraceError> {
                    match p {
                        None => Ok(None),
                        Some(p) => {
                            let code =
                                crate::trace::bpf::compile(&crate::trace::bpf::instructions(p))
                                    .map_err(|e| {
                                        TraceError::Other(format!("filter `{}`: {e}", f.expr()))
                                    })?;
                            tracee.place_code(&code).map(Some).map_err(run_err)
                        }
                    }
                };
                Some(KernelFilter {
                    ethernet: place(eth)?,
                    ip: place(ip)?,
                })
            }
            _ => None,
        };
        let rec = tracee
            .place_code(&recorder(
                &r,
                copy.as_ref(),
                kernel_filter.as_ref(),
                opts.stack.then_some((lo, hi)),
            ))
            .map_err(run_err)?;
        let sites: Vec<(u64, usize, Vec<u8>)> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    t.func.addr,
                    t.func.size as usize,
                    probe_prologue(
                        rec,
                        i as u32
                            | if crate::trace::filter::releases(&t.func.name) {
                                crate::trace::ring::ID_RELEASES_SKB
                            } else {
                                0
                            }
                            | if t.func.name == "skb_free_head" {
                                crate::trace::ring::ID_FREES_HEAD
                            } else {
                                0
                            },
                        t.skb_arg.filter(|_| copy.is_some()),
                    ),
                )
            })
            .collect();
        let results = tracee.insert_probes(&sites);
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                live[i] = false;
                let t = &targets[i];
                if !opts.discovers() {
                    notice(Notice::Warning(format!(
                        "{}: {} cannot take a probe ({e}); tracing with breakpoints instead",
                        opts.umid, t.func.name
                    )));
                    stop_mode = true;
                } else {
                    summary.skipped.push(format!("{}: {e}", t.func.name));
                }
            }
        }
        if stop_mode {
            for t in &targets {
                let _ = tracee.remove_probe(t.func.addr);
            }
            live = vec![true; targets.len()];
            summary.skipped.clear();
            reader = None;
        } else if !live.iter().any(|l| *l) {
            let _ = tracee.detach();
            return Err(TraceError::Other(format!(
                "{}: no function could take a probe (first: {})",
                opts.umid,
                summary.skipped.first().cloned().unwrap_or_default()
            )));
        } else {
            ring = Some(r);
        }
    }
    for (t, l) in targets.iter().zip(&live) {
        if *l {
            summary.per_function.entry(t.func.name.clone()).or_insert(0);
        }
    }
    summary.functions = live.iter().filter(|l| **l).count();
    for s in &summary.skipped {
        notice(Notice::Warning(format!("{}: not probed: {s}", opts.umid)));
    }
    summary.mode = if stop_mode { "stop" } else { "probe" }.into();
    if stop_mode && !tracee.kernel_patched() {
        notice(Notice::Warning(format!(
            "warning: {}'s kernel lacks umldbg's patch 0001: if this tracer is killed while a thread \
             stands on a breakpoint, the machine panics (rebuild with `umldbg kernel build`)",
            opts.umid
        )));
    }
    let mut clock = TscClock::new(Duration::from_millis(10));
    let mut live_mem = LiveMemory::new(pid);
    let mut lost = 0;
    let started;
    let ended_by;
    let mut result: Result<(), TraceError> = Ok(());
    let tracker = std::cell::RefCell::new(Tracker::default());
    let mut packets = 0u64;
    let mut unselected = 0u64;
    let mut in_kernel_unselected = 0u64;
    let mut last_expiry = 0u128;
    let dw = skb_dwarf.as_ref();

    // One hit: selection, decoding, the end of the story, the sink.
    let mut deliver = |raw_tsc: u64,
                       t: &Target,
                       args: &[u64; 6],
                       skb_addr: Option<u64>,
                       raw: Option<(&[u8], u64, u64, &[u8])>,
                       inserted: bool,
                       stack: &[u64],
                       unfollow: &mut Vec<u64>,
                       live_mem: &mut LiveMemory,
                       clock: &TscClock,
                       summary: &mut Summary|
     -> Result<(), SinkError> {
        let time_ns = clock.wall_ns(raw_tsc);
        let end = end_of(&t.func.name, args, dw);
        // raw: (struct bytes, head, start, packet bytes) as copied at the hit.
        let decode = |live_mem: &mut LiveMemory| -> Option<Result<SkbView, DecodeError>> {
            let l = layout.as_ref()?;
            t.skb_arg?;
            Some(match (skb_addr, raw) {
                (Some(skb), Some((sb, head, start, data))) => {
                    let mut snap = Snapshot {
                        skb,
                        skb_bytes: sb,
                        head,
                        start,
                        data,
                        live: live_mem,
                    };
                    let o = SkbOptions {
                        linear_limit: start as usize + data.len(),
                        ..SkbOptions::default()
                    };
                    read_skb_with(skb, l, &mut snap, o).map_err(DecodeError::from)
                }
                (Some(skb), None) => read_skb_with(skb, l, live_mem, SkbOptions::default())
                    .map_err(DecodeError::from),
                (None, _) => Err(DecodeError::NotSkb(
                    args.get(t.skb_arg.unwrap_or(0) as usize)
                        .copied()
                        .unwrap_or(0),
                )),
            })
        };
        let mut view = None;
        let mut story = None;
        let mut first = false;
        let mut ends = end.is_some();
        if let Some(f) = &filter {
            let (Some(skb), Some(l)) = (skb_addr, layout.as_ref()) else {
                unselected += 1;
                return Ok(());
            };
            let head = raw.map(|r| r.1).unwrap_or(0);
            // A packet is judged at first sight only once it is one: some length and a header
            // set (an skb being allocated or recycled still holds an old packet's bytes).
            if raw.is_none() {
                view = decode(live_mem);
            }
            let len = match (raw, &view) {
                (Some((sb, ..)), _) => skb_len(sb, l),
                (None, Some(Ok(v))) => v.len,
                _ => 0,
            };
            let mut tracker = tracker.borrow_mut();
            let sel = tracker.select(skb, head, &t.func.name, time_ns, || match raw {
                Some((sb, head, start, data)) => {
                    let (mac, net, data_off) = headers_of(sb, l, head);
                    len > 0
                        && (mac.is_some() || net.is_some())
                        && f.matches_skb(data, start as usize, mac, net, data_off)
                }
                None => match &view {
                    Some(Ok(v)) => {
                        v.len > 0
                            && (v.mac_header.is_some() || v.network_header.is_some())
                            && f.matches_skb(
                                &v.linear,
                                0,
                                v.mac_header,
                                v.network_header,
                                v.headroom as usize,
                            )
                    }
                    _ => false,
                },
            });
            match sel {
                Selected::No => {
                    // The kernel's filter took it, the tracer does not (a stale skb).
                    if inserted {
                        for a in [skb, head] {
                            if !tracker.follows(a) {
                                unfollow.push(a);
                            }
                        }
                    }
                    unselected += 1;
                    return Ok(());
                }
                Selected::New(n) => {
                    packets += 1;
                    story = Some(n);
                    first = true;
                }
                Selected::Again(n) => story = Some(n),
                Selected::AfterEnd(n) => {
                    story = Some(n);
                    ends = false;
                }
            }
            if ends {
                tracker.end(skb);
            }
            if t.func.name == "skb_free_head" && head != 0 {
                // The buffer goes back to the allocator (an expanded head's old one, too).
                tracker.forget(head);
                unfollow.push(head);
            }
            if time_ns.saturating_sub(last_expiry) > 500_000_000 {
                last_expiry = time_ns;
                unfollow.extend(tracker.expire(time_ns));
            }
            if crate::trace::filter::releases(&t.func.name) {
                tracker.release(skb, head);
                for a in [skb, head] {
                    if !tracker.follows(a) {
                        unfollow.push(a);
                    }
                }
            }
        }
        let view = match view {
            Some(v) => Some(v),
            None => decode(live_mem),
        };
        let (skb, skb_error) = match view {
            Some(Ok(v)) => (Some(v), None),
            Some(Err(e)) => {
                summary.decode_errors += 1;
                (None, Some(e.to_string()))
            }
            None => (None, None),
        };
        let (end, reason) = match end.filter(|_| ends) {
            Some((e, r)) => (Some(e), r),
            None => (None, None),
        };
        let hit = Hit {
            time_ns,
            tsc: raw_tsc,
            machine: label.clone(),
            function: t.func.name.clone(),
            addr: t.func.addr,
            skb,
            skb_error,
            skb_addr: t.skb_arg.map(|a| args[a as usize]),
            packet: story,
            end,
            reason,
            stack: stack.iter().map(|a| symbols.name(*a)).collect(),
            first,
        };
        summary.hits += 1;
        *summary.per_function.entry(t.func.name.clone()).or_insert(0) += 1;
        sink(&hit)
    };

    if let (Some(_), Some(mut rd)) = (ring, reader.take()) {
        let lease = tracee.detach_keep_probes().map_err(run_err)?;
        summary.arm_seconds = t_attach.elapsed().as_secs_f64();
        notice(Notice::Ready(format!(
            "tracing {} function(s) on {} with probes",
            summary.functions, opts.umid
        )));
        started = Instant::now();
        let mut batch = Vec::new();
        let mut unfollow = Vec::new();
        let filtered_before = rd.filtered().unwrap_or(0);
        let mut last_sweep = Instant::now();
        let mut seen_before: std::collections::HashSet<u64> = Default::default();
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
                if e.process_gone() || !crate::util::pid_alive(pid) {
                    break 'outer "exited";
                }
                result = Err(TraceError::Other(e.to_string()));
                break 'outer "error";
            }
            if batch.is_empty() {
                if last_alive_check.elapsed() > Duration::from_millis(200) {
                    last_alive_check = Instant::now();
                    clock.refine();
                    if !crate::util::pid_alive(pid) {
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
                let raw = h
                    .skb
                    .map(|_| (&h.skb_struct[..], h.head, h.start as u64, &h.data[..]));
                let skb_addr = if t.skb_arg.is_some() { h.skb } else { None };
                let r = deliver(
                    h.tsc,
                    t,
                    &h.args,
                    skb_addr,
                    raw,
                    h.inserted,
                    &h.stack,
                    &mut unfollow,
                    &mut live_mem,
                    &clock,
                    &mut summary,
                );
                for a in unfollow.drain(..) {
                    let _ = rd.unfollow(a);
                }
                // Addresses the kernel's filter put in the table for hits the tracker never
                // read (lost ones) would make every later packet there a recorded hit: every
                // second, what has been in the table since the last look and is not followed
                // goes.
                if filter.is_some() && last_sweep.elapsed() > Duration::from_secs(1) {
                    last_sweep = Instant::now();
                    if let Ok(now) = rd.followed_entries() {
                        let t = tracker.borrow();
                        for (i, a) in &now {
                            if !t.follows(*a) && seen_before.contains(a) {
                                let _ = rd.unfollow_at(*i, *a);
                            }
                        }
                        seen_before = now.into_iter().map(|(_, a)| a).collect();
                    }
                }
                match r {
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
        in_kernel_unselected = rd.filtered().unwrap_or(0).saturating_sub(filtered_before);
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
        summary.arm_seconds = t_attach.elapsed().as_secs_f64();
        notice(Notice::Ready(format!(
            "tracing {} function(s) on {} with breakpoints",
            targets.len(),
            opts.umid
        )));
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
                    let (args, skb_addr) = match tracee.regs(tid) {
                        Ok(r) => {
                            let a = crate::guest::skb::arg_values(&r);
                            let skb = t.skb_arg.and_then(|i| {
                                crate::guest::skb::skb_candidates(&a, Some(i))
                                    .first()
                                    .map(|(_, v)| *v)
                            });
                            (a, skb)
                        }
                        Err(_) => ([0; 6], None),
                    };
                    let mut none = Vec::new();
                    let r = deliver(
                        tsc,
                        t,
                        &args,
                        skb_addr,
                        None,
                        false,
                        &[],
                        &mut none,
                        &mut live_mem,
                        &clock,
                        &mut summary,
                    );
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
    if filter.is_some() {
        summary.packets = Some(packets);
        summary.unselected_hits = Some(unselected + in_kernel_unselected);
        summary.unselected_read = Some(unselected);
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
