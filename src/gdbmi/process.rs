//! The gdb child process: the thin IO shell around the sans-IO parser and command builder.
//!
//! One task owns gdb's stdout and the table of commands waiting for an answer; a second task owns
//! stdin so that a slow gdb can never block the reader (gdb blocked on a full stdout pipe while
//! we wait to write to a full stdin pipe would deadlock). Callers send a [`Command`] with a
//! reply channel; the owner gives it the next token, and when `token^class` comes back it answers
//! that caller with the result and the console/log text gdb printed while running the command.
//! Everything else (`*stopped`, `=breakpoint-modified`, stray output) goes to a broadcast channel.
//!
//! gdb is started in its own process group, so a Ctrl-C meant for the CLI does not reach it, and
//! with `kill_on_drop`, so dropping [`Gdb`] never leaves it behind. Note that killing gdb while it
//! has breakpoints inserted in a running process leaves the breakpoint instructions there; use
//! [`Gdb::exit`] (which makes gdb detach) when the process must survive.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::command::{BreakOptions, Command, CommandError, PrintValues};
use super::framer::{FrameError, LineFramer};
use super::parse::{self, ParseError};
use super::record::{
    AsyncKind, AsyncRecord, Record, ResultClass, Results, StreamKind, StreamRecord, Token,
};
use super::types::{
    Backtrace, Breakpoint, ExtractError, FunctionSymbol, StopEvent, evaluated_value,
};

/// How many stderr lines of gdb are kept to explain why it died.
const STDERR_TAIL_LINES: usize = 20;

/// Settings for [`Gdb::spawn_with`].
#[derive(Debug, Clone)]
pub struct GdbConfig {
    /// The gdb binary (`--gdb PATH`); a bare name is looked up in `PATH`.
    pub gdb_path: PathBuf,
    /// Added after `--interpreter=mi3 -q -nx`.
    pub extra_args: Vec<OsString>,
    /// Default time a command may take before [`GdbError::Timeout`]. Loading the symbols of a
    /// kernel can take seconds; use [`Gdb::cmd_timeout`] for the slow ones.
    pub timeout: Duration,
    /// Capacity of the event channel; a subscriber that falls further behind gets `Lagged`.
    pub event_capacity: usize,
    /// Write every line sent to gdb (`> `) and read from it (`< `) to this file, in the order
    /// they passed: a transcript that [`super::replay`] plays back without gdb.
    pub record: Option<PathBuf>,
}

impl GdbConfig {
    pub fn new(gdb_path: impl Into<PathBuf>) -> Self {
        GdbConfig {
            gdb_path: gdb_path.into(),
            extra_args: Vec::new(),
            timeout: Duration::from_secs(30),
            event_capacity: 1024,
            record: None,
        }
    }
}

/// How gdb ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl From<ExitStatus> for ExitInfo {
    fn from(status: ExitStatus) -> Self {
        ExitInfo {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with status {code}"),
            (None, Some(signal)) => write!(f, "was killed by signal {signal}"),
            (None, None) => f.write_str("ended"),
        }
    }
}

/// Errors of the gdb session. [`GdbError::is_fatal`] separates "report it and go on" from "the
/// session is over".
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    #[error(
        "gdb not found at {}: install gdb (e.g. `apt install gdb`) or pass --gdb PATH",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error("cannot start gdb at {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("gdb at {} did not start a GDB/MI session (mi3 needs gdb 9 or later)", path.display())]
    Startup {
        path: PathBuf,
        #[source]
        source: Box<GdbError>,
    },
    #[error("gdb {status}{}", stderr_suffix(.stderr))]
    Exited { status: ExitInfo, stderr: String },
    #[error("gdb rejected `{command}`: {msg}")]
    Command {
        command: String,
        msg: String,
        /// mi3's `code` field, e.g. `undefined-command`.
        code: Option<String>,
    },
    #[error("cannot write the GDB/MI transcript {}", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("gdb gave no answer to `{command}` within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("gdb answered `{command}` with ^{class}, not ^done")]
    UnexpectedClass {
        command: String,
        class: &'static str,
    },
    #[error(transparent)]
    InvalidCommand(#[from] CommandError),
    #[error("unexpected answer from gdb to `{command}`")]
    Extract {
        command: String,
        #[source]
        source: ExtractError,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its last words: {stderr}")
    }
}

impl GdbError {
    /// True when the gdb session cannot be used any more.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            GdbError::NotFound { .. }
                | GdbError::Spawn { .. }
                | GdbError::Startup { .. }
                | GdbError::Exited { .. }
        )
    }
}

