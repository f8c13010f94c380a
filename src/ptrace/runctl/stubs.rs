//! Where step-over stubs live: the tail of the kernel image's `.init.text`.
//!
//! A stub is a few bytes of code in the tracee: `nop` and then the breakpoint's original
//! instruction, relocated (see `insn.rs`), followed by a jump back. The area must be executable,
//! within rel32 reach of kernel and module text, and never run by the kernel itself. UML's
//! `free_initmem` is empty, so the image's `.init.text` stays mapped after boot and its initcalls
//! are never called again; the stubs take its last pages. The functions that do run again
//! (`main`, `linux_main` and `start_uml` return into each other at halt) sit at the start of
//! `.init.text` and are kept out of the area explicitly.
//!
//! Stubs are handed out round-robin from a cursor kept in the trace journal, so a tracer that
//! attaches after another one died does not overwrite the stubs the dead one's last thread may
//! still be leaving.

use std::collections::BTreeMap;
use std::path::Path;

/// Bytes per stub: the longest relocation (an emulated call: 25 bytes) plus the nop and slack.
pub const STUB_SIZE: u64 = 48;
/// Most bytes taken from the end of `.init.text`.
const AREA_MAX: u64 = 24 * 1024;
/// Functions of `.init.text` that run again after boot.
const LIVE_INIT_FUNCTIONS: &[&str] = &["main", "linux_main", "start_uml", "start_kernel"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubArea {
    pub start: u64,
    pub end: u64,
    cursor: u64,
    /// Stubs already written, by (breakpoint address, original bytes they copy).
    by_site: BTreeMap<(u64, Vec<u8>), u64>,
}

/// Why no stub area could be found in a kernel image.
#[derive(Debug, thiserror::Error)]
pub enum StubsError {
    #[error(
        "no room for step-over stubs in .init.text {start:#x}..{end:#x} (live boot code reaches {live_end:#x})"
    )]
    NoRoom { start: u64, end: u64, live_end: u64 },
    #[error(transparent)]
    Open(#[from] crate::kmod::loader::LoadError),
    #[error("{}: not an ELF file: {source}", path.display())]
    NotElf {
        path: std::path::PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("{}: no .init.text section (not a UML kernel?)", path.display())]
    NoInitText { path: std::path::PathBuf },
}

impl StubArea {
    /// The area inside an image described by `.init.text` and the live functions' ranges.
    pub fn from_ranges(init_text: (u64, u64), live: &[(u64, u64)]) -> Result<StubArea, StubsError> {
        let (s, e) = init_text;
        let mut start = e.saturating_sub(AREA_MAX).max(s);
        for &(ls, le) in live {
            if le > start && ls < e {
                start = start.max(le);
            }
        }
        start = start.div_ceil(16) * 16;
        let end = e / 16 * 16;
        if end <= start || end - start < 8 * STUB_SIZE {
            return Err(StubsError::NoRoom {
                start: s,
                end: e,
                live_end: start,
            });
        }
        Ok(StubArea {
            start,
            end,
            cursor: 0,
            by_site: BTreeMap::new(),
        })
    }

    /// A whole region of memory mapped for stubs (no live code in it), 16-byte aligned.
    pub fn region(start: u64, end: u64) -> StubArea {
        StubArea {
            start: start.div_ceil(16) * 16,
            end: end / 16 * 16,
            cursor: 0,
            by_site: BTreeMap::new(),
        }
    }

    /// The area in the kernel image file (the running machine's `/proc/<pid>/exe`).
    pub fn from_image(path: &Path) -> Result<StubArea, StubsError> {
        use object::{Object, ObjectSection, ObjectSymbol};
        let file = crate::kmod::loader::MappedFile::open(path)?;
        let obj = object::File::parse(file.bytes()).map_err(|source| StubsError::NotElf {
            path: path.to_path_buf(),
            source,
        })?;
        let sec = obj
            .section_by_name(".init.text")
            .ok_or_else(|| StubsError::NoInitText {
                path: path.to_path_buf(),
            })?;
        let range = (sec.address(), sec.address() + sec.size());
        let live: Vec<(u64, u64)> = obj
            .symbols()
            .filter(|s| s.name().is_ok_and(|n| LIVE_INIT_FUNCTIONS.contains(&n)))
            .map(|s| (s.address(), s.address() + s.size().max(1)))
            .collect();
        StubArea::from_ranges(range, &live)
    }

    pub fn slots(&self) -> u64 {
        (self.end - self.start) / STUB_SIZE
    }

    /// Continue handing out stubs where an earlier tracer stopped.
    pub fn set_cursor(&mut self, cursor: u64) {
        self.cursor = cursor % self.slots();
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The stub already written for this site, if any.
    pub fn existing(&self, addr: u64, original: &[u8]) -> Option<u64> {
        self.by_site.get(&(addr, original.to_vec())).copied()
    }

    /// A fresh slot; `site` remembers it for reuse when given.
    pub fn allocate(&mut self, site: Option<(u64, &[u8])>) -> u64 {
        let at = self.start + self.cursor * STUB_SIZE;
        self.cursor = (self.cursor + 1) % self.slots();
        // A reused slot no longer holds what it held for an older site.
        self.by_site.retain(|_, v| *v != at);
        if let Some((addr, orig)) = site {
            self.by_site.insert((addr, orig.to_vec()), at);
        }
        at
    }

    /// `n` consecutive slots (a probe's stub); wraps to the start when the end is too near.
    pub fn allocate_n(&mut self, n: u64) -> Option<u64> {
        let n = n.max(1);
        if n > self.slots() {
            return None;
        }
        if self.cursor + n > self.slots() {
            self.cursor = 0;
        }
        let at = self.start + self.cursor * STUB_SIZE;
        let end = at + n * STUB_SIZE;
        self.cursor = (self.cursor + n) % self.slots();
        self.by_site.retain(|_, v| *v < at || *v >= end);
        Some(at)
    }

    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }

    /// The slot that holds `addr`.
    pub fn slot_of(&self, addr: u64) -> Option<(u64, u64)> {
        self.contains(addr).then(|| {
            let s = self.start + (addr - self.start) / STUB_SIZE * STUB_SIZE;
            (s, s + STUB_SIZE)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_out_of_live_boot_code_and_rotates() {
        let a = StubArea::from_ranges((0x1000, 0x20000), &[(0x4000, 0x4100)]).unwrap();
        assert_eq!(a.end, 0x20000);
        assert_eq!(a.start, 0x20000 - AREA_MAX);
        let b = StubArea::from_ranges((0x1000, 0x20000), &[(0x1e000, 0x1e800)]).unwrap();
        assert_eq!(b.start, 0x1e800);
        assert!(StubArea::from_ranges((0x1000, 0x1100), &[]).is_err());
        let mut c = a.clone();
        let first = c.allocate(Some((0x6000_0000, &[0x55])));
        assert_eq!(first, a.start);
        assert_eq!(c.existing(0x6000_0000, &[0x55]), Some(first));
        c.set_cursor(c.slots() - 1);
        let last = c.allocate(None);
        assert_eq!(last, a.start + (c.slots() - 1) * STUB_SIZE);
        assert_eq!(c.allocate(None), a.start);
        assert_eq!(c.existing(0x6000_0000, &[0x55]), None);
        assert_eq!(c.slot_of(a.start + 50), Some((a.start + 48, a.start + 96)));
    }
}
