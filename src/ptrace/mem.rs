//! The one reader and writer of a process's memory through `/proc/<pid>/mem` (text included:
//! writes go through to read-only mappings, which is how breakpoint bytes are put back).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// A read or write of another process's memory that failed.
#[derive(Debug, thiserror::Error)]
#[error("{} at {addr:#x}: {source}", path.display())]
pub struct MemError {
    pub path: PathBuf,
    pub addr: u64,
    #[source]
    pub source: std::io::Error,
}

impl From<MemError> for std::io::Error {
    fn from(e: MemError) -> std::io::Error {
        std::io::Error::new(e.source.kind(), e.to_string())
    }
}

fn mem_path(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/mem"))
}

/// `/proc/<pid>/mem` opened once, for a tracer that reads and writes at line rate.
#[derive(Debug)]
pub struct Mem {
    path: PathBuf,
    file: std::fs::File,
}

impl Mem {
    /// Opens `pid`'s memory for reading and, with `write`, writing.
    pub fn open(pid: i32, write: bool) -> Result<Mem, MemError> {
        let path = mem_path(pid);
        match std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&path)
        {
            Ok(file) => Ok(Mem { path, file }),
            Err(source) => Err(MemError {
                path,
                addr: 0,
                source,
            }),
        }
    }

    /// Reads `buf.len()` bytes at `addr`.
    pub fn read_at(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.file
            .read_exact_at(buf, addr)
            .map_err(|source| self.error(addr, source))
    }

    /// Writes `bytes` at `addr` (text too).
    pub fn write_at(&self, addr: u64, bytes: &[u8]) -> Result<(), MemError> {
        self.file
            .write_all_at(bytes, addr)
            .map_err(|source| self.error(addr, source))
    }

    fn error(&self, addr: u64, source: std::io::Error) -> MemError {
        MemError {
            path: self.path.clone(),
            addr,
            source,
        }
    }
}

/// Reads `buf.len()` bytes of `pid`'s memory at `addr`.
pub fn read(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
    Mem::open(pid, false)?.read_at(addr, buf)
}

/// Writes `bytes` into `pid`'s memory at `addr`.
pub fn write(pid: i32, addr: u64, bytes: &[u8]) -> Result<(), MemError> {
    Mem::open(pid, true)?.write_at(addr, bytes)
}

/// One byte of `pid`'s memory.
pub fn peek(pid: i32, addr: u64) -> Result<u8, MemError> {
    let mut b = [0u8; 1];
    read(pid, addr, &mut b)?;
    Ok(b[0])
}

/// Writes one byte of `pid`'s memory.
pub fn poke(pid: i32, addr: u64, byte: u8) -> Result<(), MemError> {
    write(pid, addr, &[byte])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_our_own_memory() {
        let mut cell = Box::new([1u8, 2, 3, 4]);
        let addr = cell.as_ptr() as u64;
        let me = std::process::id() as i32;
        assert_eq!(peek(me, addr + 2).unwrap(), 3);
        poke(me, addr + 1, 9).unwrap();
        let mut back = [0u8; 4];
        read(me, addr, &mut back).unwrap();
        assert_eq!(back, [1, 9, 3, 4]);
        cell[0] = 7;
        assert_eq!(peek(me, addr).unwrap(), 7);
    }

    #[test]
    fn an_unmapped_address_is_an_error_naming_the_file() {
        let e = peek(std::process::id() as i32, 8).unwrap_err();
        assert!(e.to_string().contains("/mem at 0x8"), "{e}");
    }
}
