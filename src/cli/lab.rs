//! `umldbg lab up|status|down|graph`, `umldbg exec`, `umldbg console`, `umldbg capture`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use super::global::Global;
use umldbg::lab::client::{self, LabError};
use umldbg::lab::spec::LabSpec;
use umldbg::lab::state::{self, LabState};
use umldbg::lab::supervisor::Request;
use umldbg::uml::ids::{parse_lab_name, parse_umid};

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Start a lab: the article's network, a lab file (TOML) or a Kathara/Netkit directory
    Up(UpArgs),
    /// Show the labs that are up, their machines and whether they run
    Status,
    /// Reboot machines (default: all of the lab's) on a new kernel or the same one, with the
    /// lab's network, addresses and startups as before; debug sessions on them end
    Restart(RestartArgs),
    /// Halt a lab's machines and remove its taps, bridges, namespace and ~/.uml/<umid> dirs
    Down {
        /// The lab (default: the only lab that is up)
        #[arg(value_parser = parse_lab_name)]
        name: Option<String>,
    },
    /// Draw a lab's topology
    Graph {
        /// A lab file or directory (default: the article's network, or --lab)
        path: Option<PathBuf>,
        /// A lab that is up
        #[arg(long, value_parser = parse_lab_name)]
        lab: Option<String>,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// (internal) the long-lived process that owns a lab's consoles
    #[command(hide = true)]
    Supervise {
        #[arg(value_parser = parse_lab_name)]
        name: String,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Svg,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Lab file (.toml) or Kathara/Netkit directory; default: the article's three machines
    pub path: Option<PathBuf>,
    /// Lab name (default: the file's own)
    #[arg(long, value_parser = parse_lab_name)]
    pub name: Option<String>,
    /// Prefix for the lab name and every umid, to run several copies side by side
    #[arg(long, value_parser = parse_prefix)]
    pub prefix: Option<String>,
    /// Boot every machine from this root filesystem image (`umldbg image list`) instead of the
    /// host's root
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,
    /// The kernel the machines boot: `latest` (the newest build, e.g. of your tree), a kernel
    /// image, or a tree built with `umldbg kernel build --source` (default: `kernel path`'s)
    #[arg(long, value_name = "latest|PATH")]
    pub kernel: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// [LAB] [MACHINE...]: the lab (default: the only lab up, or the lab of the machines) and
    /// the umids of the machines to restart (default: every machine of the lab)
    pub names: Vec<String>,
    /// The kernel to boot: `latest`, a kernel image, or a tree built with `kernel build
    /// --source` (default: the kernel each machine ran)
    #[arg(long, value_name = "latest|PATH")]
    pub kernel: Option<String>,
}

/// A prefix goes in front of the lab's name and of every umid: it follows the rules of both.
fn parse_prefix(s: &str) -> Result<String, String> {
    match umldbg::uml::ids::lab_name_problem(s) {
        Some(problem) => Err(format!("the prefix {problem}")),
        None => Ok(s.to_owned()),
    }
}

/// Seconds for `--duration`: finite, not negative, at most a year.
fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not a number of seconds", s.escape_debug()))?;
    match umldbg::util::seconds("", v) {
        Ok(_) => Ok(v),
        Err(_) => Err(format!(
            "give a number of seconds from 0 to {:.0} (365 days)",
            umldbg::util::MAX_SECONDS
        )),
    }
}

fn load_spec(path: Option<&Path>) -> anyhow::Result<LabSpec> {
    Ok(match path {
        Some(p) => LabSpec::load(p)?,
        None => umldbg::lab::builtin::article_lab(),
    })
}

/// As `load_spec`, printing on stderr, one line each, what the lab asks for and will not get.
fn load_spec_warn(path: Option<&Path>) -> anyhow::Result<LabSpec> {
    let Some(p) = path else {
        return load_spec(None);
    };
    let (spec, warnings) = LabSpec::load_with_warnings(p)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(spec)
}

fn only_lab() -> anyhow::Result<String> {
    let labs = state::lab_names();
    match labs.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no lab is up: start one with `umldbg lab up`"),
        many => bail!("several labs are up ({}): name one", many.join(", ")),
    }
}

