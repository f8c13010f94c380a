//! The lab supervisor: the long-lived process that creates a lab, owns its machines' consoles for
//! the life of the lab, serves `exec`, `console`, `status` and `down` on a Unix socket, and tears
//! everything down.
//!
//! UML's guest kernel logs warnings when its console pty is opened and closed over and over, so
//! one process holds every console open: the exec channel is `con0` on a pair of pipes, the
//! interactive console is `ssl0` on a pty whose master end the supervisor keeps.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::init::{self, ConsoleEvent, ConsoleFramer, InitParams};
use super::netns;
use super::spec::LabSpec;
use super::state::{self, DomainState, LabState, MachineState};
use crate::kernel::Manifest;

/// A request on the supervisor socket: one JSON line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Exec {
        umid: String,
        script: String,
        timeout: u64,
    },
    Status,
    Console {
        umid: String,
    },
    Down,
}

/// The reply: one JSON line (for `console`, raw bytes follow an `ok` reply).
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machines: Option<Vec<MachineHealth>>,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct MachineHealth {
    pub umid: String,
    pub pid: i32,
    pub alive: bool,
}

impl Reply {
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

struct Pending {
    output: Vec<u8>,
    done: mpsc::Sender<(i32, Vec<u8>)>,
}

/// One running machine as the supervisor holds it.
struct Machine {
    umid: String,
    pid: i32,
    child: Mutex<Child>,
    con_in: Mutex<ChildStdin>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    exited: Arc<std::sync::atomic::AtomicBool>,
    pty_master: OwnedFd,
    /// Host directory the guest can read (through hostfs) where long scripts are written.
    stage: PathBuf,
    /// The client currently attached to the interactive console, if any.
    console_client: Arc<Mutex<Option<UnixStream>>>,
    /// What the interactive console printed while nobody was attached (last few KB).
    console_backlog: Arc<Mutex<Vec<u8>>>,
}

struct Supervisor {
    dir: PathBuf,
    state: LabState,
    machines: Vec<Arc<Machine>>,
    next_id: AtomicU64,
}

/// Entry point of `umldbg lab supervise NAME` (started by `lab up`; fd 3 is the ready pipe).
pub fn main(name: &str, cache: &Path) -> i32 {
    let dir = state::lab_dir(name);
    let mut ready: Option<std::fs::File> = {
        use std::os::fd::FromRawFd;
        // SAFETY: `lab up` passes the write end of its ready pipe as fd 3; nothing else owns it.
        let ok = unsafe { libc::fcntl(3, libc::F_GETFD) } >= 0;
        ok.then(|| unsafe { std::fs::File::from_raw_fd(3) })
    };
    let report = |ready: &mut Option<std::fs::File>, line: &str| {
        if let Some(f) = ready.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    };
    let spec = match state::read_spec(&dir) {
        Some(s) => s,
        None => {
            report(
                &mut ready,
                &format!("error: no readable spec in {}", dir.display()),
            );
            return 1;
        }
    };
    let manifest = match crate::kernel::cached(cache) {
        Ok(m) => m,
        Err(e) => {
            report(&mut ready, &format!("error: {e}"));
            return 1;
        }
    };
    match start(&dir, &spec, &manifest, cache) {
        Ok(sup) => {
            let sup = Arc::new(sup);
            let listener = match UnixListener::bind(dir.join(state::SOCKET)) {
                Ok(l) => l,
                Err(e) => {
                    teardown(&sup.state, &sup.machines);
                    report(
                        &mut ready,
                        &format!("error: bind {}: {e}", dir.join(state::SOCKET).display()),
                    );
                    return 1;
                }
            };
            if let Err(e) = sup.state.write(&dir) {
                teardown(&sup.state, &sup.machines);
                report(&mut ready, &format!("error: write state: {e}"));
                return 1;
            }
            report(&mut ready, "ok");
            drop(ready);
            serve(sup, listener);
            0
        }
        Err(e) => {
            report(&mut ready, &format!("error: {e}"));
            1
        }
    }
}

/// Create the namespace, bridges and taps, boot every machine, wait until each is ready.
fn start(dir: &Path, spec: &LabSpec, k: &Manifest, cache: &Path) -> Result<Supervisor, String> {
    let ns = state::netns_name(&spec.name);
    netns::create(&ns, &spec.name).map_err(|e| e.to_string())?;
    let mut st = LabState {
        name: spec.name.clone(),
        netns: ns.clone(),
        supervisor_pid: std::process::id() as i32,
        kernel: k.linux.clone(),
        kernel_version: k.version.clone(),
        uml_dir: crate::uml::instance::default_uml_dir(),
        machines: Vec::new(),
        domains: Vec::new(),
    };
    let mut machines: Vec<Arc<Machine>> = Vec::new();
    let res = (|| -> Result<(), String> {
        for (i, d) in spec.domains.iter().enumerate() {
            let bridge = format!("br{i}");
            let ha = d.host_address.as_ref().map(|a| a.to_string());
            netns::add_bridge(&ns, &bridge, ha.as_deref())
                .map_err(|e| format!("domain {}: {e}", d.name))?;
            st.domains.push(DomainState {
                name: d.name.clone(),
                bridge,
                host_address: ha,
            });
        }
        let nsfd = netns::open(&ns).map_err(|e| e.to_string())?;
        let stage = cache.join("stage");
        let _ = std::fs::create_dir_all(&stage);
        let mdir = dir.join("machines");
        std::fs::create_dir_all(&mdir).map_err(|e| format!("create {}: {e}", mdir.display()))?;
        let mut ready_rx = Vec::new();
        for (mi, m) in spec.machines.iter().enumerate() {
            let mut taps = Vec::new();
            for (ii, iface) in m.interfaces.iter().enumerate() {
                let tap = format!("t{mi}-{ii}");
                let bridge = &st
                    .domains
                    .iter()
                    .find(|d| d.name == iface.domain)
                    .ok_or_else(|| format!("{}: unknown domain {}", m.umid, iface.domain))?
                    .bridge;
                netns::add_tap(&ns, &tap, bridge)
                    .map_err(|e| format!("{} {}: {e}", m.umid, iface.name))?;
                taps.push(tap);
            }
            let script = init::init_script(
                m,
                &InitParams {
                    kernel_version: &k.version,
                    module_root: &module_root(&k.modules_dir),
                    stage_dir: &stage.display().to_string(),
                },
            );
            let init_path = mdir.join(format!("{}.init", m.umid));
            std::fs::write(&init_path, script)
                .map_err(|e| format!("write {}: {e}", init_path.display()))?;
            set_mode(&init_path, 0o755);
            let log = mdir.join(format!("{}.console.log", m.umid));
            let mstage = stage.join(&spec.name).join(&m.umid);
            std::fs::create_dir_all(&mstage)
                .map_err(|e| format!("create {}: {e}", mstage.display()))?;
            let (machine, rx) = boot(
                m.umid.as_str(),
                m.mem_mb,
                &taps,
                &init_path,
                &k.linux,
                &nsfd,
                &log,
                &mstage,
            )?;
            st.machines.push(MachineState {
                umid: m.umid.clone(),
                hostname: m.hostname.clone(),
                pid: machine.pid,
                taps,
                addresses: m
                    .interfaces
                    .iter()
                    .map(|i| {
                        (
                            i.name.clone(),
                            i.addresses.iter().map(|a| a.to_string()).collect(),
                        )
                    })
                    .collect(),
                console_log: log,
            });
            machines.push(machine);
            ready_rx.push(rx);
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        for (m, rx) in machines.iter().zip(ready_rx) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(true) => {}
                Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let log = dir.join("machines").join(format!("{}.console.log", m.umid));
                    return Err(format!(
                        "machine {} exited during boot; its console log is {} (last line: {})",
                        m.umid,
                        log.display(),
                        last_line(&log)
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "machine {} did not finish its startup within 90 s",
                        m.umid
                    ));
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = res {
        teardown(&st, &machines);
        return Err(e);
    }
    Ok(Supervisor {
        dir: dir.to_path_buf(),
        state: st,
        machines,
        next_id: AtomicU64::new(1),
    })
}

/// `<root>/lib/modules/<version>` -> `<root>`.
fn module_root(modules_dir: &Path) -> String {
    modules_dir
        .ancestors()
        .nth(3)
        .unwrap_or(Path::new("/"))
        .display()
        .to_string()
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Start one UML machine and the threads that read its consoles.
fn boot(
    umid: &str,
    mem_mb: u32,
    taps: &[String],
    init_path: &Path,
    linux: &Path,
    nsfd: &OwnedFd,
    log_path: &Path,
    stage: &Path,
) -> Result<(Arc<Machine>, mpsc::Receiver<bool>), String> {
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("{umid}: openpty: {e}"))?;
    if let Ok(mut t) = nix::sys::termios::tcgetattr(&pty.slave) {
        nix::sys::termios::cfmakeraw(&mut t);
        let _ = nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t);
    }
    let mut cmd = Command::new(linux);
    cmd.arg(format!("mem={mem_mb}M"))
        .arg(format!("umid={umid}"))
        .args(["rootfstype=hostfs", "rootflags=/", "ro"])
        .arg(format!("init={}", init_path.display()))
        .args([
            "con0=fd:0,fd:1",
            "con=null",
            "ssl0=fd:3",
            "ssl=null",
            "loglevel=2",
        ]);
    for (i, tap) in taps.iter().enumerate() {
        cmd.arg(format!("vec{i}:transport=tap,ifname={tap}"));
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    netns::enter_on_spawn(&mut cmd, nsfd);
    let slave = pty.slave.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; the slave fd is open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(slave, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Its own process group, so that `down` can end the kernel and its helper processes together.
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{umid}: start {}: {e}", linux.display()))?;
    drop(pty.slave);
    let pid = child.id() as i32;
    let stdout = child.stdout.take().expect("piped");
    let stdin = child.stdin.take().expect("piped");
    let pending: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
    let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    {
        let pending = pending.clone();
        let exited = exited.clone();
        let mut log =
            std::fs::File::create(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        std::thread::spawn(move || {
            let mut framer = ConsoleFramer::default();
            let mut r = stdout;
            let mut buf = [0u8; 8192];
            let mut ready_tx = Some(ready_tx);
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for ev in framer.push(&buf[..n]) {
                    match ev {
                        ConsoleEvent::Ready => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(true);
                            }
                        }
                        ConsoleEvent::Stray(d) => {
                            let _ = log.write_all(&d);
                        }
                        ConsoleEvent::Output(id, d) => {
                            if let Some(p) = pending.lock().expect("lock").get_mut(&id) {
                                p.output.extend_from_slice(&d);
                            }
                        }
                        ConsoleEvent::Done(id, rc) => {
                            if let Some(p) = pending.lock().expect("lock").remove(&id) {
                                let _ = p.done.send((rc, p.output));
                            }
                        }
                    }
                }
            }
            exited.store(true, Ordering::SeqCst);
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(false);
            }
            // Wake every waiter: the machine is gone.
            pending.lock().expect("lock").clear();
        });
    }
    let console_client: Arc<Mutex<Option<UnixStream>>> = Arc::default();
    let console_backlog: Arc<Mutex<Vec<u8>>> = Arc::default();
    let master = pty.master;
    {
        let reader = master
            .try_clone()
            .map_err(|e| format!("{umid}: dup pty: {e}"))?;
        let client = console_client.clone();
        let backlog = console_backlog.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(reader);
            let mut buf = [0u8; 4096];
            loop {
                let n = match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut c = client.lock().expect("lock");
                let sent = c
                    .as_mut()
                    .map(|s| s.write_all(&buf[..n]).is_ok())
                    .unwrap_or(false);
                if !sent {
                    *c = None;
                    let mut b = backlog.lock().expect("lock");
                    b.extend_from_slice(&buf[..n]);
                    let excess = b.len().saturating_sub(4096);
                    b.drain(..excess);
                }
            }
        });
    }
    let m = Machine {
        umid: umid.to_string(),
        pid,
        child: Mutex::new(child),
        con_in: Mutex::new(stdin),
        pending,
        exited,
        pty_master: master,
        stage: stage.to_path_buf(),
        console_client,
        console_backlog,
    };
    Ok((Arc::new(m), ready_rx))
}

