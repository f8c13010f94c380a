//! The debug commands: `attach`, `load`, `break`, `delete`, `breaks`, `continue`, `interrupt`,
//! `wait`, `bt`, `print`, `step`, `next`, `finish`, `list`, `skb`, `gdb`, `detach`, `status`.
//! Each sends one request to the machine's session daemon and prints its answer.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use umldbg::daemon::client::{self, Connection};
use umldbg::daemon::protocol::{Request, Response};
use umldbg::daemon::{self, AttachOptions};

use super::global::Global;

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The machine's umid, e.g. router-uml-R
    #[arg(value_parser = umldbg::uml::ids::parse_umid)]
    pub umid: String,
    /// The gdb to run
    #[arg(long, default_value = "gdb")]
    pub gdb: PathBuf,
    /// Directories searched for module files (before the kernel's installed modules)
    #[arg(long = "module-path", value_name = "DIR")]
    pub module_path: Vec<PathBuf>,
    /// Leave the machine stopped after attaching
    #[arg(long)]
    pub stopped: bool,
    /// The host pty of a console with a root shell (e.g. /dev/pts/3 for `ssl0=pts`), for a
    /// machine not started by a lab; without it, umldbg asks mconsole which ptys the machine's
    /// consoles use and takes one where a shell answers
    #[arg(long, value_name = "PTY")]
    pub console: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DebugCmd {
    /// Load a module in the guest (dependencies first) and give gdb its symbols
    Load {
        /// A .ko file or a module name
        #[arg(required_unless_present = "build")]
        module: Option<String>,
        #[arg(long = "module-path", value_name = "DIR")]
        module_path: Vec<PathBuf>,
        /// A newer build of a loaded module takes its place: netfilter rules set aside and
        /// restored, symbols swapped, breakpoints set again in the new code
        #[arg(long)]
        replace: bool,
        /// Build the out-of-tree module in DIR against the machine's kernel, then load it in
        /// place of the running build (implies --replace)
        #[arg(long, value_name = "DIR", conflicts_with = "module")]
        build: Option<PathBuf>,
    },
    /// Set a breakpoint (the machine may be running)
    Break {
        location: String,
        /// Stop only when this C condition holds
        #[arg(long = "if", value_name = "COND")]
        cond: Option<String>,
    },
    /// Delete a breakpoint
    Delete { id: u32 },
    /// List breakpoints with their hit counts
    Breaks,
    /// Resume the machine
    Continue,
    /// Stop the machine where it is
    Interrupt,
    /// Block until the machine stops, and print the stop
    Wait {
        /// Give up after this many seconds
        #[arg(long, allow_hyphen_values = true)]
        timeout: Option<f64>,
    },
    /// Backtrace of the stop
    Bt,
    /// Evaluate a C expression at the stop
    Print { expr: Vec<String> },
    /// Step into the next line
    Step,
    /// Step over the next line
    Next,
    /// Run until the current function returns
    Finish,
    /// Show source lines around the stop (or a location)
    List { location: Option<String> },
    /// Decode the sk_buff at the stop (the frame's struct sk_buff * argument, or EXPR)
    Skb {
        expr: Option<String>,
        /// Add a hex dump of the payload
        #[arg(long)]
        hex: bool,
        /// Add gdb's own print of *skb
        #[arg(long)]
        raw: bool,
    },
    /// Run any gdb command
    Gdb { command: Vec<String> },
    /// Remove every breakpoint, detach, end the session; the machine keeps running
    Detach,
    /// The session's state, modules and breakpoints
    Status,
}

pub fn attach(a: AttachArgs, t: &Global) -> anyhow::Result<i32> {
    let cache = t.cache.clone();
    let opts = AttachOptions {
        umid: a.umid,
        uml_dir: t.uml_dir.clone(),
        gdb: a.gdb,
        module_paths: a
            .module_path
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or(p.clone()))
            .collect(),
        stopped: a.stopped,
        cache,
        console: a.console,
    };
    let summary = daemon::attach(&opts)?;
    println!("{summary}");
    Ok(0)
}

