//! Source files and per-function source lines of a module, read with gimli from the relocated
//! debug sections that `reloc` prepared.

use gimli::{AttributeValue, EndianSlice, LittleEndian};
use serde::{Deserialize, Serialize};

use super::elf::Section;
use super::reloc::{DebugSections, Placement};

type R<'a> = EndianSlice<'a, LittleEndian>;

/// What a module's DWARF says about its sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleDebug {
    /// DWARF version of the first compilation unit.
    pub dwarf_version: u16,
    /// Compilation directory of the first unit (the kernel build tree, usually).
    pub comp_dir: Option<String>,
    /// Primary source file of each compilation unit (`ipt_REJECT.c`, `ipt_REJECT.mod.c`).
    pub sources: Vec<String>,
    /// Every function with code, sorted by section and offset.
    pub functions: Vec<FunctionLine>,
}

/// Where a function's code is and which source line its first instruction belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLine {
    pub name: String,
    /// Section holding the entry point (`.text`, `.init.text`, ...).
    pub section: Option<String>,
    /// Entry offset inside `section`.
    pub offset: Option<u64>,
    /// Source file of the line-table row at the entry (what `info line *func` shows in gdb).
    pub file: Option<String>,
    pub line: Option<u64>,
    /// Where the function is declared (`DW_AT_decl_file` / `DW_AT_decl_line`).
    pub decl_file: Option<String>,
    pub decl_line: Option<u64>,
}

impl ModuleDebug {
    /// The function with this name, if it has code in the module.
    pub fn function(&self, name: &str) -> Option<&FunctionLine> {
        self.functions.iter().find(|f| f.name == name)
    }
}

/// A unit of a module's `.debug_info` that gimli cannot read.
#[derive(Debug, thiserror::Error)]
#[error(".debug_info unit {unit_index}: {source}")]
pub(crate) struct DebugInfoError {
    unit_index: usize,
    source: gimli::Error,
}

/// Read sources and function lines. `Err` carries gimli's message with the unit it broke in.
pub(crate) fn read_debug(
    debug: &DebugSections,
    sections: &[Section],
    placement: &Placement,
) -> Result<ModuleDebug, DebugInfoError> {
    let dwarf = gimli::Dwarf::load(|id| -> Result<R<'_>, std::convert::Infallible> {
        let data = debug.data.get(id.name()).map(Vec::as_slice).unwrap_or(&[]);
        Ok(EndianSlice::new(data, LittleEndian))
    })
    .unwrap_or_else(|never| match never {});

    let mut out = ModuleDebug {
        dwarf_version: 0,
        comp_dir: None,
        sources: Vec::new(),
        functions: Vec::new(),
    };
    let mut headers = dwarf.units();
    let mut unit_index = 0usize;
    loop {
        let header = match headers.next() {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(source) => return Err(DebugInfoError { unit_index, source }),
        };
        let context = |source: gimli::Error| DebugInfoError { unit_index, source };
        let unit = dwarf.unit(header).map_err(context)?;
        if unit_index == 0 {
            out.dwarf_version = unit.header.version();
            out.comp_dir = unit.comp_dir.map(lossy);
        }
        if let Some(name) = unit.name {
            out.sources.push(lossy(name));
        }
        let lines = LineTable::read(&dwarf, &unit).map_err(context)?;
        read_functions(
            &dwarf,
            &unit,
            &lines,
            sections,
            placement,
            &mut out.functions,
        )
        .map_err(context)?;
        unit_index += 1;
    }
    out.functions
        .sort_by(|a, b| (&a.section, a.offset, &a.name).cmp(&(&b.section, b.offset, &b.name)));
    Ok(out)
}

fn lossy(r: R<'_>) -> String {
    String::from_utf8_lossy(r.slice()).into_owned()
}

/// One statement row of a line table.
#[derive(Clone, Copy)]
struct Row {
    address: u64,
    file: u64,
    line: u64,
}

/// A contiguous run of code in the line table, rows in address order.
struct Sequence {
    start: u64,
    end: u64,
    rows: Vec<Row>,
}

/// One unit's line table, flattened into sorted sequences for entry-point lookups.
struct LineTable {
    /// File names by line-program file index.
    files: Vec<Option<String>>,
    sequences: Vec<Sequence>,
}

impl LineTable {
    fn read(dwarf: &gimli::Dwarf<R<'_>>, unit: &gimli::Unit<R<'_>>) -> gimli::Result<Self> {
        let mut table = LineTable {
            files: Vec::new(),
            sequences: Vec::new(),
        };
        let Some(program) = unit.line_program.clone() else {
            return Ok(table);
        };
        let header = program.header();
        // DWARF 5 numbers files from 0, earlier versions from 1; index by the raw number.
        let first = if header.version() >= 5 { 0 } else { 1 };
        let count = header.file_names().len() as u64;
        for index in 0..first + count {
            table.files.push(file_name(dwarf, unit, header, index));
        }
        let mut rows = program.rows();
        let mut current: Vec<Row> = Vec::new();
        while let Some((_, row)) = rows.next_row()? {
            if row.end_sequence() {
                let mut seq = std::mem::take(&mut current);
                // Stable: rows at one address keep their order, and the last one is used.
                seq.sort_by_key(|r| r.address);
                if let Some(first) = seq.first() {
                    table.sequences.push(Sequence {
                        start: first.address,
                        end: row.address(),
                        rows: seq,
                    });
                }
                continue;
            }
            if !row.is_stmt() {
                continue;
            }
            let line = row.line().map_or(0, |l| l.get());
            current.push(Row {
                address: row.address(),
                file: row.file_index(),
                line,
            });
        }
        Ok(table)
    }