impl Machine {
    fn alive(&self) -> bool {
        if self.exited.load(Ordering::SeqCst) {
            return false;
        }
        matches!(self.child.lock().expect("lock").try_wait(), Ok(None))
    }

    fn exec(&self, id: u64, script: &str, timeout: u64) -> Reply {
        if !self.alive() {
            return Reply::err(format!(
                "machine {} is not running (pid {} exited)",
                self.umid, self.pid
            ));
        }
        let (tx, rx) = mpsc::channel();
        self.pending.lock().expect("lock").insert(
            id,
            Pending {
                output: Vec::new(),
                done: tx,
            },
        );
        let mut staged = None;
        let line = match init::run_request(id, timeout.max(1), script) {
            Some(l) => l,
            None => {
                // Long scripts go through a file the guest reads over hostfs.
                let path = self.stage.join(format!("cmd-{id}.sh"));
                if let Err(e) = std::fs::write(&path, script) {
                    self.pending.lock().expect("lock").remove(&id);
                    return Reply::err(format!("write {}: {e}", path.display()));
                }
                let line = init::file_request(id, timeout.max(1), &path.display().to_string());
                staged = Some(path);
                line
            }
        };
        let _cleanup = staged.map(RemoveOnDrop);
        if let Err(e) = self.con_in.lock().expect("lock").write_all(line.as_bytes()) {
            self.pending.lock().expect("lock").remove(&id);
            return Reply::err(format!("machine {}: console write failed: {e}", self.umid));
        }
        // The guest's `timeout` ends the command; allow for it to answer.
        match rx.recv_timeout(Duration::from_secs(timeout.max(1) + 5)) {
            Ok((rc, out)) => {
                let output = String::from_utf8_lossy(&out).into_owned();
                if rc == 124 || rc == 130 || rc == 137 {
                    return Reply {
                        ok: false,
                        error: Some(format!(
                            "command on {} did not finish within {timeout} s and was interrupted",
                            self.umid
                        )),
                        status: Some(rc),
                        output: Some(output),
                        machines: None,
                    };
                }
                Reply {
                    ok: true,
                    status: Some(rc),
                    output: Some(output),
                    ..Default::default()
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Reply::err(format!(
                "machine {} exited while running the command",
                self.umid
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.pending.lock().expect("lock").remove(&id);
                Reply::err(format!(
                    "the console of {} did not answer within {} s: is the machine stopped (by a debugger)?",
                    self.umid,
                    timeout + 5
                ))
            }
        }
    }
}

/// Removes a staged script once its command has answered (or given up).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn serve(sup: Arc<Supervisor>, listener: UnixListener) {
    set_mode(&sup.dir.join(state::SOCKET), 0o600);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        // Only the socket's owner or root may drive the lab.
        if let Ok(cred) =
            nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
        {
            let me = nix::unistd::geteuid().as_raw();
            if cred.uid() != 0 && cred.uid() != me {
                continue;
            }
        }
        let sup = sup.clone();
        std::thread::spawn(move || handle(sup, conn));
    }
}

fn send(conn: &mut UnixStream, r: &Reply) {
    let mut line = serde_json::to_string(r).expect("reply serialises");
    line.push('\n');
    let _ = conn.write_all(line.as_bytes());
}

fn handle(sup: Arc<Supervisor>, mut conn: UnixStream) {
    let mut line = String::new();
    {
        let mut r = BufReader::new(&conn);
        if r.read_line(&mut line).is_err() {
            return;
        }
    }
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return send(&mut conn, &Reply::err(format!("bad request: {e}"))),
    };
    match req {
        Request::Exec {
            umid,
            script,
            timeout,
        } => {
            let Some(m) = sup.machines.iter().find(|m| m.umid == umid) else {
                return send(
                    &mut conn,
                    &Reply::err(format!("no machine {umid} in lab {}", sup.state.name)),
                );
            };
            let id = sup.next_id.fetch_add(1, Ordering::SeqCst);
            let r = m.exec(id, &script, timeout);
            send(&mut conn, &r);
        }
        Request::Status => {
            let machines = sup
                .machines
                .iter()
                .map(|m| MachineHealth {
                    umid: m.umid.clone(),
                    pid: m.pid,
                    alive: m.alive(),
                })
                .collect();
            send(
                &mut conn,
                &Reply {
                    ok: true,
                    machines: Some(machines),
                    ..Default::default()
                },
            );
        }
        Request::Console { umid } => {
            let Some(m) = sup.machines.iter().find(|m| m.umid == umid) else {
                return send(
                    &mut conn,
                    &Reply::err(format!("no machine {umid} in lab {}", sup.state.name)),
                );
            };
            if !m.alive() {
                return send(
                    &mut conn,
                    &Reply::err(format!("machine {umid} is not running")),
                );
            }
            send(
                &mut conn,
                &Reply {
                    ok: true,
                    ..Default::default()
                },
            );
            let backlog = std::mem::take(&mut *m.console_backlog.lock().expect("lock"));
            let _ = conn.write_all(&backlog);
            let Ok(out) = conn.try_clone() else { return };
            *m.console_client.lock().expect("lock") = Some(out);
            // Keystrokes from the client go to the guest's serial line.
            let mut master = match m.pty_master.try_clone() {
                Ok(fd) => std::fs::File::from(fd),
                Err(_) => return,
            };
            let mut buf = [0u8; 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if master.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            *m.console_client.lock().expect("lock") = None;
        }
        Request::Down => {
            teardown(&sup.state, &sup.machines);
            let _ = std::fs::remove_dir_all(&sup.dir);
            send(
                &mut conn,
                &Reply {
                    ok: true,
                    ..Default::default()
                },
            );
            std::process::exit(0);
        }
    }
}

fn teardown(st: &LabState, machines: &[Arc<Machine>]) {
    if let Some(m) = machines.first()
        && let Some(lab_stage) = m.stage.parent()
    {
        let _ = std::fs::remove_dir_all(lab_stage);
    }
    for m in machines {
        stop_machine(&st.uml_dir, &m.umid, m.pid);
        let _ = m.child.lock().expect("lock").wait();
    }
    cleanup_network_and_dirs(st);
}

/// Halt a machine through mconsole; kill its process group if it has not gone after a deadline.
pub fn stop_machine(uml_dir: &Path, umid: &str, pid: i32) {
    if !state::pid_alive(pid) {
        return;
    }
    let sock = uml_dir.join(umid).join("mconsole");
    if let Ok(mc) = crate::uml::mconsole::Mconsole::connect(&sock, Duration::from_millis(500)) {
        let _ = mc.halt(|| !state::pid_alive(pid));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && state::pid_alive(pid) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if state::pid_alive(pid) {
        // The kernel's host processes share its process group (we started it as a group leader).
        let _ =
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

/// Remove the namespace (bridges and taps go with it) and the machines' `~/.uml/<umid>` dirs.
pub fn cleanup_network_and_dirs(st: &LabState) {
    let _ = netns::delete(&st.netns);
    for m in &st.machines {
        let d = st.uml_dir.join(&m.umid);
        // Only a directory whose pid file names a dead process (or none) is ours to remove.
        let pid: Option<i32> = std::fs::read_to_string(d.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if pid.is_none_or(|p| !state::pid_alive(p) || p == m.pid) {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}
