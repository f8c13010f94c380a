//! The breakpoint journal: which bytes of kernel text a session's breakpoints cover and what
//! they held, kept on disk beside the machine's mconsole socket.
//!
//! gdb inserts `int3` into the kernel's text while the machine runs. If gdb dies (SIGKILL, a
//! crash) those bytes stay, and the next time the kernel runs that code it traps with no
//! debugger there. The session restores them as soon as it sees gdb go; a later `attach`
//! repairs what a dead session left.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const INT3: u8 = 0xcc;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub breakpoint: u32,
    pub addr: u64,
    pub original: u8,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    pid: i32,
    entries: Vec<Entry>,
}

fn mem_path(pid: i32) -> String {
    format!("/proc/{pid}/mem")
}

/// Read one byte of the process's memory.
pub fn peek(pid: i32, addr: u64) -> std::io::Result<u8> {
    let mut f = std::fs::File::open(mem_path(pid))?;
    f.seek(SeekFrom::Start(addr))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(b[0])
}

/// Write one byte of the process's memory (text included: /proc/pid/mem writes through).
pub fn poke(pid: i32, addr: u64, byte: u8) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(mem_path(pid))?;
    f.seek(SeekFrom::Start(addr))?;
    f.write_all(&[byte])
}

impl Journal {
    /// Open the journal of a machine, keeping what an earlier session left in it.
    pub fn open(path: &Path, pid: i32) -> Journal {
        let entries = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Journal {
            path: path.to_path_buf(),
            pid,
            entries,
        }
    }

    /// Note a breakpoint address while the machine is stopped (gdb has its bytes out then).
    pub fn record(&mut self, breakpoint: u32, addr: u64) {
        if self.entries.iter().any(|e| e.addr == addr) {
            return;
        }
        match peek(self.pid, addr) {
            Ok(b) if b != INT3 => {
                self.entries.push(Entry {
                    breakpoint,
                    addr,
                    original: b,
                });
                self.save();
            }
            _ => {}
        }
    }

    pub fn forget(&mut self, breakpoint: u32) {
        self.entries.retain(|e| e.breakpoint != breakpoint);
        self.save();
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        let _ = std::fs::remove_file(&self.path);
    }

    /// Put back every original byte that an `int3` still covers; returns how many.
    pub fn repair(&self) -> std::io::Result<usize> {
        let mut n = 0;
        for e in &self.entries {
            if peek(self.pid, e.addr)? == INT3 {
                poke(self.pid, e.addr, e.original)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn save(&self) {
        if self.entries.is_empty() {
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        let tmp = self.path.with_extension("tmp");
        if std::fs::write(
            &tmp,
            serde_json::to_string(&self.entries).unwrap_or_default(),
        )
        .is_ok()
        {
            let _ = std::fs::rename(tmp, &self.path);
        }
    }
}

/// The watchdog of a session's gdb: a process of its own (it outlives a killed daemon) that
/// waits for gdb to exit and then puts back every byte the journal lists. gdb dies with its
/// breakpoints in kernel text when it is killed, or when the daemon is killed and gdb's next
/// write to its closed output pipe raises SIGPIPE; the kernel patch gives the guard two seconds.
pub fn guard_main(uml_pid: i32, gdb_pid: i32, journal: &Path) -> i32 {
    crate::ptrace::guard::wait_gone(gdb_pid, &crate::ptrace::guard::pidfd_open);
    let j = Journal::open(journal, uml_pid);
    match j.repair() {
        Ok(n) if n > 0 => eprintln!(
            "umldbg guard: gdb {gdb_pid} died; restored {n} breakpoint byte(s) in pid {uml_pid}"
        ),
        _ => {}
    }
    0
}

/// Start the guard of a session's gdb (a detached re-exec of this binary).
pub fn spawn_guard(uml_pid: i32, gdb_pid: u32, journal: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("daemon-guard")
        .arg(uml_pid.to_string())
        .arg(gdb_pid.to_string())
        .arg(journal)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .process_group(0);
    cmd.spawn().map(|_| ())
}
