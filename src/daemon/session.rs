//! The debug session: one task owns gdb and the state of the machine (running, stopped, gone)
//! and answers requests in order.
//!
//! Internal breakpoints on the kernel's module loader (`do_init_module`) and unloader
//! (`free_module`) keep gdb's symbol tables in step with the guest: a module loaded by any means
//! gets its symbols before its init function runs, and loses them when it goes. Those stops are
//! handled here and resumed at once; the user never sees them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

pub use super::error::SessionError;
use super::protocol::{Event, FrameInfo, Request, Response, StopInfo};
use super::text::TextGuard;
use crate::gdbmi::{
    AsyncEvent, BreakOptions, Command, Gdb, GdbConfig, GdbError, StopEvent, StopReason,
};
use crate::guest::modules::{self, GuestModule, Source};
use crate::guest::shell::GuestShell;

/// When set, the session writes gdb's GDB/MI transcript to this file (see
/// [`crate::gdbmi::replay`]; the tests' fixtures in `fixtures/gdbmi/session/` come from it).
pub const RECORD_ENV: &str = "UMLDBG_GDBMI_RECORD";

/// UML's own signals: gdb must pass them to the kernel without stopping or printing.
pub const UML_SIGNALS: &[&str] = &[
    "SIGSEGV",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
    "SIGVTALRM",
    "SIGIO",
    "SIGCHLD",
    "SIGWINCH",
    "SIGPROF",
    "SIGPIPE",
];

/// Everything a session is started with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub umid: String,
    pub pid: i32,
    pub gdb_path: PathBuf,
    /// The kernel image the process runs (`/proc/<pid>/exe`, resolved).
    pub image: PathBuf,
    /// The installed modules of the cached kernel, when it is the one running.
    pub modules_dir: Option<PathBuf>,
    pub module_paths: Vec<PathBuf>,
    /// Where shell commands run on the guest: its lab's console or a shell on a pty; None when
    /// there is none (module addresses then come from kernel memory).
    pub console: Option<super::GuestConsole>,
    /// Said in the attach summary (how the console was chosen, why there is none).
    pub notes: Vec<String>,
    pub stopped: bool,
    pub cache: PathBuf,
    pub journal: PathBuf,
}

/// What the machine is doing, as far as the session knows. Only [`Session::transition`]
/// changes it; `Gone` is final.
#[derive(Debug)]
enum RunState {
    Running,
    /// Running a `step`, `next` or `finish` whose client waits for its stop; the session serves
    /// other requests meanwhile.
    Stepping(Step),
    Stopped(StopInfo),
    Gone(String),
}

impl RunState {
    fn name(&self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stepping(_) => "stepping",
            RunState::Stopped(_) => "stopped",
            RunState::Gone(_) => "gone",
        }
    }
}

/// A step in flight: who waits for its stop, and until when.
#[derive(Debug)]
struct Step {
    what: &'static str,
    reply: oneshot::Sender<Response>,
    deadline: tokio::time::Instant,
}

/// How long a step, next or finish may run before its client is told the machine runs on.
pub const STEP_LIMIT: Duration = Duration::from_secs(30);

/// What moves the session from one [`RunState`] to another.
#[derive(Debug)]
enum Transition {
    /// gdb runs the machine (`-exec-continue` accepted, `*running` seen). A step in flight
    /// stays in flight: its own `*running` is no news.
    Resumed,
    /// gdb accepted a step for this client.
    StepStarted(Step),
    /// A stop the user sees: it answers a stepping client (with gdb's `frame` text when there
    /// is one) and the waiters, or waits for the next `wait`.
    Stopped {
        info: StopInfo,
        frame: Option<String>,
    },
    /// The session stopped the machine itself (an interrupt, or for a moment to change
    /// breakpoints): nobody's stop, but a step in flight is over.
    Paused,
    /// A step whose stop did not come within [`STEP_LIMIT`]: the machine runs on.
    StepExpired,
    /// gdb or the machine is gone: breakpoint bytes left in kernel text are put back.
    Ended(String),
    /// Detached: gdb took its breakpoints out itself.
    Detached(String),
}

/// Symbols the session gave gdb for one module.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedSymbols {
    pub name: String,
    pub file: PathBuf,
    pub text: u64,
    pub sections: usize,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Internal {
    ModuleLoad,
    ModuleFree,
}

impl Internal {
    /// The kernel function the breakpoint is on.
    fn location(self) -> &'static str {
        match self {
            Internal::ModuleLoad => "do_init_module",
            Internal::ModuleFree => "free_module",
        }
    }
}

/// The machine's state as gdb tells it after events were lost.
enum Resynced {
    Running,
    Stopped(Box<StopEvent>),
    Unknown,
}

/// A message to the session task.
pub enum Msg {
    Request(Request, oneshot::Sender<Response>),
    /// The console part of a `load` finished (it runs beside the session so that the module
    /// loader's internal stop can be served meanwhile).
    LoadConsoleDone {
        file: PathBuf,
        name: String,
        result: Result<Vec<GuestModule>, String>,
        reply: oneshot::Sender<Response>,
    },
    /// What a `load --replace` job needs of gdb (see `load.rs`).
    Op(super::load::Op),
}

pub struct Session {
    gdb: Arc<Gdb>,
    cfg: SessionConfig,
    state: RunState,
    /// A stop that no `wait` has reported yet.
    unreported: Option<StopInfo>,
    waiters: Vec<oneshot::Sender<Response>>,
    /// The session's own breakpoints, in number order (detach deletes them in a fixed order).
    internal: BTreeMap<u32, Internal>,
    user_bps: BTreeMap<u32, String>,
    pub modules: BTreeMap<String, LoadedSymbols>,
    events_rx: broadcast::Receiver<AsyncEvent>,
    events_tx: broadcast::Sender<Event>,
    tx: mpsc::Sender<Msg>,
    text: TextGuard,
    symbols: Arc<crate::guest::symbols::SymbolIndex>,
    skb: Option<crate::guest::skb::SkbReader>,
    /// The frame's `struct sk_buff *` found when the stop was recorded; `None` once anything
    /// may have moved the frame (a raw gdb command, run control), so `skb` looks again.
    stop_skb: Option<u64>,
    /// The machine's text lock (shared with `umldbg trace` and `serve`), held until detach.
    pub text_lock: Option<crate::ptrace::guard::TextLock>,
    /// A module `load --replace` is swapping: its symbols come from the job, not the loader.
    replacing: Option<String>,
}

impl Session {
    /// Start gdb, attach, load every module's symbols; the machine runs again unless asked not to.
    pub async fn start(
        cfg: SessionConfig,
        guest_modules: Option<Vec<GuestModule>>,
        tx: mpsc::Sender<Msg>,
        events_tx: broadcast::Sender<Event>,
    ) -> Result<(Session, String), SessionError> {
        let mut config = GdbConfig::new(&cfg.gdb_path);
        config.record = std::env::var_os(RECORD_ENV).map(PathBuf::from);
        let gdb = Gdb::spawn_with(config).await?;
        Session::start_with(gdb, cfg, guest_modules, tx, events_tx).await
    }

