//! Kernel module (`.ko`) files and kernel symbol files.
//!
//! [`ModuleInfo::parse`] answers what a module file is: its name, `.modinfo`, GNU build-id,
//! sections (and which ones the kernel allocates), symbols, and, when it carries DWARF, its
//! source files and each function's source line. [`elf_build_id`] reads the build-id of any ELF,
//! the kernel image included, to tell whether the file on the host is the one running in the
//! guest. [`symfile`] turns `/proc/kallsyms` text into an ELF symbol file for gdb.
//!
//! Crates have one job each: goblin reads the ELF structure (`elf`), object reads relocations
//! and writes ELF (`reloc`, `symfile`), gimli reads DWARF (`debuginfo`). Everything here takes
//! bytes; the main crate's `kmod::loader` maps files and reports [`LoadError`].

mod debuginfo;
mod elf;
pub mod kallsyms;
mod reloc;
pub mod symfile;

use serde::{Deserialize, Serialize};

pub use debuginfo::{FunctionLine, ModuleDebug};
pub use elf::{Section, Symbol, SymbolBinding, SymbolKind, elf_build_id};

/// Error while opening or mapping a file. The loading itself is the main crate's
/// (`umldbg::kmod::loader`); the type lives here so that [`crate::dwarf::DwarfError`] can carry it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: std::path::PathBuf },
    #[error("cannot map {} into memory: {source}", path.display())]
    Map {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Why a file could not be read as a kernel module.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("not an ELF file (first bytes {magic:02x?}, expected 7f 45 4c 46)")]
    NotElf { magic: Vec<u8> },
    #[error("{format}-compressed file: decompress the module first (e.g. `{format} -d`)")]
    Compressed { format: &'static str },
    #[error(
        "{bits}-bit {machine} ELF: umldbg reads x86_64 modules only (a UML kernel on this host \
         is x86_64; was this module built for another architecture, e.g. with ARCH=i386?)"
    )]
    WrongArch { bits: u8, machine: String },
    #[error("ELF type {kind}: a kernel module is a relocatable object (ET_REL)")]
    NotRelocatable { kind: String },
    #[error(
        "relocatable ELF without .modinfo or .gnu.linkonce.this_module: an object file, not a \
         kernel module (was it linked by modpost into a .ko?)"
    )]
    NotAModule,
    #[error(
        "truncated or corrupted file: the {what} ends at byte {end}, the file has {file_len} bytes"
    )]
    Truncated {
        what: String,
        end: u64,
        file_len: u64,
    },
    #[error("malformed ELF ({what}): {source}")]
    Malformed {
        what: String,
        source: goblin::error::Error,
    },
    #[error(
        "section {name} (index {index}) lies outside the file: offset {offset} + size {size} > \
         file length {file_len} (truncated or corrupted file)"
    )]
    SectionOutOfFile {
        name: String,
        index: usize,
        offset: u64,
        size: u64,
        file_len: u64,
    },
}

/// Everything umldbg knows about one module file.
/// The section table of a module file, in header order, without the rest of
/// [`ModuleInfo::parse`] (no module checks, no DWARF): what a caller that only places sections
/// needs. [`Section::alloc`] and [`Section::file_alloc`] say which ones are allocated, by the
/// kernel's rule and by gdb's.
pub fn sections(bytes: &[u8]) -> Result<Vec<Section>, KmodError> {
    Ok(elf::read_structure(bytes)?.sections)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Module name: `.modinfo`'s `name=` when present, else the name in `struct module`.
    pub name: String,
    /// The name stored in `.gnu.linkonce.this_module` (`struct module`'s `name` field).
    pub this_module_name: Option<String>,
    /// `.modinfo` entries in file order (keys repeat: `alias`, `depends`, `parm`, ...).
    pub modinfo: Vec<(String, String)>,
    /// GNU build-id, lowercase hex.
    pub build_id: Option<String>,
    pub sections: Vec<Section>,
    /// `.symtab` entries except the null symbol, in table order.
    pub symbols: Vec<Symbol>,
    /// Sources and function lines; `None` when the module has no DWARF or it could not be read
    /// (then `warnings` says why).
    pub debug: Option<ModuleDebug>,
    /// Parts of the file that could not be read; the rest of this value is still valid. A
    /// non-empty list means a partial result.
    pub warnings: Vec<String>,
}

impl ModuleInfo {
    /// Parse a `.ko` file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<ModuleInfo, KmodError> {
        let st = elf::read_structure(bytes)?;
        let mut warnings = st.warnings;
        let modinfo_name = st
            .modinfo
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.clone());
        let has_this_module = st
            .sections
            .iter()
            .any(|s| s.name == ".gnu.linkonce.this_module");
        let has_modinfo = st.sections.iter().any(|s| s.name == ".modinfo");
        if !has_this_module && !has_modinfo {
            return Err(KmodError::NotAModule);
        }
        let name = match (&modinfo_name, &st.this_module_name) {
            (Some(a), Some(b)) if a != b => {
                warnings.push(format!(
                    ".modinfo says name={a} but struct module says {b}; using {a}"
                ));
                a.clone()
            }
            (Some(a), _) => a.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) => {
                warnings.push("no module name in .modinfo or .gnu.linkonce.this_module".into());
                String::new()
            }
        };

        let placement = reloc::Placement::new(&st.sections);
        let debug = match reloc::relocated_debug_sections(bytes, &st.symbol_values, &placement) {
            Ok(Some(dbg)) => {
                warnings.extend(dbg.warnings.iter().cloned());
                match debuginfo::read_debug(&dbg, &st.sections, &placement) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        warnings.push(format!("DWARF unreadable, source lines omitted: {e}"));
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(e) => {
                warnings.push(format!(
                    "debug sections unreadable, source lines omitted: object: {e}"
                ));
                None
            }
        };

        Ok(ModuleInfo {
            name,
            this_module_name: st.this_module_name,
            modinfo: st.modinfo,
            build_id: st.build_id,
            sections: st.sections,
            symbols: st.symbols,
            debug,
            warnings,
        })
    }

    /// First value of a `.modinfo` key.
    pub fn modinfo_value(&self, key: &str) -> Option<&str> {
        self.modinfo
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Modules this one needs loaded first (`.modinfo` `depends=`, comma-separated).
    pub fn depends(&self) -> Vec<String> {
        self.modinfo
            .iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `.modinfo` `vermagic=`: the kernel release and options the module was built for.
    pub fn vermagic(&self) -> Option<&str> {
        self.modinfo_value("vermagic")
    }

    /// The section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The first symbol with this name.
    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name)
    }

    /// Sections the kernel allocates, in file order: the ones `add-symbol-file -s` needs.
    pub fn alloc_sections(&self) -> impl Iterator<Item = &Section> {
        self.sections.iter().filter(|s| s.alloc)
    }

    /// The names the loaded module shows under `/sys/module/<name>/sections/`: allocated
    /// sections that are not empty, plus `.symtab` and `.strtab`, which the loader keeps a copy
    /// of for kallsyms (CONFIG_KALLSYMS).
    pub fn sysfs_section_names(&self) -> Vec<&str> {
        self.sections
            .iter()
            .filter(|s| (s.alloc && s.size > 0) || s.name == ".symtab" || s.name == ".strtab")
            .map(|s| s.name.as_str())
            .collect()
    }
}