pub fn run(cmd: LabCmd, g: &Global) -> anyhow::Result<i32> {
    let (cache, json) = (g.cache.clone(), g.json);
    match cmd {
        LabCmd::Up(a) => {
            let mut spec = load_spec_warn(a.path.as_deref())?;
            if let Some(n) = a.name {
                spec.name = n;
            }
            if let Some(p) = a.prefix {
                spec = spec.with_prefix(&p);
            }
            if let Some(img) = &a.image {
                if let Some(why) = umldbg::lab::spec::unknown_image(img) {
                    anyhow::bail!("--image {img} {why}; give one of those, or a recipe file");
                }
                for m in &mut spec.machines {
                    m.image = Some(img.clone());
                }
            }
            // An image umldbg has no recipe for was warned about at load: boot from the base.
            let mut images: Vec<String> = Vec::new();
            for m in &mut spec.machines {
                if let Some(i) = &m.image {
                    if umldbg::lab::spec::unknown_image(i).is_some() {
                        m.image = Some(umldbg::lab::spec::FALLBACK_IMAGE.to_string());
                    }
                    let i = m.image.clone().unwrap_or_default();
                    if !images.contains(&i) {
                        images.push(i);
                    }
                }
            }
            spec.validate()?;
            let kernel = match &a.kernel {
                Some(k) => Some(umldbg::kernel::manifest::select(&cache, k)?),
                None => None,
            };
            crate::cli::image::ensure_for_lab(&cache, &images)?;
            let t0 = Instant::now();
            let st = client::up_on(&spec, &cache, kernel.as_ref())?;
            for r in &st.reports {
                eprintln!("warning: {r}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!(
                    "lab {} up in {:.2}s (namespace {})",
                    st.name,
                    t0.elapsed().as_secs_f64(),
                    st.netns
                );
                print_table(&st);
            }
            Ok(0)
        }
        LabCmd::Status => {
            let mut all = Vec::new();
            for name in state::lab_names() {
                let dir = state::lab_dir(&name);
                let Some(st) = LabState::read(&dir) else {
                    continue;
                };
                let sup = umldbg::util::pid_alive(st.supervisor_pid);
                let alive: Vec<bool> = st
                    .machines
                    .iter()
                    .map(|m| umldbg::util::pid_alive(m.pid))
                    .collect();
                all.push((st, sup, alive));
            }
            if json {
                let v: Vec<serde_json::Value> = all
                    .iter()
                    .map(|(st, sup, alive)| {
                        serde_json::json!({
                            "name": st.name, "netns": st.netns, "supervisor_alive": sup,
                            "log": state::lab_dir(&st.name).join("supervisor.log"),
                            "machines": st.machines.iter().zip(alive).map(|(m, a)| serde_json::json!({
                                "umid": m.umid, "hostname": m.hostname, "pid": m.pid, "alive": a,
                                "addresses": m.addresses,
                                "kernel": m.kernel.as_ref().unwrap_or(&st.kernel),
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if all.is_empty() {
                println!("no lab is up");
            } else {
                for (st, sup, alive) in &all {
                    println!(
                        "lab {} (namespace {}, supervisor {}, log {})",
                        st.name,
                        st.netns,
                        if *sup {
                            "running"
                        } else {
                            "GONE: run `umldbg lab down` to clean up"
                        },
                        state::lab_dir(&st.name).join("supervisor.log").display()
                    );
                    for (m, a) in st.machines.iter().zip(alive) {
                        println!(
                            "  {:<24} {:<10} pid {:<8} {}  {}",
                            m.umid,
                            m.hostname,
                            m.pid,
                            if *a { "running" } else { "DEAD   " },
                            addr_text(m)
                        );
                    }
                }
            }
            Ok(0)
        }
        LabCmd::Restart(a) => restart(a, &cache, json),
        LabCmd::Down { name } => {
            let name = match name {
                Some(n) => n,
                None => only_lab()?,
            };
            let r = client::down(&name, &cache)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for s in &r.stopped {
                    println!("stopped {s}");
                }
                for s in &r.removed {
                    println!("removed {s}");
                }
                println!("lab {name} down");
            }
            Ok(0)
        }
        LabCmd::Graph { path, lab, format } => {
            let spec = match lab {
                Some(l) => state::read_spec(&state::lab_dir(&l))
                    .ok_or_else(|| LabError::NoLab(l.clone(), state::lab_names().join(", ")))?,
                None => load_spec(path.as_deref())?,
            };
            match format {
                GraphFormat::Dot => print!("{}", umldbg::lab::graph::to_dot(&spec)),
                GraphFormat::Svg => print!("{}", umldbg::lab::graph::to_svg(&spec)),
            }
            Ok(0)
        }
        LabCmd::Supervise { name } => Ok(umldbg::lab::supervisor::main(&name, &cache)),
    }
}

/// `lab restart [LAB] [MACHINE...] [--kernel latest|PATH]`.
fn restart(a: RestartArgs, cache: &Path, json: bool) -> anyhow::Result<i32> {
    let labs = state::lab_names();
    let (lab, umids): (String, Vec<String>) = match a.names.split_first() {
        Some((first, rest)) if labs.contains(first) => (first.clone(), rest.to_vec()),
        Some(_) => {
            let (lab, _) = client::find_machine(&a.names[0])?;
            (lab, a.names.clone())
        }
        None => (only_lab()?, Vec::new()),
    };
    let st = LabState::read(&state::lab_dir(&lab))
        .ok_or_else(|| LabError::NoLab(lab.clone(), labs.join(", ")))?;
    for u in &umids {
        if st.machine(u).is_none() {
            bail!(
                "lab {lab} has no machine {u} (its machines: {})",
                st.machines
                    .iter()
                    .map(|m| m.umid.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let kernel = match &a.kernel {
        Some(k) => Some(umldbg::kernel::manifest::select(cache, k)?),
        None => None,
    };
    let targets: Vec<String> = if umids.is_empty() {
        st.machines.iter().map(|m| m.umid.clone()).collect()
    } else {
        umids.clone()
    };
    // A debug session on a machine that goes away ends first, with a reason its waiters and
    // later commands are told (its breakpoints come out of the old kernel's text cleanly).
    let why = "the machine was restarted by `umldbg lab restart`";
    let mut ended = Vec::new();
    for u in &targets {
        if let Ok(mut c) = umldbg::daemon::client::Connection::open(&st.uml_dir, u)
            && c.request(&umldbg::daemon::protocol::Request::Detach {
                reason: Some(why.into()),
            })
            .is_ok()
        {
            ended.push(u.clone());
        }
    }
    let t0 = Instant::now();
    let r = client::restart(&lab, &umids, kernel)?;
    // The new machine's UML directory tells a later debug command why the session is gone.
    for u in &ended {
        let _ = std::fs::write(
            st.uml_dir.join(u).join("umldbg.last"),
            format!("{why} (attach again: umldbg attach {u})\n"),
        );
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "lab": lab, "ok": r.ok, "error": r.error, "machines": r.machines,
                "sessions_ended": ended, "seconds": t0.elapsed().as_secs_f64(),
            }))?
        );
    } else {
        println!("lab {lab}: restarted in {:.2}s", t0.elapsed().as_secs_f64());
        for l in r.output.as_deref().unwrap_or("").lines() {
            if !l.starts_with("error: ") {
                println!("  {l}");
            }
        }
        for u in &ended {
            println!("  the debug session on {u} ended: attach again with `umldbg attach {u}`");
        }
    }
    if !r.ok {
        bail!("{}", r.error.unwrap_or_else(|| "restart failed".into()));
    }
    Ok(0)
}

fn addr_text(m: &state::MachineState) -> String {
    m.addresses
        .iter()
        .map(|(i, a)| format!("{i} {}", a.join(",")))
        .collect::<Vec<_>>()
        .join("  ")
}

fn print_table(st: &LabState) {
    println!(
        "{:<24} {:<10} {:<8} {:<34} ADDRESSES",
        "UMID", "HOSTNAME", "PID", "CONSOLE"
    );
    for m in &st.machines {
        println!(
            "{:<24} {:<10} {:<8} {:<34} {}",
            m.umid,
            m.hostname,
            if m.kernel_pid > 0 {
                m.kernel_pid
            } else {
                m.pid
            },
            format!("umldbg console {}", m.umid),
            addr_text(m)
        );
    }
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(value_parser = parse_umid)]
    pub umid: String,
    /// Seconds before the command is interrupted
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// A shell line (pipes, redirections) instead of a command and its arguments
    #[arg(long)]
    pub shell: Option<String>,
    /// The command and its arguments, passed to the guest exactly as given
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn exec(a: ExecArgs) -> anyhow::Result<i32> {
    let script = match (&a.shell, a.command.is_empty()) {
        (Some(s), true) => s.clone(),
        (None, false) => a
            .command
            .iter()
            .map(|w| umldbg::lab::init::sh_quote(w))
            .collect::<Vec<_>>()
            .join(" "),
        (Some(_), false) => bail!("give either --shell 'LINE' or `-- command args...`, not both"),
        (None, true) => bail!(
            "nothing to run: `umldbg exec {} -- command args...` or --shell 'LINE'",
            a.umid
        ),
    };
    let r = client::exec(&a.umid, &script, a.timeout)?;
    let out = r.bytes();
    if !out.is_empty() {
        let mut so = std::io::stdout().lock();
        so.write_all(&out)
            .and_then(|_| so.flush())
            .map_err(|e| anyhow::anyhow!("writing the output of {}: {e}", a.umid))?;
    }
    if !r.ok {
        bail!("{}", r.error.unwrap_or_else(|| "exec failed".into()));
    }
    Ok(r.status.unwrap_or(0))
}

/// The escape key that leaves `umldbg console`: Ctrl-].
pub const ESCAPE: u8 = 0x1d;

pub fn console(umid: &str) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let (lab, _) = client::find_machine(umid)?;
    let (r, mut s) = client::request(&lab, &Request::Console { umid: umid.into() })?;
    if !r.ok {
        bail!("{}", r.error.unwrap_or_default());
    }
    eprintln!("connected to {umid}'s console; Ctrl-] leaves");
    let stdin = std::io::stdin();
    let saved = if stdin.is_terminal() {
        let t = nix::sys::termios::tcgetattr(&stdin).ok();
        if let Some(t) = &t {
            let mut raw = t.clone();
            nix::sys::termios::cfmakeraw(&mut raw);
            let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
        }
        t
    } else {
        None
    };
    let mut out = s.try_clone()?;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut so = std::io::stdout();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || so.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = so.flush();
        }
    });
    // Wake the guest's shell so that its prompt shows.
    let _ = s.write_all(b"\n");
    let mut buf = [0u8; 1024];
    let mut input = std::io::stdin().lock();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(pos) = buf[..n].iter().position(|&b| b == ESCAPE) {
            let _ = s.write_all(&buf[..pos]);
            break;
        }
        if s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if let Some(t) = saved {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &t);
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    eprintln!("\nleft {umid}'s console");
    Ok(0)
}

#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// The domain (a bridge of the lab)
    pub domain: String,
    /// The pcap file to write
    #[arg(short = 'w', long = "write")]
    pub file: PathBuf,
    /// Stop after this many packets
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (default 10 when --count is not given)
    #[arg(long, value_parser = parse_seconds, allow_hyphen_values = true)]
    pub duration: Option<f64>,
    /// The lab (default: the only lab with that domain)
    #[arg(long, value_parser = parse_lab_name)]
    pub lab: Option<String>,
}

pub fn capture(a: CaptureArgs) -> anyhow::Result<i32> {
    let candidates: Vec<LabState> = state::lab_names()
        .into_iter()
        .filter(|n| a.lab.as_ref().is_none_or(|l| l == n))
        .filter_map(|n| LabState::read(&state::lab_dir(&n)))
        .filter(|st| st.domains.iter().any(|d| d.name == a.domain))
        .collect();
    let st = match candidates.as_slice() {
        [one] => one,
        [] => bail!(
            "no lab that is up has a domain {} (labs: {})",
            a.domain,
            state::lab_names().join(", ")
        ),
        _ => bail!(
            "several labs have a domain {}: pick one with --lab",
            a.domain
        ),
    };
    let bridge = &st
        .domains
        .iter()
        .find(|d| d.name == a.domain)
        .expect("filtered")
        .bridge;
    // tcpdump writes the pcap to a pipe and this process writes the file: a write error (a full
    // disk, /dev/full) is then ours to see and report, where tcpdump would close its output at the
    // end without checking.
    let mut out = std::fs::File::create(&a.file)
        .with_context(|| format!("cannot create {}", a.file.display()))?;
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns", "exec", &st.netns, "tcpdump", "-i", bridge, "-U", "-n", "-w", "-",
    ]);
    if let Some(c) = a.count {
        cmd.args(["-c", &c.to_string()]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("run tcpdump (apt-get install tcpdump)")?;
    let mut pipe = child.stdout.take().expect("piped");
    let file_name = a.file.clone();
    let writer = std::thread::spawn(move || -> Result<u64, String> {
        let mut buf = [0u8; 65536];
        let mut total = 0u64;
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read from tcpdump: {e}")),
            };
            out.write_all(&buf[..n])
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write {}: {e}", file_name.display()))?;
            total += n as u64;
        }
        out.sync_all()
            .map_err(|e| format!("cannot write {}: {e}", file_name.display()))
            .or_else(|e| {
                // Devices and pipes cannot be synced; that is no write error.
                if file_name.metadata().is_ok_and(|m| m.file_type().is_file()) {
                    Err(e)
                } else {
                    Ok(())
                }
            })?;
        Ok(total)
    });
    let limit = a
        .duration
        .or(if a.count.is_none() { Some(10.0) } else { None });
    let deadline = limit.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let tcpdump = nix::unistd::Pid::from_raw(child.id() as i32);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        // A write error ends the writer: stop tcpdump, it has nowhere to write.
        let stop = writer.is_finished() || deadline.is_some_and(|d| Instant::now() >= d);
        if stop {
            let _ = nix::sys::signal::kill(tcpdump, nix::sys::signal::SIGINT);
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().map(|mut e| e.read_to_string(&mut err));
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("capture: the writer thread panicked"))?;
    if let Err(e) = written {
        bail!("capture of {}: {e}", a.domain);
    }
    // SIGINT from us is how a timed capture ends; any other failure is tcpdump's.
    use std::os::unix::process::ExitStatusExt;
    if !status.success() && status.signal() != Some(libc::SIGINT) {
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("tcpdump on {} failed: {last}", a.domain);
    }
    eprint!("{err}");
    Ok(0)
}
