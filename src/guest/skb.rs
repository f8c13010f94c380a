//! The sk_buff view at a stop: member offsets from the kernel's DWARF (cached per build-id),
//! bytes straight from the UML process's memory with `process_vm_readv`: two or three reads per
//! skb instead of a chain of gdb expressions.

use std::path::Path;

use crate::dwarf::DwarfError;
use crate::net::layout::SkbLayout;
use crate::net::skb::{self, MemoryReader, SkbError};

/// Reads a process's memory with `process_vm_readv`.
pub struct ProcessMemory {
    pub pid: i32,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {len} bytes at {addr:#x} of pid {pid}: {source}")]
pub struct ReadError {
    pid: i32,
    addr: u64,
    len: usize,
    source: nix::Error,
}

impl MemoryReader for ProcessMemory {
    type Error = ReadError;

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        use nix::sys::uio::{RemoteIoVec, process_vm_readv};
        let mut buf = vec![0u8; len];
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let n = process_vm_readv(pid, &mut [std::io::IoSliceMut::new(&mut buf)], &remote).map_err(
            |source| ReadError {
                pid: self.pid,
                addr,
                len,
                source,
            },
        )?;
        if n != len {
            return Err(ReadError {
                pid: self.pid,
                addr,
                len,
                source: nix::Error::EFAULT,
            });
        }
        Ok(buf)
    }
}

/// The System V x86-64 argument registers, in argument order (0 = first).
pub const ARG_REGISTERS: [&str; 6] = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"];

/// A stopped thread's argument registers, in the order of [`ARG_REGISTERS`]: at a function's
/// entry, its first six arguments.
pub fn arg_values(r: &libc::user_regs_struct) -> [u64; 6] {
    [r.rdi, r.rsi, r.rdx, r.rcx, r.r8, r.r9]
}

/// Where a frame's `struct sk_buff *` may be, to try in order, as (register, value): the
/// argument `known` names when the caller knows which one it is (the trace table or the
/// function's DWARF, `crate::trace::args`), else each of the first three arguments, where the
/// networking functions take their skb. An index past the register arguments gives nothing.
pub fn skb_candidates(args: &[u64; 6], known: Option<u8>) -> Vec<(&'static str, u64)> {
    match known {
        Some(i) => ARG_REGISTERS
            .iter()
            .zip(args)
            .nth(usize::from(i))
            .map(|(r, v)| vec![(*r, *v)])
            .unwrap_or_default(),
        None => ARG_REGISTERS
            .iter()
            .copied()
            .zip(args.iter().copied())
            .take(3)
            .collect(),
    }
}

/// A decoded skb in the three forms the session hands out.
pub struct Decoded {
    pub text: String,
    pub json: serde_json::Value,
    pub hex: String,
}

pub struct SkbReader {
    layout: SkbLayout,
    mem: ProcessMemory,
}

impl SkbReader {
    /// The layout comes from the kernel image's DWARF, through the layout cache.
    pub fn new(image: &Path, cache: &Path, pid: i32) -> Result<SkbReader, DwarfError> {
        let store = crate::dwarf::LayoutStore::new(cache);
        let layout = store.net_layouts(image).and_then(|l| l.skb())?;
        Ok(SkbReader {
            layout,
            mem: ProcessMemory { pid },
        })
    }

    pub fn from_layout(layout: SkbLayout, pid: i32) -> SkbReader {
        SkbReader {
            layout,
            mem: ProcessMemory { pid },
        }
    }

    pub fn read(&mut self, addr: u64) -> Result<Decoded, SkbError> {
        let v = skb::read_skb(addr, &self.layout, &mut self.mem)?;
        let json = serde_json::to_value(&v).unwrap_or_default();
        let text = v.render(false);
        let with_hex = v.render(true);
        let hex = with_hex
            .strip_prefix(text.as_str())
            .unwrap_or("")
            .to_string();
        Ok(Decoded { text, json, hex })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skb_candidates_known_argument_or_the_first_three() {
        let args = [10, 11, 12, 13, 14, 15];
        assert_eq!(skb_candidates(&args, Some(2)), vec![("rdx", 12)]);
        assert_eq!(skb_candidates(&args, Some(5)), vec![("r9", 15)]);
        assert!(skb_candidates(&args, Some(6)).is_empty());
        assert_eq!(
            skb_candidates(&args, None),
            vec![("rdi", 10), ("rsi", 11), ("rdx", 12)]
        );
    }
}
