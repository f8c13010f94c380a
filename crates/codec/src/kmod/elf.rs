//! A module's ELF structure, read with goblin: header checks, sections, symbols, notes, `.modinfo`
//! and the name stored in `.gnu.linkonce.this_module`.
//!
//! Everything here is about what the file *is*; turning its DWARF into something readable is
//! `reloc` (object) and `debuginfo` (gimli).

use goblin::elf::Elf;
use goblin::elf::header::{self, ET_REL};
use goblin::elf::note::NT_GNU_BUILD_ID;
use goblin::elf::program_header::{PT_NOTE, ProgramHeader};
use goblin::elf::section_header::{self as sh, SectionHeader};
use goblin::elf::sym;
use serde::{Deserialize, Serialize};

use super::KmodError;

/// One section of the module file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// Index in the section header table (what `readelf -S` prints in brackets).
    pub index: usize,
    pub name: String,
    /// Section type as `readelf` spells it (`PROGBITS`, `NOBITS`, `RELA`, ...).
    pub kind: String,
    /// Offset of the section's bytes in the file.
    pub offset: u64,
    pub size: u64,
    /// Raw `sh_flags`.
    pub flags: u64,
    /// `sh_flags` as `readelf -S` letters (`AX`, `WA`, `MS`, ...).
    pub flags_str: String,
    pub align: u64,
    /// True when the kernel copies this section into module memory when loading: `SHF_ALLOC`,
    /// except `.modinfo` and `__versions`, whose alloc flag the module loader clears.
    pub alloc: bool,
}

impl Section {
    /// `SHF_ALLOC` as the file has it: the sections gdb (BFD) counts as allocated, in whose
    /// order it matches a library list's `<section>` addresses. `.modinfo` and `__versions`
    /// count here although the module loader drops them (see [`Section::alloc`]).
    pub fn file_alloc(&self) -> bool {
        self.flags & u64::from(sh::SHF_ALLOC) != 0
    }
}

/// What a symbol names, from its `st_info` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SymbolKind {
    NoType,
    Object,
    Func,
    Section,
    File,
    Common,
    Tls,
    GnuIfunc,
    Other(u8),
}

/// Symbol binding, from its `st_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SymbolBinding {
    Local,
    Global,
    Weak,
    GnuUnique,
    Other(u8),
}

/// One entry of `.symtab`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    /// Index in `.symtab` (what `readelf -s` prints as `Num`).
    pub index: usize,
    pub name: String,
    pub kind: SymbolKind,
    pub binding: SymbolBinding,
    /// Section name, or `UND` (undefined: the module imports it), `ABS`, `COM`.
    pub section: String,
    /// Raw `st_shndx`.
    pub section_index: u32,
    /// Offset inside `section` (`st_value`; in a relocatable file it is section-relative).
    pub offset: u64,
    pub size: u64,
}

impl Symbol {
    /// True for a symbol the module takes from the kernel or another module.
    pub fn is_undefined(&self) -> bool {
        self.section_index == sh::SHN_UNDEF
    }
}

/// The parts of the ELF file that later stages (relocation, DWARF) need besides the public
/// description.
pub(crate) struct Structure {
    pub sections: Vec<Section>,
    pub symbols: Vec<Symbol>,
    /// `(st_shndx, st_value)` per symbol index, index 0 included, for relocation targets.
    pub symbol_values: Vec<(u32, u64)>,
    pub modinfo: Vec<(String, String)>,
    pub this_module_name: Option<String>,
    pub build_id: Option<String>,
    pub warnings: Vec<String>,
}

/// Offset of `name` in `struct module` on 64-bit kernels: it follows `enum module_state state`
/// (4 bytes, padded to 8) and `struct list_head list` (16 bytes). This layout has not changed
/// since Linux 2.6; the value is a cross-check only, `.modinfo`'s `name=` is preferred.
const THIS_MODULE_NAME_OFFSET: usize = 24;
/// `MODULE_NAME_LEN` on 64-bit kernels: `64 - sizeof(unsigned long)`.
const MODULE_NAME_LEN: usize = 56;

