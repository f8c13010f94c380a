//! The `umldbg` command line: parse, dispatch, print the error chain on one line per cause.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use cli::global::{Global, Opt};

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
    #[arg(long, id = "global_umid", global = true, value_parser = umldbg::uml::ids::parse_umid)]
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
/// says. A background process (a lab's supervisor, a session daemon) has its stderr in its log
/// file beside its state (`lab status` and `status` name it): it logs from `info` on, with time.
fn init_diagnostics(verbose: u8, background: bool) {
    let level = match verbose {
        _ if background => "info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("umldbg={level}")));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if background {
        fmt.try_init()
    } else {
        fmt.without_time().try_init()
    };
}

fn main() -> ExitCode {
    // Printing into a closed pipe (`umldbg list | head`) ends the process quietly, as for any
    // Unix filter, instead of panicking.
    // SAFETY: resetting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return cli::usage::report(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return cli::usage::report(e),
    };
    let g = Global::new(&matches, cli.cache, cli.umid, cli.uml_dir, cli.json);
    if matches.value_source("uml_dir") == Some(clap::parser::ValueSource::CommandLine) {
        // SAFETY: no other thread runs yet. The lab supervisors and session daemons this
        // process starts look machines up under the same directory.
        unsafe { std::env::set_var("UMLDBG_UML_DIR", &g.uml_dir) };
    }
    let background = matches!(
        cli.cmd,
        Cmd::DaemonRun { .. } | Cmd::Lab(cli::lab::LabCmd::Supervise { .. })
    );
    init_diagnostics(cli.verbose, background);
    use Opt::{Cache, Json, Umid, UmlDir};
    let res: anyhow::Result<ExitCode> = (|| match cli.cmd {
        Cmd::Kernel(k) => {
            cli::kernel::run(k, g.takes("kernel", &[Cache, Json])?).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Image(c) => {
            cli::image::run(c, g.takes("image", &[Cache, Json])?).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Doctor => cli::doctor::run(&g.takes("doctor", &[Cache, UmlDir])?.cache).map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Cmd::Lab(c) => {
            let (name, takes): (&str, &[Opt]) = match &c {
                cli::lab::LabCmd::Graph { .. } => ("lab graph", &[Cache]),
                _ => ("lab", &[Cache, Json, UmlDir]),
            };
            cli::lab::run(c, g.takes(name, takes)?).map(code)
        }
        Cmd::Ko(KoCmd::Info(a)) => {
            cli::ko::run(a, g.takes("ko info", &[Json])?).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Ptype(a) => {
            cli::ptype::run(a, g.takes("ptype", &[Cache, Json])?).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Symfile(a) => {
            g.takes("symfile", &[])?;
            cli::symfile::run(a).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Attach(a) => {
            cli::debug::attach(a, g.takes("attach", &[Cache, UmlDir, Json])?).map(code)
        }
        Cmd::Debug(d) => cli::debug::run(d, g.takes("debug", &[Umid, UmlDir, Json])?).map(code),
        Cmd::Shell { umid_arg } => {
            cli::shell::run(umid_arg, g.takes("shell", &[Umid, UmlDir])?).map(code)
        }
        Cmd::DaemonRun { options } => match serde_json::from_str(&options) {
            Ok(o) => Ok(code(umldbg::daemon::daemon_main(o))),
            Err(e) => Err(anyhow::anyhow!("daemon-run: bad options: {e}")),
        },
        Cmd::Serve(a) => cli::serve::run(a, g.takes("serve", &[Cache, UmlDir])?).map(code),
        Cmd::Ide(a) => cli::ide::run(a, g.takes("ide", &[Cache, Umid, UmlDir])?).map(code),
        Cmd::Trace(a) => {
            cli::trace::run_trace(a, g.takes("trace", &[Cache, UmlDir, Json])?).map(code)
        }
        Cmd::Flow(a) => cli::trace::run_flow(a, g.takes("flow", &[Cache, Json])?).map(code),
        Cmd::Exec(a) => {
            g.takes("exec", &[UmlDir])?.machine_is_there(&a.umid)?;
            cli::lab::exec(a).map(code)
        }
        Cmd::Console { umid } => {
            g.takes("console", &[UmlDir])?.machine_is_there(&umid)?;
            cli::lab::console(&umid).map(code)
        }
        Cmd::Capture(a) => {
            g.takes("capture", &[])?;
            cli::lab::capture(a).map(code)
        }
    })();
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
