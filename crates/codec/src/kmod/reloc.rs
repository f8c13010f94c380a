//! DWARF-ready debug sections of a relocatable module, made with the `object` crate.
//!
//! In a `.ko` every address and most cross-section offsets in `.debug_*` are zero placeholders:
//! the real values sit in `.rela.debug_*` sections. Reading `.debug_info` without applying them
//! gives every function a `DW_AT_low_pc` of 0 and every string offset pointing at the first
//! string. This module copies each debug section (decompressing `SHF_COMPRESSED` ones) and patches
//! the relocations in, the way a linker would.
//!
//! Allocated sections are given distinct, non-overlapping synthetic addresses (laid out in file
//! order with their alignment, as gdb does for a relocatable file) so that `.text`,
//! `.init.text` and `.exit.text` functions never share an address.

use std::collections::HashMap;

use object::elf;
use object::read::elf::ElfFile64;
use object::{LittleEndian, Object, ObjectSection, RelocationFlags, RelocationTarget};

use super::elf::Section;

/// Section bases for relocation: the synthetic load address of each allocated section, by
/// section index; zero for the others (debug sections reference each other by plain offsets).
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub bases: Vec<u64>,
}

impl Placement {
    pub fn new(sections: &[Section]) -> Self {
        let mut next = 0u64;
        let bases = sections
            .iter()
            .map(|s| {
                if !s.alloc || s.index == 0 {
                    return 0;
                }
                let align = s.align.max(1);
                let base = next.checked_next_multiple_of(align).unwrap_or(next);
                next = base.saturating_add(s.size);
                base
            })
            .collect();
        Placement { bases }
    }

    /// Which allocated section holds a synthetic address, and the offset inside it.
    pub fn locate(&self, sections: &[Section], addr: u64) -> Option<(usize, u64)> {
        sections
            .iter()
            // An empty section shares its base with the next one and holds nothing.
            .filter(|s| s.alloc && s.index != 0 && s.size > 0)
            .find(|s| {
                let base = self.bases[s.index];
                addr >= base && addr - base < s.size
            })
            .map(|s| (s.index, addr - self.bases[s.index]))
    }
}

/// Relocated copies of a module's `.debug_*` sections, by name.
#[derive(Debug, Default)]
pub(crate) struct DebugSections {
    pub data: HashMap<String, Vec<u8>>,
    /// Problems met while relocating; the DWARF may be partly wrong where they apply.
    pub warnings: Vec<String>,
}

/// Copy and relocate every `.debug_*` section. Returns `None` when the file has no
/// `.debug_info` (a module built without CONFIG_DEBUG_INFO).
pub(crate) fn relocated_debug_sections(
    bytes: &[u8],
    symbol_values: &[(u32, u64)],
    placement: &Placement,
) -> Result<Option<DebugSections>, object::Error> {
    let file = ElfFile64::<LittleEndian>::parse(bytes)?;
    let mut out = DebugSections::default();
    for section in file.sections() {
        let Ok(name) = section.name() else { continue };
        if !name.starts_with(".debug_") {
            continue;
        }
        let mut data = match section.uncompressed_data() {
            Ok(d) => d.into_owned(),
            Err(e) => {
                out.warnings
                    .push(format!("{name}: cannot read or decompress: {e}"));
                continue;
            }
        };
        let mut stats = Stats::default();
        for (offset, reloc) in section.relocations() {
            let RelocationFlags::Elf { r_type } = reloc.flags() else {
                stats.unsupported.push(0);
                continue;
            };
            let target = match reloc.target() {
                RelocationTarget::Symbol(idx) => match symbol_values.get(idx.0) {
                    Some(&(shndx, value)) => symbol_address(shndx, value, placement),
                    None => {
                        stats.bad_symbol += 1;
                        continue;
                    }
                },
                RelocationTarget::Section(idx) => placement.bases.get(idx.0).copied().unwrap_or(0),
                RelocationTarget::Absolute => 0,
                _ => {
                    stats.unsupported.push(r_type.0);
                    continue;
                }
            };
            let value = target.wrapping_add_signed(reloc.addend());
            // Debug sections are not allocated: their own base is 0, so P is the offset.
            let pc_relative = value.wrapping_sub(offset);
            let patch: Option<Vec<u8>> = match r_type {
                elf::R_X86_64_NONE => continue,
                elf::R_X86_64_64 => Some(value.to_le_bytes().to_vec()),
                elf::R_X86_64_PC64 => Some(pc_relative.to_le_bytes().to_vec()),
                elf::R_X86_64_32 => match u32::try_from(value) {
                    Ok(v) => Some(v.to_le_bytes().to_vec()),
                    Err(_) => {
                        stats.overflow += 1;
                        None
                    }
                },
                elf::R_X86_64_32S | elf::R_X86_64_PC32 => {
                    let v = if r_type == elf::R_X86_64_PC32 {
                        pc_relative
                    } else {
                        value
                    };
                    match i32::try_from(v as i64) {
                        Ok(v) => Some(v.to_le_bytes().to_vec()),
                        Err(_) => {
                            stats.overflow += 1;
                            None
                        }
                    }
                }
                other => {
                    stats.unsupported.push(other.0);
                    None
                }
            };
            let Some(patch) = patch else { continue };
            let place = usize::try_from(offset)
                .ok()
                .and_then(|start| Some(start..start.checked_add(patch.len())?))
                .and_then(|range| data.get_mut(range));
            match place {
                Some(place) => place.copy_from_slice(&patch),
                None => stats.out_of_bounds += 1,
            }
        }
        stats.report(name, &mut out.warnings);
        out.data.insert(name.to_owned(), data);
    }
    if !out.data.contains_key(".debug_info") {
        return Ok(None);
    }
    Ok(Some(out))
}

fn symbol_address(shndx: u32, value: u64, placement: &Placement) -> u64 {
    match shndx {
        // Undefined symbols (imports) have no address until the kernel loads the module; 0 is
        // what gdb shows for them in an unloaded .ko too.
        0 => 0,
        0xfff1 => value, // SHN_ABS
        i if i < 0xff00 => placement
            .bases
            .get(i as usize)
            .copied()
            .unwrap_or(0)
            .wrapping_add(value),
        _ => value,
    }
}

/// Counts of relocations that could not be applied, reported once per section.
#[derive(Default)]
struct Stats {
    unsupported: Vec<u32>,
    bad_symbol: usize,
    overflow: usize,
    out_of_bounds: usize,
}

impl Stats {
    fn report(&self, section: &str, warnings: &mut Vec<String>) {
        if !self.unsupported.is_empty() {
            let mut types = self.unsupported.clone();
            types.sort_unstable();
            types.dedup();
            warnings.push(format!(
                "{section}: {} relocation(s) of unsupported type(s) {types:?} left unapplied",
                self.unsupported.len()
            ));
        }
        if self.bad_symbol > 0 {
            warnings.push(format!(
                "{section}: {} relocation(s) name a symbol outside .symtab",
                self.bad_symbol
            ));
        }
        if self.overflow > 0 {
            warnings.push(format!(
                "{section}: {} relocation value(s) overflow",
                self.overflow
            ));
        }
        if self.out_of_bounds > 0 {
            warnings.push(format!(
                "{section}: {} relocation(s) point outside the section",
                self.out_of_bounds
            ));
        }
    }
}