/// A result record with the stream text gdb printed while running the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub token: Token,
    pub class: ResultClass,
    pub results: Results,
    /// `~` output: what the CLI prints for `print`, `bt`, `list`.
    pub console: String,
    /// `&` output: gdb's messages, e.g. the warning before an error.
    pub log: String,
}

/// Something gdb reported outside the answer to a command.
#[derive(Debug, Clone)]
pub enum AsyncEvent {
    /// `*stopped`, decoded (boxed: it is several times larger than the other events).
    Stopped(Box<StopEvent>),
    /// `*running`; `thread_id` is `all` in all-stop mode.
    Running { thread_id: Option<String> },
    /// Any other exec record, or a `*stopped` whose fields could not be decoded.
    Exec(AsyncRecord),
    /// `=...` (breakpoint, thread, library changes).
    Notify(AsyncRecord),
    /// `+...`.
    Status(AsyncRecord),
    /// Stream output while no command was waiting (e.g. `Breakpoint 1, ...` after a stop).
    Stream(StreamRecord),
    /// A line that is not GDB/MI, e.g. output of a program started with `-exec-run` that shares
    /// gdb's stdout.
    Unparsed(ParseError),
    /// gdb is gone; no event follows.
    Exited(ExitInfo),
}

struct Request {
    command: Command,
    reply: oneshot::Sender<Result<Response, GdbError>>,
}

struct Pending {
    command: String,
    reply: oneshot::Sender<Result<Response, GdbError>>,
    console: String,
    log: String,
}

/// State the owner task leaves behind for callers that arrive after gdb died.
#[derive(Default)]
struct Shared {
    exit: Mutex<Option<ExitInfo>>,
    stderr_tail: Mutex<VecDeque<String>>,
}

