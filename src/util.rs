//! Small helpers shared by several modules: the cache directory, running host commands, whether
//! a host process is alive.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The cache root: `$UMLDBG_CACHE`, else `$HOME/.cache/umldbg`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("UMLDBG_CACHE") {
        return PathBuf::from(dir);
    }
    home_dir().join(".cache").join("umldbg")
}

/// `$HOME`, or `/root` when it is unset (the tool runs as root).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Error from running a host command: names the command line and what it printed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("cannot run `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
}

/// Render a command line for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion; a non-zero exit is an error carrying its last stderr line(s).
pub fn run(cmd: &mut Command) -> Result<Output, CmdError> {
    let desc = describe(cmd);
    let out = cmd.output().map_err(|source| CmdError::Spawn {
        cmd: desc.clone(),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(CmdError::Failed {
            cmd: desc,
            status: out.status.to_string(),
            stderr: tail.join(" | "),
        });
    }
    Ok(out)
}

/// A process's state letter from `/proc/<pid>/stat` (`R`, `S`, `t`, `Z`, ...); `None` when there
/// is no such process (or `pid` is not a process id at all).
pub fn proc_state(pid: i32) -> std::io::Result<Option<char>> {
    if pid <= 0 {
        return Ok(None);
    }
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name in parentheses may itself hold spaces and parentheses: the state is the
    // first field after the last ')'.
    Ok(stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next()))
}

/// Whether a process in state `state` (from [`proc_state`]) counts as alive: a zombie (`Z`) has
/// exited, only its parent has not collected it yet, and `X` is a dead one on its way out.
pub fn state_alive(state: Option<char>) -> bool {
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// Whether `pid` is alive: the one rule every "is it still running" check uses (a zombie is
/// gone, see [`state_alive`]). A `/proc` that cannot be read answers "not alive".
pub fn pid_alive(pid: i32) -> bool {
    proc_state(pid).is_ok_and(state_alive)
}

/// The tracer of a thread, if any: (pid, command name).
pub fn tracer_of(tid: i32) -> Option<(i32, String)> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let t: i32 = s
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()?;
    if t == 0 {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/{t}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let exe = std::fs::read_link(format!("/proc/{t}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let name = match exe {
        Some(e) if e != comm => format!("{comm}, {e}"),
        _ => comm,
    };
    Some((t, name))
}

/// A program on PATH, or in the system's sbin and bin directories (root's tools).
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(prog)).find(|p| p.is_file())
}

pub use umldbg_codec::base64::{decode as base64_decode, encode as base64};

/// Largest lab file (TOML or a Kathará file) read whole.
pub const MAX_LAB_FILE: u64 = 16 << 20;
/// Largest ELF file (a module, a kallsyms copy) read whole.
pub const MAX_ELF_FILE: u64 = 1 << 30;

/// What kind of file a mode says, for messages: "a directory", "a character device", ...
fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a pipe"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Read a whole file that must be a regular file of at most `max_len` bytes.
///
/// A device (`/dev/zero`), a pipe or a socket is refused before anything is read: reading one
/// whole would never end or would wait for a writer. The file is opened without blocking, so a
/// FIFO with no writer is refused too instead of hanging in `open`. Files of procfs count as
/// regular (their size is 0 there): they are read up to `max_len`.
pub fn read_regular_file(path: &std::path::Path, max_len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{}, not a regular file: give a file",
                file_kind(meta.file_type())
            ),
        ));
    }
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("larger than {max_len} bytes"),
        )
    };
    if meta.len() > max_len {
        return Err(too_big());
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(max_len + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max_len {
        return Err(too_big());
    }
    Ok(out)
}

/// [`read_regular_file`] for text: the bytes must be UTF-8.
pub fn read_regular_to_string(path: &std::path::Path, max_len: u64) -> std::io::Result<String> {
    String::from_utf8(read_regular_file(path, max_len)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Longest span of seconds a command or request may give (a year): longer ones are mistakes, and
/// `Duration::from_secs_f64` panics on values beyond `u64::MAX` seconds.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// A number of seconds from a user or a request: finite, not negative, at most [`MAX_SECONDS`].
/// `what` names the argument in the error, e.g. "--timeout".
/// A number of seconds out of range, as given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} {shown}: give a number of seconds from 0 to {MAX_SECONDS:.0} (365 days)")]
pub struct SecondsError {
    /// The argument, e.g. "--timeout".
    pub what: String,
    /// The value as the user gave it (1e308 as "1e308", not as 309 digits).
    pub shown: String,
}

pub fn seconds(what: &str, v: f64) -> Result<std::time::Duration, SecondsError> {
    if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
        // 1e308 as "1e308", not as 309 digits.
        let shown = if v.is_finite() && v.abs() >= 1e9 {
            format!("{v:e}")
        } else {
            v.to_string()
        };
        return Err(SecondsError {
            what: what.to_owned(),
            shown,
        });
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_regular_file_refuses_devices_pipes_and_directories() {
        for p in ["/dev/zero", "/dev/null", "/"] {
            let e = read_regular_file(std::path::Path::new(p), 1 << 20).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{p}: {e}");
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("umldbg-util-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("f");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_regular_file(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("a pipe"), "{e}");
        let big = dir.join("big");
        std::fs::write(&big, [b'x'; 11]).unwrap();
        assert!(read_regular_file(&big, 10).is_err());
        assert_eq!(read_regular_file(&big, 11).unwrap().len(), 11);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn procfs_files_count_as_regular() {
        let t = read_regular_to_string(std::path::Path::new("/proc/self/status"), 1 << 20);
        assert!(t.unwrap().contains("Pid:"));
    }

    #[test]
    fn seconds_refuse_negative_nan_infinite_and_huge() {
        for v in [
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e308,
            MAX_SECONDS + 1.0,
        ] {
            let e = seconds("--timeout", v).unwrap_err().to_string();
            assert!(e.starts_with("--timeout ") && !e.contains('\n'), "{e}");
        }
        assert_eq!(seconds("t", 0.0).unwrap(), std::time::Duration::ZERO);
        assert_eq!(seconds("t", 1.5).unwrap().as_millis(), 1500);
    }
}

/// Where in a source file something is. `column` is absent for line-oriented formats (lab.conf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: std::path::PathBuf,
    pub line: usize,
    pub column: Option<usize>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        Ok(())
    }
}

impl Location {
    /// The line and column (1-based, in characters) of byte `offset` of `text`.
    pub fn from_offset(file: &std::path::Path, text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location {
            file: file.to_owned(),
            line,
            column: Some(column),
        }
    }
}

/// The wait after the `n`th failed `accept` in a row (EMFILE, ENFILE, ENOBUFS: errors that do
/// not go away at once, so trying again at once would spin a core): 10 ms, doubling, at most 1 s.
pub fn accept_backoff(n: u32) -> std::time::Duration {
    std::time::Duration::from_millis((10u64 << n.saturating_sub(1).min(7)).min(1000))
}