/// Check the ELF identification and header: x86_64, little-endian, relocatable.
fn check_header(bytes: &[u8]) -> Result<header::Header, KmodError> {
    if bytes.len() < header::SELFMAG || &bytes[..header::SELFMAG] != header::ELFMAG {
        // Distributions install modules compressed as whole files (`.ko.xz`, `.ko.zst`).
        let compressed = [
            (&b"\xfd7zXZ"[..], "xz"),
            (&b"\x28\xb5\x2f\xfd"[..], "zstd"),
            (&b"\x1f\x8b"[..], "gzip"),
        ];
        if let Some(&(_, format)) = compressed.iter().find(|(m, _)| bytes.starts_with(m)) {
            return Err(KmodError::Compressed { format });
        }
        let magic = bytes.iter().take(4).copied().collect();
        return Err(KmodError::NotElf { magic });
    }
    // Checked here rather than left to goblin, whose error for a short buffer ("type is too
    // big") does not say which part of the file is missing.
    let header_len = match bytes.get(header::EI_CLASS) {
        Some(&header::ELFCLASS64) => header::header64::SIZEOF_EHDR,
        _ => header::header32::SIZEOF_EHDR,
    };
    if bytes.len() < header_len {
        return Err(KmodError::Truncated {
            what: "ELF header".into(),
            end: header_len as u64,
            file_len: bytes.len() as u64,
        });
    }
    let hdr = Elf::parse_header(bytes).map_err(|source| KmodError::Malformed {
        what: "ELF header".into(),
        source,
    })?;
    let class64 = hdr.e_ident[header::EI_CLASS] == header::ELFCLASS64;
    if !class64 || hdr.e_machine != header::EM_X86_64 {
        return Err(KmodError::WrongArch {
            bits: if class64 { 64 } else { 32 },
            machine: header::machine_to_str(hdr.e_machine).to_owned(),
        });
    }
    if hdr.e_ident[header::EI_DATA] != header::ELFDATA2LSB {
        return Err(KmodError::WrongArch {
            bits: 64,
            machine: "big-endian X86_64".into(),
        });
    }
    if hdr.e_type != ET_REL {
        return Err(KmodError::NotRelocatable {
            kind: header::et_to_str(hdr.e_type).to_owned(),
        });
    }
    let table_end = u64::from(hdr.e_shnum)
        .checked_mul(u64::from(hdr.e_shentsize))
        .and_then(|n| n.checked_add(hdr.e_shoff));
    if table_end.is_none_or(|end| end > bytes.len() as u64) {
        return Err(KmodError::Truncated {
            what: format!(
                "section header table ({} entries at offset {})",
                hdr.e_shnum, hdr.e_shoff
            ),
            end: table_end.unwrap_or(u64::MAX),
            file_len: bytes.len() as u64,
        });
    }
    Ok(hdr)
}

/// The bytes of a section, or an error naming it when its header points outside the file.
pub(crate) fn section_bytes<'a>(
    bytes: &'a [u8],
    index: usize,
    name: &str,
    shdr: &SectionHeader,
) -> Result<&'a [u8], KmodError> {
    if shdr.sh_type == sh::SHT_NOBITS {
        return Ok(&[]);
    }
    let out_of_file = || KmodError::SectionOutOfFile {
        name: name.to_owned(),
        index,
        offset: shdr.sh_offset,
        size: shdr.sh_size,
        file_len: bytes.len() as u64,
    };
    let start = usize::try_from(shdr.sh_offset).map_err(|_| out_of_file())?;
    let len = usize::try_from(shdr.sh_size).map_err(|_| out_of_file())?;
    let end = start.checked_add(len).ok_or_else(out_of_file)?;
    bytes.get(start..end).ok_or_else(out_of_file)
}

