//! Find named struct and union definitions in a whole kernel's DWARF in one pass.
//!
//! A kernel image has thousands of compilation units and most of `.debug_info` is function
//! bodies. Struct definitions sit at the top level of each unit, so the scan reads only the
//! unit's direct children and jumps over everything below them with `DW_AT_sibling`; a unit is
//! parsed further only when it defines a wanted name. Units are shared among threads, and the
//! scan stops as soon as every name has been found in a unit no later one could beat: the
//! result is the definition from the first unit that has it, whatever the thread timing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use gimli::{AttributeValue, UnitHeader};

use super::build::Builder;
use super::layout::StructLayout;
use super::{DwarfError, R};

/// What one scan found.
pub(crate) struct ScanOutcome {
    /// Layouts by the name they were asked for.
    pub layouts: BTreeMap<String, StructLayout>,
    /// Every struct, union and typedef name seen, when some wanted name was not found (for
    /// suggestions); empty otherwise.
    pub known_names: Vec<String>,
}

/// Units read on the calling thread before helper threads start.
const FIRST_UNITS_ALONE: usize = 8;

struct Shared<'w> {
    wanted: &'w [String],
    /// Per wanted name: the lowest unit index that defines it so far (`usize::MAX`: none yet).
    best: Vec<AtomicUsize>,
    found: Mutex<Vec<(usize, usize, StructLayout)>>, // (wanted index, unit index, layout)
    error: Mutex<Option<(usize, DwarfError)>>,
}

impl Shared<'_> {
    /// True when no unit at `index` or later can improve on what has been found.
    fn done_before(&self, index: usize) -> bool {
        self.best.iter().all(|b| b.load(Ordering::Relaxed) < index)
    }
}

/// Find the layouts of `wanted` (struct, union or typedef names).
pub(crate) fn scan(
    dwarf: &gimli::Dwarf<R<'_>>,
    wanted: &[String],
) -> Result<ScanOutcome, DwarfError> {
    let shared = Shared {
        wanted,
        best: wanted
            .iter()
            .map(|_| AtomicUsize::new(usize::MAX))
            .collect(),
        found: Mutex::new(Vec::new()),
        error: Mutex::new(None),
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    // Unit headers are read lazily, one at a time under the lock: walking them all up front
    // would touch a page in every part of `.debug_info` even when the first units suffice.
    let units = Mutex::new((dwarf.units(), 0usize, 0u64));
    let names: Mutex<HashSet<Vec<u8>>> = Mutex::new(HashSet::new());
    let record_error = |index: usize, e: DwarfError| {
        let mut slot = shared.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|(i, _)| index < *i) {
            *slot = Some((index, e));
        }
    };
    // Process units in order until `limit` units have been handed out (all of them for
    // `None`), the answer is complete, or the units run out. Returns true if work may remain.
    let work = |limit: Option<usize>| -> bool {
        let mut local_names: HashSet<&[u8]> = HashSet::new();
        let more = loop {
            let (index, header) = {
                let mut guard = units.lock().unwrap_or_else(|p| p.into_inner());
                let index = guard.1;
                // Units are handed out in order, so once this index is beaten every later one
                // is too.
                if shared.done_before(index) {
                    break false;
                }
                if limit.is_some_and(|l| index >= l) {
                    break true;
                }
                match guard.0.next() {
                    Ok(Some(h)) => {
                        guard.1 += 1;
                        guard.2 = h.offset().0 as u64 + h.length_including_self() as u64;
                        (index, h)
                    }
                    Ok(None) => break false,
                    Err(source) => {
                        let unit = guard.2;
                        drop(guard);
                        record_error(index, DwarfError::Dwarf { unit, source });
                        break false;
                    }
                }
            };
            // A unit that fails to parse is recorded and skipped: the names may well be
            // defined in a later one.
            if let Err(e) = scan_unit(dwarf, &header, index, &shared, &mut local_names) {
                record_error(index, e);
            }
        };
        let mut all = names.lock().unwrap_or_else(|p| p.into_inner());
        all.extend(local_names.into_iter().map(<[u8]>::to_vec));
        more
    };
    // Common structs (sk_buff, net_device) are defined in the first units: look there on this
    // thread before starting helpers, which on a busy machine wait for a CPU longer than the
    // first units take to read.
    if work(Some(FIRST_UNITS_ALONE)) {
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(|| work(None));
            }
            work(None);
        });
    }

    let mut layouts = BTreeMap::new();
    let found = shared.found.into_inner().unwrap_or_else(|p| p.into_inner());
    let best: Vec<usize> = shared
        .best
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    for (w, unit, layout) in found {
        if best[w] == unit {
            layouts.insert(wanted[w].clone(), layout);
        }
    }
    // A bad unit matters only when a name is still missing (it may have been defined there);
    // otherwise one unreadable unit would make every lookup in the image fail.
    if layouts.len() < wanted.len()
        && let Some((_, e)) = shared.error.into_inner().unwrap_or_else(|p| p.into_inner())
    {
        return Err(e);
    }
    let known_names = if layouts.len() < wanted.len() {
        let mut v: Vec<String> = names
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect();
        v.sort();
        v
    } else {
        Vec::new()
    };
    Ok(ScanOutcome {
        layouts,
        known_names,
    })
}

