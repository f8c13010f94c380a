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
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::init::{self, ConsoleEvent, ConsoleFramer, InitParams};
use super::netns;
use super::sandbox;
use super::spec::LabSpec;
use super::state::{self, DomainState, LabState, MachineState};
use crate::kernel::Manifest;

/// Why a lab could not be started, naming the domain, machine, interface or file.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("domain {domain}: {source}")]
    Bridge {
        domain: String,
        #[source]
        source: netns::NetnsError,
    },
    #[error("{umid}: unknown domain {domain}")]
    UnknownDomain { umid: String, domain: String },
    #[error("{umid} {iface}: {source}")]
    Tap {
        umid: String,
        iface: String,
        #[source]
        source: netns::NetnsError,
    },
    #[error("create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("machine {umid}: {source}")]
    Image {
        umid: String,
        #[source]
        source: Box<crate::image::ImageError>,
    },
    /// What `boot` says went wrong (it names the machine).
    #[error("{0}")]
    Boot(String),
    #[error("machine {umid} exited during boot: {cause}; its console log is {}", log.display())]
    DiedBooting {
        umid: String,
        cause: String,
        log: PathBuf,
    },
    #[error("machine {umid} did not come up within 90 s; its console log is {}", log.display())]
    BootTimeout { umid: String, log: PathBuf },
    #[error("machine {umid}: cannot find its kernel's process under pid {pid}")]
    NoKernelProcess { umid: String, pid: i32 },
    #[error("machine {umid}: write {}/pid: {source}", dir.display())]
    PublishPid {
        umid: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("machine {umid}: {}", refused.join("; "))]
    SysctlRefused { umid: String, refused: Vec<String> },
    #[error("machine {umid}: setting sysctls: {reason}")]
    Sysctl { umid: String, reason: String },
    #[error("sysctl thread panicked")]
    SysctlPanicked,
}

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
    /// Stop machines (default: every machine) and boot them again, on `kernel` or each on the
    /// kernel it ran, with the lab's taps, addresses, sysctls and startups as before.
    Restart {
        #[serde(default)]
        umids: Vec<String>,
        #[serde(default)]
        kernel: Option<Manifest>,
    },
}

/// The reply: one JSON line (for `console`, raw bytes follow an `ok` reply).
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// Text the supervisor writes (a restart's report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// What a command on a machine printed, its exact bytes in base64 (see [`Reply::bytes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_b64: Option<String>,
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

    /// The output's exact bytes (empty when there is none).
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.output_b64, &self.output) {
            (Some(b), _) => crate::util::base64_decode(b.as_bytes()).unwrap_or_default(),
            (None, Some(t)) => t.clone().into_bytes(),
            (None, None) => Vec::new(),
        }
    }

    /// The output as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        match &self.output {
            Some(t) if self.output_b64.is_none() => t.clone(),
            _ => String::from_utf8_lossy(&self.bytes()).into_owned(),
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
    /// The exec channel's framer: the reader thread feeds it, `exec` registers nonces in it.
    framer: Arc<Mutex<ConsoleFramer>>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    exited: Arc<std::sync::atomic::AtomicBool>,
    pty_master: OwnedFd,
    /// Host directory the guest can read (through hostfs) where long scripts are written.
    stage: PathBuf,
    /// The client currently attached to the interactive console, if any.
    console_client: Arc<Mutex<Option<UnixStream>>>,
    /// What the interactive console printed while nobody was attached (last few KB).
    console_backlog: Arc<Mutex<Vec<u8>>>,
    /// The kernel it boots (`lab restart` without `--kernel` boots it again).
    kernel: Manifest,
}

struct Supervisor {
    dir: PathBuf,
    /// Written back to `state.json` when `lab restart` changes a machine's pid or kernel.
    state: Mutex<LabState>,
    /// Replaced one by one by `lab restart`.
    machines: Mutex<Vec<Arc<Machine>>>,
    next_id: AtomicU64,
    cache: PathBuf,
}

impl Supervisor {
    fn machine(&self, umid: &str) -> Option<Arc<Machine>> {
        self.machines
            .lock()
            .expect("lock")
            .iter()
            .find(|m| m.umid == umid)
            .cloned()
    }

    fn all(&self) -> Vec<Arc<Machine>> {
        self.machines.lock().expect("lock").clone()
    }

    fn name(&self) -> String {
        self.state.lock().expect("lock").name.clone()
    }
}

