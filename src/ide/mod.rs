//! Debugger configurations for IDEs and plain gdb: VS Code's `launch.json` and `tasks.json`
//! (`vscode`), CLion's Remote Debug settings (`clion`), a gdb script for a native attach
//! (`gdbinit`). Each is built from one [`Setup`] by a pure function; the CLI writes the files.

pub mod clion;
pub mod gdbinit;
pub mod jsonc;
pub mod vscode;

use std::path::PathBuf;

/// What every configuration is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub umid: String,
    /// The kernel image gdb loads symbols from (the running machine's `linux`, by its name
    /// `vmlinux`, which the kernel's GDB scripts expect).
    pub image: PathBuf,
    /// `host:port` (or a Unix socket path) of `umldbg serve`.
    pub address: String,
    pub port: u16,
    pub gdb: String,
    /// The umldbg executable the serve task runs.
    pub umldbg: PathBuf,
    /// Extra `--module-path` directories for the server.
    pub module_paths: Vec<PathBuf>,
}

/// gdb commands the server wants before `target remote`, with why. The server's target
/// description already sets the OS ABI to "none" (so gdb reads the module list it sends);
/// saying it here too keeps a gdb that ranks the executable's GNU/Linux note higher on the
/// same path. No `continue`: IDEs resume by themselves.
pub fn setup_commands() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "set osabi none",
            "modules come as a library list (qXfer:libraries), which gdb reads for OS ABI none",
        ),
        (
            "set breakpoint pending on",
            "breakpoints in modules that are not loaded yet wait for them",
        ),
    ]
}

/// The arguments of the task that starts the server.
pub fn serve_args(s: &Setup) -> Vec<String> {
    let mut v = vec![
        "serve".to_owned(),
        s.umid.clone(),
        "--listen".to_owned(),
        s.address.clone(),
        "--once".to_owned(),
    ];
    for p in &s.module_paths {
        v.push("--module-path".into());
        v.push(p.display().to_string());
    }
    v
}

/// The line the server prints when it listens (what an IDE task waits for).
pub const READY_PATTERN: &str = "^umldbg serve: .* listening on ";