/// Parse everything goblin can tell about a module file.
pub(crate) fn read_structure(bytes: &[u8]) -> Result<Structure, KmodError> {
    check_header(bytes)?;
    let elf = Elf::parse(bytes).map_err(|source| KmodError::Malformed {
        what: "section or symbol tables".into(),
        source,
    })?;
    let mut warnings = Vec::new();

    let mut sections = Vec::with_capacity(elf.section_headers.len());
    for (index, shdr) in elf.section_headers.iter().enumerate() {
        let name = match elf.shdr_strtab.get_at(shdr.sh_name) {
            Some(n) => n.to_owned(),
            None if index == 0 => String::new(),
            None => {
                warnings.push(format!(
                    "section {index}: name offset {} is invalid",
                    shdr.sh_name
                ));
                format!("<section {index}>")
            }
        };
        let alloc = shdr.sh_flags & u64::from(sh::SHF_ALLOC) != 0
            && name != ".modinfo"
            && name != "__versions";
        sections.push(Section {
            index,
            kind: section_kind(shdr.sh_type),
            offset: shdr.sh_offset,
            size: shdr.sh_size,
            flags: shdr.sh_flags,
            flags_str: flags_letters(shdr.sh_flags),
            align: shdr.sh_addralign,
            alloc,
            name,
        });
        // Catch headers that point outside the file now, with the section's name, rather than
        // as an anonymous out-of-range read later.
        section_bytes(bytes, index, &sections[index].name, shdr)?;
    }

    let mut symbols = Vec::new();
    let mut symbol_values = Vec::new();
    if elf.syms.is_empty() {
        warnings.push(
            "no .symtab: the module is stripped; symbols are omitted (the kernel also refuses \
             to load such a module)"
                .to_owned(),
        );
    }
    for (index, s) in elf.syms.iter().enumerate() {
        symbol_values.push((s.st_shndx as u32, s.st_value));
        if index == 0 {
            continue;
        }
        let name = match elf.strtab.get_at(s.st_name) {
            Some(n) => n.to_owned(),
            None => {
                warnings.push(format!(
                    "symbol {index}: name offset {} is invalid",
                    s.st_name
                ));
                format!("<symbol {index}>")
            }
        };
        let shndx = s.st_shndx as u32;
        let section = match shndx {
            sh::SHN_UNDEF => "UND".to_owned(),
            sh::SHN_ABS => "ABS".to_owned(),
            sh::SHN_COMMON => "COM".to_owned(),
            i => match sections.get(i as usize) {
                Some(sec) => sec.name.clone(),
                None => {
                    warnings.push(format!(
                        "symbol {name}: section index {i} is outside the section table"
                    ));
                    format!("<section {i}>")
                }
            },
        };
        symbols.push(Symbol {
            index,
            name,
            kind: symbol_kind(s.st_type()),
            binding: symbol_binding(s.st_bind()),
            section,
            section_index: shndx,
            offset: s.st_value,
            size: s.st_size,
        });
    }

    let mut modinfo = Vec::new();
    let mut this_module_name = None;
    for (index, shdr) in elf.section_headers.iter().enumerate() {
        let name = sections[index].name.as_str();
        if name == ".modinfo" {
            modinfo = parse_modinfo(section_bytes(bytes, index, name, shdr)?, &mut warnings);
        } else if name == ".gnu.linkonce.this_module" {
            this_module_name = this_module_name_from(section_bytes(bytes, index, name, shdr)?);
        }
    }

    let build_id = build_id_from_notes(&elf, bytes);
    Ok(Structure {
        sections,
        symbols,
        symbol_values,
        modinfo,
        this_module_name,
        build_id,
        warnings,
    })
}

/// `.modinfo` is a sequence of NUL-terminated `key=value` strings, sometimes with NUL padding
/// between them (each comes from its own object file, aligned).
fn parse_modinfo(data: &[u8], warnings: &mut Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for chunk in data.split(|&b| b == 0).filter(|c| !c.is_empty()) {
        let text = String::from_utf8_lossy(chunk);
        match text.split_once('=') {
            Some((k, v)) => out.push((k.to_owned(), v.to_owned())),
            None => warnings.push(format!(".modinfo entry without '=': {text:?}")),
        }
    }
    out
}

fn this_module_name_from(data: &[u8]) -> Option<String> {
    let field = data.get(THIS_MODULE_NAME_OFFSET..)?;
    let field = &field[..field.len().min(MODULE_NAME_LEN)];
    let end = field.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&field[..end]).ok()?;
    // A real module name is a C identifier-ish string; anything else means the layout guess
    // does not hold for this file.
    let plausible = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    plausible.then(|| name.to_owned())
}

