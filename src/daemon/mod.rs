//! The debug daemon: one per attached machine. `attach` starts it; it owns gdb (through GDB/MI),
//! knows where every module sits, and serves the CLI, the shell, scripts and IDEs on a Unix
//! socket beside the machine's mconsole socket.

pub mod client;
pub mod journal;
pub mod load;
pub mod modules;
pub mod protocol;
pub mod server;
pub mod session;
pub mod skb;
pub mod symbols;

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
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{0}")]
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
                report(Err(e));
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

async fn start(opts: &AttachOptions) -> Result<Started, String> {
    let umid = crate::uml::ids::Umid::new(opts.umid.clone()).map_err(|e| e.to_string())?;
    let inst = crate::uml::instance::UmlInstance::resolve(&umid, &opts.uml_dir)
        .map_err(|e| e.to_string())?;
    let pid = inst.pid.get();
    let image = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|e| format!("/proc/{pid}/exe: {e}"))?;
    let modules_dir = modules_dir_for(&image, &opts.cache);
    let console = crate::lab::state::lab_of_umid(&opts.umid).is_some();
    // Section addresses from the console while the machine still runs.
    let guest_modules = if console {
        let umid = opts.umid.clone();
        tokio::task::spawn_blocking(move || {
            crate::lab::client::exec(&umid, modules::LISTING_SCRIPT, 20)
        })
        .await
        .ok()
        .and_then(|r| r.ok())
        .filter(|r| r.ok && r.status == Some(0))
        .map(|r| modules::parse_listing(r.output.as_deref().unwrap_or("")))
    } else {
        None
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
        stopped: opts.stopped,
        cache: opts.cache.clone(),
        journal: opts.uml_dir.join(&opts.umid).join("umldbg.journal"),
    };
    let (session, summary) =
        session::Session::start(cfg, guest_modules, tx.clone(), events.clone()).await?;
    let sock = client::socket_path(&opts.uml_dir, &opts.umid);
    let listener = tokio::net::UnixListener::bind(&sock)
        .map_err(|e| format!("bind {}: {e}", sock.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
    Ok((session, summary, listener, tx, rx, events))
}

/// The installed modules of the cached kernel whose image the machine runs.
fn modules_dir_for(image: &Path, cache: &Path) -> Option<PathBuf> {
    crate::kernel::manifest::list(cache)
        .into_iter()
        .filter_map(|e| e.manifest.ok())
        .find(|m| std::fs::canonicalize(&m.linux).ok().as_deref() == Some(image))
        .map(|m| m.modules_dir)
}