/// Send one request to the session of `t` and return the response.
pub fn request(t: &Global, req: &Request) -> anyhow::Result<Response> {
    let dir = t.uml_dir.clone();
    let umid = client::pick(&dir, t.umid.as_deref())?;
    let mut c = Connection::open(&dir, &umid)?;
    Ok(c.request(req)?)
}

pub fn run(cmd: DebugCmd, t: &Global) -> anyhow::Result<i32> {
    let req = match cmd {
        DebugCmd::Load {
            module,
            module_path,
            replace,
            build,
        } => {
            let canon = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or(p.clone());
            let file = match &module {
                // A relative file is the caller's, not the daemon's.
                Some(m) if m.ends_with(".ko") || m.contains('/') => {
                    let p = PathBuf::from(m);
                    if p.exists() {
                        canon(&p).display().to_string()
                    } else {
                        m.clone()
                    }
                }
                Some(m) => m.clone(),
                None => String::new(),
            };
            let build = match &build {
                Some(d) if !d.is_dir() => bail!(
                    "--build {}: no such directory: give the directory of the module's source and Makefile",
                    d.display()
                ),
                Some(d) => Some(canon(d)),
                None => None,
            };
            Request::Load {
                file,
                module_path: module_path.iter().map(canon).collect(),
                replace,
                build,
            }
        }
        DebugCmd::Break { location, cond } => Request::Break { location, cond },
        DebugCmd::Delete { id } => Request::Delete { id },
        DebugCmd::Breaks => Request::Breaks,
        DebugCmd::Continue => Request::Continue,
        DebugCmd::Interrupt => Request::Interrupt,
        DebugCmd::Wait { timeout } => {
            install_wait_interrupt();
            Request::Wait { timeout }
        }
        DebugCmd::Bt => Request::Bt,
        DebugCmd::Print { expr } => {
            if expr.is_empty() {
                bail!("print needs an expression, e.g. `umldbg print skb->len`");
            }
            Request::Print {
                expr: expr.join(" "),
            }
        }
        DebugCmd::Step => Request::Step,
        DebugCmd::Next => Request::Next,
        DebugCmd::Finish => Request::Finish,
        DebugCmd::List { location } => Request::List { location },
        DebugCmd::Skb { expr, hex, raw } => Request::Skb { expr, hex, raw },
        DebugCmd::Gdb { command } => Request::Gdb {
            command: command.join(" "),
        },
        DebugCmd::Detach => Request::Detach { reason: None },
        DebugCmd::Status => Request::Status,
    };
    // The daemon checks every request too; checking here says it before connecting.
    req.check()?;
    let mut r = request(t, &req)?;
    if matches!(req, Request::Status) && r.ok {
        // Where the session daemon's log is (gdb's last words, the daemon's diagnostics).
        let umid = client::pick(&t.uml_dir, t.umid.as_deref())?;
        let log = t.uml_dir.join(&umid).join("umldbg.log");
        if let Some(serde_json::Value::Object(m)) = r.data.as_mut() {
            m.insert("log".into(), serde_json::json!(log));
        }
        let text = r.text.get_or_insert_default();
        text.push_str(&format!("\nlog {}", log.display()));
    }
    print_response(&r, t.json)
}

pub fn print_response(r: &Response, json: bool) -> anyhow::Result<i32> {
    if !r.ok {
        bail!("{}", r.error.clone().unwrap_or_else(|| "failed".into()));
    }
    if json {
        let v = r
            .data
            .clone()
            .unwrap_or_else(|| serde_json::json!({ "text": r.text }));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if let Some(t) = &r.text
        && !t.is_empty()
    {
        println!("{t}");
    }
    Ok(0)
}

/// Ctrl-C during `wait`: say what happened in one line; the machine is left as it is.
fn install_wait_interrupt() {
    extern "C" fn on_sigint(_: libc::c_int) {
        let msg =
            b"\numldbg: wait interrupted; the machine keeps running and its breakpoints stay\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(130);
        }
    }
    // SAFETY: installing a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}
