//! What can go wrong in a debug session, typed; the daemon sends its text to the client.

use std::path::PathBuf;

use crate::gdbmi::GdbError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// gdb failed a command, or went away.
    #[error(transparent)]
    Gdb(#[from] GdbError),
    #[error("loading the kernel's symbols from {}: {source}", image.display())]
    KernelSymbols {
        image: PathBuf,
        #[source]
        source: GdbError,
    },
    #[error("loading {}: {source}", file.display())]
    SymbolFile {
        file: PathBuf,
        #[source]
        source: GdbError,
    },
    #[error("attach to pid {pid}: {source}")]
    Attach {
        pid: i32,
        #[source]
        source: GdbError,
    },
    #[error("start the breakpoint guard: {0}")]
    Guard(#[source] crate::ptrace::guard::GuardError),
    #[error("gdb exited ({0})")]
    GdbExited(String),
    #[error("gdb is gone")]
    GdbGone,
    #[error("the machine did not stop within 10 s of an interrupt")]
    NoStop,
    #[error("no file for module {0} (add a directory with --module-path)")]
    NoModuleFile(String),
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} has build-id {host} but the guest's {module} has {guest}: not the loaded module, refusing its symbols",
        file.display()
    )]
    BuildId {
        file: PathBuf,
        module: String,
        host: String,
        guest: String,
    },
    #[error("module {0} reports no .text")]
    NoText(String),
    /// gdb refused an `add-symbol-file` line (the line, then gdb's words).
    #[error("{command}: {source}")]
    AddSymbols {
        command: String,
        #[source]
        source: GdbError,
    },
    #[error(
        "{} has no symbols and {umid} has no console to read /proc/kallsyms from: write one with `umldbg symfile --kallsyms FILE -o OUT` and attach with a kernel image that has symbols",
        image.display()
    )]
    NoKallsymsSource { image: PathBuf, umid: String },
    #[error("`cat /proc/kallsyms` on {umid} ({console}): {reason}")]
    KallsymsRead {
        umid: String,
        console: String,
        reason: String,
    },
    #[error("/proc/kallsyms of {umid}: {source}")]
    Kallsyms {
        umid: String,
        #[source]
        source: crate::kmod::kallsyms::KallsymsError,
    },
    #[error(transparent)]
    Symfile(#[from] crate::kmod::symfile::SymfileError),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
