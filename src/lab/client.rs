//! The client side of a lab: start one (spawning its supervisor), talk to its supervisor, and
//! clean up after a lab whose supervisor is gone.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::spec::LabSpec;
use super::state::{self, LabState};
use super::supervisor::{self, Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("umldbg must run as root to create network namespaces and taps (try sudo)")]
    NotRoot,
    #[error("/dev/net/tun is missing: load the tun module (modprobe tun)")]
    NoTun,
    #[error("{0}")]
    Kernel(#[from] crate::kernel::KernelError),
    #[error("lab {0} is already up (supervisor pid {1}); `umldbg lab down {0}` first")]
    AlreadyUp(String, i32),
    #[error(
        "lab {0} was left behind by a supervisor that is gone; run `umldbg lab down {0}` to clean it up"
    )]
    Stale(String),
    #[error(
        "umid {umid} is already running (pid {pid}{by}); pick another umid or stop that machine"
    )]
    UmidBusy { umid: String, pid: i32, by: String },
    #[error("no lab named {0} is up (labs up: {1})")]
    NoLab(String, String),
    #[error("no running lab has a machine {0} (labs up: {1})")]
    NoMachine(String, String),
    #[error("lab {0}: {1}")]
    Start(String, String),
    #[error("lab {0}: supervisor socket {1}: {2}")]
    Socket(String, String, std::io::Error),
    #[error("{0}")]
    Io(String),
}

fn labs_up() -> String {
    let v = state::lab_names();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Is the pid a UML kernel started with `umid=<umid>`?
fn runs_umid(pid: i32, umid: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|&b| b == 0)
                .any(|a| a == format!("umid={umid}").as_bytes())
        })
        .unwrap_or(false)
}

/// Refuse a umid that some machine (this lab, another lab, or one started by hand) already uses.
pub fn check_umid_free(umid: &str, uml_dir: &Path) -> Result<(), LabError> {
    if let Some((lab, st)) = state::lab_of_umid(umid)
        && let Some(m) = st.machine(umid)
        && state::pid_alive(m.pid)
    {
        return Err(LabError::UmidBusy {
            umid: umid.into(),
            pid: m.pid,
            by: format!(", lab {lab}"),
        });
    }
    let pidfile = uml_dir.join(umid).join("pid");
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        && state::pid_alive(pid)
        && runs_umid(pid, umid)
    {
        return Err(LabError::UmidBusy {
            umid: umid.into(),
            pid,
            by: String::new(),
        });
    }
    Ok(())
}

/// Start a lab and return its state once every machine is ready.
pub fn up(spec: &LabSpec, cache: &Path) -> Result<LabState, LabError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(LabError::NoTun);
    }
    crate::kernel::cached(cache)?;
    let dir = state::lab_dir(&spec.name);
    if dir.exists() {
        match LabState::read(&dir) {
            Some(st) if state::pid_alive(st.supervisor_pid) => {
                return Err(LabError::AlreadyUp(spec.name.clone(), st.supervisor_pid));
            }
            _ => return Err(LabError::Stale(spec.name.clone())),
        }
    }
    let uml_dir = crate::uml::instance::default_uml_dir();
    for m in &spec.machines {
        check_umid_free(&m.umid, &uml_dir)?;
    }
    if super::netns::exists(&state::netns_name(&spec.name)) {
        return Err(LabError::Stale(spec.name.clone()));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError::Io(format!("create {}: {e}", dir.display())))?;
    let spec_json = serde_json::to_string_pretty(spec).expect("spec serialises");
    std::fs::write(dir.join(state::SPEC), spec_json)
        .map_err(|e| LabError::Io(format!("write {}: {e}", dir.join(state::SPEC).display())))?;

    let (rd, wr) = nix::unistd::pipe().map_err(|e| LabError::Io(format!("pipe: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| LabError::Io(format!("current_exe: {e}")))?;
    let log = std::fs::File::create(dir.join("supervisor.log"))
        .map_err(|e| LabError::Io(format!("create supervisor.log: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--cache")
        .arg(cache)
        .args(["lab", "supervise", &spec.name]);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| LabError::Io(e.to_string()))?)
        .stderr(log);
    use std::os::fd::AsRawFd;
    let wfd = wr.as_raw_fd();
    // SAFETY: setsid and dup2 are async-signal-safe; wfd is open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| LabError::Start(spec.name.clone(), format!("start supervisor: {e}")))?;
    drop(wr);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(std::fs::File::from(rd)).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(150))
        .unwrap_or_default();
    let line = line.trim();
    if line == "ok" {
        return LabState::read(&dir)
            .ok_or_else(|| LabError::Start(spec.name.clone(), "supervisor wrote no state".into()));
    }
    // The supervisor cleaned up what it made; remove the run directory too.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGKILL,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let msg = line.strip_prefix("error: ").unwrap_or(if line.is_empty() {
        "supervisor died during start"
    } else {
        line
    });
    Err(LabError::Start(spec.name.clone(), msg.to_string()))
}

/// Send one request to a lab's supervisor and read its reply line; the stream is returned for
/// requests that go on (console).
pub fn request(lab: &str, req: &Request) -> Result<(Reply, UnixStream), LabError> {
    let sock = state::lab_dir(lab).join(state::SOCKET);
    let mut s = UnixStream::connect(&sock)
        .map_err(|e| LabError::Socket(lab.into(), sock.display().to_string(), e))?;
    let mut line = serde_json::to_string(req).expect("request serialises");
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| LabError::Socket(lab.into(), sock.display().to_string(), e))?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => reply.push(byte[0]),
            Err(e) => return Err(LabError::Socket(lab.into(), sock.display().to_string(), e)),
        }
    }
    let r: Reply = serde_json::from_slice(&reply)
        .map_err(|e| LabError::Io(format!("lab {lab}: bad reply from supervisor: {e}")))?;
    Ok((r, s))
}

/// The lab that runs `umid`, or an error listing the labs that are up.
pub fn find_machine(umid: &str) -> Result<(String, LabState), LabError> {
    state::lab_of_umid(umid).ok_or_else(|| LabError::NoMachine(umid.into(), labs_up()))
}

/// Run a shell script on a machine's console.
pub fn exec(umid: &str, script: &str, timeout: u64) -> Result<Reply, LabError> {
    let (lab, _) = find_machine(umid)?;
    let (r, _) = request(
        &lab,
        &Request::Exec {
            umid: umid.into(),
            script: script.into(),
            timeout,
        },
    )?;
    Ok(r)
}

/// Take a lab down: through its supervisor, or by hand from its state when the supervisor is gone.
pub fn down(name: &str) -> Result<(), LabError> {
    let dir = state::lab_dir(name);
    let st = LabState::read(&dir);
    if !dir.exists() && !super::netns::exists(&state::netns_name(name)) {
        return Err(LabError::NoLab(name.into(), labs_up()));
    }
    if let Some(st) = &st {
        if state::pid_alive(st.supervisor_pid)
            && let Ok((r, _)) = request(name, &Request::Down)
            && r.ok
        {
            return Ok(());
        }
        for m in &st.machines {
            if runs_umid(m.pid, &m.umid) {
                supervisor::stop_machine(&st.uml_dir, &m.umid, m.pid);
            }
        }
        supervisor::cleanup_network_and_dirs(st);
        if state::pid_alive(st.supervisor_pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(st.supervisor_pid),
                nix::sys::signal::SIGKILL,
            );
        }
    } else {
        let _ = super::netns::delete(&state::netns_name(name));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