    /// [`Session::start`] over a gdb that runs already, or over any GDB/MI byte stream
    /// ([`Gdb::over`]; a recorded transcript played back by [`crate::gdbmi::replay`]).
    pub async fn start_with(
        gdb: Gdb,
        cfg: SessionConfig,
        guest_modules: Option<Vec<GuestModule>>,
        tx: mpsc::Sender<Msg>,
        events_tx: broadcast::Sender<Event>,
    ) -> Result<(Session, String), SessionError> {
        let gdb = Arc::new(gdb);
        let events_rx = gdb.events();
        for (k, v) in [
            ("mi-async", "on"),
            ("pagination", "off"),
            ("confirm", "off"),
            ("width", "0"),
            ("height", "0"),
            ("print pretty", "off"),
            ("breakpoint pending", "off"),
        ] {
            let _ = gdb.cmd(Command::gdb_set(k, v)).await;
        }
        let _ = gdb.console("set debuginfod enabled off").await;
        for s in UML_SIGNALS {
            gdb.console(&format!("handle {s} nostop noprint pass"))
                .await?;
        }
        let long = Duration::from_secs(120);
        gdb.cmd_timeout(Command::file_exec_and_symbols(&cfg.image), long)
            .await
            .map_err(|source| SessionError::KernelSymbols {
                image: cfg.image.clone(),
                source,
            })?;
        let symbols = Arc::new(crate::guest::symbols::SymbolIndex::from_image(&cfg.image));
        let mut notes = cfg.notes.clone();
        if symbols.is_empty() {
            // A stripped image (a distribution's UML): names from the guest's /proc/kallsyms.
            notes.push(format!(
                "{} is stripped: kernel symbols come from the guest's /proc/kallsyms",
                cfg.image.display()
            ));
            let sym = kallsyms_symbol_file(&cfg).await?;
            gdb.cmd_timeout(
                Command::console(&format!("add-symbol-file {} -o 0", sym.display())),
                long,
            )
            .await
            .map_err(|source| SessionError::SymbolFile {
                file: sym.clone(),
                source,
            })?;
            symbols.add_module(&sym, "kallsyms");
        }
        // What an earlier tracer left in the text the daemon's start has put back already.
        let text = TextGuard::new(cfg.pid, &cfg.journal, gdb.pid())?;
        gdb.cmd_timeout(Command::target_attach(cfg.pid as u32), long)
            .await
            .map_err(|source| SessionError::Attach {
                pid: cfg.pid,
                source,
            })?;
        // The attach stop arrives as an event; it is not the user's.
        let skb = crate::guest::skb::SkbReader::new(&cfg.image, &cfg.cache, cfg.pid).ok();
        let mut s = Session {
            gdb,
            state: RunState::Stopped(StopInfo::attached()),
            unreported: None,
            waiters: Vec::new(),
            internal: BTreeMap::new(),
            user_bps: BTreeMap::new(),
            modules: BTreeMap::new(),
            events_rx,
            events_tx,
            tx,
            text,
            symbols,
            skb,
            stop_skb: None,
            text_lock: None,
            replacing: None,
            cfg,
        };
        s.drain_attach_stop().await;
        let (mods, source) = match guest_modules {
            Some(m) => (m, Source::Console),
            None => (s.modules_from_memory().await?, Source::Memory),
        };
        let mut loaded = 0;
        let mut problems = Vec::new();
        for m in &mods {
            match s.add_module_symbols(m, None, source).await {
                Ok(_) => loaded += 1,
                Err(e) => problems.push(e),
            }
        }
        for kind in [Internal::ModuleLoad, Internal::ModuleFree] {
            if let Ok(bp) = s
                .gdb
                .break_insert(kind.location(), &BreakOptions::default())
                .await
            {
                s.internal.insert(bp.number, kind);
                s.journal_bp(&bp);
            }
        }
        let mut summary = format!(
            "attached to {} (pid {}): kernel symbols from {}, {loaded} module(s) from {source}{}",
            s.cfg.umid,
            s.cfg.pid,
            s.cfg.image.display(),
            s.which_console(source)
        );
        for n in &notes {
            summary.push_str(&format!("\n  note: {n}"));
        }
        for p in &problems {
            summary.push_str(&format!("\n  warning: {p}"));
        }
        if s.cfg.stopped {
            summary.push_str("\nthe machine is stopped: `umldbg continue` resumes it");
        } else {
            s.resume().await?;
        }
        Ok((s, summary))
    }

    /// ` (/dev/pts/3, given with --console)` after a source that is the console.
    fn which_console(&self, source: Source) -> String {
        match (&self.cfg.console, source) {
            (Some(c), Source::Console) => format!(" ({})", c.describe()),
            _ => String::new(),
        }
    }

    async fn drain_attach_stop(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.events_rx.recv()).await {
                Ok(Ok(AsyncEvent::Stopped(_))) | Err(_) => return,
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
                // The attach stop was among the lost: the machine is stopped all the same
                // (`-target-attach` answered after it stopped).
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    tracing::warn!("{n} gdb event(s) lost while attaching");
                    return;
                }
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// The module list and section addresses from kernel memory, as the kernel's lx-symbols does.
    async fn modules_from_memory(&self) -> Result<Vec<GuestModule>, SessionError> {
        let mut out = Vec::new();
        let head = "(&modules)";
        let off = "((unsigned long)&((struct module *)0)->list)";
        let mut next = self
            .gdb
            .evaluate(&format!("(unsigned long){head}->next"))
            .await?;
        let head_addr = self.gdb.evaluate(&format!("(unsigned long){head}")).await?;
        let mut guard = 0;
        while next != head_addr && guard < 512 {
            guard += 1;
            let m = format!("((struct module *)({next} - {off}))");
            if let Some(gm) = self.module_at(&m).await {
                out.push(gm);
            }
            next = self
                .gdb
                .evaluate(&format!("(unsigned long){m}->list.next"))
                .await?;
        }
        Ok(out)
    }

    /// Name and sections of the `struct module` at expression `m`.
    async fn module_at(&self, m: &str) -> Option<GuestModule> {
        let name = self.gdb.evaluate(&format!("{m}->name")).await.ok()?;
        let name = parse_c_string(&name)?;
        let mut sections = BTreeMap::new();
        for i in 0..128 {
            let attr = format!("{m}->sect_attrs->grp.bin_attrs[{i}]");
            let p = self
                .gdb
                .evaluate(&format!("(unsigned long){attr}"))
                .await
                .ok()?;
            if p == "0" {
                break;
            }
            let sname = self
                .gdb
                .evaluate(&format!("{attr}->attr.name"))
                .await
                .ok()?;
            let addr = self
                .gdb
                .evaluate(&format!("(unsigned long){attr}->private"))
                .await
                .ok()?;
            if let (Some(sname), Ok(addr)) = (parse_c_string(&sname), addr.parse::<u64>()) {
                sections.insert(sname, addr);
            }
        }
        Some(GuestModule {
            name,
            sections,
            build_id: None,
        })
    }

