//! The `umldbg` command line: parse, dispatch, print the error chain on one line per cause.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "umldbg", version, about = "See inside the Linux network stack with User-Mode Linux")]
struct Cli {
    /// Cache directory for kernels and layouts
    #[arg(long, global = true, env = "UMLDBG_CACHE")]
    cache: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build, locate and list the debug-ready UML kernel
    #[command(subcommand)]
    Kernel(cli::kernel::KernelCmd),
    /// Check that this machine has what labs and debugging need, and say how to fix what is missing
    Doctor,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cache = cli.cache.clone().unwrap_or_else(umldbg::util::cache_dir);
    let res: anyhow::Result<ExitCode> = match cli.cmd {
        Cmd::Kernel(k) => cli::kernel::run(k, cache).map(|()| ExitCode::SUCCESS),
        Cmd::Doctor => cli::doctor::run(&cache)
            .map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            let mut msg = format!("umldbg: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!("\n  caused by: {cause}"));
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