impl Shared {
    fn exited_error(&self) -> GdbError {
        let status = lock(&self.exit).unwrap_or(ExitInfo {
            code: None,
            signal: None,
        });
        let stderr = lock(&self.stderr_tail)
            .iter()
            .filter(|l| !l.trim().is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ");
        GdbError::Exited { status, stderr }
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (an exit
/// status, some text) is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running gdb. Share it with `Arc<Gdb>`: [`Gdb::cmd`] takes `&self` and may be called from
/// several tasks at once.
pub struct Gdb {
    requests: mpsc::UnboundedSender<Request>,
    events: broadcast::Sender<AsyncEvent>,
    shared: Arc<Shared>,
    pid: Option<u32>,
    path: PathBuf,
    timeout: Duration,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Gdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gdb")
            .field("pid", &self.pid)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Gdb {
    /// Start `gdb --interpreter=mi3 -q -nx [extra_args]` with the default settings.
    pub async fn spawn(
        gdb_path: impl AsRef<Path>,
        extra_args: &[OsString],
    ) -> Result<Gdb, GdbError> {
        let mut config = GdbConfig::new(gdb_path.as_ref());
        config.extra_args = extra_args.to_vec();
        Gdb::spawn_with(config).await
    }

    /// Start gdb and prepare the session (see [`Gdb::prepare`]).
    pub async fn spawn_with(config: GdbConfig) -> Result<Gdb, GdbError> {
        let path = config.gdb_path.clone();
        let mut cmd = tokio::process::Command::new(&path);
        cmd.arg("--interpreter=mi3")
            .arg("-q")
            .arg("-nx")
            .args(&config.extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Own process group: a Ctrl-C typed at the CLI must not interrupt or kill gdb.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                GdbError::NotFound { path: path.clone() }
            } else {
                GdbError::Spawn {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(GdbError::Spawn {
                path,
                source: io::Error::other("gdb's standard streams were not captured"),
            });
        };

        let recorder = match &config.record {
            Some(p) => Some(Recorder::create(p)?),
            None => None,
        };
        let ends = Ends {
            child: Some(child),
            stderr: Some(stderr),
            recorder,
        };
        let gdb = Gdb::start(stdout, stdin, ends, pid, path.clone(), &config);
        gdb.prepare().await?;
        Ok(gdb)
    }

    /// A gdb session over any byte stream that speaks GDB/MI: gdb's output is read from `reader`,
    /// commands go to `writer`. There is no process to wait for: the session ends when `reader`
    /// ends. A recorded transcript played back by [`super::replay`] is one such stream, so code
    /// that holds a [`Gdb`] can be tested without gdb.
    pub async fn over<R, W>(reader: R, writer: W, config: GdbConfig) -> Result<Gdb, GdbError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let recorder = match &config.record {
            Some(p) => Some(Recorder::create(p)?),
            None => None,
        };
        let ends = Ends {
            child: None,
            stderr: None,
            recorder,
        };
        let gdb = Gdb::start(reader, writer, ends, None, config.gdb_path.clone(), &config);
        gdb.prepare().await?;
        Ok(gdb)
    }

    fn start<R, W>(
        reader: R,
        writer: W,
        ends: Ends,
        pid: Option<u32>,
        path: PathBuf,
        config: &GdbConfig,
    ) -> Gdb
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared::default());
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (requests, request_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(owner_task(
            ends,
            writer,
            reader,
            request_rx,
            events.clone(),
            shared.clone(),
        ));
        Gdb {
            requests,
            events,
            shared,
            pid,
            path,
            timeout: config.timeout,
            task: Some(task),
        }
    }

    /// The settings every session starts with: `mi-async on` (so `-exec-interrupt` and
    /// breakpoint changes work while the target runs; it must be set before attaching), no
    /// confirmation questions, no paging or line wrapping in console output.
    async fn prepare(&self) -> Result<(), GdbError> {
        for setup in [
            Command::gdb_set("mi-async", "on"),
            Command::gdb_set("confirm", "off"),
            Command::gdb_set("pagination", "off"),
            Command::gdb_set("height", "0"),
            Command::gdb_set("width", "0"),
        ] {
            if let Err(err) = self.cmd(setup).await {
                return Err(GdbError::Startup {
                    path: self.path.clone(),
                    source: Box::new(err),
                });
            }
        }
        Ok(())
    }

    /// gdb's process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// A receiver of everything gdb reports outside command answers, from now on. Subscribe
    /// before sending the command whose consequences you wait for.
    pub fn events(&self) -> broadcast::Receiver<AsyncEvent> {
        self.events.subscribe()
    }

    /// Run a command with the default timeout. `^error` becomes [`GdbError::Command`]; `^done`,
    /// `^running`, `^connected` and `^exit` are answers.
    pub async fn cmd(&self, command: Command) -> Result<Response, GdbError> {
        self.cmd_timeout(command, self.timeout).await
    }

    /// Run a command, waiting at most `timeout` for its answer. After a timeout the command may
    /// still complete in gdb; its late answer is dropped.
    pub async fn cmd_timeout(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<Response, GdbError> {
        // Check before sending so that a bad command is the caller's error, not the session's.
        command.to_line(None)?;
        let text = command.to_string();
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request { command, reply }).is_err() {
            return Err(self.shared.exited_error());
        }
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(GdbError::Timeout {
                command: text,
                timeout,
            }),
            Ok(Err(_)) => Err(self.shared.exited_error()),
            Ok(Ok(result)) => result,
        }
    }

    /// Ask gdb to quit (it detaches from attached processes and kills ones it started) and wait
    /// for it to end; kill it if it has not within 5 s.
    pub async fn exit(mut self) -> Result<ExitInfo, GdbError> {
        const GRACE: Duration = Duration::from_secs(5);
        match self.cmd_timeout(Command::gdb_exit(), GRACE).await {
            Ok(_) | Err(GdbError::Exited { .. }) | Err(GdbError::Timeout { .. }) => {}
            Err(other) => return Err(other),
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(GRACE, &mut task).await.is_err()
        {
            // Dropping the task's child handle kills gdb (kill_on_drop).
            task.abort();
            let _ = task.await;
        }
        Ok(lock(&self.shared.exit).unwrap_or(ExitInfo {
            code: None,
            signal: None,
        }))
    }

    /// How gdb ended, if it has.
    pub fn exit_status(&self) -> Option<ExitInfo> {
        *lock(&self.shared.exit)
    }

    // ---- typed shortcuts for the daemon ----

    async fn done(&self, command: Command) -> Result<Response, GdbError> {
        let text = command.to_string();
        let response = self.cmd(command).await?;
        match response.class {
            ResultClass::Done | ResultClass::Running | ResultClass::Connected => Ok(response),
            other => Err(GdbError::UnexpectedClass {
                command: text,
                class: other.as_str(),
            }),
        }
    }

    /// `-interpreter-exec console CMD`, returning what it printed.
    pub async fn console(&self, command: &str) -> Result<String, GdbError> {
        Ok(self.done(Command::console(command)).await?.console)
    }

    /// `-data-evaluate-expression EXPR`, returning the value text.
    pub async fn evaluate(&self, expression: &str) -> Result<String, GdbError> {
        let command = Command::data_evaluate_expression(expression);
        let text = command.to_string();
        let response = self.done(command).await?;
        evaluated_value(&response.results).map_err(|source| GdbError::Extract {
            command: text,
            source,
        })
    }

    pub async fn break_insert(
        &self,
        location: &str,
        options: &BreakOptions,
    ) -> Result<Breakpoint, GdbError> {
        let command = Command::break_insert(location, options);
        let text = command.to_string();
        let response = self.done(command).await?;
        Breakpoint::from_results(&response.results).map_err(|source| GdbError::Extract {
            command: text,
            source,
        })
    }

    pub async fn break_list(&self) -> Result<Vec<Breakpoint>, GdbError> {
        let response = self.done(Command::break_list()).await?;
        Breakpoint::list_from_results(&response.results).map_err(|source| GdbError::Extract {
            command: "-break-list".into(),
            source,
        })
    }

    /// `-stack-list-frames` plus `-stack-list-arguments --simple-values`, merged.
    pub async fn backtrace(&self) -> Result<Backtrace, GdbError> {
        let frames = self.done(Command::stack_list_frames(None)).await?;
        let args = self
            .done(Command::stack_list_arguments(PrintValues::Simple, None))
            .await?;
        Backtrace::from_results(&frames.results, Some(&args.results)).map_err(|source| {
            GdbError::Extract {
                command: "-stack-list-frames".into(),
                source,
            }
        })
    }

    /// `-symbol-info-functions --name REGEX` (functions with debug info).
    pub async fn functions_matching(
        &self,
        name_regex: &str,
        max_results: Option<u32>,
    ) -> Result<Vec<FunctionSymbol>, GdbError> {
        let command = Command::symbol_info_functions(Some(name_regex), false, max_results);
        let text = command.to_string();
        let response = self.done(command).await?;
        FunctionSymbol::list_from_results(&response.results).map_err(|source| GdbError::Extract {
            command: text,
            source,
        })
    }
}

impl Drop for Gdb {
    fn drop(&mut self) {
        // Ending the owner task drops the child handle, and kill_on_drop kills gdb.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What the owner task holds besides gdb's input and output: the process (none for a stream
/// that is not a child of ours), its stderr, and the transcript being recorded.
struct Ends {
    child: Option<Child>,
    stderr: Option<ChildStderr>,
    recorder: Option<Recorder>,
}

/// Writes a transcript: `> ` before each line sent to gdb, `< ` before each line read.
struct Recorder {
    file: std::fs::File,
}

impl Recorder {
    fn create(path: &Path) -> Result<Recorder, GdbError> {
        std::fs::File::create(path)
            .map(|file| Recorder { file })
            .map_err(|source| GdbError::Record {
                path: path.to_path_buf(),
                source,
            })
    }

    fn line(&mut self, dir: &str, line: &[u8]) {
        use std::io::Write;
        let mut out = Vec::with_capacity(line.len() + 3);
        out.extend_from_slice(dir.as_bytes());
        out.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        out.push(b'\n');
        // A transcript is an aid: a full disk must not end the session.
        let _ = self.file.write_all(&out);
    }
}

/// Owns gdb: assigns tokens, reads and dispatches every line, and records how gdb ended.
async fn owner_task<R, W>(
    ends: Ends,
    stdin: W,
    mut stdout: R,
    mut requests: mpsc::UnboundedReceiver<Request>,
    events: broadcast::Sender<AsyncEvent>,
    shared: Arc<Shared>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Ends {
        child,
        stderr,
        mut recorder,
    } = ends;
    let (lines_tx, lines_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(writer_task(stdin, lines_rx));
    let stderr_task = stderr.map(|e| tokio::spawn(stderr_task(e, shared.clone())));

    let mut dispatcher = Dispatcher {
        pending: BTreeMap::new(),
        events: events.clone(),
    };
    let mut next_token: u64 = 1;
    let mut framer = LineFramer::new();
    let mut buf = vec![0u8; 64 * 1024];

    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(Request { command, reply }) = request else {
                    // The Gdb handle is gone: nobody can use this gdb any more.
                    break;
                };
                let token = Token(next_token);
                next_token += 1;
                match command.to_line(Some(token)) {
                    Err(err) => {
                        let _ = reply.send(Err(err.into()));
                    }
                    Ok(line) => {
                        dispatcher.pending.insert(
                            token.0,
                            Pending {
                                command: command.to_string(),
                                reply,
                                console: String::new(),
                                log: String::new(),
                            },
                        );
                        tracing::trace!(target: "umldbg::gdbmi", "> {}", line.trim_end());
                        if let Some(r) = recorder.as_mut() {
                            r.line("> ", line.as_bytes());
                        }
                        // If the writer is gone gdb closed its stdin; the EOF on stdout that
                        // follows fails this command with gdb's exit status.
                        let _ = lines_tx.send(line);
                    }
                }
            }
            read = stdout.read(&mut buf) => {
                match read {
                    Ok(0) => break,
                    Ok(n) => {
                        framer.push(&buf[..n]);
                        while let Some(line) = framer.next_line() {
                            if let (Some(r), Ok(l)) = (recorder.as_mut(), &line) {
                                r.line("< ", l);
                            }
                            dispatcher.line(line);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(target: "umldbg::gdbmi", "reading gdb's output: {err}");
                        break;
                    }
                }
            }
        }
    }
    if let Some(partial) = framer.take_partial() {
        dispatcher.line(Ok(&partial));
    }

    // gdb has closed its output or we were told to stop: collect the exit status, killing it if
    // it does not go away by itself.
    drop(lines_tx);
    let status = match child {
        Some(mut child) => match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        },
        None => None,
    };
    let info = status.map(ExitInfo::from).unwrap_or(ExitInfo {
        code: None,
        signal: None,
    });
    // Give the stderr reader a moment to store gdb's last words for the error message.
    if let Some(t) = stderr_task {
        let _ = tokio::time::timeout(Duration::from_millis(500), t).await;
    }
    writer.abort();
    *lock(&shared.exit) = Some(info);
    tracing::debug!(target: "umldbg::gdbmi", "gdb {info}");
    for (_, pending) in std::mem::take(&mut dispatcher.pending) {
        let _ = pending.reply.send(Err(shared.exited_error()));
    }
    let _ = events.send(AsyncEvent::Exited(info));
}

async fn writer_task<W: AsyncWrite + Unpin>(
    mut stdin: W,
    mut lines: mpsc::UnboundedReceiver<String>,
) {
    while let Some(line) = lines.recv().await {
        if let Err(err) = stdin.write_all(line.as_bytes()).await {
            tracing::debug!(target: "umldbg::gdbmi", "writing to gdb: {err}");
            return;
        }
        if stdin.flush().await.is_err() {
            return;
        }
    }
}

async fn stderr_task(stderr: ChildStderr, shared: Arc<Shared>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "umldbg::gdbmi", "gdb stderr: {line}");
        let mut tail = lock(&shared.stderr_tail);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Routes parsed lines to waiting commands and subscribers. Kept apart from the IO loop so the
/// routing rules read in one place.
struct Dispatcher {
    /// Commands sent and not yet answered, by token; gdb answers in order, so the first entry
    /// is the command gdb is working on.
    pending: BTreeMap<u64, Pending>,
    events: broadcast::Sender<AsyncEvent>,
}

impl Dispatcher {
    fn line(&mut self, line: Result<&[u8], FrameError>) {
        let line = match line {
            Ok(line) => line,
            Err(err) => {
                tracing::warn!(target: "umldbg::gdbmi", "{err}");
                return;
            }
        };
        if line.is_empty() {
            return;
        }
        tracing::trace!(target: "umldbg::gdbmi", "< {}", String::from_utf8_lossy(line));
        match parse::parse_line(line) {
            Ok(record) => self.record(record),
            Err(err) => {
                tracing::debug!(target: "umldbg::gdbmi", "{err}");
                let _ = self.events.send(AsyncEvent::Unparsed(err));
            }
        }
    }

    fn record(&mut self, record: Record) {
        match record {
            Record::Prompt => {}
            Record::Result(result) => {
                let key = match result.token {
                    Some(token) => Some(token.0),
                    // gdb always echoes our token; without one, the oldest command is the one
                    // gdb was running.
                    None => self.pending.keys().next().copied(),
                };
                let Some(pending) = key.and_then(|k| self.pending.remove(&k)) else {
                    tracing::debug!(
                        target: "umldbg::gdbmi",
                        "answer for no waiting command: {}",
                        Record::Result(result)
                    );
                    return;
                };
                let answer = if result.class == ResultClass::Error {
                    Err(GdbError::Command {
                        command: pending.command,
                        msg: result
                            .results
                            .get_str("msg")
                            .unwrap_or("(no message)")
                            .to_owned(),
                        code: result.results.get_str("code").map(str::to_owned),
                    })
                } else {
                    Ok(Response {
                        token: Token(key.unwrap_or(0)),
                        class: result.class,
                        results: result.results,
                        console: pending.console,
                        log: pending.log,
                    })
                };
                // The caller may have timed out and gone; its late answer has no reader.
                let _ = pending.reply.send(answer);
            }
            Record::Stream(stream) => {
                let waiting = self.pending.values_mut().next();
                match (stream.kind, waiting) {
                    (StreamKind::Console, Some(p)) => p.console.push_str(&stream.text),
                    (StreamKind::Log, Some(p)) => p.log.push_str(&stream.text),
                    _ => {
                        let _ = self.events.send(AsyncEvent::Stream(stream));
                    }
                }
            }
            Record::Async(record) => {
                let event = match record.kind {
                    AsyncKind::Exec if record.class == "stopped" => {
                        match StopEvent::from_results(&record.results) {
                            Ok(stop) => AsyncEvent::Stopped(Box::new(stop)),
                            Err(err) => {
                                tracing::warn!(target: "umldbg::gdbmi", "{err}");
                                AsyncEvent::Exec(record)
                            }
                        }
                    }
                    AsyncKind::Exec if record.class == "running" => AsyncEvent::Running {
                        thread_id: record.results.get_str("thread-id").map(str::to_owned),
                    },
                    AsyncKind::Exec => AsyncEvent::Exec(record),
                    AsyncKind::Notify => AsyncEvent::Notify(record),
                    AsyncKind::Status => AsyncEvent::Status(record),
                };
                let _ = self.events.send(event);
            }
        }
    }
}