    /// Give gdb a module's symbols; `file` overrides the search.
    async fn add_module_symbols(
        &mut self,
        m: &GuestModule,
        file: Option<&Path>,
        source: Source,
    ) -> Result<LoadedSymbols, SessionError> {
        let file = match file {
            Some(f) => f.to_path_buf(),
            None => {
                let md = self.cfg.modules_dir.clone().unwrap_or_default();
                modules::find_module_file(&m.name, &self.cfg.module_paths, &md)
                    .ok_or_else(|| SessionError::NoModuleFile(m.name.clone()))?
            }
        };
        let bytes =
            crate::util::read_regular_file(&file, crate::util::MAX_ELF_FILE).map_err(|source| {
                SessionError::Read {
                    path: file.clone(),
                    source,
                }
            })?;
        if let (Some(guest), Some(host)) = (&m.build_id, crate::kmod::elf_build_id(&bytes))
            && *guest != host
        {
            return Err(SessionError::BuildId {
                file,
                module: m.name.clone(),
                host,
                guest: guest.clone(),
            });
        }
        let secs = alloc_sections(&bytes);
        let cmd = modules::add_symbol_file_command(&file, m, &secs)
            .ok_or_else(|| SessionError::NoText(m.name.clone()))?;
        if let Some(old) = self.modules.get(&m.name) {
            let _ = self.gdb.console(&remove_symbol_file(&old.file)).await;
        }
        self.gdb
            .console(&cmd)
            .await
            .map_err(|source| SessionError::AddSymbols {
                command: cmd.clone(),
                source,
            })?;
        let ls = LoadedSymbols {
            name: m.name.clone(),
            file,
            text: m.text().unwrap_or(0),
            sections: m.sections.len(),
            source,
        };
        self.symbols.add_module(&ls.file, &m.name);
        self.modules.insert(m.name.clone(), ls.clone());
        Ok(ls)
    }

    fn journal_bp(&mut self, bp: &crate::gdbmi::Breakpoint) {
        let mut addrs: Vec<u64> = bp
            .addr
            .as_deref()
            .and_then(parse_addr)
            .into_iter()
            .collect();
        addrs.extend(
            bp.locations
                .iter()
                .filter_map(|l| l.addr.as_deref().and_then(parse_addr)),
        );
        self.text.record(bp.number, &addrs);
    }

    async fn resume(&mut self) -> Result<(), SessionError> {
        self.gdb.cmd(Command::exec_continue()).await?;
        self.transition(Transition::Resumed);
        Ok(())
    }