/// The kernel `lab up --kernel` chose, beside the lab's spec (else the cached kernel).
pub const KERNEL: &str = "kernel.json";

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
    let chosen = std::fs::read_to_string(dir.join(KERNEL))
        .ok()
        .and_then(|t| serde_json::from_str::<Manifest>(&t).ok());
    let manifest = match chosen
        .map(Ok)
        .unwrap_or_else(|| crate::kernel::cached(cache))
    {
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
                    teardown(&sup.state.lock().expect("lock"), &sup.all());
                    report(
                        &mut ready,
                        &format!("error: bind {}: {e}", dir.join(state::SOCKET).display()),
                    );
                    return 1;
                }
            };
            let written = sup.state.lock().expect("lock").write(&dir);
            if let Err(e) = written {
                teardown(&sup.state.lock().expect("lock"), &sup.all());
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
fn start(dir: &Path, spec: &LabSpec, k: &Manifest, cache: &Path) -> Result<Supervisor, StartError> {
    let ns = state::netns_name(&spec.name);
    netns::create(&ns, &spec.name)?;
    let mut st = LabState {
        name: spec.name.clone(),
        netns: ns.clone(),
        supervisor_pid: std::process::id() as i32,
        kernel: k.linux.clone(),
        kernel_version: k.version.clone(),
        uml_dir: crate::uml::instance::default_uml_dir(),
        machines: Vec::new(),
        domains: Vec::new(),
        reports: Vec::new(),
    };
    let mut machines: Vec<Arc<Machine>> = Vec::new();
    let next_id = AtomicU64::new(1);
    let create = |path: &Path| {
        std::fs::create_dir_all(path).map_err(|source| StartError::Create {
            path: path.to_path_buf(),
            source,
        })
    };
    let res = (|| -> Result<(), StartError> {
        for (i, d) in spec.domains.iter().enumerate() {
            let bridge = format!("br{i}");
            let ha = d.host_address.as_ref().map(|a| a.to_string());
            netns::add_bridge(&ns, &bridge, ha.as_deref()).map_err(|source| {
                StartError::Bridge {
                    domain: d.name.clone(),
                    source,
                }
            })?;
            st.domains.push(DomainState {
                name: d.name.clone(),
                bridge,
                host_address: ha,
            });
        }
        let nsfd = netns::open(&ns)?;
        // Kathará's shared folder: made if missing, writable by every machine (each runs as a
        // user of its own), seen read-write at /shared.
        let shared: Option<String> = match &spec.shared_folder {
            Some(f) => {
                create(f)?;
                set_mode(f, 0o1777);
                Some(f.display().to_string())
            }
            None => None,
        };
        let stage = cache.join("stage");
        let _ = std::fs::create_dir_all(&stage);
        let mdir = dir.join("machines");
        create(&mdir)?;
        let mut ready_rx = Vec::new();
        for (mi, m) in spec.machines.iter().enumerate() {
            let user = sandbox::MachineUser::for_lab(&spec.name);
            let mut taps = Vec::new();
            for (ii, iface) in m.interfaces.iter().enumerate() {
                let tap = format!("t{mi}-{ii}");
                let bridge = &st
                    .domains
                    .iter()
                    .find(|d| d.name == iface.domain)
                    .ok_or_else(|| StartError::UnknownDomain {
                        umid: m.umid.clone(),
                        domain: iface.domain.clone(),
                    })?
                    .bridge;
                netns::add_tap(&ns, &tap, bridge, user.uid, user.gid).map_err(|source| {
                    StartError::Tap {
                        umid: m.umid.clone(),
                        iface: iface.name.clone(),
                        source,
                    }
                })?;
                taps.push(tap);
            }
            let mstage = stage.join(&spec.name).join(&m.umid);
            create(&mstage)?;
            let script = init::init_script(
                m,
                &InitParams {
                    kernel_version: &k.version,
                    module_root: &module_root(&k.modules_dir),
                    stage_dir: &mstage.display().to_string(),
                    shared: shared.as_deref(),
                    host_dirs: &machine_host_dirs(m, k, &mstage),
                },
            );
            let init_path = mdir.join(format!("{}.init", m.umid));
            std::fs::write(&init_path, script).map_err(|source| StartError::Write {
                path: init_path.clone(),
                source,
            })?;
            set_mode(&init_path, 0o755);
            let log = mdir.join(format!("{}.console.log", m.umid));
            // A machine with an image boots from it: `lab up` built it; here it is only looked up.
            let image = match &m.image {
                Some(name) => Some(
                    crate::image::cached(cache, name)
                        .map_err(|e| StartError::Image {
                            umid: m.umid.clone(),
                            source: Box::new(e),
                        })?
                        .image,
                ),
                None => None,
            };
            let (machine, rx) = boot(&Boot {
                spec: m,
                image: image.as_deref(),
                cow_dir: &dir.join("cow").join(&m.umid),
                shared: spec.shared_folder.as_deref(),
                umid: m.umid.as_str(),
                mem_mb: m.mem_mb,
                taps: &taps,
                init_path: &init_path,
                kernel: k,
                nsfd: &nsfd,
                log_path: &log,
                stage: &mstage,
                user,
                uml_parent: &dir.join("uml").join(&m.umid),
                uml_dir: &st.uml_dir,
                macs: &[],
            })
            .map_err(StartError::Boot)?;
            st.machines.push(MachineState {
                umid: m.umid.clone(),
                hostname: m.hostname.clone(),
                pid: machine.pid,
                kernel_pid: 0,
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
                kernel: None,
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
                    let kept = keep_log(&spec.name, &m.umid, &log);
                    return Err(StartError::DiedBooting {
                        umid: m.umid.clone(),
                        cause: explaining_line(&kept),
                        log: kept,
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let log = dir.join("machines").join(format!("{}.console.log", m.umid));
                    let kept = keep_log(&spec.name, &m.umid, &log);
                    return Err(StartError::BootTimeout {
                        umid: m.umid.clone(),
                        log: kept,
                    });
                }
            }
        }
        // UML wrote the pid it has inside its sandbox: give everyone its host pid instead.
        for (m, ms) in machines.iter().zip(st.machines.iter_mut()) {
            let kernel = sandbox::kernel_host_pid(m.pid, &k.linux).ok_or_else(|| {
                StartError::NoKernelProcess {
                    umid: m.umid.clone(),
                    pid: m.pid,
                }
            })?;
            let udir = dir.join("uml").join(&m.umid).join(&m.umid);
            sandbox::publish_host_pid(&udir, kernel).map_err(|source| StartError::PublishPid {
                umid: m.umid.clone(),
                dir: udir.clone(),
                source,
            })?;
            ms.kernel_pid = kernel;
        }
        st.reports = after_boot(spec, &machines, &next_id, &mdir)?;
        Ok(())
    })();
    if let Err(e) = res {
        teardown(&st, &machines);
        return Err(e);
    }
    Ok(Supervisor {
        dir: dir.to_path_buf(),
        state: Mutex::new(st),
        machines: Mutex::new(machines),
        next_id,
        cache: cache.to_path_buf(),
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

/// Copy a failed machine's console log out of the lab's run directory (which goes with the
/// failed lab) to `<run>/logs/`, where the error message says it is.
fn keep_log(lab: &str, umid: &str, log: &Path) -> PathBuf {
    let dir = state::run_root().join("logs");
    let kept = dir.join(format!("{lab}.{umid}.console.log"));
    let copied = std::fs::create_dir_all(&dir).and_then(|_| std::fs::copy(log, &kept));
    if copied.is_ok() {
        kept
    } else {
        log.to_path_buf()
    }
}

/// The line of a console log that explains why a machine died: the kernel's panic or an init
/// error, rather than the last line of a stack trace.
pub fn explaining_line(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\x01'))
        .filter(|l| !l.is_empty())
        .collect();
    const CAUSES: [&str; 8] = [
        "Kernel panic",
        "Attempted to kill init",
        "Out of memory",
        "not syncing",
        "No working init found",
        "failed",
        "error",
        "Error",
    ];
    for cause in CAUSES {
        if let Some(l) = lines.iter().find(|l| l.contains(cause)) {
            return (*l).to_string();
        }
    }
    lines
        .iter()
        .rev()
        .find(|l| !l.starts_with('[') && !l.contains("+0x"))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "it printed nothing".into())
}

/// Seconds a machine's startup files may run before they are interrupted.
const STARTUP_TIMEOUT: u64 = 120;

/// After every machine is up: set the sysctls (checked against the running kernel: an unknown
/// key or a refused value fails the lab), then run the startups: the machine's folder, its
/// startup files, its startup lines. Machines whose dependencies (`depends_on`) are done start
/// together. Returns what `lab up` reports: each failing startup line with machine, file and line.
fn after_boot(
    spec: &LabSpec,
    machines: &[Arc<Machine>],
    next_id: &AtomicU64,
    mdir: &Path,
) -> Result<Vec<String>, StartError> {
    let pairs: Vec<(&super::spec::MachineSpec, &Arc<Machine>)> =
        spec.machines.iter().zip(machines).collect();
    // Sysctls everywhere first: a refusal fails the whole lab before any startup runs.
    let sysctl_results: Vec<Result<(), StartError>> = std::thread::scope(|sc| {
        let hs: Vec<_> = pairs
            .iter()
            .filter(|(ms, _)| !ms.sysctls.is_empty())
            .map(|&(ms, m)| {
                let id = next_id.fetch_add(1, Ordering::SeqCst);
                sc.spawn(move || {
                    let r = m.exec(id, &init::sysctl_script(&ms.sysctls), 30);
                    let bad = init::sysctl_errors(&r.text());
                    if !bad.is_empty() {
                        return Err(StartError::SysctlRefused {
                            umid: ms.umid.clone(),
                            refused: bad,
                        });
                    }
                    if !r.ok {
                        return Err(StartError::Sysctl {
                            umid: ms.umid.clone(),
                            reason: r.error.unwrap_or_default(),
                        });
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or(Err(StartError::SysctlPanicked)))
            .collect()
    });
    for r in sysctl_results {
        r?;
    }
    // Startups by dependency level (the spec is in boot order: dependencies come first).
    let mut done: Vec<&str> = Vec::new();
    let mut reports = Vec::new();
    let mut left: Vec<_> = pairs.clone();
    while !left.is_empty() {
        let (ready, wait): (Vec<_>, Vec<_>) = left
            .into_iter()
            .partition(|(ms, _)| ms.depends_on.iter().all(|d| done.contains(&d.as_str())));
        // A dependency that is not in the lab (checked at load) cannot block the rest.
        let (ready, wait) = if ready.is_empty() {
            (wait, Vec::new())
        } else {
            (ready, wait)
        };
        let level: Vec<Vec<String>> = std::thread::scope(|sc| {
            let hs: Vec<_> = ready
                .iter()
                .map(|&(ms, m)| {
                    let id = next_id.fetch_add(1, Ordering::SeqCst);
                    sc.spawn(move || run_startup(ms, m, id, mdir))
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec!["startup thread panicked".into()])
                })
                .collect()
        });
        reports.extend(level.into_iter().flatten());
        done.extend(ready.iter().map(|(ms, _)| ms.umid.as_str()));
        left = wait;
    }
    Ok(reports)
}

/// One machine's startup; what it reports (failing lines) as `machine M: file:line: message`.
fn run_startup(ms: &super::spec::MachineSpec, m: &Machine, id: u64, mdir: &Path) -> Vec<String> {
    let mut files: Vec<String> = ms
        .startup_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut labels: Vec<(String, String)> = files.iter().map(|f| (f.clone(), f.clone())).collect();
    if !ms.startup.is_empty() {
        let file = m.stage.join("startup.sh");
        if let Err(e) = std::fs::write(&file, init::startup_file(&ms.startup)) {
            return vec![format!(
                "machine {}: write {}: {e}",
                ms.umid,
                file.display()
            )];
        }
        labels.push((file.display().to_string(), "startup".to_string()));
        files.push(file.display().to_string());
    }
    if files.is_empty() && ms.folder.is_none() {
        return Vec::new();
    }
    let folder = ms.folder.as_ref().map(|f| f.display().to_string());
    let run = init::startup_runner(folder.as_deref(), &files);
    let r = m.exec(id, &run, STARTUP_TIMEOUT);
    let out = r.text();
    let _ = std::fs::write(mdir.join(format!("{}.startup.log", ms.umid)), &out);
    let mut reports: Vec<String> = init::startup_errors(&out, &labels)
        .into_iter()
        .map(|e| format!("machine {}: {e}", ms.umid))
        .collect();
    if !r.ok {
        let e = r.error.unwrap_or_default();
        reports.push(format!("machine {}: startup: {e}", ms.umid));
    }
    reports
}

/// Kathará's shutdown files before the lab goes down, one machine after the other: guests
/// appending to one file of the shared folder at once would lose lines (hostfs appends at the
/// offset each guest believes is the end). Output goes to `<machine>.shutdown.log`.
fn run_shutdowns(sup: &Supervisor) {
    let Some(spec) = state::read_spec(&sup.dir) else {
        return;
    };
    run_shutdowns_of(sup, &spec, &sup.all());
}

/// [`run_shutdowns`] of some machines (`lab restart` runs them before it stops machines).
fn run_shutdowns_of(sup: &Supervisor, spec: &LabSpec, machines: &[Arc<Machine>]) {
    for m in machines {
        let Some(ms) = spec.machines.iter().find(|s| s.umid == m.umid) else {
            continue;
        };
        if ms.shutdown_files.is_empty() || !m.alive() {
            continue;
        }
        let id = sup.next_id.fetch_add(1, Ordering::SeqCst);
        let files: Vec<String> = ms
            .shutdown_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let r = m.exec(id, &init::shutdown_runner(&files), 30);
        let log = sup
            .dir
            .join("machines")
            .join(format!("{}.shutdown.log", m.umid));
        let _ = std::fs::write(log, r.bytes());
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// The host directories a machine reads after boot, each mounted over hostfs at its own path
/// (again, after the guest's overlays, which do not show mounts below their lower layer): the
/// kernel's modules, the stage directory, the directories of its startup and shutdown files,
/// its folder.
fn machine_host_dirs(m: &super::spec::MachineSpec, k: &Manifest, stage: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from(module_root(&k.modules_dir)),
        stage.to_path_buf(),
    ];
    for f in m.startup_files.iter().chain(&m.shutdown_files) {
        if let Some(p) = f.parent() {
            dirs.push(p.to_path_buf());
        }
    }
    dirs.extend(m.folder.iter().cloned());
    dirs.sort();
    dirs.dedup();
    dirs
}

/// What one machine boots with.
struct Boot<'a> {
    spec: &'a super::spec::MachineSpec,
    /// The root filesystem image the machine boots from (`None`: the sandbox's view of the
    /// host's root over hostfs).
    image: Option<&'a Path>,
    /// Where the machine's copy-on-write file goes (image mode); removed with the lab.
    cow_dir: &'a Path,
    shared: Option<&'a Path>,
    umid: &'a str,
    mem_mb: u32,
    taps: &'a [String],
    init_path: &'a Path,
    kernel: &'a Manifest,
    nsfd: &'a OwnedFd,
    log_path: &'a Path,
    /// Host directory the guest reads staged scripts and modules from.
    stage: &'a Path,
    user: sandbox::MachineUser,
    /// Host directory that holds the machine's UML directory (see [`sandbox`]).
    uml_parent: &'a Path,
    /// Where umldbg looks machines up by umid (`~/.uml`): gets a link to the UML directory.
    uml_dir: &'a Path,
    /// MAC address per interface (`lab restart` keeps a machine's; empty: the driver picks).
    macs: &'a [String],
}

/// Start one UML machine, sandboxed, and the threads that read its consoles.
fn boot(b: &Boot) -> Result<(Arc<Machine>, mpsc::Receiver<bool>), String> {
    let Boot {
        umid,
        mem_mb,
        taps,
        init_path,
        nsfd,
        log_path,
        stage,
        ..
    } = *b;
    let linux = &b.kernel.linux;
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("{umid}: openpty: {e}"))?;
    if let Ok(mut t) = nix::sys::termios::tcgetattr(&pty.slave) {
        nix::sys::termios::cfmakeraw(&mut t);
        let _ = nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t);
    }
    // What the kernel prints on its console and what UML prints on stderr (a refusal before the
    // console exists) both go to the machine's console log.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut args = vec![
        format!("mem={mem_mb}M"),
        format!("umid={umid}"),
        format!("uml_dir={}", sandbox::UML_DIR_INSIDE),
    ];
    // The host directories the init script and the startups read (image mode mounts them at
    // their own paths; the sandbox shows nothing else of the host either way).
    let mut host_dirs = machine_host_dirs(b.spec, b.kernel, stage);
    host_dirs.push(init_path.parent().unwrap_or(Path::new("/")).to_path_buf());
    host_dirs.sort();
    host_dirs.dedup();
    let mut writable = b.shared.map(|p| vec![p.to_path_buf()]).unwrap_or_default();
    let mut image_ro = Vec::new();
    match b.image {
        Some(image) => {
            let cow = b.cow_dir.join("disk.cow");
            std::fs::create_dir_all(b.cow_dir)
                .map_err(|e| format!("{umid}: create {}: {e}", b.cow_dir.display()))?;
            nix::unistd::chown(
                b.cow_dir,
                Some(nix::unistd::Uid::from_raw(b.user.uid)),
                Some(nix::unistd::Gid::from_raw(b.user.gid)),
            )
            .map_err(|e| format!("{umid}: chown {}: {e}", b.cow_dir.display()))?;
            let dirs: Vec<&Path> = host_dirs.iter().map(PathBuf::as_path).collect();
            args.extend(
                crate::image::kernel_args(image, &cow, &dirs, init_path, false)
                    .map_err(|e| format!("{umid}: {e}"))?,
            );
            writable.push(b.cow_dir.to_path_buf());
            image_ro.push(image.to_path_buf());
        }
        None => args.extend([
            "rootfstype=hostfs".into(),
            "rootflags=/".into(),
            "ro".into(),
            format!("init={}", init_path.display()),
        ]),
    }
    args.extend([
        "con0=fd:0,fd:1".to_string(),
        "con=null".into(),
        "ssl0=fd:3".into(),
        "ssl=null".into(),
        "loglevel=2".into(),
    ]);
    // The supervisor opens the taps for the machine (see netns::attach_taps_on_spawn); `vec=0`
    // reads and writes them one frame per call, as a tap needs.
    for i in 0..taps.len() {
        let fd = netns::TAP_FD_BASE + i as i32;
        // A MAC from the lab is the interface's address before it ever comes up; else the one
        // the machine had before `lab restart`.
        let mac = b.spec.interfaces[i]
            .mac
            .as_ref()
            .map(|m| m.to_string())
            .or_else(|| b.macs.get(i).cloned())
            .map(|m| format!(",mac={m}"))
            .unwrap_or_default();
        args.push(format!("vec{i}:transport=fd,fd={fd},vec=0{mac}"));
    }
    // What of the lab the machine reads: its startup and shutdown files and its folder; the
    // shared folder is the one host directory it writes.
    let mut read_only = vec![
        linux.clone(),
        PathBuf::from(module_root(&b.kernel.modules_dir)),
        init_path.to_path_buf(),
        stage.to_path_buf(),
    ];
    read_only.extend(b.spec.startup_files.iter().cloned());
    read_only.extend(b.spec.shutdown_files.iter().cloned());
    read_only.extend(b.spec.folder.iter().cloned());
    read_only.extend(image_ro);
    let view = sandbox::SandboxSpec {
        user: b.user,
        read_only,
        writable,
        shared_at: b.shared.map(|_| PathBuf::from("/shared")),
        uml_parent: b.uml_parent.to_path_buf(),
    };
    let mut cmd = sandbox::command(&view, linux, &args).map_err(|e| format!("{umid}: {e}"))?;
    // `~/.uml/<umid>` leads to the directory UML makes inside the sandbox.
    let link = b.uml_dir.join(umid);
    let _ = std::fs::create_dir_all(b.uml_dir);
    if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        let _ = std::fs::remove_file(&link);
    }
    std::os::unix::fs::symlink(b.uml_parent.join(umid), &link)
        .map_err(|e| format!("{umid}: link {}: {e}", link.display()))?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            log_file
                .try_clone()
                .map_err(|e| format!("{}: {e}", log_path.display()))?,
        ));
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
    // After the pty is at 3: the taps' fds may reuse the number the slave had in this process.
    netns::attach_taps_on_spawn(&mut cmd, taps).map_err(|e| format!("{umid}: {e}"))?;
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
    let framer: Arc<Mutex<ConsoleFramer>> = Arc::default();
    let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    {
        let pending = pending.clone();
        let exited = exited.clone();
        let framer = framer.clone();
        let mut log = log_file;
        std::thread::spawn(move || {
            let mut r = stdout;
            let mut buf = [0u8; 8192];
            let mut ready_tx = Some(ready_tx);
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let events = framer.lock().expect("lock").push(&buf[..n]);
                for ev in events {
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
        framer,
        pending,
        exited,
        pty_master: master,
        stage: stage.to_path_buf(),
        console_client,
        console_backlog,
        kernel: b.kernel.clone(),
    };
    Ok((Arc::new(m), ready_rx))
}

impl Machine {
    /// Give up on command `id`: its frame, if it ever comes, is stray output.
    fn forget(&self, id: u64) {
        self.pending.lock().expect("lock").remove(&id);
        self.framer.lock().expect("lock").forget(id);
    }

    /// Whether the machine runs: its console is open and its process has not exited. The rule
    /// is [`crate::util::pid_alive`]'s (a zombie is gone: `try_wait` reports it exited), but
    /// asked of the supervisor's own `Child` rather than of the pid: that also reaps the
    /// zombie, and it stays right after the child is reaped, when the pid may belong to
    /// another process already.
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
        let nonce = init::Nonce::random();
        self.framer.lock().expect("lock").expect(id, nonce);
        let mut staged = None;
        let line = match init::run_request(id, nonce, timeout.max(1), script) {
            Some(l) => l,
            None => {
                // Long scripts go through a file the guest reads over hostfs.
                let path = self.stage.join(format!("cmd-{id}.sh"));
                if let Err(e) = std::fs::write(&path, script) {
                    self.forget(id);
                    return Reply::err(format!("write {}: {e}", path.display()));
                }
                let line =
                    init::file_request(id, nonce, timeout.max(1), &path.display().to_string());
                staged = Some(path);
                line
            }
        };
        let _cleanup = staged.map(RemoveOnDrop);
        if let Err(e) = self.con_in.lock().expect("lock").write_all(line.as_bytes()) {
            self.forget(id);
            return Reply::err(format!("machine {}: console write failed: {e}", self.umid));
        }
        // The guest's `timeout` ends the command; allow for it to answer.
        match rx.recv_timeout(Duration::from_secs(timeout.max(1) + 5)) {
            Ok((rc, out)) => {
                let output_b64 = Some(crate::util::base64(&out));
                if rc == 124 || rc == 130 || rc == 137 {
                    return Reply {
                        ok: false,
                        error: Some(format!(
                            "command on {} did not finish within {timeout} s and was interrupted",
                            self.umid
                        )),
                        status: Some(rc),
                        output_b64,
                        ..Default::default()
                    };
                }
                Reply {
                    ok: true,
                    status: Some(rc),
                    output_b64,
                    ..Default::default()
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Reply::err(format!(
                "machine {} exited while running the command",
                self.umid
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.forget(id);
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
            let Some(m) = sup.machine(&umid) else {
                return send(
                    &mut conn,
                    &Reply::err(format!("no machine {umid} in lab {}", sup.name())),
                );
            };
            let id = sup.next_id.fetch_add(1, Ordering::SeqCst);
            let r = m.exec(id, &script, timeout);
            send(&mut conn, &r);
        }
        Request::Status => {
            let machines = sup
                .all()
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
            let Some(m) = sup.machine(&umid) else {
                return send(
                    &mut conn,
                    &Reply::err(format!("no machine {umid} in lab {}", sup.name())),
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
        Request::Restart { umids, kernel } => {
            let r = restart(&sup, &umids, kernel.as_ref());
            send(&mut conn, &r);
        }
        Request::Down => {
            run_shutdowns(&sup);
            teardown(&sup.state.lock().expect("lock"), &sup.all());
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
    if !crate::util::pid_alive(pid) {
        return;
    }
    let sock = uml_dir.join(umid).join("mconsole");
    if let Ok(mc) = crate::uml::mconsole::Mconsole::connect(&sock, Duration::from_millis(500)) {
        let _ = mc.halt(|| !crate::util::pid_alive(pid));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && crate::util::pid_alive(pid) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if crate::util::pid_alive(pid) {
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
        if pid.is_none_or(|p| !crate::util::pid_alive(p) || p == m.pid) {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

/// Seconds a restarted machine may take to come up.
const RESTART_BOOT_TIMEOUT: u64 = 90;

/// `lab restart`: stop the machines, then boot each again (on `kernel`, or on the kernel it
/// ran) with the lab's taps, addresses, sysctls and startups, as `start` boots them. A machine
/// that does not come up on a new kernel is booted again on the kernel it ran before.
fn restart(sup: &Supervisor, umids: &[String], kernel: Option<&Manifest>) -> Reply {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(spec) = state::read_spec(&sup.dir) else {
        return Reply::err(format!("no readable spec in {}", sup.dir.display()));
    };
    let (lab, ns, uml_dir) = {
        let st = sup.state.lock().expect("lock");
        (st.name.clone(), st.netns.clone(), st.uml_dir.clone())
    };
    let olds: Vec<Arc<Machine>> = if umids.is_empty() {
        sup.all()
    } else {
        let mut v = Vec::new();
        for u in umids {
            match sup.machine(u) {
                Some(m) => v.push(m),
                None => {
                    return Reply::err(format!(
                        "no machine {u} in lab {lab} (its machines: {})",
                        sup.all()
                            .iter()
                            .map(|m| m.umid.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        v
    };
    let nsfd = match netns::open(&ns) {
        Ok(f) => f,
        Err(e) => return Reply::err(e.to_string()),
    };
    // The peers' neighbour caches hold the machines' MAC addresses: the new machines keep them.
    let macs: Vec<Vec<String>> = olds
        .iter()
        .map(|m| {
            let names: Vec<&str> = spec
                .machines
                .iter()
                .find(|s| s.umid == m.umid)
                .map(|s| s.interfaces.iter().map(|i| i.name.as_str()).collect())
                .unwrap_or_default();
            read_macs(sup, m, &names)
        })
        .collect();
    run_shutdowns_of(sup, &spec, &olds);
    for m in &olds {
        stop_machine(&uml_dir, &m.umid, m.pid);
        let _ = m.child.lock().expect("lock").wait();
        // What the old machine and a session on it left in the UML directory (pid file, a
        // breakpoint journal) must not meet the new machine.
        let _ = std::fs::remove_dir_all(sup.dir.join("uml").join(&m.umid).join(&m.umid));
    }
    let mdir = sup.dir.join("machines");
    let mut booted: Vec<(Arc<Machine>, i32)> = Vec::new();
    let mut notes = Vec::new();
    for (old, macs) in olds.iter().zip(&macs) {
        let k = kernel.unwrap_or(&old.kernel);
        match boot_again(sup, &spec, &nsfd, &uml_dir, &old.umid, k, macs) {
            Ok(m) => booted.push(m),
            Err(e) if kernel.is_some_and(|k| k.linux != old.kernel.linux) => {
                match boot_again(sup, &spec, &nsfd, &uml_dir, &old.umid, &old.kernel, macs) {
                    Ok(m) => {
                        notes.push(format!(
                            "{e}; {} runs its previous kernel {} again",
                            old.umid,
                            old.kernel.linux.display()
                        ));
                        booted.push(m);
                    }
                    Err(e2) => notes.push(format!("{e}; on its previous kernel too: {e2}")),
                }
            }
            Err(e) => notes.push(e),
        }
    }
    let kernel_pids: Vec<i32> = booted.iter().map(|(_, p)| *p).collect();
    let booted: Vec<Arc<Machine>> = booted.into_iter().map(|(m, _)| m).collect();
    // Sysctls and startups, on every restarted machine at once.
    let sub = LabSpec {
        machines: booted
            .iter()
            .filter_map(|m| spec.machines.iter().find(|s| s.umid == m.umid).cloned())
            .collect(),
        ..spec.clone()
    };
    let reports = match after_boot(&sub, &booted, &sup.next_id, &mdir) {
        Ok(r) => r,
        Err(e) => vec![e.to_string()],
    };
    {
        let mut all = sup.machines.lock().expect("lock");
        let mut st = sup.state.lock().expect("lock");
        let lab_kernel = st.kernel.clone();
        for (m, kernel_pid) in booted.iter().zip(&kernel_pids) {
            if let Some(slot) = all.iter_mut().find(|o| o.umid == m.umid) {
                *slot = m.clone();
            }
            if let Some(ms) = st.machines.iter_mut().find(|s| s.umid == m.umid) {
                ms.pid = m.pid;
                ms.kernel_pid = *kernel_pid;
                ms.kernel = (m.kernel.linux != lab_kernel).then(|| m.kernel.linux.clone());
            }
        }
        let _ = st.write(&sup.dir);
    }
    let machines: Vec<MachineHealth> = booted
        .iter()
        .map(|m| MachineHealth {
            umid: m.umid.clone(),
            pid: m.pid,
            alive: m.alive(),
        })
        .collect();
    let mut lines: Vec<String> = booted
        .iter()
        .zip(&kernel_pids)
        .map(|(m, kp)| {
            format!(
                "{} (pid {kp}) runs {} ({})",
                m.umid,
                m.kernel.version,
                m.kernel.linux.display()
            )
        })
        .collect();
    lines.extend(notes.iter().map(|n| format!("error: {n}")));
    lines.extend(reports.iter().map(|r| format!("warning: {r}")));
    Reply {
        ok: notes.is_empty(),
        error: (!notes.is_empty()).then(|| notes.join("; ")),
        output: Some(lines.join("\n")),
        machines: Some(machines),
        ..Default::default()
    }
}

/// Boot machine `umid` of the lab again on kernel `k` and wait until it is ready: the steps
/// [`start`] takes for each machine (init script, image, sandbox, host pid), with the taps the
/// lab made. Returns the machine and its kernel's host pid.
fn boot_again(
    sup: &Supervisor,
    spec: &LabSpec,
    nsfd: &OwnedFd,
    uml_dir: &Path,
    umid: &str,
    k: &Manifest,
    macs: &[String],
) -> Result<(Arc<Machine>, i32), String> {
    let m = spec
        .machines
        .iter()
        .find(|m| m.umid == umid)
        .ok_or_else(|| format!("machine {umid} is not in the lab's spec"))?
        .clone();
    let taps = sup
        .state
        .lock()
        .expect("lock")
        .machine(umid)
        .map(|s| s.taps.clone())
        .unwrap_or_default();
    let shared = spec.shared_folder.as_ref().map(|f| f.display().to_string());
    let mdir = sup.dir.join("machines");
    let mstage = sup.cache.join("stage").join(&spec.name).join(umid);
    std::fs::create_dir_all(&mstage).map_err(|e| format!("create {}: {e}", mstage.display()))?;
    let script = init::init_script(
        &m,
        &InitParams {
            kernel_version: &k.version,
            module_root: &module_root(&k.modules_dir),
            stage_dir: &mstage.display().to_string(),
            shared: shared.as_deref(),
            host_dirs: &machine_host_dirs(&m, k, &mstage),
        },
    );
    let init_path = mdir.join(format!("{umid}.init"));
    std::fs::write(&init_path, script)
        .map_err(|e| format!("write {}: {e}", init_path.display()))?;
    set_mode(&init_path, 0o755);
    let log = mdir.join(format!("{umid}.console.log"));
    // The previous boot's log stays beside the new one.
    let _ = std::fs::rename(&log, mdir.join(format!("{umid}.console.log.previous")));
    let image = match &m.image {
        Some(name) => Some(
            crate::image::cached(&sup.cache, name)
                .map_err(|e| format!("machine {umid}: {e}"))?
                .image,
        ),
        None => None,
    };
    // A fresh copy-on-write file: the machine boots as `lab up` booted it.
    let cow_dir = sup.dir.join("cow").join(umid);
    let _ = std::fs::remove_dir_all(&cow_dir);
    let nsfd = nsfd
        .try_clone()
        .map_err(|e| format!("{umid}: dup netns fd: {e}"))?;
    let user = sandbox::MachineUser::for_lab(&spec.name);
    let uml_parent = sup.dir.join("uml").join(umid);
    let (k_o, log_o, uml_dir_o, macs) =
        (k.clone(), log.clone(), uml_dir.to_path_buf(), macs.to_vec());
    let shared_dir = spec.shared_folder.clone();
    let (machine, rx) = on_keeper_thread(move || {
        boot(&Boot {
            spec: &m,
            image: image.as_deref(),
            cow_dir: &cow_dir,
            shared: shared_dir.as_deref(),
            umid: &m.umid,
            mem_mb: m.mem_mb,
            taps: &taps,
            init_path: &init_path,
            kernel: &k_o,
            nsfd: &nsfd,
            log_path: &log_o,
            stage: &mstage,
            user,
            uml_parent: &uml_parent,
            uml_dir: &uml_dir_o,
            macs: &macs,
        })
    })?;
    let failed = |why: String| {
        stop_machine(uml_dir, umid, machine.pid);
        let _ = machine.child.lock().expect("lock").wait();
        let kept = keep_log(&spec.name, umid, &log);
        format!("{why}; its console log is {}", kept.display())
    };
    match rx.recv_timeout(Duration::from_secs(RESTART_BOOT_TIMEOUT)) {
        Ok(true) => {}
        Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            let _ = machine.child.lock().expect("lock").wait();
            let kept = keep_log(&spec.name, umid, &log);
            return Err(format!(
                "machine {umid} exited during boot on {}: {}; its console log is {}",
                k.linux.display(),
                explaining_line(&kept),
                kept.display()
            ));
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(failed(format!(
                "machine {umid} did not come up within {RESTART_BOOT_TIMEOUT} s on {}",
                k.linux.display()
            )));
        }
    }
    // UML wrote the pid it has inside its sandbox: give everyone its host pid instead.
    let Some(kernel_pid) = sandbox::kernel_host_pid(machine.pid, &k.linux) else {
        return Err(failed(format!(
            "machine {umid}: cannot find its kernel's process under pid {}",
            machine.pid
        )));
    };
    let udir = sup.dir.join("uml").join(umid).join(umid);
    if let Err(e) = sandbox::publish_host_pid(&udir, kernel_pid) {
        return Err(failed(format!(
            "machine {umid}: write {}/pid: {e}",
            udir.display()
        )));
    }
    Ok((machine, kernel_pid))
}

/// Run `f` on one thread that lives as long as the supervisor. A machine's sandbox dies with the
/// thread that started it (bubblewrap's `--die-with-parent` is the parent-death signal, which
/// follows the starting thread, not the process): machines started after the lab is up, by
/// `lab restart` from a connection's short-lived thread, are started here instead.
fn on_keeper_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    type Job = Box<dyn FnOnce() + Send>;
    static KEEPER: std::sync::OnceLock<Mutex<mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    let tx = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for job in rx {
                job();
            }
        });
        Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .expect("lock")
        .send(Box::new(move || {
            let _ = rtx.send(f());
        }))
        .expect("the keeper thread runs as long as the supervisor");
    rrx.recv()
        .expect("the keeper thread runs as long as the supervisor")
}

/// The MAC address of each of a running machine's interfaces, in the spec's order (empty when
/// the console does not answer: the new machine then gets new addresses).
fn read_macs(sup: &Supervisor, m: &Machine, names: &[&str]) -> Vec<String> {
    if names.is_empty() {
        return Vec::new();
    }
    let script: String = names
        .iter()
        .map(|n| format!("cat /sys/class/net/{}/address\n", init::sh_quote(n)))
        .collect();
    let id = sup.next_id.fetch_add(1, Ordering::SeqCst);
    let r = m.exec(id, &script, 5);
    let macs: Vec<String> = r
        .text()
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 17 && l.bytes().filter(|&b| b == b':').count() == 5)
        .map(str::to_string)
        .collect();
    if r.ok && macs.len() == names.len() {
        macs
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_panic_is_explained_by_the_panic_not_the_stack_trace() {
        let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lab/boot-panic.console.log");
        let line = explaining_line(&log);
        assert!(
            line.starts_with("Kernel panic - not syncing: Attempted to kill init!"),
            "{line}"
        );
    }

    #[test]
    fn an_empty_log_says_so() {
        assert_eq!(
            explaining_line(Path::new("/nonexistent")),
            "it printed nothing"
        );
    }
}
