//! An ELF symbol file made from `/proc/kallsyms`, for a kernel binary that has no symbols.
//!
//! gdb takes names for addresses from an ELF symbol table, and wants each symbol inside a
//! section. The file written here is an x86_64 `ET_EXEC` with no contents: `SHT_NOBITS`
//! sections at the kernel's addresses (one per run of code or data symbols, so they never
//! overlap) and a `.symtab` whose functions are `STT_FUNC` in a code section. gdb loads it with
//! `symbol-file FILE` or `add-symbol-file FILE`, since the addresses are already in the file.
//! Written with object's low-level ELF writer, which lets us set section addresses.

use object::Endianness;
use object::elf;
use object::write::elf::{FileHeader, SectionHeader, SectionIndex, Sym, Writer};
use serde::{Deserialize, Serialize};

use super::kallsyms::KallsymsEntry;

/// Why the symbol file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SymfileError {
    #[error("no kernel symbols to write ({modules} module symbols were skipped)")]
    NoKernelSymbols { modules: usize },
    #[error("symbol name {0:?} contains a NUL byte, which an ELF string table cannot hold")]
    NulInName(String),
    #[error("writing the ELF file failed: {0}")]
    Write(String),
}

/// What went into the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymfileSummary {
    pub functions: usize,
    pub objects: usize,
    pub absolute: usize,
    /// Lines of loaded modules (`[name]` suffix): skipped, their addresses belong to module
    /// memory that changes with every load; use `add-symbol-file` on the `.ko` instead.
    pub skipped_module_symbols: usize,
    /// `(name, start address, size)` of each synthetic section.
    pub sections: Vec<(String, u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Text,
    Data,
    Abs,
}

fn class_of(kind: char) -> Option<Class> {
    match kind.to_ascii_lowercase() {
        't' | 'w' => Some(Class::Text),
        'd' | 'b' | 'r' | 'v' | 'g' | 's' => Some(Class::Data),
        'a' => Some(Class::Abs),
        _ => None,
    }
}

/// A run of consecutive same-class symbols becomes one section. Runs separated by more than
/// this are cut even if the class is the same, so a stray low address does not produce a
/// section spanning gigabytes.
const MAX_GAP: u64 = 16 << 20;
/// Size given to the last symbol of a section, which kallsyms gives no end for.
const TAIL: u64 = 0x1000;

struct Run {
    class: Class,
    start: u64,
    end: u64,
    /// Indices into the sorted symbol list.
    members: std::ops::Range<usize>,
}