    /// File and line of the statement row covering `pc`. When several rows share the address,
    /// the last one wins, as in gdb's `find_pc_line`.
    fn lookup(&self, pc: u64) -> Option<(Option<String>, u64)> {
        let seq = self
            .sequences
            .iter()
            .find(|s| pc >= s.start && pc < s.end)?;
        let idx = seq
            .rows
            .partition_point(|r| r.address <= pc)
            .checked_sub(1)?;
        let row = seq.rows[idx];
        Some((self.file(row.file), row.line))
    }

    fn file(&self, index: u64) -> Option<String> {
        self.files.get(index as usize).cloned().flatten()
    }
}

/// A line-program file as gdb names it: relative to the compilation directory when the file's
/// directory is the compilation directory itself, `dir/name` otherwise.
fn file_name(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    header: &gimli::LineProgramHeader<R<'_>>,
    index: u64,
) -> Option<String> {
    let entry = header.file(index)?;
    let name = lossy(dwarf.attr_string(unit, entry.path_name()).ok()?);
    if name.starts_with('/') || entry.directory_index() == 0 {
        return Some(name);
    }
    let dir = entry
        .directory(header)
        .and_then(|d| dwarf.attr_string(unit, d).ok())
        .map(lossy)?;
    Some(format!("{}/{name}", dir.trim_end_matches('/')))
}

fn read_functions(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    lines: &LineTable,
    sections: &[Section],
    placement: &Placement,
    out: &mut Vec<FunctionLine>,
) -> gimli::Result<()> {
    let mut cursor = unit.entries();
    while let Some(entry) = cursor.next_dfs()? {
        if entry.tag() != gimli::DW_TAG_subprogram {
            continue;
        }
        let entry_pc = match entry.attr_value(gimli::DW_AT_low_pc) {
            Some(v) => dwarf.attr_address(unit, v)?,
            None if entry.has_attr(gimli::DW_AT_ranges) => {
                // A function split into hot and cold parts: its entry is where the first range
                // starts.
                let mut ranges = dwarf.die_ranges(unit, entry)?;
                ranges.next()?.map(|r| r.begin)
            }
            None => None,
        };
        let Some(pc) = entry_pc else { continue };
        let desc = describe(dwarf, unit, entry, 0)?;
        let Some(name) = desc.name else { continue };
        let (section, offset) = match placement.locate(sections, pc) {
            Some((idx, off)) => (Some(sections[idx].name.clone()), Some(off)),
            None => (None, None),
        };
        let (file, line) = match lines.lookup(pc) {
            Some((f, l)) => (f, Some(l)),
            None => (None, None),
        };
        out.push(FunctionLine {
            name,
            section,
            offset,
            file,
            line,
            decl_file: desc.decl_file.and_then(|i| lines.file(i)),
            decl_line: desc.decl_line,
        });
    }
    Ok(())
}

#[derive(Default)]
struct Described {
    name: Option<String>,
    decl_file: Option<u64>,
    decl_line: Option<u64>,
}

/// Name and declaration of a subprogram, following `DW_AT_abstract_origin` and
/// `DW_AT_specification` to the DIE that carries them (out-of-line copies of inline functions
/// only point at their abstract instance).
fn describe(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    entry: &gimli::DebuggingInformationEntry<R<'_>>,
    depth: u32,
) -> gimli::Result<Described> {
    let mut d = Described::default();
    if let Some(v) = entry.attr_value(gimli::DW_AT_name) {
        d.name = dwarf.attr_string(unit, v).ok().map(lossy);
    }
    d.decl_file = entry
        .attr(gimli::DW_AT_decl_file)
        .and_then(|a| a.udata_value());
    d.decl_line = entry
        .attr(gimli::DW_AT_decl_line)
        .and_then(|a| a.udata_value());
    // The depth bound stops a corrupted file whose origins point at each other.
    if (d.name.is_none() || d.decl_line.is_none()) && depth < 4 {
        let origin = entry
            .attr_value(gimli::DW_AT_abstract_origin)
            .or_else(|| entry.attr_value(gimli::DW_AT_specification));
        if let Some(AttributeValue::UnitRef(off)) = origin {
            let target = unit.entry(off)?;
            let o = describe(dwarf, unit, &target, depth + 1)?;
            d.name = d.name.or(o.name);
            d.decl_file = d.decl_file.or(o.decl_file);
            d.decl_line = d.decl_line.or(o.decl_line);
        }
    }
    Ok(d)
}