fn scan_unit<'d>(
    dwarf: &gimli::Dwarf<R<'d>>,
    header: &UnitHeader<R<'d>>,
    index: usize,
    shared: &Shared<'_>,
    names: &mut HashSet<&'d [u8]>,
) -> Result<(), DwarfError> {
    let unit_off = header.offset().0 as u64;
    let g = |source| DwarfError::Dwarf {
        unit: unit_off,
        source,
    };
    let abbrevs = dwarf.abbreviations(header).map_err(g)?;
    let mut cursor = header.entries(&abbrevs);
    let Some(root) = cursor.next_dfs().map_err(g)? else {
        return Ok(());
    };
    if !root.has_children() {
        return Ok(());
    }
    let str_offsets_base = match root.attr_value(gimli::DW_AT_str_offsets_base) {
        Some(AttributeValue::DebugStrOffsetsBase(b)) => Some(b),
        _ => None,
    };
    // Move to the first child; then walk siblings only.
    cursor.next_entry().map_err(g)?;
    let mut unit: Option<gimli::Unit<R<'d>>> = None;
    while let Some(entry) = cursor.current() {
        let tag = entry.tag();
        let interesting = matches!(
            tag,
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_typedef
        );
        if interesting && let Some(name) = entry_name(dwarf, header, str_offsets_base, entry) {
            names.insert(name);
            let declaration = matches!(
                entry.attr_value(gimli::DW_AT_declaration),
                Some(AttributeValue::Flag(true))
            );
            if !declaration
                && let Some(w) = shared.wanted.iter().position(|n| n.as_bytes() == name)
                && shared.best[w].load(Ordering::Relaxed) > index
            {
                let offset = entry.offset();
                let typedef_target = if tag == gimli::DW_TAG_typedef {
                    match entry.attr_value(gimli::DW_AT_type) {
                        Some(AttributeValue::UnitRef(t)) => Some(t),
                        _ => None,
                    }
                } else {
                    None
                };
                if unit.is_none() {
                    unit = Some(
                        gimli::Unit::new_with_abbreviations(dwarf, *header, abbrevs.clone())
                            .map_err(g)?,
                    );
                }
                let u = unit.as_ref().expect("unit set just above");
                let target = match typedef_target {
                    None => Some(offset),
                    Some(t) => aggregate_definition(u, t).map_err(g)?,
                };
                if let Some(target) = target {
                    let mut layout = Builder::new(dwarf, u).build(target)?;
                    if tag == gimli::DW_TAG_typedef {
                        layout.name = shared.wanted[w].clone();
                    }
                    shared
                        .found
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((w, index, layout));
                    shared.best[w].fetch_min(index, Ordering::Relaxed);
                }
            }
        }
        if cursor.next_sibling().map_err(g)?.is_none() {
            break;
        }
    }
    Ok(())
}

/// The struct or union a typedef names, if this unit defines it (through cv-qualifiers).
fn aggregate_definition(
    unit: &gimli::Unit<R<'_>>,
    mut off: gimli::UnitOffset,
) -> gimli::Result<Option<gimli::UnitOffset>> {
    for _ in 0..8 {
        let e = unit.entry(off)?;
        let declaration = matches!(
            e.attr_value(gimli::DW_AT_declaration),
            Some(AttributeValue::Flag(true))
        );
        match e.tag() {
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type if !declaration => {
                return Ok(Some(off));
            }
            gimli::DW_TAG_typedef | gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => {
                match e.attr_value(gimli::DW_AT_type) {
                    Some(AttributeValue::UnitRef(t)) => off = t,
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// A DIE's `DW_AT_name` bytes, without building a `gimli::Unit` (which would also parse the
/// line program header of every unit).
fn entry_name<'d>(
    dwarf: &gimli::Dwarf<R<'d>>,
    header: &UnitHeader<R<'d>>,
    str_offsets_base: Option<gimli::DebugStrOffsetsBase<usize>>,
    entry: &gimli::DebuggingInformationEntry<R<'d>>,
) -> Option<&'d [u8]> {
    let value = entry.attr_value(gimli::DW_AT_name)?;
    let r = match value {
        AttributeValue::String(s) => s,
        AttributeValue::DebugStrRef(off) => dwarf.debug_str.get_str(off).ok()?,
        AttributeValue::DebugLineStrRef(off) => dwarf.debug_line_str.get_str(off).ok()?,
        AttributeValue::DebugStrOffsetsIndex(i) => {
            let base = str_offsets_base?;
            let off = dwarf
                .debug_str_offsets
                .get_str_offset(header.format(), base, i)
                .ok()?;
            dwarf.debug_str.get_str(off).ok()?
        }
        _ => return None,
    };
    Some(r.slice())
}
