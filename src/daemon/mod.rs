//! The debug daemon: one per attached machine. `attach` starts it; it owns gdb (through GDB/MI),
//! knows where every module sits, and serves the CLI, the shell, scripts and IDEs on a Unix
//! socket beside the machine's mconsole socket.

pub mod client;
pub mod error;
pub mod load;
pub mod protocol;
pub mod server;
pub mod session;
pub mod text;

// Moved to the guest layer; the old paths stay for the daemon's own files.
pub use crate::guest::{modules, skb, symbols};

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What `attach` hands to the daemon process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachOptions {
    pub umid: String,
    pub uml_dir: PathBuf,
    pub gdb: PathBuf,
    pub module_paths: Vec<PathBuf>,
    pub stopped: bool,
    pub cache: PathBuf,
    /// The host pty of a console with a root shell (`--console`), for a machine not in a lab.
    #[serde(default)]
    pub console: Option<PathBuf>,
}

pub use crate::guest::shell::{GuestConsole, GuestShell};

/// The console of a machine: its lab's, the pty given with `--console`, or a pty that mconsole
/// names and where a shell answers. None with the reason when there is none; an error only when
/// the pty given with `--console` does not answer.
fn guest_console(
    opts: &AttachOptions,
    inst: &crate::uml::instance::UmlInstance,
    notes: &mut Vec<String>,
) -> Result<Option<GuestConsole>, String> {
    use crate::uml::console::{self, FindError, PtyConsole};
    if let Some((lab, _)) = crate::lab::state::lab_of_umid(&opts.umid) {
        if let Some(p) = &opts.console {
            notes.push(format!(
                "--console {} is not used: {} is a machine of lab {lab}, whose console umldbg reaches through the lab",
                p.display(),
                opts.umid
            ));
        }
        return Ok(Some(GuestConsole::lab(&opts.umid, &lab)));
    }
    let pty = GuestConsole::pty;
    if let Some(p) = &opts.console {
        let mut c = PtyConsole::open(p).map_err(|e| e.to_string())?;
        c.probe(console::PROBE_TIMEOUT).map_err(|e| e.to_string())?;
        return Ok(Some(pty(c, "given with --console".into())));
    }
    let mc = crate::uml::mconsole::Mconsole::for_instance(inst, Duration::from_secs(2))
        .map_err(|e| e.to_string());
    let found = mc.and_then(|mc| {
        console::find_shell(&mc, std::time::Instant::now() + Duration::from_secs(10)).map_err(|e| {
            match e {
                FindError::NoPty => String::new(),
                e => e.to_string(),
            }
        })
    });
    match found {
        Ok((line, c)) => Ok(Some(pty(c, format!("{line} per mconsole")))),
        Err(why) => {
            if !why.is_empty() {
                notes.push(format!("no console shell: {why}"));
            }
            Ok(None)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Instance(#[from] crate::uml::instance::InstanceError),
    #[error(
        "{umid} is already attached by the session of daemon pid {pid}: use it, or `umldbg detach --umid {umid}`"
    )]
    AlreadyAttached { umid: String, pid: String },
    #[error("{0} is already traced by process {1} (another debugger): detach it first")]
    Traced(String, i32),
    #[error("attach {0}: {1}")]
    Failed(String, String),
}

/// Start a session daemon for the machine and wait until it is ready; returns its summary.
pub fn attach(opts: &AttachOptions) -> Result<String, AttachError> {
    let umid = crate::uml::ids::Umid::new(opts.umid.clone())
        .map_err(|e| AttachError::Failed(opts.umid.clone(), e.to_string()))?;
    let inst = crate::uml::instance::UmlInstance::resolve(&umid, &opts.uml_dir)?;
    let sock = client::socket_path(&opts.uml_dir, &opts.umid);
    // A session that has just been detached still answers for a moment while it winds down:
    // only a session that reports its status counts as attached.
    let wind_down = std::time::Instant::now() + Duration::from_secs(3);
    while let Ok(mut c) = client::Connection::open(&opts.uml_dir, &opts.umid) {
        let pid = c
            .request(&protocol::Request::Status)
            .ok()
            .and_then(|r| r.data)
            .and_then(|d| d.get("daemon_pid").map(|p| p.to_string()));
        match pid {
            Some(pid) => {
                return Err(AttachError::AlreadyAttached {
                    umid: opts.umid.clone(),
                    pid,
                });
            }
            None if std::time::Instant::now() < wind_down => {
                std::thread::sleep(Duration::from_millis(50))
            }
            None => {
                return Err(AttachError::AlreadyAttached {
                    umid: opts.umid.clone(),
                    pid: "? (it does not answer)".into(),
                });
            }
        }
    }
    server::remove_stale(&sock);
    let _ = std::fs::remove_file(opts.uml_dir.join(&opts.umid).join("umldbg.last"));
    let pid = inst.pid.get();
    if let Some((t, _)) = crate::util::tracer_of(pid) {
        return Err(AttachError::Traced(opts.umid.clone(), t));
    }
    let (rd, wr) =
        nix::unistd::pipe().map_err(|e| AttachError::Failed(opts.umid.clone(), e.to_string()))?;
    let exe = std::env::current_exe()
        .map_err(|e| AttachError::Failed(opts.umid.clone(), e.to_string()))?;
    let log_path = opts.uml_dir.join(&opts.umid).join("umldbg.log");
    let log = std::fs::File::create(&log_path).map_err(|e| {
        AttachError::Failed(opts.umid.clone(), format!("{}: {e}", log_path.display()))
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("--cache")
        .arg(&opts.cache)
        .arg("daemon-run")
        .arg(serde_json::to_string(opts).expect("options serialise"));
    cmd.stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| AttachError::Failed(opts.umid.clone(), e.to_string()))?,
        )
        .stderr(log);
    use std::os::fd::AsRawFd;
    let wfd = wr.as_raw_fd();
    // SAFETY: setsid and dup2 are async-signal-safe; wfd stays open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| AttachError::Failed(opts.umid.clone(), e.to_string()))?;
    drop(wr);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(std::fs::File::from(rd)).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(180))
        .unwrap_or_default();
    let reply: Result<String, String> = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
        Err(format!(
            "the daemon died during start; see {}",
            log_path.display()
        ))
    });
    match reply {
        Ok(summary) => Ok(summary),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(AttachError::Failed(opts.umid.clone(), e))
        }
    }
}