/// Build the ELF bytes.
pub fn write_symfile(entries: &[KallsymsEntry]) -> Result<(Vec<u8>, SymfileSummary), SymfileError> {
    // object's string table asserts on NUL; entries may come from elsewhere than `parse`.
    if let Some(e) = entries.iter().find(|e| e.name.contains('\0')) {
        return Err(SymfileError::NulInName(e.name.clone()));
    }
    let skipped_module_symbols = entries.iter().filter(|e| e.module.is_some()).count();
    let mut located: Vec<(&KallsymsEntry, Class)> = entries
        .iter()
        .filter(|e| e.module.is_none())
        .filter_map(|e| class_of(e.kind).map(|c| (e, c)))
        .collect();
    let absolute: Vec<&KallsymsEntry> = located
        .iter()
        .filter(|(_, c)| *c == Class::Abs)
        .map(|(e, _)| *e)
        .collect();
    located.retain(|(_, c)| *c != Class::Abs);
    if located.is_empty() && absolute.is_empty() {
        return Err(SymfileError::NoKernelSymbols {
            modules: skipped_module_symbols,
        });
    }
    located.sort_by_key(|(e, _)| e.address);

    let runs = make_runs(&located);
    // Size of each located symbol: up to the next higher address in its section.
    let mut sizes = vec![0u64; located.len()];
    for run in &runs {
        let addrs: Vec<u64> = located[run.members.clone()]
            .iter()
            .map(|(e, _)| e.address)
            .collect();
        for (k, &a) in addrs.iter().enumerate() {
            let next = addrs[k..]
                .iter()
                .copied()
                .find(|&b| b > a)
                .unwrap_or(run.end);
            sizes[run.members.start + k] = next - a;
        }
    }

    let mut buffer = Vec::new();
    let mut w = Writer::new(Endianness::Little, true, &mut buffer);
    w.reserve_file_header();

    let mut section_names = Vec::with_capacity(runs.len());
    let (mut ntext, mut ndata) = (0, 0);
    for run in &runs {
        let (base, n) = match run.class {
            Class::Text => (".text", &mut ntext),
            _ => (".data", &mut ndata),
        };
        *n += 1;
        section_names.push(if *n == 1 {
            base.to_owned()
        } else {
            format!("{base}.{n}")
        });
    }
    let section_indices: Vec<SectionIndex> =
        runs.iter().map(|_| w.reserve_section_index()).collect();
    let name_ids: Vec<_> = section_names
        .iter()
        .map(|n| w.add_section_name(n.as_bytes()))
        .collect();

    // ELF wants local symbols first; `sh_info` of .symtab is the first non-local index.
    struct Out<'e> {
        entry: &'e KallsymsEntry,
        section: Option<SectionIndex>,
        class: Class,
        size: u64,
    }
    let mut symbols: Vec<Out<'_>> = Vec::with_capacity(located.len() + absolute.len());
    for (run_no, run) in runs.iter().enumerate() {
        for i in run.members.clone() {
            let (entry, class) = located[i];
            symbols.push(Out {
                entry,
                section: Some(section_indices[run_no]),
                class,
                size: sizes[i],
            });
        }
    }
    for entry in &absolute {
        symbols.push(Out {
            entry,
            section: None,
            class: Class::Abs,
            size: 0,
        });
    }
    symbols.sort_by_key(|s| !s.entry.kind.is_ascii_lowercase());
    let num_local = 1 + symbols
        .iter()
        .filter(|s| s.entry.kind.is_ascii_lowercase())
        .count() as u32;

    let name_strings: Vec<_> = symbols
        .iter()
        .map(|s| w.add_string(s.entry.name.as_bytes()))
        .collect();
    for s in &symbols {
        w.reserve_symbol_index(s.section);
    }
    w.reserve_symtab_section_index();
    w.reserve_strtab_section_index();
    w.reserve_shstrtab_section_index();
    w.reserve_symtab();
    w.reserve_strtab()
        .map_err(|e| SymfileError::Write(e.to_string()))?;
    w.reserve_shstrtab()
        .map_err(|e| SymfileError::Write(e.to_string()))?;
    w.reserve_section_headers();

    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_EXEC,
        e_machine: elf::EM_X86_64,
        e_entry: 0,
        e_flags: elf::FileFlags(0),
    })
    .map_err(|e| SymfileError::Write(e.to_string()))?;

    w.write_null_symbol();
    let (mut functions, mut objects) = (0, 0);
    for (s, name) in symbols.iter().zip(&name_strings) {
        let bind = match s.entry.kind {
            'W' | 'w' | 'V' | 'v' => elf::STB_WEAK,
            k if k.is_ascii_lowercase() => elf::STB_LOCAL,
            _ => elf::STB_GLOBAL,
        };
        let typ = match s.class {
            Class::Text => {
                functions += 1;
                elf::STT_FUNC
            }
            Class::Data => {
                objects += 1;
                elf::STT_OBJECT
            }
            Class::Abs => elf::STT_NOTYPE,
        };
        w.write_symbol(&Sym {
            st_name: w.string_offset(Some(*name)),
            section: s.section.map(|i| i.0),
            st_info: elf::SymbolInfo::new(bind, typ),
            st_other: elf::SymbolOther(elf::STV_DEFAULT.0),
            st_shndx: if s.section.is_none() {
                elf::SHN_ABS
            } else {
                elf::SHN_UNDEF
            },
            st_value: s.entry.address,
            st_size: s.size,
        });
    }
    w.write_strtab();
    w.write_shstrtab();

    w.write_null_section_header();
    for (run, name) in runs.iter().zip(&name_ids) {
        let flags = match run.class {
            Class::Text => elf::SHF_ALLOC.0 | elf::SHF_EXECINSTR.0,
            _ => elf::SHF_ALLOC.0 | elf::SHF_WRITE.0,
        };
        w.write_section_header(&SectionHeader {
            sh_name: w.section_name_offset(Some(*name)),
            sh_type: elf::SHT_NOBITS,
            sh_flags: elf::SectionFlags(flags),
            sh_addr: run.start,
            sh_offset: 0,
            sh_size: run.end - run.start,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 1,
            sh_entsize: 0,
        });
    }
    w.write_symtab_section_header(num_local);
    w.write_strtab_section_header();
    w.write_shstrtab_section_header();
    drop(w);

    let summary = SymfileSummary {
        functions,
        objects,
        absolute: absolute.len(),
        skipped_module_symbols,
        sections: runs
            .iter()
            .zip(section_names)
            .map(|(r, n)| (n, r.start, r.end - r.start))
            .collect(),
    };
    Ok((buffer, summary))
}

fn make_runs(located: &[(&KallsymsEntry, Class)]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (i, (e, class)) in located.iter().enumerate() {
        if let Some(run) = runs.last_mut() {
            let last = located[run.members.end - 1].0.address;
            // Symbols sharing an address stay together, whatever their letters say.
            let same = e.address == last || (*class == run.class && e.address - last <= MAX_GAP);
            if same {
                run.members.end = i + 1;
                continue;
            }
        }
        runs.push(Run {
            class: *class,
            start: e.address,
            end: 0,
            members: i..i + 1,
        });
    }
    for k in 0..runs.len() {
        let last = located[runs[k].members.end - 1].0.address;
        let tail_end = last.saturating_add(TAIL);
        runs[k].end = match runs.get(k + 1) {
            Some(next) => tail_end.min(next.start),
            None => tail_end,
        };
    }
    runs
}
