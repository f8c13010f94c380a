//! Small helpers shared by several modules: the cache directory, running host commands.

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

/// Decode standard base64 (padding optional, whitespace ignored); `None` on any other byte.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' | b' ' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Standard base64 with padding: how scripts travel over a UML console line.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