/// Entry of the hidden `daemon-run` subcommand: fd 3 is the ready pipe.
pub fn daemon_main(opts: AttachOptions) -> i32 {
    use std::os::fd::FromRawFd;
    // SAFETY: `attach` passes the write end of its ready pipe as fd 3; nothing else owns it.
    let mut ready = (unsafe { libc::fcntl(3, libc::F_GETFD) } >= 0)
        .then(|| unsafe { std::fs::File::from_raw_fd(3) });
    let mut report = |r: Result<String, String>| {
        if let Some(f) = ready.as_mut() {
            let _ = writeln!(f, "{}", serde_json::to_string(&r).unwrap_or_default());
        }
        ready = None;
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(Err(format!("tokio: {e}")));
            return 1;
        }
    };
    rt.block_on(async move {
        match start(&opts).await {
            Ok((session, summary, listener, tx, rx, events)) => {
                report(Ok(summary));
                let sock = client::socket_path(&opts.uml_dir, &opts.umid);
                tokio::spawn(server::serve(listener, tx, events));
                session.run(rx).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = std::fs::remove_file(sock);
                0
            }
            Err(e) => {
                report(Err(e.to_string()));
                1
            }
        }
    })
}

type Started = (
    session::Session,
    String,
    tokio::net::UnixListener,
    tokio::sync::mpsc::Sender<session::Msg>,
    tokio::sync::mpsc::Receiver<session::Msg>,
    tokio::sync::broadcast::Sender<protocol::Event>,
);

