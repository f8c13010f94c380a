//! The `umldbg` command line: parse, dispatch, print the error chain on one line per cause.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "umldbg",
    version,
    about = "See inside the Linux network stack with User-Mode Linux"
)]
struct Cli {
    /// Cache directory for kernels and layouts
    #[arg(long, global = true, env = "UMLDBG_CACHE")]
    cache: Option<PathBuf>,
    /// The machine a debug command talks to (default: the only attached machine)
    #[arg(long, global = true, value_parser = umldbg::uml::ids::parse_umid)]
    umid: Option<String>,
    /// UML's directory of pid files and sockets (as UML's uml_dir=; default ~/.uml)
    #[arg(long, global = true, value_name = "DIR")]
    uml_dir: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    /// Diagnostics on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build, locate and list the debug-ready UML kernel
    #[command(subcommand)]
    Kernel(cli::kernel::KernelCmd),
    /// Build, locate, list and prune root filesystem images for lab machines
    #[command(subcommand)]
    Image(cli::image::ImageCmd),
    /// Check that this machine has what labs and debugging need, and say how to fix what is missing
    Doctor,
    /// Inspect kernel module files
    #[command(subcommand)]
    Ko(KoCmd),
    /// The layout of a struct or union from the kernel's DWARF, like pahole
    Ptype(cli::ptype::PtypeArgs),
    /// Write an ELF symbol file from /proc/kallsyms text, for kernels without symbols
    Symfile(cli::symfile::SymfileArgs),
    /// Start, inspect, draw and stop labs of UML machines
    #[command(subcommand)]
    Lab(cli::lab::LabCmd),
    /// Run a command on a lab machine's console and print its output
    Exec(cli::lab::ExecArgs),
    /// An interactive terminal on a lab machine (Ctrl-] leaves)
    Console {
        #[arg(value_parser = umldbg::uml::ids::parse_umid)]
        umid: String,
    },
    /// Write a pcap of what crosses a lab domain
    Capture(cli::lab::CaptureArgs),
    /// Attach a debug session (gdb with every module's symbols) to a running UML machine
    Attach(cli::debug::AttachArgs),
    #[command(flatten)]
    Debug(cli::debug::DebugCmd),
    /// An interactive prompt on a session: history, completion, stops shown as they happen
    Shell {
        /// The machine (default: the only attached machine)
        #[arg(value_parser = umldbg::uml::ids::parse_umid)]
        umid_arg: Option<String>,
    },
    /// A gdb remote-protocol server on a machine's kernel: any gdb or IDE, modules as libraries
    Serve(cli::serve::ServeArgs),
    /// Debugger configurations for a machine: VS Code, CLion, plain gdb
    Ide(cli::ide::IdeArgs),
    /// Trace kernel functions at line rate, with the decoded sk_buff of every hit
    Trace(cli::trace::TraceArgs),
    /// Follow packets across a lab's machines through the IPv4 path
    Flow(cli::trace::FlowArgs),
    /// (internal) the session daemon started by attach
    #[command(hide = true, name = "daemon-run")]
    DaemonRun { options: String },
    /// (internal) the watchdog that restores breakpoint bytes if a session's gdb dies
    #[command(hide = true, name = "daemon-guard")]
    DaemonGuard {
        uml_pid: i32,
        gdb_pid: i32,
        journal: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum KoCmd {
    /// Sections, symbols, modinfo, build-id and source lines of a .ko file
    Info(cli::ko::KoInfoArgs),
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(c.clamp(0, 255) as u8)
}

/// The library's `tracing` events on stderr: warnings by default, more with -v, or as RUST_LOG
/// says.
fn init_diagnostics(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("umldbg={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

fn main() -> ExitCode {
    // Printing into a closed pipe (`umldbg list | head`) ends the process quietly, as for any
    // Unix filter, instead of panicking.
    // SAFETY: resetting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return cli::usage::report(e),
    };
    if let Some(d) = &cli.uml_dir {
        let d = std::path::absolute(d).unwrap_or_else(|_| d.clone());
        // SAFETY: no other thread runs yet. Every command, and the lab supervisors and daemons
        // this process starts, then look machines up under the same directory.
        unsafe { std::env::set_var("UMLDBG_UML_DIR", d) };
    }
    init_diagnostics(cli.verbose);
    let cache = cli.cache.clone().unwrap_or_else(umldbg::util::cache_dir);
    let target = cli::debug::Target {
        umid: cli.umid.clone(),
        uml_dir: cli.uml_dir.clone(),
        json: cli.json,
    };
    let json = cli.json;
    let res: anyhow::Result<ExitCode> = match cli.cmd {
        Cmd::Kernel(k) => cli::kernel::run(k, cache, json).map(|()| ExitCode::SUCCESS),
        Cmd::Image(c) => cli::image::run(c, cache, json).map(|()| ExitCode::SUCCESS),
        Cmd::Doctor => cli::doctor::run(&cache).map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Cmd::Lab(c) => cli::lab::run(c, cache, json).map(code),
        Cmd::Ko(KoCmd::Info(mut a)) => {
            a.json = json;
            cli::ko::run(a).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Ptype(mut a) => {
            a.json = json;
            a.cache = Some(cache);
            cli::ptype::run(a).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Symfile(a) => cli::symfile::run(a).map(|()| ExitCode::SUCCESS),
        Cmd::Attach(a) => cli::debug::attach(a, target, cache).map(code),
        Cmd::Debug(d) => cli::debug::run(d, target).map(code),
        Cmd::Shell { umid_arg } => cli::shell::run(
            umid_arg.or(cli.umid.clone()),
            cli.uml_dir
                .clone()
                .unwrap_or_else(umldbg::uml::instance::default_uml_dir),
        )
        .map(code),
        Cmd::DaemonGuard {
            uml_pid,
            gdb_pid,
            journal,
        } => Ok(code(umldbg::daemon::journal::guard_main(
            uml_pid, gdb_pid, &journal,
        ))),
        Cmd::DaemonRun { options } => match serde_json::from_str(&options) {
            Ok(o) => Ok(code(umldbg::daemon::daemon_main(o))),
            Err(e) => Err(anyhow::anyhow!("daemon-run: bad options: {e}")),
        },
        Cmd::Serve(mut a) => {
            a.uml_dir = cli.uml_dir.clone();
            cli::serve::run(a, cache).map(code)
        }
        Cmd::Ide(mut a) => {
            a.umid = cli.umid.clone();
            a.uml_dir = cli.uml_dir.clone();
            cli::ide::run(a, cache).map(code)
        }
        Cmd::Trace(mut a) => {
            a.json |= json;
            a.uml_dir = cli.uml_dir.clone();
            cli::trace::run_trace(a, cache).map(code)
        }
        Cmd::Flow(mut a) => {
            a.json |= json;
            cli::trace::run_flow(a, cache).map(code)
        }
        Cmd::Exec(a) => cli::lab::exec(a).map(code),
        Cmd::Console { umid } => cli::lab::console(&umid).map(code),
        Cmd::Capture(a) => cli::lab::capture(a).map(code),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            // One line per cause, and a cause whose text its parent already shows is left out.
            let mut msg = format!("umldbg: {e}");
            let mut shown = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    msg.push_str(&format!("\n  caused by: {text}"));
                }
                shown = text;
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
