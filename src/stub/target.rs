//! The gdbstub target: a UML kernel process under ptrace, seen by gdb as one x86_64 program
//! whose host threads are gdb's threads and whose loaded modules are gdb's libraries.
//!
//! Run control goes through the small [`RunControl`] trait, which the ptrace run-control
//! ([`crate::ptrace::runctl::Tracee`]) implements and [`fake::FakeMachine`] imitates, so the whole
//! gdb session layer runs in tests and under the fuzzer without a kernel.
//!
//! Two internal breakpoints, on `do_init_module` and `free_module`, tell when the guest loads or
//! unloads a module; the target then re-reads the module list from kernel memory and reports a
//! library-change stop, after which gdb re-reads `qXfer:libraries` and resumes by itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gdbstub::common::{Signal, Tid};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::ext::libraries::{Libraries, LibrariesOps, LibrariesSvr4, LibrariesSvr4Ops};
use gdbstub::target::ext::lldb_register_info_override::{
    self, LldbRegisterInfoOverride, LldbRegisterInfoOverrideOps,
};
use gdbstub::target::ext::target_description_xml_override::{
    TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;

use super::libraries::{self, FileSection, Library, LibraryError, ModuleOffsets};
use super::monitor::{self, Command};
use crate::dwarf::DwarfError;
use crate::guest::modules::GuestModule;
use crate::net::skb::SkbError;
use crate::ptrace::runctl::{RunError, StopEvent, Tracee};

pub type StopReason = MultiThreadStopReason<u64>;

/// What the gdb session needs from run control. Errors are reported to the client as strings;
/// none of them ends the session by itself (the machine exiting does, as a stop).
pub trait RunControl {
    type Error: std::error::Error + Send + Sync + 'static;

    fn pid(&self) -> i32;
    fn threads(&self) -> Vec<i32>;
    fn read_mem(&self, addr: u64, len: usize) -> Result<Vec<u8>, Self::Error>;
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), Self::Error>;
    fn regs(&self, tid: i32) -> Result<libc::user_regs_struct, Self::Error>;
    fn set_regs(&self, tid: i32, r: &libc::user_regs_struct) -> Result<(), Self::Error>;
    fn insert_breakpoint(&mut self, addr: u64) -> Result<(), Self::Error>;
    fn remove_breakpoint(&mut self, addr: u64) -> Result<(), Self::Error>;
    fn resume(&mut self) -> Result<(), Self::Error>;
    /// Continue one stopped thread, the others staying stopped.
    fn resume_thread(&mut self, tid: i32) -> Result<(), Self::Error>;
    fn single_step(&mut self, tid: i32) -> Result<StopEvent, Self::Error>;
    /// The next stop, or `None` when `timeout` passed first.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<StopEvent>, Self::Error>;
    fn interrupt(&mut self) -> Result<(), Self::Error>;
    fn detach(self) -> Result<(), Self::Error>;
    /// Whether a single step with the trap flag is safe against a tracer killed mid-step (the
    /// kernel has patch 0001, which clears a trap flag a dead tracer left). When it is, gdb's
    /// steps use it: cheaper than temporary breakpoints, which are journaled and guarded.
    fn trap_steps_are_safe(&self) -> bool {
        false
    }
    /// Stop only the thread that hit a breakpoint; the others when asked about (run control
    /// that can do so: UML's helper threads then sleep on through every hit).
    fn stop_lazily(&mut self) {}
}

impl RunControl for Tracee {
    type Error = RunError;