fn build_id_from_notes(elf: &Elf<'_>, bytes: &[u8]) -> Option<String> {
    let notes = elf
        .iter_note_headers(bytes)
        .or_else(|| elf.iter_note_sections(bytes, None))?;
    for note in notes {
        // A malformed note ends the search rather than the whole parse: the build-id is
        // informational.
        let note = note.ok()?;
        if note.n_type == NT_GNU_BUILD_ID && note.name == "GNU" && !note.desc.is_empty() {
            return Some(hex(note.desc));
        }
    }
    None
}

/// The GNU build-id of any ELF file (module, kernel image, executable), lowercase hex.
///
/// Reads only the headers and note data, so it is cheap on a 90 MB kernel image. Returns `None`
/// for anything that is not ELF or has no build-id note.
pub fn elf_build_id(bytes: &[u8]) -> Option<String> {
    let hdr = Elf::parse_header(bytes).ok()?;
    let mut elf = Elf::lazy_parse(hdr).ok()?;
    let ctx = goblin::container::Ctx {
        container: if elf.is_64 {
            goblin::container::Container::Big
        } else {
            goblin::container::Container::Little
        },
        le: if elf.little_endian {
            goblin::container::Endian::Little
        } else {
            goblin::container::Endian::Big
        },
    };
    if hdr.e_phnum > 0 {
        elf.program_headers =
            ProgramHeader::parse(bytes, hdr.e_phoff as usize, hdr.e_phnum as usize, ctx).ok()?;
        elf.program_headers.retain(|p| p.p_type == PT_NOTE);
    }
    if elf.program_headers.is_empty() {
        elf.section_headers =
            SectionHeader::parse(bytes, hdr.e_shoff as usize, hdr.e_shnum as usize, ctx).ok()?;
        elf.section_headers.retain(|s| s.sh_type == sh::SHT_NOTE);
    }
    build_id_from_notes(&elf, bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn section_kind(t: u32) -> String {
    let s = sh::sht_to_str(t);
    match s.strip_prefix("SHT_") {
        Some(rest) => rest.to_owned(),
        None => format!("0x{t:x}"),
    }
}

/// The letters `readelf -S` prints in its `Flg` column, in its order.
fn flags_letters(flags: u64) -> String {
    const LETTERS: &[(u64, char)] = &[
        (0x1, 'W'),
        (0x2, 'A'),
        (0x4, 'X'),
        (0x10, 'M'),
        (0x20, 'S'),
        (0x40, 'I'),
        (0x80, 'L'),
        (0x100, 'O'),
        (0x200, 'G'),
        (0x400, 'T'),
        (0x800, 'C'),
        (0x20_0000, 'R'),   // SHF_GNU_RETAIN
        (0x1000_0000, 'l'), // SHF_X86_64_LARGE
        (0x8000_0000, 'E'),
    ];
    LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|&(_, c)| c)
        .collect()
}

fn symbol_kind(t: u8) -> SymbolKind {
    match t {
        sym::STT_NOTYPE => SymbolKind::NoType,
        sym::STT_OBJECT => SymbolKind::Object,
        sym::STT_FUNC => SymbolKind::Func,
        sym::STT_SECTION => SymbolKind::Section,
        sym::STT_FILE => SymbolKind::File,
        sym::STT_COMMON => SymbolKind::Common,
        sym::STT_TLS => SymbolKind::Tls,
        sym::STT_GNU_IFUNC => SymbolKind::GnuIfunc,
        other => SymbolKind::Other(other),
    }
}

fn symbol_binding(b: u8) -> SymbolBinding {
    match b {
        sym::STB_LOCAL => SymbolBinding::Local,
        sym::STB_GLOBAL => SymbolBinding::Global,
        sym::STB_WEAK => SymbolBinding::Weak,
        sym::STB_GNU_UNIQUE => SymbolBinding::GnuUnique,
        other => SymbolBinding::Other(other),
    }
}
