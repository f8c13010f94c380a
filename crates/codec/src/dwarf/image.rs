//! The DWARF sections of a kernel image, ready for gimli.
//!
//! object finds the sections by name and decompresses them if the kernel was built with
//! compressed debug info; otherwise the data is borrowed straight from the mapped file.

use std::borrow::Cow;
use std::collections::HashMap;

use object::{Object, ObjectSection};

use super::{DwarfError, R};

/// The sections layout and name lookups read; the others (frames, locations, macros) are
/// never touched, so they are not even located.
const SECTIONS: [gimli::SectionId; 9] = [
    gimli::SectionId::DebugAbbrev,
    gimli::SectionId::DebugAddr,
    gimli::SectionId::DebugInfo,
    gimli::SectionId::DebugLine,
    gimli::SectionId::DebugLineStr,
    gimli::SectionId::DebugRanges,
    gimli::SectionId::DebugRngLists,
    gimli::SectionId::DebugStr,
    gimli::SectionId::DebugStrOffsets,
];

/// The `.debug_*` sections of one ELF file.
pub(crate) struct DebugImage<'d> {
    sections: HashMap<&'static str, Cow<'d, [u8]>>,
}

impl<'d> DebugImage<'d> {
    pub fn parse(bytes: &'d [u8]) -> Result<Self, DwarfError> {
        let file = object::File::parse(bytes).map_err(|e| DwarfError::Elf(e.to_string()))?;
        if file.architecture() != object::Architecture::X86_64 || !file.is_little_endian() {
            return Err(DwarfError::Elf(format!(
                "{:?} image: umldbg reads x86_64 kernels",
                file.architecture()
            )));
        }
        let mut sections = HashMap::new();
        for id in SECTIONS {
            let name = id.name();
            let Some(section) = file.section_by_name(name) else {
                continue;
            };
            let data = section
                .uncompressed_data()
                .map_err(|e| DwarfError::Elf(format!("{name}: {e}")))?;
            sections.insert(name, data);
        }
        if sections.get(".debug_info").is_none_or(|d| d.is_empty()) {
            return Err(DwarfError::NoDebugInfo);
        }
        Ok(DebugImage { sections })
    }

    pub fn dwarf(&self) -> gimli::Dwarf<R<'_>> {
        gimli::Dwarf::load(|id| -> Result<R<'_>, std::convert::Infallible> {
            let data = self.sections.get(id.name()).map(|c| &**c).unwrap_or(&[]);
            Ok(gimli::EndianSlice::new(data, gimli::LittleEndian))
        })
        .unwrap_or_else(|never| match never {})
    }
}
