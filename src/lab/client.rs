//! The client side of a lab: start one (spawning its supervisor), talk to its supervisor, and
//! clean up after a lab whose supervisor is gone.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::marks::{self, runs_umid};
use super::spec::LabSpec;
use super::state::{self, LabState};
use super::supervisor::{self, Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("umldbg must run as root to create network namespaces and taps (try sudo)")]
    NotRoot,
    #[error("/dev/net/tun is missing: load the tun module (modprobe tun)")]
    NoTun,
    #[error(transparent)]
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
    #[error(transparent)]
    BadName(#[from] crate::uml::ids::IdError),
    #[error("taking lab {0} down needs root (try sudo): nothing was stopped or removed")]
    DownNotRoot(String),
    #[error(
        "the supervisor of lab {0} (pid {1}) is gone, so its machines cannot be reached: run `umldbg lab down {0}`, then `umldbg lab up` again"
    )]
    SupervisorGone(String, i32),
    #[error("lab {name} is not fully down: {errors}{done}")]
    DownIncomplete {
        name: String,
        errors: String,
        done: String,
    },
}

fn labs_up() -> String {
    let v = state::lab_names();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Refuse a umid that some machine (this lab, another lab, or one started by hand) already uses.
pub fn check_umid_free(umid: &str, uml_dir: &Path) -> Result<(), LabError> {
    if let Some((lab, st)) = state::lab_of_umid(umid)
        && let Some(m) = st.machine(umid)
        && crate::util::pid_alive(m.pid)
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
        && crate::util::pid_alive(pid)
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
    up_on(spec, cache, None)
}

/// [`up`] on a chosen kernel (`lab up --kernel`); `None` is the cached kernel.
pub fn up_on(
    spec: &LabSpec,
    cache: &Path,
    kernel: Option<&crate::kernel::Manifest>,
) -> Result<LabState, LabError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(LabError::NoTun);
    }
    crate::uml::ids::check_lab_name(&spec.name)?;
    if kernel.is_none() {
        crate::kernel::cached(cache)?;
    }
    let dir = state::lab_dir(&spec.name);
    if dir.exists() {
        match LabState::read(&dir) {
            Some(st) if crate::util::pid_alive(st.supervisor_pid) => {
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
    if let Some(k) = kernel {
        let p = dir.join(supervisor::KERNEL);
        std::fs::write(
            &p,
            serde_json::to_string_pretty(k).expect("manifest serialises"),
        )
        .map_err(|e| LabError::Io(format!("write {}: {e}", p.display())))?;
    }

    let (rd, wr) = nix::unistd::pipe().map_err(|e| LabError::Io(format!("pipe: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| LabError::Io(format!("current_exe: {e}")))?;
    let log = std::fs::File::create(dir.join("supervisor.log"))
        .map_err(|e| LabError::Io(format!("create supervisor.log: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--cache")
        .arg(cache)
        .args(["lab", "supervise", &spec.name]);
    // Marks that let `lab down` recognise the supervisor, and the machines that inherit its
    // environment, even when the lab's run directory is gone.
    cmd.env(marks::ENV_LAB, &spec.name).env(
        marks::ENV_LAB_DIR,
        std::path::absolute(&dir).unwrap_or(dir.clone()),
    );
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
    crate::uml::ids::check_lab_name(lab)?;
    let sock = state::lab_dir(lab).join(state::SOCKET);
    // Say what happened and what to do, not "Connection refused" (or "reset": a supervisor
    // killed with a connection in its backlog).
    let failed = |e: std::io::Error| match LabState::read(&state::lab_dir(lab)) {
        Some(st) if !marks::supervisor_runs(st.supervisor_pid, lab) => {
            LabError::SupervisorGone(lab.into(), st.supervisor_pid)
        }
        _ => LabError::Socket(lab.into(), sock.display().to_string(), e),
    };
    let mut s = UnixStream::connect(&sock).map_err(failed)?;
    let mut line = serde_json::to_string(req).expect("request serialises");
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(failed)?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) if reply.is_empty() => {
                return Err(failed(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => reply.push(byte[0]),
            Err(e) => return Err(failed(e)),
        }
    }
    let r: Reply = serde_json::from_slice(&reply)
        .map_err(|e| LabError::Io(format!("lab {lab}: bad reply from supervisor: {e}")))?;
    Ok((r, s))
}

/// The lab that runs `umid`, or an error listing the labs that are up.
pub fn find_machine(umid: &str) -> Result<(String, LabState), LabError> {
    crate::uml::ids::check_umid(umid)?;
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

/// Ask a lab's supervisor to stop machines (all when `umids` is empty) and boot them again, on
/// `kernel` or on the kernel each ran. The reply says what each machine runs now.
pub fn restart(
    lab: &str,
    umids: &[String],
    kernel: Option<crate::kernel::Manifest>,
) -> Result<Reply, LabError> {
    let dir = state::lab_dir(lab);
    let st = LabState::read(&dir).ok_or_else(|| LabError::NoLab(lab.into(), labs_up()))?;
    if !crate::util::pid_alive(st.supervisor_pid) {
        return Err(LabError::Stale(lab.into()));
    }
    let (r, _) = request(
        lab,
        &Request::Restart {
            umids: umids.to_vec(),
            kernel,
        },
    )?;
    Ok(r)
}

/// What `lab down` did: every process it stopped and everything it removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct DownReport {
    pub name: String,
    /// "machine UMID (pid N)", "supervisor (pid N)".
    pub stopped: Vec<String>,
    /// "namespace NS", directories.
    pub removed: Vec<String>,
}

impl DownReport {
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.stopped.is_empty() {
            parts.push(format!("stopped {}", self.stopped.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" (done: {})", parts.join("; "))
        }
    }
}

/// Ask a lab's supervisor to take the lab down, with a deadline (a stopped supervisor must not
/// hang `lab down`). Whatever it answers, the caller checks what is left.
fn ask_down(lab: &str) {
    let sock = state::lab_dir(lab).join(state::SOCKET);
    let Ok(mut s) = UnixStream::connect(&sock) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut line = serde_json::to_string(&Request::Down).expect("request serialises");
    line.push('\n');
    if s.write_all(line.as_bytes()).is_ok() {
        let mut reply = String::new();
        let _ = BufReader::new(s).read_line(&mut reply);
    }
}

fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        if pids.iter().all(|&p| !crate::util::pid_alive(p)) {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Remove a directory the lab created; a symlink in its place is removed, never followed.
fn remove_tree(p: &Path, report: &mut DownReport, errors: &mut Vec<String>) {
    if p.symlink_metadata().is_err() {
        return;
    }
    let res = if p.is_symlink() {
        std::fs::remove_file(p)
    } else {
        std::fs::remove_dir_all(p)
    };
    match res {
        Ok(()) => report.removed.push(p.display().to_string()),
        Err(e) => errors.push(format!("cannot remove {}: {e}", p.display())),
    }
}

/// Take a lab down: its machines, its supervisor, its namespace, its `~/.uml/<umid>` dirs, its
/// run directory and its stage directory under the cache, and nothing else.
///
/// Works without the lab's state (the processes are found by their marks, see
/// [`super::marks`]); fails, removing nothing, when `name` is not a lab name or names no lab;
/// fails when something could not be stopped or removed (a refused permission included).
pub fn down(name: &str, cache: &Path) -> Result<DownReport, LabError> {
    crate::uml::ids::check_lab_name(name)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::DownNotRoot(name.into()));
    }
    let dir = state::lab_dir(name);
    let st = LabState::read(&dir);
    let ns = state::netns_name(name);
    let lab_marks = marks::LabMarks::new(name);
    let procs = marks::scan();
    let supervisors: Vec<i32> = procs
        .iter()
        .filter(|p| lab_marks.is_supervisor(p))
        .map(|p| p.pid)
        .collect();
    // A lab of the same name under another run directory owns the namespace and the stage.
    let foreign = lab_marks.foreign_supervisors(&procs);
    let uml_dir = st
        .as_ref()
        .map(|s| s.uml_dir.clone())
        .unwrap_or_else(crate::uml::instance::default_uml_dir);
    let mut umids: Vec<String> = st
        .iter()
        .flat_map(|s| s.machines.iter().map(|m| m.umid.clone()))
        .filter(|u| crate::uml::ids::check_umid(u).is_ok())
        .collect();
    umids.extend(procs.iter().filter_map(|p| p.umid()));
    umids.sort();
    umids.dedup();
    let pid_files: HashMap<String, i32> = umids
        .iter()
        .filter_map(|u| Some((u.clone(), marks::pid_file(&uml_dir, u)?)))
        .collect();
    let machines = lab_marks.machines(
        &procs,
        &supervisors,
        foreign.is_empty(),
        st.as_ref(),
        &pid_files,
    );
    let mut stages: Vec<PathBuf> = vec![cache.join("stage").join(name)];
    for p in procs.iter().filter(|p| supervisors.contains(&p.pid)) {
        if let Some(c) = p.cache_arg() {
            stages.push(c.join("stage").join(name));
        }
    }
    stages.sort();
    stages.dedup();
    if !foreign.is_empty() {
        stages.clear();
    }
    stages.retain(|s| s.symlink_metadata().is_ok());
    let dir_exists = dir.symlink_metadata().is_ok();
    let ns_exists = foreign.is_empty() && super::netns::exists(&ns);
    if !dir_exists
        && !ns_exists
        && supervisors.is_empty()
        && machines.is_empty()
        && stages.is_empty()
    {
        return Err(LabError::NoLab(name.into(), labs_up()));
    }

    let mut report = DownReport {
        name: name.into(),
        ..Default::default()
    };
    let mut errors = Vec::new();
    // A live supervisor halts its machines cleanly and removes its run directory; what it
    // leaves (or everything, when it is gone) is stopped and removed below.
    if !supervisors.is_empty() {
        ask_down(name);
    }
    // Halt the machines side by side: each may take its mconsole deadline.
    let halts: Vec<_> = machines
        .iter()
        .filter(|m| m.pids.iter().any(|&p| crate::util::pid_alive(p)))
        .map(|m| {
            let (dir, umid, main) = (uml_dir.clone(), m.umid.clone(), m.main);
            std::thread::spawn(move || supervisor::stop_machine(&dir, &umid, main))
        })
        .collect();
    for h in halts {
        let _ = h.join();
    }
    for m in &machines {
        if m.pids.iter().any(|&p| crate::util::pid_alive(p)) {
            // What the halt left (helpers outside the main process's group, a wrapper): by
            // pid, each checked again.
            for &p in &m.pids {
                if runs_umid(p, &m.umid)
                    && let Err(e) = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::SIGKILL,
                    )
                    && e != nix::errno::Errno::ESRCH
                {
                    errors.push(format!("cannot stop machine {} (pid {p}): {e}", m.umid));
                }
            }
        }
        if wait_gone(&m.pids, Duration::from_secs(5)) {
            report
                .stopped
                .push(format!("machine {} (pid {})", m.umid, m.main));
        } else {
            errors.push(format!("machine {} (pid {}) still runs", m.umid, m.main));
        }
    }
    for &pid in &supervisors {
        let p = nix::unistd::Pid::from_raw(pid);
        if marks::supervisor_runs(pid, name) {
            let _ = nix::sys::signal::kill(p, nix::sys::signal::SIGTERM);
            if !wait_gone(&[pid], Duration::from_secs(2))
                && marks::supervisor_runs(pid, name)
                && let Err(e) = nix::sys::signal::kill(p, nix::sys::signal::SIGKILL)
            {
                errors.push(format!("cannot stop the supervisor (pid {pid}): {e}"));
            }
        }
        if wait_gone(&[pid], Duration::from_secs(3)) {
            report.stopped.push(format!("supervisor (pid {pid})"));
        } else {
            errors.push(format!("the supervisor (pid {pid}) still runs"));
        }
    }
    if ns_exists {
        match super::netns::delete(&ns) {
            Ok(()) => report.removed.push(format!("namespace {ns}")),
            Err(e) if !super::netns::exists(&ns) => {
                let _ = e;
                report.removed.push(format!("namespace {ns}"));
            }
            Err(e) => errors.push(format!("cannot remove namespace {ns}: {e}")),
        }
    }
    // The machines' `~/.uml/<umid>` dirs, when no live process owns them any more.
    let mut lab_umids: Vec<&str> = machines.iter().map(|m| m.umid.as_str()).collect();
    lab_umids.extend(
        st.iter()
            .flat_map(|s| s.machines.iter().map(|m| m.umid.as_str()))
            .filter(|u| crate::uml::ids::check_umid(u).is_ok()),
    );
    lab_umids.sort();
    lab_umids.dedup();
    for u in lab_umids {
        let d = uml_dir.join(u);
        if marks::pid_file(&uml_dir, u).is_some_and(|p| runs_umid(p, u)) {
            continue;
        }
        remove_tree(&d, &mut report, &mut errors);
    }
    // The supervisor removes its run directory itself; report it either way.
    if dir_exists {
        if dir.symlink_metadata().is_ok() {
            remove_tree(&dir, &mut report, &mut errors);
        } else {
            report.removed.push(dir.display().to_string());
        }
    }
    // The supervisor removes its stage directory too; report it either way.
    for s in &stages {
        if s.symlink_metadata().is_ok() {
            remove_tree(s, &mut report, &mut errors);
        } else {
            report.removed.push(s.display().to_string());
        }
    }
    if !errors.is_empty() {
        return Err(LabError::DownIncomplete {
            name: name.into(),
            errors: errors.join("; "),
            done: report.summary(),
        });
    }
    Ok(report)
}