    /// Whether the machine runs (freely or for a step).
    fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running | RunState::Stepping(_))
    }

    /// The one place where the session's state changes, and where everyone who waits on a
    /// change (a stepping client, `wait`ers, event subscribers) is told of it.
    fn transition(&mut self, t: Transition) {
        if let RunState::Gone(_) = self.state {
            return;
        }
        // A step in flight is taken out; any other state stays until the new one is set.
        let step = match &self.state {
            RunState::Stepping(_) => match std::mem::replace(&mut self.state, RunState::Running) {
                RunState::Stepping(step) => Some(step),
                _ => None,
            },
            _ => None,
        };
        self.state = match t {
            Transition::Resumed => match step {
                Some(step) => RunState::Stepping(step),
                None => RunState::Running,
            },
            Transition::StepStarted(new) => {
                if let Some(old) = step {
                    let _ = old.reply.send(Response::err(format!(
                        "{} was replaced by {}",
                        old.what, new.what
                    )));
                }
                RunState::Stepping(new)
            }
            Transition::Stopped { info, frame } => {
                let _ = self.events_tx.send(Event::Stopped(info.clone()));
                let data = serde_json::to_value(&info).unwrap_or_default();
                let answered = step.is_some() || !self.waiters.is_empty();
                if let Some(step) = step {
                    let text = match frame {
                        Some(t) if !t.trim().is_empty() => t.trim_end().to_string(),
                        _ => info.render(),
                    };
                    let _ = step.reply.send(Response::ok_data(text, data.clone()));
                }
                for w in self.waiters.drain(..) {
                    let _ = w.send(Response::ok_data(info.render(), data.clone()));
                }
                self.unreported = if answered { None } else { Some(info.clone()) };
                RunState::Stopped(info)
            }
            Transition::Paused => {
                if let Some(step) = step {
                    let _ = step.reply.send(Response::err(format!(
                        "{} was interrupted before it stopped by itself (see `umldbg status`)",
                        step.what
                    )));
                }
                RunState::Stopped(StopInfo::attached())
            }
            Transition::StepExpired => match step {
                Some(step) => {
                    let _ = step.reply.send(Response::ok_text(format!(
                        "{} did not stop within {} s; the machine is running",
                        step.what,
                        STEP_LIMIT.as_secs()
                    )));
                    RunState::Running
                }
                None => std::mem::replace(&mut self.state, RunState::Running),
            },
            Transition::Ended(why) => {
                // gdb died with breakpoints possibly inserted in a running kernel: put the
                // bytes back.
                let n = self.text.gdb_gone();
                let why = if n > 0 {
                    format!("{why}; restored {n} breakpoint byte(s) in kernel text")
                } else {
                    why
                };
                self.end(step, why)
            }
            Transition::Detached(why) => {
                self.text.detached();
                self.end(step, why)
            }
        };
    }

    /// The last words of a session: every waiter and subscriber hears why it ended.
    fn end(&mut self, step: Option<Step>, why: String) -> RunState {
        let _ = self.events_tx.send(Event::Exited {
            reason: why.clone(),
        });
        if let Some(step) = step {
            let _ = step
                .reply
                .send(Response::err(format!("the session is over: {why}")));
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Response::err(format!("the session is over: {why}")));
        }
        RunState::Gone(why)
    }

    /// Stop a running machine for a moment; returns whether it was running.
    async fn pause(&mut self) -> Result<bool, SessionError> {
        if !self.is_running() {
            return Ok(false);
        }
        self.gdb.cmd(Command::exec_interrupt()).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.events_rx.recv()).await {
                Ok(Ok(AsyncEvent::Stopped(ev))) => {
                    let ours = matches!(ev.reason, Some(StopReason::SignalReceived))
                        && ev.signal_name.as_deref() == Some("SIGINT");
                    if ours {
                        self.transition(Transition::Paused);
                        return Ok(true);
                    }
                    // A real stop raced with the interrupt.
                    if !self.stop_while_pausing(&ev).await? {
                        return Ok(false);
                    }
                }
                Ok(Ok(AsyncEvent::Exited(e))) => {
                    self.transition(Transition::Ended(format!("gdb exited ({e})")));
                    return Err(SessionError::GdbExited(e.to_string()));
                }
                // The interrupt's stop may be among the lost: ask gdb where the machine is. A
                // stop found that way cannot be told from a breakpoint's: it is the user's.
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    if let Resynced::Stopped(ev) = self.gdb_state(n).await
                        && !self.stop_while_pausing(&ev).await?
                    {
                        return Ok(false);
                    }
                }
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => return Err(SessionError::GdbGone),
                Err(_) => return Err(SessionError::NoStop),
            }
        }
    }

    /// A stop that is not the interrupt's, met while pausing: the session's own is handled and
    /// the interrupt sent again (true: keep waiting); a user's is kept for the user, and the
    /// machine stays stopped (false).
    async fn stop_while_pausing(&mut self, ev: &StopEvent) -> Result<bool, SessionError> {
        if let Some(kind) = self.internal_of(ev) {
            self.handle_internal(kind).await;
            self.gdb.cmd(Command::exec_interrupt()).await?;
            return Ok(true);
        }
        self.record_user_stop(ev).await;
        Ok(false)
    }

    /// Which of the session's own breakpoints a stop is at: by number, or for a stop re-read
    /// after lost events (no number), by function.
    fn internal_of(&self, ev: &StopEvent) -> Option<Internal> {
        if let Some(n) = ev.bkptno {
            return self.internal.get(&n).copied();
        }
        let func = ev.frame.as_ref()?.func.as_deref()?;
        self.internal
            .values()
            .copied()
            .find(|k| k.location() == func)
    }

    /// Where the machine is, asked of gdb (`-thread-info`), after `missed` events were lost:
    /// a stop among them must not be lost with them.
    async fn gdb_state(&self, missed: u64) -> Resynced {
        tracing::warn!("{missed} gdb event(s) lost; reading the machine's state from gdb");
        let Ok(r) = self.gdb.cmd(Command::new("-thread-info")).await else {
            return Resynced::Unknown;
        };
        let threads = r.results.get("threads").and_then(|t| t.as_list());
        let mut running = false;
        for t in threads.iter().flat_map(|l| l.values()) {
            let Some(t) = t.as_tuple() else { continue };
            match t.get_str("state") {
                Some("stopped") => {
                    let frame = t
                        .get("frame")
                        .and_then(|f| f.as_tuple())
                        .and_then(|f| crate::gdbmi::Frame::from_results(f).ok());
                    return Resynced::Stopped(Box::new(StopEvent {
                        frame,
                        thread_id: t.get_str("id").map(str::to_owned),
                        ..StopEvent::default()
                    }));
                }
                Some("running") => running = true,
                _ => {}
            }
        }
        if running {
            Resynced::Running
        } else {
            Resynced::Unknown
        }
    }

    async fn with_stopped<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut Session) -> T,
    ) -> Result<T, SessionError> {
        let was_running = self.pause().await?;
        let r = f(self).await;
        if was_running {
            self.resume().await?;
        }
        Ok(r)
    }

    /// Module load or unload stop: update symbols and resume.
    async fn handle_internal(&mut self, kind: Internal) {
        match kind {
            Internal::ModuleLoad => {
                if let Some(name) = &self.replacing
                    && let Ok(n) = self.gdb.evaluate("mod->name").await
                    && parse_c_string(&n).is_some_and(|n| modules::same_module_name(&n, name))
                {
                    return;
                }
                if let Some(m) = self.module_at("mod").await
                    && let Ok(ls) = self.add_module_symbols(&m, None, Source::Memory).await
                {
                    let _ = self.events_tx.send(Event::ModuleLoaded {
                        name: ls.name.clone(),
                        text: format!("{:#x}", ls.text),
                        source: ls.source.to_string(),
                    });
                }
            }
            Internal::ModuleFree => {
                if let Ok(n) = self.gdb.evaluate("mod->name").await
                    && let Some(name) = parse_c_string(&n)
                    && let Some(ls) = self.modules.remove(&name)
                {
                    let _ = self.gdb.console(&remove_symbol_file(&ls.file)).await;
                    let _ = self.events_tx.send(Event::ModuleUnloaded { name });
                }
            }
        }
    }

    async fn stop_info(&mut self, ev: &StopEvent) -> StopInfo {
        let reason = ev
            .reason
            .as_ref()
            .map(|r| r.as_str().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut info = StopInfo {
            reason,
            function: ev.frame.as_ref().and_then(|f| f.func.clone()),
            file: ev.frame.as_ref().and_then(|f| f.file.clone()),
            line: ev.frame.as_ref().and_then(|f| f.line),
            args: ev
                .frame
                .as_ref()
                .map(|f| f.args.iter().cloned().collect())
                .unwrap_or_default(),
            backtrace: Vec::new(),
            breakpoint: ev.bkptno,
            signal: ev.signal_name.clone(),
            skb: None,
            skb_text: None,
        };
        if let Ok(bt) = self.gdb.backtrace().await {
            info.backtrace =
                bt.0.iter()
                    .map(|f| FrameInfo {
                        function: f.func.clone(),
                        file: f.file.clone(),
                        line: f.line,
                        addr: f.addr.clone(),
                    })
                    .collect();
            if let Some(f0) = bt.0.first()
                && info.args.is_empty()
            {
                info.args = f0.args.iter().cloned().collect();
            }
        }
        self.stop_skb = self.skb_argument().await;
        if let Some(addr) = self.stop_skb
            && let Some(r) = self.skb.as_mut()
        {
            match r.read(addr) {
                Ok(v) => {
                    info.skb_text = Some(v.text);
                    info.skb = Some(v.json);
                }
                Err(e) => info.skb_text = Some(format!("skb at {addr:#x}: {e}")),
            }
        }
        info
    }

    /// The address of a `struct sk_buff *` argument or local of the current frame, if any.
    async fn skb_argument(&self) -> Option<u64> {
        let r = self
            .gdb
            .cmd(Command::new("-stack-list-variables").arg("--simple-values"))
            .await
            .ok()?;
        let vars = r.results.get("variables")?;
        for v in vars.as_list()?.values() {
            let Some(t) = v.as_tuple() else { continue };
            let ty = t.get_str("type").unwrap_or("");
            if ty.replace(' ', "") == "structsk_buff*"
                && let Some(val) = t.get_str("value")
                && let Some(a) = parse_addr(val)
                && a != 0
            {
                return Some(a);
            }
        }
        None
    }

    async fn record_user_stop(&mut self, ev: &StopEvent) {
        let info = self.stop_info(ev).await;
        // A step's client reads where it is the way gdb's CLI shows it.
        let frame = match self.state {
            RunState::Stepping(_) => self.gdb.console("frame").await.ok(),
            _ => None,
        };
        self.transition(Transition::Stopped { info, frame });
    }

    /// Serve until detach or until gdb or the machine is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            let step_deadline = match &self.state {
                RunState::Stepping(step) => Some(step.deadline),
                _ => None,
            };
            let step_expired = async {
                match step_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    if self.on_msg(msg).await {
                        break;
                    }
                }
                ev = self.events_rx.recv() => {
                    match ev {
                        Ok(ev) => self.on_event(ev).await,
                        Err(broadcast::error::RecvError::Lagged(n)) => self.on_lagged(n).await,
                        Err(broadcast::error::RecvError::Closed) => {
                            self.transition(Transition::Ended("gdb is gone".into()));
                        }
                    }
                }
                () = step_expired => self.transition(Transition::StepExpired),
            }
            if let RunState::Gone(why) = &self.state {
                // Later commands find no session; this file tells them why.
                let _ = std::fs::write(
                    self.cfg.journal.with_file_name("umldbg.last"),
                    format!("{why}\n"),
                );
                break;
            }
        }
    }

    /// gdb's events were lost (the session fell behind): a stop among them is found by asking
    /// gdb, and a resume by the same question.
    async fn on_lagged(&mut self, missed: u64) {
        match self.gdb_state(missed).await {
            Resynced::Stopped(ev) if self.is_running() => {
                if let Some(kind) = self.internal_of(&ev) {
                    self.handle_internal(kind).await;
                    let _ = self.resume().await;
                } else {
                    self.record_user_stop(&ev).await;
                }
            }
            Resynced::Running if matches!(self.state, RunState::Stopped(_)) => {
                self.transition(Transition::Resumed);
            }
            _ => {}
        }
    }

    async fn on_event(&mut self, ev: AsyncEvent) {
        match ev {
            AsyncEvent::Stopped(ev) => {
                if ev.reason.as_ref().is_some_and(|r| r.is_exit()) {
                    self.transition(Transition::Ended(format!(
                        "the machine exited ({})",
                        ev.reason.as_ref().map(|r| r.as_str()).unwrap_or("?")
                    )));
                    return;
                }
                if let Some(kind) = self.internal_of(&ev) {
                    self.handle_internal(kind).await;
                    let _ = self.resume().await;
                    return;
                }
                self.record_user_stop(&ev).await;
            }
            AsyncEvent::Running { .. } => self.transition(Transition::Resumed),
            AsyncEvent::Exited(e) => {
                self.transition(Transition::Ended(format!("gdb exited ({e})")))
            }
            _ => {}
        }
    }

    /// Returns true when the session ends.
    async fn on_msg(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Request(req, reply) => {
                if let RunState::Gone(why) = &self.state
                    && !matches!(req, Request::Status)
                {
                    let _ = reply.send(Response::err(format!("the session is over: {why}")));
                    return matches!(req, Request::Detach { .. });
                }
                let detach = matches!(req, Request::Detach { .. });
                let keeps_frame = matches!(
                    req,
                    Request::Skb { .. }
                        | Request::Print { .. }
                        | Request::Bt
                        | Request::List { .. }
                        | Request::Status
                        | Request::Breaks
                        | Request::Break { .. }
                        | Request::Delete { .. }
                        | Request::Complete { .. }
                        | Request::Wait { .. }
                        | Request::Events
                );
                if !keeps_frame {
                    self.stop_skb = None;
                }
                match req {
                    Request::Wait { .. } => {
                        if let Some(info) = self.unreported.take() {
                            let data = serde_json::to_value(&info).unwrap_or_default();
                            let _ = reply.send(Response::ok_data(info.render(), data));
                        } else if let RunState::Stopped(info) = &self.state {
                            // Nothing will stop a machine that is not running.
                            let at = info
                                .function
                                .as_deref()
                                .map(|f| format!(" in {f}"))
                                .unwrap_or_default();
                            let _ = reply.send(Response::err(format!(
                                "the machine is stopped{at} and that stop was reported: `umldbg continue` first"
                            )));
                        } else {
                            self.waiters.push(reply);
                        }
                        false
                    }
                    Request::Step | Request::Next | Request::Finish => {
                        self.start_step(req, reply).await;
                        false
                    }
                    Request::Load {
                        file,
                        module_path,
                        replace,
                        build,
                    } => {
                        if replace || build.is_some() {
                            self.start_replace(file, module_path, build, reply);
                        } else {
                            self.start_load(file, module_path, reply).await;
                        }
                        false
                    }
                    other => {
                        let r = self.handle(other).await;
                        let ok = r.ok;
                        let _ = reply.send(r);
                        detach && ok
                    }
                }
            }
            Msg::LoadConsoleDone {
                file,
                name,
                result,
                reply,
            } => {
                let r = self.finish_load(file, name, result).await;
                let _ = reply.send(r);
                false
            }
            Msg::Op(op) => {
                self.on_op(op).await;
                false
            }
        }
    }

    async fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Status => self.status(),
            Request::Break { location, cond } => {
                let r = self
                    .with_stopped(async |s: &mut Session| {
                        let opts = BreakOptions {
                            condition: cond.clone(),
                            ..Default::default()
                        };
                        let bp = s.gdb.break_insert(&location, &opts).await;
                        // While stopped, memory still holds the original bytes: journal them now.
                        if let Ok(bp) = &bp {
                            s.journal_bp(bp);
                        }
                        bp
                    })
                    .await;
                match r {
                    Ok(Ok(bp)) => {
                        self.user_bps.insert(bp.number, location.clone());
                        let at = match (&bp.file, bp.line) {
                            (Some(f), Some(l)) => format!(" at {f}:{l}"),
                            _ => String::new(),
                        };
                        Response::ok_data(
                            format!(
                                "breakpoint {} on {}{at} ({})",
                                bp.number,
                                bp.func.as_deref().unwrap_or(&location),
                                bp.addr.as_deref().unwrap_or("?")
                            ),
                            serde_json::to_value(&bp).unwrap_or_default(),
                        )
                    }
                    Ok(Err(e)) => {
                        let near = self.symbols.near(&location, 5);
                        let hint = if near.is_empty() {
                            String::new()
                        } else {
                            format!("; did you mean {}?", near.join(", "))
                        };
                        Response::err(format!("cannot break on {location}: {}{hint}", short(&e)))
                    }
                    Err(e) => Response::err(e.to_string()),
                }
            }
            Request::Delete { id } => {
                if self.internal.contains_key(&id) || !self.user_bps.contains_key(&id) {
                    return Response::err(format!("no breakpoint {id} (see `umldbg breaks`)"));
                }
                let r = self
                    .with_stopped(async |s: &mut Session| {
                        s.gdb.cmd(Command::break_delete(id)).await
                    })
                    .await;
                match r {
                    Ok(Ok(_)) => {
                        self.user_bps.remove(&id);
                        self.text.forget(id);
                        Response::ok_text(format!("deleted breakpoint {id}"))
                    }
                    Ok(Err(e)) => Response::err(short(&e)),
                    Err(e) => Response::err(e.to_string()),
                }
            }
            Request::Breaks => match self.gdb.break_list().await {
                Ok(list) => {
                    let list: Vec<_> = list
                        .into_iter()
                        .filter(|b| !self.internal.contains_key(&b.number))
                        .collect();
                    let text = if list.is_empty() {
                        "no breakpoints".to_string()
                    } else {
                        list.iter()
                            .map(|b| {
                                format!(
                                    "{:<3} {} hits {}{}",
                                    b.number,
                                    b.func
                                        .as_deref()
                                        .or(b.original_location.as_deref())
                                        .unwrap_or("?"),
                                    b.times,
                                    b.cond
                                        .as_ref()
                                        .map(|c| format!(" if {c}"))
                                        .unwrap_or_default()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    };
                    Response::ok_data(text, serde_json::to_value(&list).unwrap_or_default())
                }
                Err(e) => Response::err(short(&e)),
            },
            Request::Continue => match self.state {
                RunState::Running | RunState::Stepping(_) => {
                    Response::ok_text("the machine is already running")
                }
                _ => {
                    self.unreported = None;
                    match self.resume().await {
                        Ok(()) => Response::ok_text("continuing"),
                        Err(e) => Response::err(e.to_string()),
                    }
                }
            },
            Request::Interrupt => {
                if !self.is_running() {
                    return Response::ok_text("the machine is already stopped");
                }
                match self.pause().await {
                    Ok(_) => {
                        let info = match &self.state {
                            RunState::Stopped(i) => i.clone(),
                            _ => StopInfo::attached(),
                        };
                        Response::ok_data(
                            "interrupted",
                            serde_json::to_value(&info).unwrap_or_default(),
                        )
                    }
                    Err(e) => Response::err(e.to_string()),
                }
            }
            Request::Bt => self.stopped_console("bt").await,
            Request::Print { expr } => {
                if self.is_running() {
                    return Response::err(
                        "the machine is running: print needs a stop (`umldbg wait` or `umldbg interrupt`)",
                    );
                }
                match self.gdb.evaluate(&expr).await {
                    Ok(v) => {
                        Response::ok_data(v.clone(), serde_json::json!({"expr": expr, "value": v}))
                    }
                    Err(e) => Response::err(format!("print {expr}: {}", short(&e))),
                }
            }
            Request::List { location } => {
                let cmd = match location {
                    Some(l) => format!("list {l}"),
                    None => "list".into(),
                };
                match self.gdb.console(&cmd).await {
                    Ok(t) => Response::ok_text(t.trim_end().to_string()),
                    Err(e) => Response::err(short(&e)),
                }
            }
            Request::Gdb { command } => {
                let running = self.is_running();
                let r = if running {
                    self.with_stopped(async |s: &mut Session| s.gdb.console(&command).await)
                        .await
                } else {
                    Ok(self.gdb.console(&command).await)
                };
                match r {
                    Ok(Ok(t)) => Response::ok_text(t.trim_end().to_string()),
                    Ok(Err(e)) => Response::err(short(&e)),
                    Err(e) => Response::err(e.to_string()),
                }
            }
            Request::Skb { expr, raw, hex } => self.skb_request(expr, raw, hex).await,
            Request::Complete { prefix } => {
                let v = self.symbols.complete(&prefix, 200);
                Response::ok_data(v.join("\n"), serde_json::json!(v))
            }
            Request::Detach { reason } => self.detach(reason).await,
            Request::Events
            | Request::Wait { .. }
            | Request::Load { .. }
            | Request::Step
            | Request::Next
            | Request::Finish => Response::err("not handled here"),
        }
    }

    /// `step`, `next`, `finish`: gdb runs the step and the client's answer comes with its stop
    /// (or after [`STEP_LIMIT`]), through [`Session::transition`]; the session serves other
    /// requests (`status`, `interrupt`) meanwhile.
    async fn start_step(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        if self.is_running() {
            let _ = reply.send(Response::err(
                "the machine is running: `umldbg interrupt` or wait for a breakpoint first",
            ));
            return;
        }
        let (cmd, what) = match req {
            Request::Step => (Command::exec_step(), "step"),
            Request::Next => (Command::exec_next(), "next"),
            _ => (Command::exec_finish(), "finish"),
        };
        self.unreported = None;
        if let Err(e) = self.gdb.cmd(cmd).await {
            let _ = reply.send(Response::err(format!("{what}: {}", short(&e))));
            return;
        }
        self.transition(Transition::StepStarted(Step {
            what,
            reply,
            deadline: tokio::time::Instant::now() + STEP_LIMIT,
        }));
    }

    async fn stopped_console(&mut self, cmd: &str) -> Response {
        if self.is_running() {
            return Response::err(format!(
                "the machine is running: {cmd} needs a stop (`umldbg wait` or `umldbg interrupt`)"
            ));
        }
        match self.gdb.console(cmd).await {
            Ok(t) => Response::ok_text(t.trim_end().to_string()),
            Err(e) => Response::err(short(&e)),
        }
    }

    async fn skb_request(&mut self, expr: Option<String>, raw: bool, hex: bool) -> Response {
        if self.is_running() {
            return Response::err(
                "the machine is running: skb needs a stop (`umldbg wait` or `umldbg interrupt`)",
            );
        }
        let addr = match &expr {
            Some(e) => {
                let t = match self
                    .gdb
                    .cmd(
                        Command::new("-var-create")
                            .arg("-")
                            .arg("*")
                            .arg(e.as_str()),
                    )
                    .await
                {
                    Ok(r) => r.results.get_str("type").unwrap_or("").to_string(),
                    Err(err) => return Response::err(format!("skb {e}: {}", short(&err))),
                };
                if let Ok(r) = self.gdb.cmd(Command::new("-var-delete").arg("*")).await {
                    let _ = r;
                }
                if t.replace(' ', "") != "structsk_buff*" {
                    return Response::err(format!("{e} is a {t}, not a struct sk_buff *"));
                }
                match self.gdb.evaluate(&format!("(unsigned long)({e})")).await {
                    Ok(v) => v.parse::<u64>().ok(),
                    Err(err) => return Response::err(format!("skb {e}: {}", short(&err))),
                }
            }
            // The stop's own lookup saves a gdb round trip (about 1 ms) while the frame stands.
            None => match self.stop_skb {
                Some(a) => Some(a),
                None => self.skb_argument().await,
            },
        };
        let Some(addr) = addr else {
            return Response::err(
                "no struct sk_buff * in scope at this stop: give an expression, e.g. `umldbg skb skb`",
            );
        };
        let Some(reader) = self.skb.as_mut() else {
            return Response::err(
                "no sk_buff layout for this kernel (its DWARF could not be read)",
            );
        };
        match reader.read(addr) {
            Ok(mut v) => {
                if hex {
                    v.text.push_str(&v.hex);
                }
                if raw
                    && let Ok(t) = self
                        .gdb
                        .console(&format!("print *(struct sk_buff *){addr:#x}"))
                        .await
                {
                    v.text.push('\n');
                    v.text.push_str(t.trim_end());
                }
                Response::ok_data(v.text, v.json)
            }
            Err(e) => Response::err(format!("skb at {addr:#x}: {e}")),
        }
    }

    fn status(&self) -> Response {
        let state = self.state.name();
        let stop = match &self.state {
            RunState::Running | RunState::Stepping(_) => None,
            RunState::Stopped(i) => Some(i.clone()),
            RunState::Gone(w) => Some(StopInfo {
                reason: w.clone(),
                ..StopInfo::attached()
            }),
        };
        let mods: Vec<_> = self.modules.values().cloned().collect();
        let data = serde_json::json!({
            "umid": self.cfg.umid, "pid": self.cfg.pid, "state": state, "stop": stop,
            "image": self.cfg.image, "modules": mods,
            "breakpoints": self.user_bps,
            "daemon_pid": std::process::id(), "gdb_pid": self.gdb.pid(),
            "console": self.cfg.console.as_ref().map(|c| c.describe()),
        });
        let mut text = format!(
            "session on {} (pid {}): {state}; {} module(s) with symbols; {} breakpoint(s)",
            self.cfg.umid,
            self.cfg.pid,
            self.modules.len(),
            self.user_bps.len()
        );
        for m in self.modules.values() {
            text.push_str(&format!(
                "\n  {:<20} .text {:#x}  {} sections from {}  {}",
                m.name,
                m.text,
                m.sections,
                m.source,
                m.file.display()
            ));
        }
        Response::ok_data(text, data)
    }

    async fn detach(&mut self, reason: Option<String>) -> Response {
        let _ = self.pause().await;
        let ids: Vec<u32> = self
            .user_bps
            .keys()
            .copied()
            .chain(self.internal.keys().copied())
            .collect();
        for id in ids {
            let _ = self.gdb.cmd(Command::break_delete(id)).await;
        }
        // The text is ours no more: let go of its lock before gdb lets go of the process, so
        // that whoever sees the machine untraced also finds the lock free.
        self.text_lock = None;
        let r = self.gdb.cmd(Command::target_detach()).await;
        let _ = self.gdb.cmd(Command::gdb_exit()).await;
        let why = reason.unwrap_or_else(|| "detached".into());
        self.transition(Transition::Detached(why));
        match r {
            Ok(_) => Response::ok_text(format!(
                "detached from {}; the machine keeps running",
                self.cfg.umid
            )),
            Err(e) => Response::err(format!("detach: {}", short(&e))),
        }
    }

    async fn start_load(
        &mut self,
        file: String,
        module_path: Vec<PathBuf>,
        reply: oneshot::Sender<Response>,
    ) {
        if !self.is_running() {
            let _ = reply.send(Response::err("the machine is stopped; the guest loads modules while it runs: `umldbg continue` first"));
            return;
        }
        let Some(console) = self.cfg.console.clone() else {
            let _ = reply.send(Response::err(format!("{} has no console that umldbg can reach (not in a lab, no shell on a console pty; see `umldbg attach --console`); load the module in the guest yourself: its symbols are added automatically", self.cfg.umid)));
            return;
        };
        let mut search = module_path;
        search.extend(self.cfg.module_paths.iter().cloned());
        let resolved = match super::load::resolve(&file, &search, self.cfg.modules_dir.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Response::err(e.to_string()));
                return;
            }
        };
        let tx = self.tx.clone();
        let umid = self.cfg.umid.clone();
        let cache = self.cfg.cache.clone();
        let installed = self.cfg.modules_dir.clone();
        tokio::task::spawn_blocking(move || {
            let result = super::load::load_in_guest_on(
                &console,
                &umid,
                &resolved,
                &cache,
                installed.as_deref(),
            )
            .map_err(|e| e.to_string());
            let _ = tx.blocking_send(Msg::LoadConsoleDone {
                file: resolved.file.clone(),
                name: resolved.name.clone(),
                result,
                reply,
            });
        });
    }

    /// `load --replace` / `load --build`: a job beside the session does the console work and
    /// asks the session (through [`Msg::Op`]) for what needs gdb.
    fn start_replace(
        &mut self,
        file: String,
        module_path: Vec<PathBuf>,
        build: Option<PathBuf>,
        reply: oneshot::Sender<Response>,
    ) {
        if !self.is_running() {
            let _ = reply.send(Response::err("the machine is stopped; the guest swaps modules while it runs: `umldbg continue` first"));
            return;
        }
        let Some(console) = self.cfg.console.clone() else {
            let _ = reply.send(Response::err(format!("{} has no console that umldbg can reach (not in a lab, no shell on a console pty; see `umldbg attach --console`): replace the module in the guest yourself (rmmod, insmod); its symbols follow", self.cfg.umid)));
            return;
        };
        let input = match build {
            Some(dir) => super::load::JobInput::Build(dir),
            None if file.is_empty() => {
                let _ = reply.send(Response::err(
                    "load --replace needs a module file: `umldbg load --replace FILE.ko`",
                ));
                return;
            }
            None => super::load::JobInput::File(file),
        };
        let mut search = module_path;
        search.extend(self.cfg.module_paths.iter().cloned());
        let ctx = super::load::JobContext {
            tx: self.tx.clone(),
            console,
            umid: self.cfg.umid.clone(),
            cache: self.cfg.cache.clone(),
            modules_dir: self.cfg.modules_dir.clone(),
            search,
            image: self.cfg.image.clone(),
        };
        tokio::spawn(super::load::run_job(ctx, input, reply));
    }

    async fn on_op(&mut self, op: super::load::Op) {
        use super::load::Op;
        match op {
            Op::TakeBreakpoints { module, reply } => {
                // Until `Install`, the module loader's stop leaves this module's symbols to the
                // job (it knows the file; a lookup by name would find another build).
                self.replacing = Some(module.clone());
                let r = self
                    .with_stopped(async |s: &mut Session| s.take_breakpoints(&module).await)
                    .await
                    .and_then(|r| r);
                if r.is_err() {
                    self.replacing = None;
                }
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            Op::AddSymbols {
                module,
                file,
                reply,
            } => {
                let r = self
                    .with_stopped(async |s: &mut Session| {
                        s.add_module_symbols(&module, Some(&file), Source::Console)
                            .await
                    })
                    .await
                    .and_then(|r| r);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            Op::Install {
                symbols,
                bps,
                reply,
            } => {
                self.replacing = None;
                let r = self
                    .with_stopped(async |s: &mut Session| {
                        let sym = match &symbols {
                            Some((m, f)) => Some(
                                s.add_module_symbols(m, Some(f), Source::Console)
                                    .await
                                    .map_err(|e| e.to_string()),
                            ),
                            None => None,
                        };
                        (sym, s.place_breakpoints(bps.clone()).await)
                    })
                    .await;
                let r = match r.map_err(|e| e.to_string()) {
                    Ok(v) => v,
                    Err(e) => (
                        symbols.map(|_| Err(e.clone())),
                        bps.into_iter()
                            .map(|b| super::load::Placement {
                                old: b,
                                placed: None,
                                error: Some(e.clone()),
                            })
                            .collect(),
                    ),
                };
                let _ = reply.send(r);
            }
        }
    }

    /// Delete the user breakpoints whose code lies in module `name` (gdb's `info symbol` names
    /// the module file of each address) and forget their journal entries.
    async fn take_breakpoints(
        &mut self,
        name: &str,
    ) -> Result<Vec<super::load::MovedBreakpoint>, SessionError> {
        let Some(file) = self.modules.get(name).map(|m| m.file.clone()) else {
            return Ok(Vec::new());
        };
        let list = self.gdb.break_list().await?;
        let mut out = Vec::new();
        for bp in list {
            let Some(location) = self.user_bps.get(&bp.number).cloned() else {
                continue;
            };
            let mut addrs: Vec<u64> = bp
                .addr
                .as_deref()
                .and_then(parse_addr)
                .into_iter()
                .collect();
            addrs.extend(
                bp.locations
                    .iter()
                    .filter_map(|l| l.addr.as_deref().and_then(parse_addr)),
            );
            let mut inside = false;
            for a in addrs {
                if let Ok(t) = self.gdb.console(&format!("info symbol {a:#x}")).await
                    && symbol_in_file(&t, &file)
                {
                    inside = true;
                    break;
                }
            }
            if !inside {
                continue;
            }
            let first = bp.locations.first();
            out.push(super::load::MovedBreakpoint {
                id: bp.number,
                location,
                cond: bp.cond.clone(),
                func: bp
                    .func
                    .clone()
                    .or_else(|| first.and_then(|l| l.func.clone())),
                file: bp
                    .file
                    .clone()
                    .or_else(|| first.and_then(|l| l.file.clone())),
                line: bp.line.or_else(|| first.and_then(|l| l.line)),
            });
            self.gdb.cmd(Command::break_delete(bp.number)).await?;
            self.user_bps.remove(&bp.number);
            self.text.forget(bp.number);
        }
        Ok(out)
    }

    /// Set breakpoints again by the location the user gave. An address (`*0x...`) pointed
    /// into code that is gone: it is not set again.
    async fn place_breakpoints(
        &mut self,
        bps: Vec<super::load::MovedBreakpoint>,
    ) -> Vec<super::load::Placement> {
        let mut out = Vec::new();
        for b in bps {
            if b.location.trim_start().starts_with('*') {
                out.push(super::load::Placement {
                    old: b,
                    placed: None,
                    error: Some("an address in the old code".into()),
                });
                continue;
            }
            let opts = BreakOptions {
                condition: b.cond.clone(),
                ..Default::default()
            };
            match self.gdb.break_insert(&b.location, &opts).await {
                Ok(bp) => {
                    self.journal_bp(&bp);
                    self.user_bps.insert(bp.number, b.location.clone());
                    let first = bp.locations.first();
                    let placed = super::load::Placed {
                        id: bp.number,
                        func: bp
                            .func
                            .clone()
                            .or_else(|| first.and_then(|l| l.func.clone())),
                        file: bp
                            .file
                            .clone()
                            .or_else(|| first.and_then(|l| l.file.clone())),
                        line: bp.line.or_else(|| first.and_then(|l| l.line)),
                    };
                    out.push(super::load::Placement {
                        old: b,
                        placed: Some(placed),
                        error: None,
                    });
                }
                Err(e) => out.push(super::load::Placement {
                    old: b,
                    placed: None,
                    error: Some(short(&e)),
                }),
            }
        }
        out
    }

    async fn finish_load(
        &mut self,
        file: PathBuf,
        name: String,
        result: Result<Vec<GuestModule>, String>,
    ) -> Response {
        let mods = match result {
            Ok(m) => m,
            Err(e) => return Response::err(e),
        };
        let Some(m) = mods
            .iter()
            .find(|m| modules::same_module_name(&m.name, &name))
        else {
            return Response::err(format!(
                "the guest does not list module {name} after loading it"
            ));
        };
        // A loaded module of another build: say how to put this one in its place.
        let file_id = std::fs::read(&file)
            .ok()
            .and_then(|b| crate::kmod::elf_build_id(&b));
        if let (Some(guest), Some(host)) = (&m.build_id, &file_id)
            && guest != host
        {
            return Response::err(format!(
                "{} has build-id {host} but the guest's {} has {guest}: not the loaded module, refusing its symbols; `umldbg load --replace {}` puts this build in its place (or `umldbg load --build DIR` to rebuild and swap)",
                file.display(),
                m.name,
                file.display()
            ));
        }
        let r = self
            .with_stopped(async |s: &mut Session| {
                s.add_module_symbols(m, Some(&file), Source::Console).await
            })
            .await;
        match r {
            Ok(Ok(ls)) => Response::ok_data(
                format!(
                    "{}: .text {:#x}, {} sections, addresses from {}{}, symbols from {}",
                    ls.name,
                    ls.text,
                    ls.sections,
                    ls.source,
                    self.which_console(ls.source),
                    ls.file.display()
                ),
                serde_json::to_value(&ls).unwrap_or_default(),
            ),
            Ok(Err(e)) => Response::err(e.to_string()),
            Err(e) => Response::err(e.to_string()),
        }
    }
}

impl StopInfo {
    fn attached() -> StopInfo {
        StopInfo {
            reason: "attached".into(),
            function: None,
            file: None,
            line: None,
            args: BTreeMap::new(),
            backtrace: Vec::new(),
            breakpoint: None,
            signal: None,
            skb: None,
            skb_text: None,
        }
    }
}

/// Write an ELF symbol file from the guest's /proc/kallsyms (read over the console).
async fn kallsyms_symbol_file(cfg: &SessionConfig) -> Result<PathBuf, SessionError> {
    let Some(console) = cfg.console.clone() else {
        return Err(SessionError::NoKallsymsSource {
            image: cfg.image.clone(),
            umid: cfg.umid.clone(),
        });
    };
    let read_error = |reason: String| SessionError::KallsymsRead {
        umid: cfg.umid.clone(),
        console: cfg
            .console
            .as_ref()
            .map(|c| c.describe())
            .unwrap_or_default(),
        reason,
    };
    let (rc, text) = tokio::task::spawn_blocking(move || console.run("cat /proc/kallsyms", 60))
        .await
        .map_err(|e| read_error(e.to_string()))?
        .map_err(|e| read_error(e.to_string()))?;
    if rc != 0 {
        return Err(read_error(format!("exited {rc}")));
    }
    let entries = crate::kmod::kallsyms::parse(&text).map_err(|source| SessionError::Kallsyms {
        umid: cfg.umid.clone(),
        source,
    })?;
    let (bytes, _) = crate::kmod::symfile::write_symfile(&entries)?;
    let out = cfg.journal.with_file_name("kallsyms.elf");
    std::fs::write(&out, bytes).map_err(|source| SessionError::Write {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

/// gdb's errors carry a prefix the user does not need.
fn short(e: &GdbError) -> String {
    match e {
        GdbError::Command { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

/// gdb's command that drops a module's symbols: by the file they came from. Not by address
/// (`-a TEXT`): gdb removes the first symbol file with any section there, and a module loaded
/// where another module's freed init text was would take that module's symbols with it.
fn remove_symbol_file(file: &Path) -> String {
    let f = file.display().to_string();
    if f.contains([' ', '"', '\'', '\\']) {
        format!(
            "remove-symbol-file \"{}\"",
            f.replace('\\', "\\\\").replace('"', "\\\"")
        )
    } else {
        format!("remove-symbol-file {f}")
    }
}

/// `info symbol` output (`reject_tg + 4 in section .text of /m/ipt_REJECT.ko`) names `file`.
fn symbol_in_file(text: &str, file: &Path) -> bool {
    text.lines().any(|l| {
        l.rsplit_once(" of ")
            .is_some_and(|(_, f)| Path::new(f.trim()) == file)
    })
}

pub fn parse_addr(s: &str) -> Option<u64> {
    let t = s.split_whitespace().next()?;
    let t = t.strip_prefix("0x")?;
    u64::from_str_radix(t, 16).ok()
}

/// `0x1234 "ipt_REJECT"` or `"ipt_REJECT", '\000' <repeats 44 times>` -> `ipt_REJECT`.
pub fn parse_c_string(v: &str) -> Option<String> {
    let start = v.find('"')? + 1;
    let end = start + v[start..].find('"')?;
    Some(v[start..end].to_string())
}

/// Names of the sections a module file allocates (the ones the kernel places).
fn alloc_sections(bytes: &[u8]) -> Vec<String> {
    match crate::kmod::ModuleInfo::parse(bytes) {
        Ok(info) => info.alloc_sections().map(|s| s.name.clone()).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_strings_from_gdb_values() {
        assert_eq!(
            parse_c_string("\"ipt_REJECT\", '\\000' <repeats 44 times>").as_deref(),
            Some("ipt_REJECT")
        );
        assert_eq!(parse_c_string("0x6000 \".text\"").as_deref(), Some(".text"));
        assert_eq!(parse_c_string("0x0"), None);
    }

    #[test]
    fn symbol_files_are_removed_by_file_not_by_address() {
        assert_eq!(
            remove_symbol_file(Path::new("/m/ipt_REJECT.ko")),
            "remove-symbol-file /m/ipt_REJECT.ko"
        );
        assert_eq!(
            remove_symbol_file(Path::new("/my mods/x.ko")),
            "remove-symbol-file \"/my mods/x.ko\""
        );
    }

    #[test]
    fn info_symbol_names_the_module_file() {
        let f = Path::new("/m/ipt_REJECT.ko");
        assert!(symbol_in_file(
            "reject_tg + 4 in section .text of /m/ipt_REJECT.ko\n",
            f
        ));
        assert!(!symbol_in_file("ip_rcv in section .text\n", f));
        assert!(!symbol_in_file(
            "x in section .text of /other/ipt_REJECT.ko",
            f
        ));
    }

    #[test]
    fn addresses_from_gdb_values() {
        assert_eq!(parse_addr("0x60b5e000 <reject_tg>"), Some(0x60b5e000));
        assert_eq!(parse_addr("42"), None);
    }
}