    fn pid(&self) -> i32 {
        Tracee::pid(self)
    }
    fn threads(&self) -> Vec<i32> {
        Tracee::threads(self)
    }
    fn read_mem(&self, addr: u64, len: usize) -> Result<Vec<u8>, RunError> {
        Tracee::read_mem(self, addr, len)
    }
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), RunError> {
        Tracee::write_mem(self, addr, data)
    }
    fn regs(&self, tid: i32) -> Result<libc::user_regs_struct, RunError> {
        Tracee::regs(self, tid)
    }
    fn set_regs(&self, tid: i32, r: &libc::user_regs_struct) -> Result<(), RunError> {
        Tracee::set_regs(self, tid, r)
    }
    fn insert_breakpoint(&mut self, addr: u64) -> Result<(), RunError> {
        Tracee::insert_breakpoint(self, addr)
    }
    fn remove_breakpoint(&mut self, addr: u64) -> Result<(), RunError> {
        Tracee::remove_breakpoint(self, addr)
    }
    fn resume(&mut self) -> Result<(), RunError> {
        Tracee::resume(self)
    }
    fn resume_thread(&mut self, tid: i32) -> Result<(), RunError> {
        Tracee::resume_thread(self, tid)
    }
    fn single_step(&mut self, tid: i32) -> Result<StopEvent, RunError> {
        Tracee::single_step(self, tid)
    }
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<StopEvent>, RunError> {
        match Tracee::wait(self, timeout) {
            Ok(ev) => Ok(Some(ev)),
            // A signal of the caller's ended the wait early: same as nothing yet.
            Err(RunError::Timeout(_)) | Err(RunError::Interrupted) => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn interrupt(&mut self) -> Result<(), RunError> {
        Tracee::interrupt(self)
    }
    fn detach(self) -> Result<(), RunError> {
        Tracee::detach(self)
    }
    fn trap_steps_are_safe(&self) -> bool {
        self.kernel_patched()
    }
    fn stop_lazily(&mut self) {
        self.set_lazy_stop();
    }
}

/// An error that ends the gdb session (the client is told, the machine is released).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// What goes wrong between the server and the machine, naming the file or address concerned.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("{}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Elf {
        path: PathBuf,
        #[source]
        source: goblin::error::Error,
    },
    #[error("{}: no symbol {name}", path.display())]
    NoSymbol { path: PathBuf, name: &'static str },
    #[error(transparent)]
    Dwarf(#[from] DwarfError),
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error(transparent)]
    Id(#[from] crate::uml::ids::IdError),
    #[error(transparent)]
    Instance(#[from] crate::uml::instance::InstanceError),
    /// Run control's own error (ptrace's, or a fake machine's in tests).
    #[error(transparent)]
    Run(BoxedError),
    #[error("no module tracking for this kernel")]
    NoTracking,
    #[error("removing the breakpoint at {addr:#x}: {source}")]
    RemoveBreakpoint {
        addr: u64,
        #[source]
        source: BoxedError,
    },
    #[error("detaching: {0}")]
    Detach(#[source] BoxedError),
    #[error("the machine did not stop within 10 s")]
    DidNotStop,
    #[error("gave up after {} s", .0.as_secs())]
    GaveUp(Duration),
    #[error("the machine exited")]
    Exited,
}

/// A `monitor skb` or `monitor load` that failed: the text goes to gdb's console.
#[derive(Debug, thiserror::Error)]
pub enum MonitorFailed {
    #[error("monitor skb: no sk_buff layout from {}: {source}", image.display())]
    SkbLayout {
        image: PathBuf,
        #[source]
        source: DwarfError,
    },
    #[error("monitor skb: no stopped thread; give an address")]
    NoThread,
    #[error("monitor skb: registers of thread {tid}: {source}")]
    Registers {
        tid: i32,
        #[source]
        source: BoxedError,
    },
    /// Every candidate (a register, or the address given) with why it is no sk_buff.
    #[error("monitor skb: no sk_buff found ({})", tried_text(.0))]
    NoSkb(Vec<(String, u64, SkbError)>),
    #[error("monitor load: this server does not know the machine's umid")]
    NoUmid,
    #[error("monitor load: {0}")]
    Resolve(#[source] crate::guest::load::LoadError),
    #[error("monitor load: {0}")]
    Load(#[source] crate::guest::load::LoadError),
    #[error("monitor load: {0}")]
    Machine(#[source] MachineError),
}

/// A run control's error, whichever run control it is.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Run control's error as a [`MachineError`].
fn run_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> MachineError {
    MachineError::Run(Box::new(e))
}

fn tried_text(tried: &[(String, u64, SkbError)]) -> String {
    tried
        .iter()
        .map(|(what, a, e)| format!("{what} = {a:#x}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a breakpoint of our own is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `do_init_module(struct module *)`: a module's sections are placed, its init is next.
    ModuleLoad,
    /// `free_module(struct module *)`: a module is about to go.
    ModuleFree,
}

/// Where the kernel keeps its module list, from the kernel image and its DWARF.
#[derive(Debug, Clone)]
pub struct ModuleTracking {
    /// Address of the `modules` list head.
    pub head: u64,
    pub offsets: ModuleOffsets,
    /// `do_init_module` and `free_module`.
    pub hooks: Vec<(u64, Hook)>,
}

impl ModuleTracking {
    /// Symbols from the image's symbol table, member offsets from its DWARF (cached).
    pub fn from_image(image: &Path, cache: &Path) -> Result<ModuleTracking, MachineError> {
        let io = |source| MachineError::Image {
            path: image.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(image).map_err(io)?;
        // SAFETY: a read-only private map of the kernel image; nobody truncates a cached build
        // while a machine runs it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let syms =
            symbols(&map, &["modules", "do_init_module", "free_module"]).map_err(|source| {
                MachineError::Elf {
                    path: image.to_path_buf(),
                    source,
                }
            })?;
        let need = |name: &'static str| {
            syms.get(name)
                .copied()
                .ok_or_else(|| MachineError::NoSymbol {
                    path: image.to_path_buf(),
                    name,
                })
        };
        let head = need("modules")?;
        let hooks = vec![
            (need("do_init_module")?, Hook::ModuleLoad),
            (need("free_module")?, Hook::ModuleFree),
        ];
        let store = crate::dwarf::LayoutStore::new(cache);
        let layout = |n: &str| store.layout(image, n).map(|l| l.layout);
        let offsets = ModuleOffsets::from_layouts(
            &layout("module")?,
            &layout("attribute_group")?,
            &layout("bin_attribute")?,
        )?;
        Ok(ModuleTracking {
            head,
            offsets,
            hooks,
        })
    }
}

/// Addresses of the named symbols in an ELF image (first definition of each).
pub fn symbols(image: &[u8], names: &[&str]) -> Result<HashMap<String, u64>, goblin::error::Error> {
    let elf = goblin::elf::Elf::parse(image)?;
    let mut out = HashMap::new();
    for s in elf.syms.iter() {
        if s.st_value == 0 || s.st_shndx == 0 {
            continue;
        }
        if let Some(n) = elf.strtab.get_at(s.st_name)
            && names.contains(&n)
            && !out.contains_key(n)
        {
            out.insert(n.to_owned(), s.st_value);
        }
    }
    Ok(out)
}

/// Everything about the machine that is not run control.
#[derive(Debug, Clone, Default)]
pub struct MachineInfo {
    /// The machine's umid, for `monitor load` (which runs commands on its console).
    pub umid: Option<String>,
    /// The kernel image the process runs.
    pub image: PathBuf,
    pub cache: PathBuf,
    /// Where module files are looked for: these directories, then `modules_dir`'s modules.dep.
    pub module_paths: Vec<PathBuf>,
    pub modules_dir: Option<PathBuf>,
    pub tracking: Option<ModuleTracking>,
    /// `/proc/<pid>/maps` text, for the host shared libraries.
    pub maps: String,
}

impl MachineInfo {
    /// Everything about machine `umid` that does not need ptrace: its live kernel process, the
    /// image it runs, the cached build's modules, where the module list sits in memory.
    /// Tracking problems (no DWARF layout, no symbol) are warnings: the server then lists no
    /// modules but still debugs.
    pub fn discover(
        umid: &str,
        uml_dir: &Path,
        cache: &Path,
        module_paths: &[PathBuf],
    ) -> Result<(crate::uml::instance::UmlInstance, MachineInfo, Vec<String>), MachineError> {
        let id = crate::uml::ids::Umid::new(umid)?;
        let inst = crate::uml::instance::UmlInstance::resolve(&id, uml_dir)?;
        let image = inst.exe_path()?;
        let mut warnings = Vec::new();
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let manifest = crate::kernel::manifest::find_by_image(cache, &image);
        if manifest.is_none() {
            warnings.push(format!(
                "{} is not a kernel in the cache {}: modules are found through --module-path only",
                image.display(),
                cache.display()
            ));
        }
        let tracking = match ModuleTracking::from_image(&image, cache) {
            Ok(t) => Some(t),
            Err(e) => {
                warnings.push(format!("modules cannot be listed as libraries: {e}"));
                None
            }
        };
        let pid = inst.pid.get();
        let info = MachineInfo {
            umid: Some(umid.to_owned()),
            image,
            cache: cache.to_path_buf(),
            module_paths: module_paths.iter().map(|p| canon(p)).collect(),
            modules_dir: manifest.map(|m| m.modules_dir),
            tracking,
            maps: std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default(),
        };
        Ok((inst, info, warnings))
    }

    /// The image under the name the kernel's GDB scripts expect: `vmlinux-gdb.py` finds the
    /// kernel among gdb's objfiles by a name ending in `vmlinux` (and `lx-symbols` reloads it
    /// from there), but UML's build calls it `linux`. Kernel builds leave `vmlinux` beside it
    /// (the same file); when it is missing a symbolic link is made, the build left as it is.
    /// Falls back to the image itself when neither works.
    pub fn vmlinux(&self) -> PathBuf {
        let image = &self.image;
        if image
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("vmlinux"))
        {
            return image.clone();
        }
        let Some(dir) = image.parent() else {
            return image.clone();
        };
        let v = dir.join("vmlinux");
        let same = |a: &Path, b: &Path| {
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(a), std::fs::metadata(b)) {
                (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
                _ => false,
            }
        };
        if same(&v, image) {
            return v;
        }
        if std::fs::symlink_metadata(&v).is_err()
            && let Some(name) = image.file_name()
            && std::os::unix::fs::symlink(name, &v).is_ok()
            && same(&v, image)
        {
            return v;
        }
        image.clone()
    }

    /// The guest's modules read from the live process's memory (no ptrace: `process_vm_readv`).
    pub fn modules_from_process(&self, pid: i32) -> Result<Vec<GuestModule>, MachineError> {
        use crate::net::skb::MemoryReader;
        let tr = self.tracking.as_ref().ok_or(MachineError::NoTracking)?;
        let mut pm = crate::guest::skb::ProcessMemory { pid };
        let mut mem = |a: u64, l: usize| pm.read(a, l).ok();
        Ok(libraries::walk_modules(
            &mut mem,
            &tr.offsets,
            tr.head,
            None,
        )?)
    }

    /// A module's host file and its allocated sections, by the server's search rules.
    pub fn module_file(&self, name: &str) -> Option<PathBuf> {
        let md = self
            .modules_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/nonexistent"));
        crate::guest::modules::find_module_file(name, &self.module_paths, &md)
    }
}

/// Where a thread can be after executing the one instruction in `bytes` at `pc`, when that is
/// knowable from the bytes alone: the next instruction, or the target of a relative jump or
/// call (both for a conditional jump). `None` for what only a real single step can follow
/// (`ret`, indirect jumps and calls, `syscall`, `int`, `iret`, `hlt`, `ud2`, undecodable).
pub fn step_targets(bytes: &[u8], pc: u64) -> Option<Vec<u64>> {
    // The length from run control's decoder (which also refuses VEX and invalid opcodes); the
    // control flow from the opcode.
    let insn = crate::ptrace::runctl::decode(bytes).ok()?;
    let b = insn.bytes();
    let next = pc.wrapping_add(b.len() as u64);
    let mut i = 0;
    while i < b.len()
        && matches!(
            b[i],
            0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65
        )
    {
        i += 1;
    }
    if i < b.len() && (0x40..=0x4f).contains(&b[i]) {
        i += 1;
    }
    let op = *b.get(i)?;
    let rel8 = || next.wrapping_add(b[b.len() - 1] as i8 as i64 as u64);
    let rel32 = || {
        let d = &b[b.len() - 4..];
        next.wrapping_add(i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64 as u64)
    };
    match op {
        0xeb => Some(vec![rel8()]),
        0xe9 if b.len() - i == 5 => Some(vec![rel32()]),
        0xe8 if b.len() - i == 5 => Some(vec![rel32()]),
        0x70..=0x7f => Some(vec![next, rel8()]),
        0x0f => match *b.get(i + 1)? {
            0x80..=0x8f if b.len() - i == 6 => Some(vec![next, rel32()]),
            0x05 | 0x07 | 0x0b | 0x34 | 0x35 | 0xb9 | 0xff => None,
            _ => Some(vec![next]),
        },
        // ret, far ret, int3, int, into, iret, hlt, loop/jrcxz, far call/jmp, 16-bit forms of
        // the relative ones.
        0xc2
        | 0xc3
        | 0xca
        | 0xcb
        | 0xcc
        | 0xcd
        | 0xce
        | 0xcf
        | 0xf4
        | 0xe0..=0xe3
        | 0x9a
        | 0xea
        | 0xe8
        | 0xe9 => None,
        // call/jmp through a register or memory.
        0xff if matches!((b.get(i + 1)? >> 3) & 7, 2..=5) => None,
        _ => Some(vec![next]),
    }
}

/// A single step done with temporary breakpoints instead of the trap flag, so that a tracer
/// killed mid-step leaves only journaled `int3`s, which the guard puts back.
#[derive(Debug, Clone)]
struct BreakpointStep {
    tid: i32,
    targets: Vec<u64>,
    /// The targets we inserted (the others were breakpoints already).
    temps: Vec<u64>,
    started: Instant,
    interrupted: bool,
}

/// A step that has not reached its next instruction in this long (the instruction faulted and
/// UML's fixup went elsewhere) is stopped where it is.
const STEP_LIMIT: Duration = Duration::from_secs(2);

/// What the machine is doing, as the target sees it. Only [`UmlTarget::transition`] changes
/// it; `Exited` is final.
#[derive(Debug, Clone)]
enum RunState {
    /// Stopped, and gdb knows it (or is being told).
    Stopped,
    /// Running freely (or one thread, for a trap-flag step) until a stop gdb must hear about.
    Running,
    /// One thread running to the temporary breakpoints of a step.
    Stepping(BreakpointStep),
    /// A stop that happened while starting to resume (a single step, a library change seen at
    /// the last stop): the machine counts as running until [`UmlTarget::poll`] reports it.
    Pending(StopReason),
    /// The machine is gone; `unreported` is its exit when a single step saw it and
    /// [`UmlTarget::poll`] has not told gdb yet.
    Exited { unreported: Option<StopReason> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    Continue,
    Step(i32),
}

/// The gdbstub target.
pub struct UmlTarget<R: RunControl> {
    rc: Option<R>,
    info: MachineInfo,
    /// gdb's breakpoints (inserted in the machine).
    user_bps: BTreeSet<u64>,
    /// Breakpoints gdb removed whose `int3` is still in the text, journaled and guarded as
    /// before: gdb takes its breakpoint out around every step over it and puts it back right
    /// after, so the removal is only bookkeeping until the machine runs freely again.
    kept: BTreeSet<u64>,
    /// A module was loaded or freed at a stop reported for gdb's own breakpoint on one of our
    /// hooks: the library-change stop is reported when gdb continues.
    library_pending: bool,
    /// Ours, by address.
    hooks: BTreeMap<u64, Hook>,
    /// The byte under every breakpoint we inserted, to show gdb the text as it is.
    originals: HashMap<u64, u8>,
    resume: Resume,
    state: RunState,
    /// Single steps done with the trap flag (instructions with no computable successor).
    pub trap_steps: u64,
    /// Single steps done with temporary breakpoints.
    pub breakpoint_steps: u64,
    libs: Vec<Library>,
    missing: Vec<String>,
    xml: Vec<u8>,
    /// The same list for LLDB (`qXfer:libraries-svr4`).
    svr4: Vec<u8>,
    file_sections: HashMap<PathBuf, Result<Vec<FileSection>, String>>,
    /// Section ranges of each module, to drop breakpoints in a module that goes.
    ranges: BTreeMap<String, Vec<(u64, u64)>>,
    last_tid: Option<i32>,
    skb: Option<crate::guest::skb::SkbReader>,
    /// Memory handed to the client with `_M` (LLDB's expression results), kept here and never
    /// in the machine: see [`UmlTarget::allocate`].
    client_memory: BTreeMap<u64, Vec<u8>>,
    /// Library-change stops reported, and internal hook hits that changed nothing.
    pub library_events: u64,
    pub warnings: Vec<String>,
}

fn tid_of(t: i32) -> Tid {
    Tid::new(t.max(1) as usize).expect("nonzero")
}

impl<R: RunControl> UmlTarget<R> {
    /// Take over an attached machine (stopped): insert the module hooks, read the module list.
    pub fn new(mut rc: R, info: MachineInfo) -> UmlTarget<R> {
        rc.stop_lazily();
        let mut t = UmlTarget {
            rc: Some(rc),
            info,
            user_bps: BTreeSet::new(),
            kept: BTreeSet::new(),
            library_pending: false,
            hooks: BTreeMap::new(),
            originals: HashMap::new(),
            resume: Resume::Continue,
            state: RunState::Stopped,
            trap_steps: 0,
            breakpoint_steps: 0,
            libs: Vec::new(),
            missing: Vec::new(),
            xml: Vec::new(),
            svr4: Vec::new(),
            file_sections: HashMap::new(),
            ranges: BTreeMap::new(),
            last_tid: None,
            skb: None,
            client_memory: BTreeMap::new(),
            library_events: 0,
            warnings: Vec::new(),
        };
        if let Some(tr) = t.info.tracking.clone() {
            for (addr, hook) in tr.hooks {
                match t.insert(addr) {
                    Ok(()) => {
                        t.hooks.insert(addr, hook);
                    }
                    Err(e) => t.warnings.push(format!("module hook at {addr:#x}: {e}")),
                }
            }
        }
        t.refresh_libraries(None);
        t
    }

    fn rc(&self) -> &R {
        self.rc.as_ref().expect("run control present until finish")
    }

    fn rc_mut(&mut self) -> &mut R {
        self.rc.as_mut().expect("run control present until finish")
    }

    pub fn is_running(&self) -> bool {
        matches!(
            self.state,
            RunState::Running
                | RunState::Stepping(_)
                | RunState::Pending(_)
                | RunState::Exited {
                    unreported: Some(_)
                }
        )
    }

    pub fn has_exited(&self) -> bool {
        matches!(self.state, RunState::Exited { .. })
    }

    /// The one place the run state changes. Nothing leaves `Exited`: a stop to report on an
    /// exited machine is kept for [`UmlTarget::poll`], a stop to forget is forgotten; leaving a
    /// breakpoint step takes its temporary breakpoints out.
    fn transition(&mut self, next: RunState) {
        if let RunState::Exited { unreported } = &mut self.state {
            match next {
                RunState::Pending(p) => *unreported = Some(p),
                RunState::Stopped => *unreported = None,
                _ => {}
            }
            return;
        }
        let prev = std::mem::replace(&mut self.state, next);
        if let RunState::Stepping(st) = prev
            && !matches!(self.state, RunState::Stepping(_))
        {
            for a in st.temps {
                if !self.inserted(a) {
                    let _ = self.remove(a);
                }
            }
        }
    }

    pub fn libraries(&self) -> &[Library] {
        &self.libs
    }

    pub fn library_xml(&self) -> &[u8] {
        &self.xml
    }

    pub fn user_breakpoints(&self) -> Vec<u64> {
        self.user_bps.iter().copied().collect()
    }

    /// `_M`: memory for the client's own use (LLDB asks for some to evaluate expressions, and
    /// otherwise makes the kernel's thread call the host's `mmap`, which kills the machine).
    /// It lives in the server, at addresses the process does not map; reads and writes there
    /// are served from it, and no thread may be sent there (register writes are refused), so
    /// LLDB evaluates expressions with its interpreter and never runs code in the machine.
    pub fn allocate(&mut self, size: u64) -> Option<u64> {
        if size == 0 || size > 1 << 20 || self.client_memory.len() >= 64 {
            return None;
        }
        let next = self
            .client_memory
            .iter()
            .next_back()
            .map(|(a, v)| (a + v.len() as u64).next_multiple_of(0x1000))
            .unwrap_or(CLIENT_MEMORY);
        let end = next + size;
        if end > CLIENT_MEMORY + CLIENT_MEMORY_SIZE {
            return None;
        }
        // The process must not map that range (it never has, on any machine seen).
        let maps =
            std::fs::read_to_string(format!("/proc/{}/maps", self.rc().pid())).unwrap_or_default();
        let taken = maps.lines().any(|l| {
            let Some((a, b)) = l.split_whitespace().next().and_then(|r| r.split_once('-')) else {
                return false;
            };
            let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
                return false;
            };
            a < CLIENT_MEMORY + CLIENT_MEMORY_SIZE && b > CLIENT_MEMORY
        });
        if taken {
            return None;
        }
        self.client_memory.insert(next, vec![0; size as usize]);
        Some(next)
    }

    /// `_m`: give back what `allocate` handed out.
    pub fn deallocate(&mut self, addr: u64) -> bool {
        self.client_memory.remove(&addr).is_some()
    }

    /// The client memory holding `[addr, addr + len)`, if one allocation does.
    fn client_block(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (&start, v) = self.client_memory.range_mut(..=addr).next_back()?;
        let off = (addr - start) as usize;
        (off.checked_add(len)? <= v.len()).then(|| &mut v[off..off + len])
    }

    /// The machine's kernel process id.
    pub fn pid(&self) -> i32 {
        self.rc().pid()
    }

    /// The thread ids gdb sees (never 0: see `tid_of`).
    pub fn thread_ids(&self) -> Vec<usize> {
        self.rc()
            .threads()
            .into_iter()
            .map(|t| tid_of(t).get())
            .collect()
    }

    /// The registers to expedite in the reply for `stop` (`NN:VALUE;` pairs), when it names a
    /// stopped thread.
    pub fn expedite(&self, stop: &StopReason) -> Option<String> {
        let tid = match stop {
            StopReason::SwBreak(t)
            | StopReason::HwBreak(t)
            | StopReason::Library(t)
            | StopReason::SignalWithThread { tid: t, .. } => *t,
            _ => return None,
        };
        let r = self.rc().regs(tid.get() as i32).ok()?;
        Some(super::registers::expedite(&r))
    }

    /// Whether an `int3` of ours (gdb's, a hook, or one gdb removed and we kept) is at `addr`.
    fn inserted(&self, addr: u64) -> bool {
        self.user_bps.contains(&addr) || self.hooks.contains_key(&addr) || self.kept.contains(&addr)
    }

    /// Take out for real the breakpoints gdb removed (before the machine runs freely, and
    /// before anything that rewrites or inspects the text).
    fn flush_kept(&mut self) -> Result<(), MachineError> {
        let mut first_err = None;
        for addr in std::mem::take(&mut self.kept) {
            if self.user_bps.contains(&addr) || self.hooks.contains_key(&addr) {
                continue;
            }
            if let Err(e) = self.remove(addr) {
                first_err.get_or_insert(MachineError::RemoveBreakpoint {
                    addr,
                    source: Box::new(e),
                });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Insert a breakpoint at an address that has none yet, remembering its byte.
    fn insert(&mut self, addr: u64) -> Result<(), R::Error> {
        let b = self.rc().read_mem(addr, 1)?;
        self.rc_mut().insert_breakpoint(addr)?;
        // A run control that answers a 1-byte read with nothing leaves no byte to remember.
        if let Some(&b) = b.first() {
            self.originals.insert(addr, b);
        }
        Ok(())
    }

    fn remove(&mut self, addr: u64) -> Result<(), R::Error> {
        self.originals.remove(&addr);
        self.rc_mut().remove_breakpoint(addr)
    }

    /// Re-read the module list (leaving out the `struct module` at `freeing`); true when gdb's
    /// library list changed.
    pub fn refresh_libraries(&mut self, freeing: Option<u64>) -> bool {
        let mut libs = Vec::new();
        let mut missing = Vec::new();
        let mut ranges = BTreeMap::new();
        if let Some(tr) = self.info.tracking.clone() {
            let rc = self.rc.as_ref().expect("run control");
            let originals = &self.originals;
            let mut mem = |a: u64, l: usize| {
                let mut v = rc.read_mem(a, l).ok()?;
                mask(&mut v, a, originals);
                Some(v)
            };
            match libraries::walk_modules(&mut mem, &tr.offsets, tr.head, freeing) {
                Ok(mods) => {
                    for m in mods {
                        match self.module_file(&m) {
                            Some((file, secs)) => {
                                let lib = libraries::module_library(
                                    &m,
                                    &file.display().to_string(),
                                    &secs,
                                );
                                if let Library::Module { sections, .. } = &lib {
                                    let r = sections
                                        .iter()
                                        .zip(&secs)
                                        .map(|(a, s)| (*a, s.size))
                                        .collect();
                                    ranges.insert(m.name.clone(), r);
                                }
                                libs.push(lib);
                            }
                            None => missing.push(m.name.clone()),
                        }
                    }
                }
                Err(e) => self.warnings.push(format!("module list: {e}")),
            }
        }
        let exe = self.info.image.display().to_string();
        libs.extend(libraries::shared_libraries(&self.info.maps, &exe));
        let xml = libraries::library_list_xml(&libs).into_bytes();
        self.svr4 = libraries::library_list_svr4_xml(&libs).into_bytes();
        // A module that went: its breakpoints go with it, before its memory is freed and reused.
        let gone: Vec<(u64, u64)> = self
            .ranges
            .iter()
            .filter(|(name, _)| !ranges.contains_key(*name))
            .flat_map(|(_, r)| r.iter().copied())
            .collect();
        let ours: Vec<u64> = self.user_bps.union(&self.kept).copied().collect();
        for addr in ours {
            if gone.iter().any(|&(a, n)| addr >= a && addr < a + n) {
                if !self.hooks.contains_key(&addr) {
                    let _ = self.remove(addr);
                }
                self.user_bps.remove(&addr);
                self.kept.remove(&addr);
            }
        }
        let changed = xml != self.xml;
        self.libs = libs;
        self.missing = missing;
        self.ranges = ranges;
        self.xml = xml;
        changed
    }

    fn module_file(&mut self, m: &GuestModule) -> Option<(PathBuf, Vec<FileSection>)> {
        let file = self.info.module_file(&m.name)?;
        let secs = self
            .file_sections
            .entry(file.clone())
            .or_insert_with(|| {
                let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                libraries::alloc_sections(&file.display().to_string(), &bytes)
                    .map_err(|e| e.to_string())
            })
            .clone();
        match secs {
            Ok(s) => Some((file, s)),
            Err(e) => {
                self.warnings.push(e);
                None
            }
        }
    }

    /// Start what the last resume packet asked for.
    fn start(&mut self) -> Result<(), MachineError> {
        self.transition(RunState::Running);
        match self.resume {
            Resume::Step(tid) => {
                if !self.rc().trap_steps_are_safe()
                    && self.start_breakpoint_step(tid).map_err(run_err)?
                {
                    return Ok(());
                }
                self.trap_steps += 1;
                let ev = self.rc_mut().single_step(tid).map_err(run_err)?;
                let stop = self.map_stop(ev);
                self.transition(RunState::Pending(match stop {
                    Some(s) => s,
                    None => StopReason::SignalWithThread {
                        tid: tid_of(tid),
                        signal: Signal::SIGTRAP,
                    },
                }));
                Ok(())
            }
            Resume::Continue => {
                if std::mem::take(&mut self.library_pending) {
                    // The library change seen at the last stop (gdb's breakpoint on a hook):
                    // report it now; gdb re-reads the list and continues again.
                    let tid = self.last_tid.unwrap_or_else(|| self.rc().pid());
                    self.library_events += 1;
                    self.transition(RunState::Pending(StopReason::Library(tid_of(tid))));
                    return Ok(());
                }
                self.flush_kept()?;
                self.rc_mut().resume().map_err(run_err)
            }
        }
    }

    /// Step `tid` by running it to temporary breakpoints on the instruction's successors, when
    /// they can be computed; false when a trap-flag step is needed.
    fn start_breakpoint_step(&mut self, tid: i32) -> Result<bool, R::Error> {
        let Ok(r) = self.rc().regs(tid) else {
            return Ok(false);
        };
        let Ok(bytes) = self.rc().read_mem(r.rip, 16) else {
            return Ok(false);
        };
        let Some(targets) = step_targets(&bytes, r.rip) else {
            return Ok(false);
        };
        let mut temps = Vec::new();
        for &t in &targets {
            if self.inserted(t) || temps.contains(&t) {
                continue;
            }
            if self.insert(t).is_err() {
                for a in temps {
                    let _ = self.remove(a);
                }
                return Ok(false);
            }
            temps.push(t);
        }
        self.breakpoint_steps += 1;
        self.transition(RunState::Stepping(BreakpointStep {
            tid,
            targets,
            temps,
            started: Instant::now(),
            interrupted: false,
        }));
        // Only this thread runs, as gdb asks for a step: the others stay stopped instead of
        // being resumed and interrupted again around every step.
        self.rc_mut().resume_thread(tid)?;
        Ok(true)
    }

    /// Take out a breakpoint step's temporary breakpoints (at any stop); the machine still
    /// counts as running until its stop is seen.
    fn end_step(&mut self) {
        if let RunState::Stepping(_) = self.state {
            self.transition(RunState::Running);
        }
    }

    /// Wait up to `timeout` for the machine to stop in a way gdb must hear about. Our own
    /// hooks are handled here: they resume the machine unless gdb's library list changed.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<StopReason>, Fatal> {
        if let RunState::Pending(p)
        | RunState::Exited {
            unreported: Some(p),
        } = &self.state
        {
            let p = *p;
            self.transition(RunState::Stopped);
            return Ok(Some(p));
        }
        if !self.is_running() {
            return Ok(None);
        }
        let end = Instant::now() + timeout;
        loop {
            let cut_short = match &mut self.state {
                RunState::Stepping(st) if !st.interrupted && st.started.elapsed() > STEP_LIMIT => {
                    st.interrupted = true;
                    true
                }
                _ => false,
            };
            if cut_short {
                self.rc_mut()
                    .interrupt()
                    .map_err(|e| Fatal(format!("stopping a long step: {e}")))?;
            }
            let left = end.saturating_duration_since(Instant::now());
            let ev = self
                .rc_mut()
                .wait(Some(left))
                .map_err(|e| Fatal(format!("waiting for the machine: {e}")))?;
            let Some(ev) = ev else { return Ok(None) };
            let step = match &self.state {
                RunState::Stepping(st) => Some(st.clone()),
                _ => None,
            };
            let stop = match &step {
                Some(st) => self.map_step_stop(st, ev),
                None => self.map_stop(ev),
            };
            if let Some(stop) = stop {
                // A stop of another thread (one run control had queued) while the stepping
                // thread runs alone: stop that one too before gdb looks.
                if let Some(st) = &step {
                    let same = matches!(ev, StopEvent::Breakpoint { tid, .. } | StopEvent::Stepped { tid } | StopEvent::Interrupted { tid } if tid == st.tid);
                    if !same && !matches!(ev, StopEvent::Exited { .. }) {
                        self.stop_machine().map_err(|e| Fatal(e.to_string()))?;
                    }
                }
                self.transition(RunState::Stopped);
                return Ok(Some(stop));
            }
            self.rc_mut()
                .resume()
                .map_err(|e| Fatal(format!("resuming after a module event: {e}")))?;
            if Instant::now() >= end {
                return Ok(None);
            }
        }
    }

    /// A stop during a breakpoint step: reaching a successor completes the step.
    fn map_step_stop(&mut self, st: &BreakpointStep, ev: StopEvent) -> Option<StopReason> {
        match ev {
            StopEvent::Breakpoint { tid, addr } if tid == st.tid && st.targets.contains(&addr) => {
                self.last_tid = Some(tid);
                if self.user_bps.contains(&addr) {
                    Some(StopReason::SwBreak(tid_of(tid)))
                } else {
                    Some(StopReason::SignalWithThread {
                        tid: tid_of(tid),
                        signal: Signal::SIGTRAP,
                    })
                }
            }
            // Another thread on a temporary breakpoint: not a stop for gdb.
            StopEvent::Breakpoint { addr, .. }
                if st.temps.contains(&addr) && !self.user_bps.contains(&addr) =>
            {
                None
            }
            // The step was cut short after STEP_LIMIT: it ends where the thread is.
            StopEvent::Interrupted { tid } if st.interrupted => {
                self.last_tid = Some(tid);
                Some(StopReason::SignalWithThread {
                    tid: tid_of(st.tid),
                    signal: Signal::SIGTRAP,
                })
            }
            other => self.map_stop(other),
        }
    }

    /// A stop as gdb should see it; `None` for one of ours that needs no report.
    fn map_stop(&mut self, ev: StopEvent) -> Option<StopReason> {
        match ev {
            StopEvent::Breakpoint { tid, addr } => {
                self.last_tid = Some(tid);
                if let Some(&hook) = self.hooks.get(&addr) {
                    let freeing = match hook {
                        Hook::ModuleFree => self.rc().regs(tid).ok().map(|r| r.rdi),
                        Hook::ModuleLoad => None,
                    };
                    let changed = self.refresh_libraries(freeing);
                    if self.user_bps.contains(&addr) {
                        // Both are served: gdb's breakpoint now, the library change when gdb
                        // continues.
                        self.library_pending |= changed;
                        return Some(StopReason::SwBreak(tid_of(tid)));
                    }
                    if changed {
                        self.library_events += 1;
                        return Some(StopReason::Library(tid_of(tid)));
                    }
                    return None;
                }
                if self.user_bps.contains(&addr) {
                    Some(StopReason::SwBreak(tid_of(tid)))
                } else {
                    Some(StopReason::SignalWithThread {
                        tid: tid_of(tid),
                        signal: Signal::SIGTRAP,
                    })
                }
            }
            StopEvent::Stepped { tid } => {
                self.last_tid = Some(tid);
                Some(StopReason::SignalWithThread {
                    tid: tid_of(tid),
                    signal: Signal::SIGTRAP,
                })
            }
            StopEvent::Interrupted { tid } => {
                // Every thread stopped; show the kernel's own (the main thread runs the
                // kernel, the others are UML's host helpers blocked in libc).
                let pid = self.rc().pid();
                let tid = if self.rc().threads().contains(&pid) {
                    pid
                } else {
                    tid
                };
                self.last_tid = Some(tid);
                Some(StopReason::SignalWithThread {
                    tid: tid_of(tid),
                    signal: Signal::SIGINT,
                })
            }
            StopEvent::Exited { code, signal } => {
                self.transition(RunState::Exited { unreported: None });
                Some(match (code, signal) {
                    (_, Some(s)) => StopReason::Terminated(Signal(s as u8)),
                    (c, None) => StopReason::Exited(c.unwrap_or(0) as u8),
                })
            }
        }
    }

    /// Ctrl-C from gdb: stop the machine; the stop comes through [`poll`](Self::poll).
    pub fn interrupt(&mut self) -> Result<(), Fatal> {
        if !matches!(self.state, RunState::Running | RunState::Stepping(_)) {
            return Ok(());
        }
        self.rc_mut()
            .interrupt()
            .map_err(|e| Fatal(format!("interrupting the machine: {e}")))
    }

    /// Stop the machine if it runs (its stop is not reported to anybody).
    fn stop_quietly(&mut self) -> Result<(), MachineError> {
        match self.state {
            RunState::Pending(_) => self.transition(RunState::Running),
            RunState::Exited { .. } => self.transition(RunState::Stopped),
            _ => {}
        }
        let r = self.stop_machine();
        self.end_step();
        r
    }

    fn stop_machine(&mut self) -> Result<(), MachineError> {
        if !self.is_running() || self.has_exited() {
            return Ok(());
        }
        self.rc_mut().interrupt().map_err(run_err)?;
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            match self
                .rc_mut()
                .wait(Some(Duration::from_millis(500)))
                .map_err(run_err)?
            {
                Some(StopEvent::Exited { .. }) => {
                    self.transition(RunState::Exited { unreported: None });
                    break;
                }
                Some(_) => {
                    self.transition(RunState::Stopped);
                    return Ok(());
                }
                None => {}
            }
        }
        self.transition(RunState::Stopped);
        if self.has_exited() {
            Ok(())
        } else {
            Err(MachineError::DidNotStop)
        }
    }

    /// End the session: stop the machine, take every breakpoint out, detach. The machine runs
    /// on. Returns how many of gdb's breakpoints were removed (our hooks are not counted).
    pub fn finish(mut self) -> Result<usize, MachineError> {
        if self.has_exited() {
            return Ok(0);
        }
        // A machine that would not stop still has its breakpoints taken out: returning here
        // would leave int3s in its text with no tracer to handle them.
        let stopped = self.stop_quietly();
        // Each address once: gdb may have a breakpoint where one of our hooks is.
        let addrs: BTreeSet<u64> = self
            .user_bps
            .iter()
            .chain(self.kept.iter())
            .chain(self.hooks.keys())
            .copied()
            .collect();
        let mut n = 0;
        let mut first_err = None;
        for addr in addrs {
            match self.remove(addr) {
                Ok(()) => n += usize::from(self.user_bps.contains(&addr)),
                Err(e) => {
                    first_err.get_or_insert(MachineError::RemoveBreakpoint {
                        addr,
                        source: Box::new(e),
                    });
                }
            }
        }
        self.user_bps.clear();
        self.kept.clear();
        self.hooks.clear();
        let rc = self.rc.take().expect("run control");
        rc.detach().map_err(|e| MachineError::Detach(Box::new(e)))?;
        stopped?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Run the machine until `done` yields, handling module hooks; used by `monitor load`.
    /// Breakpoints of gdb's stay out meanwhile. `tick` is called about once a second.
    fn run_while<T>(
        &mut self,
        mut done: impl FnMut() -> Option<T>,
        mut tick: impl FnMut(Duration),
        limit: Duration,
    ) -> Result<T, MachineError> {
        self.flush_kept()?;
        let user: Vec<u64> = self.user_bps.iter().copied().collect();
        for a in &user {
            if !self.hooks.contains_key(a) {
                self.remove(*a).map_err(run_err)?;
            }
        }
        self.user_bps.clear();
        let started = Instant::now();
        let mut last_tick = Instant::now();
        self.rc_mut().resume().map_err(run_err)?;
        self.transition(RunState::Running);
        let result = loop {
            if let Some(v) = done() {
                break Ok(v);
            }
            if started.elapsed() > limit {
                break Err(MachineError::GaveUp(limit));
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                tick(started.elapsed());
                last_tick = Instant::now();
            }
            match self
                .rc_mut()
                .wait(Some(Duration::from_millis(50)))
                .map_err(run_err)?
            {
                None => {}
                Some(StopEvent::Exited { .. }) => {
                    self.transition(RunState::Exited { unreported: None });
                    return Err(MachineError::Exited);
                }
                Some(StopEvent::Breakpoint { tid, addr }) if self.hooks.contains_key(&addr) => {
                    let freeing = match self.hooks[&addr] {
                        Hook::ModuleFree => self.rc().regs(tid).ok().map(|r| r.rdi),
                        Hook::ModuleLoad => None,
                    };
                    self.refresh_libraries(freeing);
                    self.rc_mut().resume().map_err(run_err)?;
                }
                Some(_) => self.rc_mut().resume().map_err(run_err)?,
            }
        };
        self.stop_quietly()?;
        for a in user {
            if self.hooks.contains_key(&a) || self.insert(a).is_ok() {
                self.user_bps.insert(a);
            }
        }
        result
    }

    /// Run a `monitor` command; `out` prints a line on gdb's console at once. False when the
    /// command failed (the client then gets an error reply: a gdb script stops, MI says
    /// `^error`).
    pub fn monitor(&mut self, cmd: &[u8], out: &mut dyn FnMut(&str)) -> bool {
        let c = match monitor::parse(cmd) {
            Ok(c) => c,
            Err(e) => {
                out(&e.to_string());
                return false;
            }
        };
        match c {
            Command::Help => {
                out(monitor::HELP.trim_end());
                true
            }
            Command::Lsmod => {
                out(monitor::render_lsmod(&self.libs, &self.missing).trim_end());
                for w in self.warnings.iter().rev().take(3) {
                    out(&format!("note: {w}"));
                }
                true
            }
            Command::Skb(addr) => {
                let r = self.skb_text(addr);
                let ok = r.is_ok();
                out(r.unwrap_or_else(|e| e.to_string()).trim_end());
                ok
            }
            Command::Load(file) => {
                let r = self.load_module(&file, out);
                let ok = r.is_ok();
                out(r.unwrap_or_else(|e| e.to_string()).trim_end());
                ok
            }
        }
    }

    fn skb_text(&mut self, addr: Option<u64>) -> Result<String, MonitorFailed> {
        let reader = match self.skb.take() {
            Some(r) => r,
            None => {
                let pid = self.rc().pid();
                crate::guest::skb::SkbReader::new(&self.info.image, &self.info.cache, pid).map_err(
                    |source| MonitorFailed::SkbLayout {
                        image: self.info.image.clone(),
                        source,
                    },
                )?
            }
        };
        let candidates = self.skb_candidates(addr);
        let reader = self.skb.insert(reader);
        let mut tried = Vec::new();
        for (what, a) in candidates? {
            match reader.read(a) {
                Ok(d) if addr.is_some() => return Ok(d.text),
                Ok(d) => return Ok(format!("struct sk_buff * in {what} = {a:#x}\n{}", d.text)),
                Err(e) => tried.push((what, a, e)),
            }
        }
        Err(MonitorFailed::NoSkb(tried))
    }

    /// Where `monitor skb` looks: the address given, or the stopped thread's first three
    /// argument registers.
    fn skb_candidates(&self, addr: Option<u64>) -> Result<Vec<(String, u64)>, MonitorFailed> {
        if let Some(a) = addr {
            return Ok(vec![(format!("{a:#x}"), a)]);
        }
        let Some(tid) = self
            .last_tid
            .or_else(|| self.rc().threads().first().copied())
        else {
            return Err(MonitorFailed::NoThread);
        };
        match self.rc().regs(tid) {
            Ok(r) => Ok(crate::guest::skb::skb_candidates(
                &crate::guest::skb::arg_values(&r),
                None,
            )
            .into_iter()
            .map(|(reg, v)| (reg.to_owned(), v))
            .collect()),
            Err(e) => Err(MonitorFailed::Registers {
                tid,
                source: Box::new(e),
            }),
        }
    }

    fn load_module(
        &mut self,
        arg: &str,
        out: &mut dyn FnMut(&str),
    ) -> Result<String, MonitorFailed> {
        let Some(umid) = self.info.umid.clone() else {
            return Err(MonitorFailed::NoUmid);
        };
        let md = self.info.modules_dir.clone();
        let resolved = crate::guest::load::resolve(arg, &self.info.module_paths, md.as_deref())
            .map_err(MonitorFailed::Resolve)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let cache = self.info.cache.clone();
        let r2 = resolved.clone();
        std::thread::spawn(move || {
            let _ = tx.send(crate::guest::load::load_in_guest(&umid, &r2, &cache, None));
        });
        out(&format!(
            "loading {} in the guest (the machine runs meanwhile)...",
            resolved.file.display()
        ));
        let run = self.run_while(
            || rx.try_recv().ok(),
            |t| out(&format!("  ... {} s", t.as_secs())),
            Duration::from_secs(120),
        );
        match run {
            Ok(Ok(_)) => {
                self.refresh_libraries(None);
                let text = self
                    .libs
                    .iter()
                    .find_map(|l| match l {
                        Library::Module { name, text, .. }
                            if crate::guest::modules::same_module_name(name, &resolved.name) =>
                        {
                            Some(text.map_or("-".to_owned(), |t| format!("{t:#x}")))
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| "(not in the module list)".into());
                Ok(format!(
                    "{}: loaded, .text {text}. gdb learns of it with `sharedlibrary` (symbols) and \
                     `flushregs` (the machine ran meanwhile).",
                    resolved.name
                ))
            }
            Ok(Err(e)) => Err(MonitorFailed::Load(e)),
            Err(e) => Err(MonitorFailed::Machine(e)),
        }
    }
}

/// Where client memory (`_M`) is placed: above everything a UML process maps (the kernel at
/// 0x60000000, host libraries and stacks below 0x800000000000, typically at 0x7f...).
const CLIENT_MEMORY: u64 = 0x0000_5000_0000_0000;
const CLIENT_MEMORY_SIZE: u64 = 1 << 30;

fn in_client_memory(addr: u64) -> bool {
    (CLIENT_MEMORY..CLIENT_MEMORY + CLIENT_MEMORY_SIZE).contains(&addr)
}

/// Put back the bytes our breakpoints cover in a memory read at `addr`.
fn mask(buf: &mut [u8], addr: u64, originals: &HashMap<u64, u8>) {
    if originals.is_empty() {
        return;
    }
    let end = addr.saturating_add(buf.len() as u64);
    for (&a, &b) in originals {
        if a >= addr && a < end {
            buf[(a - addr) as usize] = b;
        }
    }
}

fn to_gdb(r: &libc::user_regs_struct, regs: &mut X86_64CoreRegs) {
    regs.regs = [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ];
    regs.rip = r.rip;
    regs.eflags = r.eflags as u32;
    regs.segments.cs = r.cs as u32;
    regs.segments.ss = r.ss as u32;
    regs.segments.ds = r.ds as u32;
    regs.segments.es = r.es as u32;
    regs.segments.fs = r.fs as u32;
    regs.segments.gs = r.gs as u32;
}

fn from_gdb(regs: &X86_64CoreRegs, r: &mut libc::user_regs_struct) {
    let g = &regs.regs;
    (r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp) =
        (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
    (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15) =
        (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
    r.rip = regs.rip;
    r.eflags = u64::from(regs.eflags);
}

/// The target description (see [`super::registers::target_xml`]), built once.
static TARGET_XML: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(super::registers::target_xml);

impl<R: RunControl> Target for UmlTarget<R> {
    type Arch = gdbstub_arch::x86::X86_64_SSE;
    type Error = Fatal;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_libraries(&mut self) -> Option<LibrariesOps<'_, Self>> {
        Some(self)
    }

    fn support_libraries_svr4(&mut self) -> Option<LibrariesSvr4Ops<'_, Self>> {
        Some(self)
    }

    fn support_lldb_register_info_override(
        &mut self,
    ) -> Option<LldbRegisterInfoOverrideOps<'_, Self>> {
        Some(self)
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }

    // The session layer puts a restarted gdbstub (after a malformed packet) back in no-ack
    // mode when the client had asked for it.
    fn use_no_ack_mode(&self) -> bool {
        true
    }
}

impl<R: RunControl> MultiThreadBase for UmlTarget<R> {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs, tid: Tid) -> TargetResult<(), Self> {
        let r = self
            .rc()
            .regs(tid.get() as i32)
            .map_err(|_| TargetError::Errno(3))?;
        to_gdb(&r, regs);
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs, tid: Tid) -> TargetResult<(), Self> {
        if in_client_memory(regs.rip) {
            // A client about to run code it wrote into its `_M` memory (an LLDB expression
            // JIT): that memory is not in the machine.
            return Err(TargetError::Errno(1));
        }
        let t = tid.get() as i32;
        let mut r = self.rc().regs(t).map_err(|_| TargetError::Errno(3))?;
        from_gdb(regs, &mut r);
        self.rc()
            .set_regs(t, &r)
            .map_err(|_| TargetError::Errno(14))
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], _tid: Tid) -> TargetResult<usize, Self> {
        if in_client_memory(start) {
            let n = data.len();
            let b = self.client_block(start, n).ok_or(TargetError::Errno(14))?;
            data.copy_from_slice(b);
            return Ok(n);
        }
        let n = match self.rc().read_mem(start, data.len()) {
            Ok(v) => {
                let n = v.len().min(data.len());
                data[..n].copy_from_slice(&v[..n]);
                n
            }
            // Part of the range may be readable: page by page up to the first hole.
            Err(_) => {
                let mut done = 0usize;
                while done < data.len() {
                    let at = start.wrapping_add(done as u64);
                    let chunk = ((0x1000 - (at & 0xfff)) as usize).min(data.len() - done);
                    match self.rc().read_mem(at, chunk) {
                        Ok(v) if v.len() == chunk => {
                            data[done..done + chunk].copy_from_slice(&v);
                            done += chunk;
                        }
                        _ => break,
                    }
                }
                if done == 0 {
                    return Err(TargetError::Errno(14));
                }
                done
            }
        };
        mask(&mut data[..n], start, &self.originals);
        Ok(n)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        if in_client_memory(start) {
            let b = self
                .client_block(start, data.len())
                .ok_or(TargetError::Errno(14))?;
            b.copy_from_slice(data);
            return Ok(());
        }
        self.flush_kept().map_err(|_| TargetError::Errno(14))?;
        let end = start.saturating_add(data.len() as u64);
        let covered: Vec<u64> = self
            .originals
            .keys()
            .copied()
            .filter(|&a| a >= start && a < end)
            .collect();
        for a in &covered {
            self.remove(*a).map_err(|_| TargetError::Errno(14))?;
        }
        let res = self
            .rc_mut()
            .write_mem(start, data)
            .map_err(|_| TargetError::Errno(14));
        for a in covered {
            if self.insert(a).is_err() {
                self.user_bps.remove(&a);
                self.hooks.remove(&a);
            }
        }
        res
    }

    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> Result<(), Fatal> {
        for t in self.rc().threads() {
            thread_is_active(tid_of(t));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<R: RunControl> MultiThreadResume for UmlTarget<R> {
    fn resume(&mut self) -> Result<(), Fatal> {
        if self.has_exited() {
            return Err(Fatal("the machine has exited".into()));
        }
        self.start()
            .map_err(|e| Fatal(format!("resuming the machine: {e}")))
    }

    fn clear_resume_actions(&mut self) -> Result<(), Fatal> {
        self.resume = Resume::Continue;
        Ok(())
    }

    // gdb passes back signals it stopped for (SIGINT, SIGTRAP); UML's own never reach gdb, so
    // there is nothing to deliver.
    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Fatal> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

// gdb steps over one of its breakpoints with only that thread running (`vCont;s:TID` and no
// action for the others), which gdbstub calls scheduler locking. A step runs one thread here
// anyway; a continue always runs every thread (all-stop), documented as such.
impl<R: RunControl> MultiThreadSchedulerLocking for UmlTarget<R> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Fatal> {
        Ok(())
    }
}

impl<R: RunControl> MultiThreadSingleStep for UmlTarget<R> {
    fn set_resume_action_step(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<(), Fatal> {
        self.resume = Resume::Step(tid.get() as i32);
        Ok(())
    }
}

impl<R: RunControl> Breakpoints for UmlTarget<R> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl<R: RunControl> SwBreakpoint for UmlTarget<R> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.kept.remove(&addr) {
            // Still in the text since gdb removed it: bookkeeping only.
            self.user_bps.insert(addr);
            return Ok(true);
        }
        if !self.inserted(addr) {
            self.insert(addr).map_err(|_| TargetError::Errno(14))?;
        }
        self.user_bps.insert(addr);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if !self.user_bps.remove(&addr) {
            // Already gone with its module, or never ours: nothing to undo.
            return Ok(true);
        }
        if !self.hooks.contains_key(&addr) {
            // The int3 stays until the machine runs freely (see `kept`).
            self.kept.insert(addr);
        }
        Ok(true)
    }
}

impl<R: RunControl> TargetDescriptionXmlOverride for UmlTarget<R> {
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        if annex != b"target.xml" {
            return Err(TargetError::NonFatal);
        }
        Ok(libraries::xfer_slice(
            TARGET_XML.as_bytes(),
            offset,
            length,
            buf,
        ))
    }
}

impl<R: RunControl> LibrariesSvr4 for UmlTarget<R> {
    fn get_libraries_svr4(
        &self,
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        Ok(libraries::xfer_slice(&self.svr4, offset, length, buf))
    }
}

impl<R: RunControl> LldbRegisterInfoOverride for UmlTarget<R> {
    fn lldb_register_info<'a>(
        &mut self,
        reg_id: usize,
        reg_info: lldb_register_info_override::Callback<'a>,
    ) -> Result<lldb_register_info_override::CallbackToken<'a>, Self::Error> {
        Ok(match super::registers::lldb_register(reg_id) {
            Some(r) => reg_info.write(r),
            None => reg_info.done(),
        })
    }
}

impl<R: RunControl> Libraries for UmlTarget<R> {
    fn get_libraries(
        &self,
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        Ok(libraries::xfer_slice(&self.xml, offset, length, buf))
    }
}

pub mod fake {
    //! A machine in memory for tests and the fuzzer: sparse memory, registers per thread,
    //! breakpoints that write `int3`, and a script of stops that `resume` plays. Clones share
    //! one state, so a test keeps a handle after the session took the machine.

    use std::collections::{BTreeMap, HashMap, VecDeque};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    use super::RunControl;
    use crate::ptrace::runctl::StopEvent;

    #[derive(Debug, thiserror::Error)]
    #[error("fake machine: {0}")]
    pub struct FakeError(pub String);

    #[derive(Debug, Default)]
    pub struct FakeState {
        pub pid: i32,
        pub threads: Vec<i32>,
        pub mem: BTreeMap<u64, u8>,
        pub regs: HashMap<i32, libc::user_regs_struct>,
        /// Inserted breakpoints and the bytes they replaced.
        pub breakpoints: BTreeMap<u64, u8>,
        /// Stops played one per `resume`; with none left, `wait` times out until `interrupt`.
        pub script: VecDeque<StopEvent>,
        pub running: bool,
        pub next: Option<StopEvent>,
        pub resumes: usize,
        pub steps: usize,
        pub detached: bool,
        /// Answer `trap_steps_are_safe` with this (a patched kernel).
        pub trap_steps_safe: bool,
    }

    #[derive(Debug, Clone, Default)]
    pub struct FakeMachine(Arc<Mutex<FakeState>>);

    pub fn zero_regs() -> libc::user_regs_struct {
        // SAFETY: user_regs_struct is plain integers; all zeros is a valid value.
        unsafe { std::mem::zeroed() }
    }

    impl FakeMachine {
        pub fn new(pid: i32) -> FakeMachine {
            let m = FakeMachine::default();
            {
                let mut s = m.state();
                s.pid = pid;
                s.threads = vec![pid];
                s.regs.insert(pid, zero_regs());
            }
            m
        }

        pub fn state(&self) -> MutexGuard<'_, FakeState> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub fn put(&self, addr: u64, bytes: &[u8]) {
            let mut s = self.state();
            for (i, b) in bytes.iter().enumerate() {
                s.mem.insert(addr + i as u64, *b);
            }
        }
    }

    fn read(s: &FakeState, addr: u64, len: usize) -> Result<Vec<u8>, FakeError> {
        if len > 1 << 20 {
            return Err(FakeError("read too large".into()));
        }
        (0..len as u64)
            .map(|i| addr.checked_add(i).and_then(|a| s.mem.get(&a).copied()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| FakeError(format!("unmapped {addr:#x}")))
    }

    impl RunControl for FakeMachine {
        type Error = FakeError;

        fn pid(&self) -> i32 {
            self.state().pid
        }
        fn threads(&self) -> Vec<i32> {
            self.state().threads.clone()
        }
        fn read_mem(&self, addr: u64, len: usize) -> Result<Vec<u8>, FakeError> {
            read(&self.state(), addr, len)
        }
        fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), FakeError> {
            read(&self.state(), addr, data.len())?;
            self.put(addr, data);
            Ok(())
        }
        fn regs(&self, tid: i32) -> Result<libc::user_regs_struct, FakeError> {
            self.state()
                .regs
                .get(&tid)
                .copied()
                .ok_or_else(|| FakeError(format!("no thread {tid}")))
        }
        fn set_regs(&self, tid: i32, r: &libc::user_regs_struct) -> Result<(), FakeError> {
            let mut s = self.state();
            match s.regs.get_mut(&tid) {
                Some(x) => {
                    *x = *r;
                    Ok(())
                }
                None => Err(FakeError(format!("no thread {tid}"))),
            }
        }
        fn insert_breakpoint(&mut self, addr: u64) -> Result<(), FakeError> {
            let mut s = self.state();
            if s.breakpoints.contains_key(&addr) {
                return Err(FakeError(format!("breakpoint at {addr:#x} twice")));
            }
            let b = read(&s, addr, 1)?[0];
            s.breakpoints.insert(addr, b);
            s.mem.insert(addr, 0xcc);
            Ok(())
        }
        fn remove_breakpoint(&mut self, addr: u64) -> Result<(), FakeError> {
            let mut s = self.state();
            let b = s
                .breakpoints
                .remove(&addr)
                .ok_or_else(|| FakeError(format!("no breakpoint at {addr:#x}")))?;
            s.mem.insert(addr, b);
            Ok(())
        }
        fn resume(&mut self) -> Result<(), FakeError> {
            let mut s = self.state();
            if s.running {
                return Err(FakeError("resume while running".into()));
            }
            s.running = true;
            s.resumes += 1;
            s.next = s.script.pop_front();
            Ok(())
        }
        fn resume_thread(&mut self, tid: i32) -> Result<(), FakeError> {
            self.regs(tid)?;
            self.resume()
        }
        fn single_step(&mut self, tid: i32) -> Result<StopEvent, FakeError> {
            self.regs(tid)?;
            self.state().steps += 1;
            Ok(StopEvent::Stepped { tid })
        }
        fn wait(&mut self, _timeout: Option<Duration>) -> Result<Option<StopEvent>, FakeError> {
            let mut s = self.state();
            if !s.running {
                return Err(FakeError("wait while stopped".into()));
            }
            let ev = s.next.take();
            if ev.is_some() {
                s.running = false;
            }
            Ok(ev)
        }
        fn interrupt(&mut self) -> Result<(), FakeError> {
            let mut s = self.state();
            if s.running && s.next.is_none() {
                s.next = Some(StopEvent::Interrupted { tid: s.pid });
            }
            Ok(())
        }
        fn detach(self) -> Result<(), FakeError> {
            let mut s = self.state();
            if s.running {
                return Err(FakeError("detach while running".into()));
            }
            s.detached = true;
            Ok(())
        }
        fn trap_steps_are_safe(&self) -> bool {
            self.state().trap_steps_safe
        }
    }
}

#[cfg(test)]
mod tests {
    use super::step_targets;

    const PC: u64 = 0x6000_1000;

    #[test]
    fn straight_line_instructions_go_to_the_next_one() {
        // mov 0x10(%rsi),%rax
        assert_eq!(
            step_targets(&[0x48, 0x8b, 0x46, 0x10, 0xcc], PC),
            Some(vec![PC + 4])
        );
        // push %rbp
        assert_eq!(step_targets(&[0x55, 0x90], PC), Some(vec![PC + 1]));
        // mov 0x100(%rip),%rax
        assert_eq!(
            step_targets(&[0x48, 0x8b, 0x05, 0, 1, 0, 0], PC),
            Some(vec![PC + 7])
        );
    }

    #[test]
    fn relative_branches_go_to_their_targets() {
        assert_eq!(step_targets(&[0xeb, 0x10], PC), Some(vec![PC + 2 + 0x10]));
        assert_eq!(step_targets(&[0xeb, 0xfe], PC), Some(vec![PC]));
        assert_eq!(
            step_targets(&[0xe8, 0, 1, 0, 0], PC),
            Some(vec![PC + 5 + 0x100])
        );
        assert_eq!(
            step_targets(&[0xe9, 0xfb, 0xff, 0xff, 0xff], PC),
            Some(vec![PC])
        );
        assert_eq!(step_targets(&[0x74, 0x05], PC), Some(vec![PC + 2, PC + 7]));
        assert_eq!(
            step_targets(&[0x0f, 0x85, 0x10, 0, 0, 0], PC),
            Some(vec![PC + 6, PC + 0x16])
        );
    }

    #[test]
    fn what_only_the_trap_flag_can_follow_is_refused() {
        assert_eq!(step_targets(&[0xc3], PC), None);
        assert_eq!(step_targets(&[0xff, 0xd0], PC), None); // call *%rax
        assert_eq!(step_targets(&[0xff, 0xe0], PC), None); // jmp *%rax
        assert_eq!(step_targets(&[0x41, 0xff, 0xe3], PC), None); // jmp *%r11
        assert_eq!(step_targets(&[0x0f, 0x05], PC), None); // syscall
        assert_eq!(step_targets(&[0x0f, 0x0b], PC), None); // ud2
        assert_eq!(step_targets(&[0xe2, 0xfe], PC), None); // loop
        assert_eq!(step_targets(&[0xc5, 0xf8, 0x77], PC), None); // VEX
        // inc (%rax) is FF /0: straight line.
        assert_eq!(step_targets(&[0xff, 0x00], PC), Some(vec![PC + 2]));
    }
}