/// Why the session daemon could not start; its text goes back to `attach` over the ready pipe.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    BadUmid(#[from] crate::uml::ids::IdError),
    #[error(transparent)]
    Instance(#[from] crate::uml::instance::InstanceError),
    #[error("/proc/{pid}/exe: {source}")]
    Exe {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("{umid} is being traced by umldbg process {holder}: stop that trace first")]
    Traced { umid: String, holder: String },
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    /// The guest console named or found could not be used.
    #[error("{0}")]
    Console(String),
    #[error(transparent)]
    Session(#[from] session::SessionError),
    #[error("bind {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

async fn start(opts: &AttachOptions) -> Result<Started, StartError> {
    let umid = crate::uml::ids::Umid::new(opts.umid.clone())?;
    let inst = crate::uml::instance::UmlInstance::resolve(&umid, &opts.uml_dir)?;
    let pid = inst.pid.get();
    let image = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|source| StartError::Exe { pid, source })?;
    let modules_dir = modules_dir_for(&image, &opts.cache);
    let mut notes = Vec::new();
    // `umldbg trace` can hold the machine's text with probes and no ptrace at all: the text lock
    // (held for the life of this process) keeps a gdb session and a trace apart, and bytes a
    // killed tracer and its guard both left behind are put back before gdb sees the text.
    let journal = crate::ptrace::guard::journal_path(&opts.uml_dir, &opts.umid);
    let text_lock =
        crate::ptrace::guard::TextLock::take(&journal).map_err(|holder| StartError::Traced {
            umid: opts.umid.clone(),
            holder: holder.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
        })?;
    match crate::ptrace::guard::TraceJournal::open(&journal, pid).repair() {
        Ok(fixed) if !fixed.is_empty() => notes.push(format!(
            "put back {} byte(s) a killed tracer left in kernel text",
            fixed.len()
        )),
        Ok(_) => {}
        Err(e) => notes.push(format!("trace journal {}: {e}", journal.display())),
    }
    let console = {
        let (o, i) = (opts.clone(), inst.clone());
        tokio::task::spawn_blocking(move || {
            let mut notes = Vec::new();
            guest_console(&o, &i, &mut notes).map(|c| (c, notes))
        })
        .await?
        .map_err(StartError::Console)
        .map(|(c, n)| {
            notes.extend(n);
            c
        })?
    };
    // Section addresses from the console while the machine still runs.
    let guest_modules = match &console {
        Some(c) => {
            let c = c.clone();
            let listed =
                tokio::task::spawn_blocking(move || c.run(modules::LISTING_SCRIPT, 20)).await;
            match listed {
                Ok(Ok((0, out))) => Some(modules::parse_listing(&out)),
                Ok(Ok((rc, out))) => {
                    notes.push(format!(
                        "listing /sys/module on the console exited {rc}: {}",
                        out.trim()
                    ));
                    None
                }
                Ok(Err(e)) => {
                    notes.push(format!("listing /sys/module on the console: {e}"));
                    None
                }
                Err(e) => {
                    notes.push(format!("listing /sys/module on the console: {e}"));
                    None
                }
            }
        }
        None => None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (events, _) = tokio::sync::broadcast::channel(256);
    let cfg = session::SessionConfig {
        umid: opts.umid.clone(),
        pid,
        gdb_path: opts.gdb.clone(),
        image,
        modules_dir,
        module_paths: opts.module_paths.clone(),
        console,
        notes,
        stopped: opts.stopped,
        cache: opts.cache.clone(),
        journal: journal.clone(),
    };
    let (mut session, summary) =
        session::Session::start(cfg, guest_modules, tx.clone(), events.clone()).await?;
    session.text_lock = Some(text_lock);
    let sock = client::socket_path(&opts.uml_dir, &opts.umid);
    let listener = tokio::net::UnixListener::bind(&sock).map_err(|source| StartError::Bind {
        path: sock.clone(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    Ok((session, summary, listener, tx, rx, events))
}

/// The installed modules of the cached kernel whose image the machine runs.
fn modules_dir_for(image: &Path, cache: &Path) -> Option<PathBuf> {
    crate::kernel::manifest::find_by_image(cache, image).map(|m| m.modules_dir)
}
