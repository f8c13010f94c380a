//! The one reader and writer of a process's memory through `/proc/<pid>/mem` (text included:
//! writes go through to read-only mappings, which is how breakpoint bytes are put back).

use std::io::{Read, Seek, SeekFrom, Write};
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

/// Reads `buf.len()` bytes of `pid`'s memory at `addr`.
pub fn read(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
    let path = mem_path(pid);
    let r = (|| {
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(addr))?;
        f.read_exact(buf)
    })();
    r.map_err(|source| MemError { path, addr, source })
}

/// Writes `bytes` into `pid`'s memory at `addr`.
pub fn write(pid: i32, addr: u64, bytes: &[u8]) -> Result<(), MemError> {
    let path = mem_path(pid);
    let r = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.seek(SeekFrom::Start(addr))?;
        f.write_all(bytes)
    })();
    r.map_err(|source| MemError { path, addr, source })
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
