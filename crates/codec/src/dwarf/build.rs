//! Turn one struct or union DIE into a [`StructLayout`]: member offsets (bitfields in both the
//! DWARF 2-3 and the DWARF 4-5 encodings), sizes, C type names, anonymous members flattened,
//! holes.

use std::collections::HashMap;

use gimli::{AttributeValue, DwTag, UnitOffset};

use super::layout::{AggregateKind, Hole, Member, StructLayout};
use super::{DwarfError, R};

/// Type chains deeper than this are taken as a loop in corrupted DWARF.
const MAX_DEPTH: u32 = 48;
/// DIE reads allowed for one layout. A real struct needs a few thousand (net_device: about
/// 2,100); corrupted DWARF where a type refers back to itself through two members or two
/// parameters would otherwise branch exponentially within the depth limit.
const MAX_DIE_READS: u64 = 2_000_000;

pub(crate) struct Builder<'a, 'd> {
    dwarf: &'a gimli::Dwarf<R<'d>>,
    unit: &'a gimli::Unit<R<'d>>,
    sizes: HashMap<UnitOffset, u64>,
    reads: std::cell::Cell<u64>,
}

/// What the builder needs to know about a type DIE.
struct TypeInfo {
    tag: DwTag,
    name: Option<String>,
    target: Option<UnitOffset>,
    byte_size: Option<u64>,
    declaration: bool,
    prototyped: bool,
}

impl<'a, 'd> Builder<'a, 'd> {
    pub fn new(dwarf: &'a gimli::Dwarf<R<'d>>, unit: &'a gimli::Unit<R<'d>>) -> Self {
        Builder {
            dwarf,
            unit,
            sizes: HashMap::new(),
            reads: std::cell::Cell::new(0),
        }
    }

    fn err(&self, what: impl Into<String>) -> DwarfError {
        DwarfError::BadType {
            unit: self.unit_offset(),
            what: what.into(),
        }
    }

    fn unit_offset(&self) -> u64 {
        self.unit.header.offset().0 as u64
    }

    fn gimli(&self, source: gimli::Error) -> DwarfError {
        DwarfError::Dwarf {
            unit: self.unit_offset(),
            source,
        }
    }

    fn string(&self, v: AttributeValue<R<'d>>) -> Option<String> {
        let s = self.dwarf.attr_string(self.unit, v).ok()?;
        Some(String::from_utf8_lossy(s.slice()).into_owned())
    }

    /// A type reference resolved inside this unit.
    fn type_ref(&self, v: Option<AttributeValue<R<'d>>>) -> Result<Option<UnitOffset>, DwarfError> {
        match v {
            None => Ok(None),
            Some(AttributeValue::UnitRef(off)) => Ok(Some(off)),
            Some(AttributeValue::DebugInfoRef(off)) => {
                match off.to_unit_offset(&self.unit.header) {
                    Some(u) => Ok(Some(u)),
                    None => Err(self.err(format!(
                        "type reference to .debug_info offset {:#x} in another unit (LTO or dwz \
                     output is not supported)",
                        off.0
                    ))),
                }
            }
            Some(other) => Err(self.err(format!("unexpected type reference form {other:?}"))),
        }
    }

    fn info(&self, off: UnitOffset) -> Result<TypeInfo, DwarfError> {
        self.reads.set(self.reads.get() + 1);
        if self.reads.get() > MAX_DIE_READS {
            return Err(self.err("type graph too large to be a real struct (a reference loop?)"));
        }
        let e = self.unit.entry(off).map_err(|e| self.gimli(e))?;
        Ok(TypeInfo {
            tag: e.tag(),
            name: e.attr_value(gimli::DW_AT_name).and_then(|v| self.string(v)),
            target: self.type_ref(e.attr_value(gimli::DW_AT_type))?,
            byte_size: e.attr(gimli::DW_AT_byte_size).and_then(|a| a.udata_value()),
            declaration: matches!(
                e.attr_value(gimli::DW_AT_declaration),
                Some(AttributeValue::Flag(true))
            ),
            prototyped: matches!(
                e.attr_value(gimli::DW_AT_prototyped),
                Some(AttributeValue::Flag(true))
            ),
        })
    }

    /// Array dimensions from the subrange children; `None` for an unbounded (flexible) one.
    fn dimensions(&self, off: UnitOffset) -> Result<Vec<Option<u64>>, DwarfError> {
        let mut dims = Vec::new();
        let mut tree = self
            .unit
            .entries_tree(Some(off))
            .map_err(|e| self.gimli(e))?;
        let root = tree.root().map_err(|e| self.gimli(e))?;
        let mut children = root.children();
        while let Some(child) = children.next().map_err(|e| self.gimli(e))? {
            let e = child.entry();
            if e.tag() != gimli::DW_TAG_subrange_type {
                continue;
            }
            let count = if let Some(c) = e.attr(gimli::DW_AT_count) {
                c.udata_value()
            } else if let Some(u) = e.attr(gimli::DW_AT_upper_bound) {
                // gcc writes [0] as upper bound -1 in some versions and omits it in others.
                match u
                    .sdata_value()
                    .or_else(|| u.udata_value().map(|v| v as i64))
                {
                    Some(v) if v >= 0 => Some(v as u64 + 1),
                    Some(_) => Some(0),
                    None => None,
                }
            } else {
                None
            };
            dims.push(count);
        }
        Ok(dims)
    }

    /// `sizeof` a type; 0 for void and unbounded arrays.
    pub fn size_of(&mut self, off: UnitOffset, depth: u32) -> Result<u64, DwarfError> {
        if let Some(&s) = self.sizes.get(&off) {
            return Ok(s);
        }
        if depth > MAX_DEPTH {
            return Err(self.err("type chain too deep (a reference loop?)"));
        }
        let t = self.info(off)?;
        let size = if let Some(s) = t.byte_size {
            s
        } else {
            match t.tag {
                gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => {
                    u64::from(self.unit.header.address_size())
                }
                gimli::DW_TAG_array_type => {
                    let elem = match t.target {
                        Some(e) => self.size_of(e, depth + 1)?,
                        None => 0,
                    };
                    self.dimensions(off)?
                        .iter()
                        .try_fold(elem, |acc, d| acc.checked_mul(d.unwrap_or(0)))
                        .ok_or_else(|| self.err("array size overflows"))?
                }
                gimli::DW_TAG_typedef
                | gimli::DW_TAG_const_type
                | gimli::DW_TAG_volatile_type
                | gimli::DW_TAG_restrict_type
                | gimli::DW_TAG_atomic_type => match t.target {
                    Some(e) => self.size_of(e, depth + 1)?,
                    None => 0,
                },
                _ => 0,
            }
        };
        self.sizes.insert(off, size);
        Ok(size)
    }

    /// The C declaration of `inner` (a name, or `""` for the bare type) with type `off`.
    pub fn declare(
        &self,
        off: Option<UnitOffset>,
        inner: &str,
        depth: u32,
    ) -> Result<String, DwarfError> {
        if depth > MAX_DEPTH {
            return Err(self.err("type chain too deep (a reference loop?)"));
        }
        let join = |base: &str, inner: &str| {
            if inner.is_empty() {
                base.to_owned()
            } else {
                format!("{base} {inner}")
            }
        };
        let Some(off) = off else {
            return Ok(join("void", inner));
        };
        let t = self.info(off)?;
        let paren = |inner: &str| {
            if inner.starts_with('*') {
                format!("({inner})")
            } else {
                inner.to_owned()
            }
        };
        Ok(match t.tag {
            gimli::DW_TAG_base_type => join(c_spelling(t.name.as_deref().unwrap_or("?")), inner),
            gimli::DW_TAG_typedef | gimli::DW_TAG_unspecified_type => {
                join(t.name.as_deref().unwrap_or("?"), inner)
            }
            gimli::DW_TAG_structure_type
            | gimli::DW_TAG_union_type
            | gimli::DW_TAG_enumeration_type
            | gimli::DW_TAG_class_type => {
                let kw = match t.tag {
                    gimli::DW_TAG_union_type => "union",
                    gimli::DW_TAG_enumeration_type => "enum",
                    gimli::DW_TAG_class_type => "class",
                    _ => "struct",
                };
                let base = match &t.name {
                    Some(n) => format!("{kw} {n}"),
                    None => format!("{kw} {{...}}"),
                };
                join(&base, inner)
            }
            gimli::DW_TAG_pointer_type => {
                self.declare(t.target, &format!("*{inner}"), depth + 1)?
            }
            gimli::DW_TAG_reference_type => {
                self.declare(t.target, &format!("&{inner}"), depth + 1)?
            }
            gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => {
                let q = match t.tag {
                    gimli::DW_TAG_const_type => "const",
                    gimli::DW_TAG_volatile_type => "volatile",
                    gimli::DW_TAG_restrict_type => "restrict",
                    _ => "_Atomic",
                };
                let target_tag = t.target.map(|o| self.info(o)).transpose()?.map(|ti| ti.tag);
                if target_tag == Some(gimli::DW_TAG_array_type) {
                    // A qualified array is an array of qualified elements; gcc also marks the
                    // elements, so print the qualifier once, where the elements have it.
                    let elems = self.declare(t.target, inner, depth + 1)?;
                    if elems.starts_with(q) {
                        elems
                    } else {
                        format!("{q} {elems}")
                    }
                } else if target_tag == Some(gimli::DW_TAG_pointer_type) {
                    // `char *const p`: the qualifier binds to the pointer, right of the star.
                    self.declare(t.target, &join(q, inner), depth + 1)?
                } else {
                    format!("{q} {}", self.declare(t.target, inner, depth + 1)?)
                }
            }
            gimli::DW_TAG_array_type => {
                let dims: String = self
                    .dimensions(off)?
                    .iter()
                    .map(|d| match d {
                        Some(n) => format!("[{n}]"),
                        None => "[]".to_owned(),
                    })
                    .collect();
                self.declare(t.target, &format!("{}{dims}", paren(inner)), depth + 1)?
            }
            gimli::DW_TAG_subroutine_type => {
                let params = self.parameters(off, t.prototyped, depth)?;
                self.declare(t.target, &format!("{}({params})", paren(inner)), depth + 1)?
            }
            other => join(&format!("<{other}>"), inner),
        })
    }

    fn parameters(
        &self,
        off: UnitOffset,
        prototyped: bool,
        depth: u32,
    ) -> Result<String, DwarfError> {
        let mut out: Vec<String> = Vec::new();
        let mut tree = self
            .unit
            .entries_tree(Some(off))
            .map_err(|e| self.gimli(e))?;
        let root = tree.root().map_err(|e| self.gimli(e))?;
        let mut children = root.children();
        while let Some(child) = children.next().map_err(|e| self.gimli(e))? {
            let e = child.entry();
            match e.tag() {
                gimli::DW_TAG_formal_parameter => {
                    let t = self.type_ref(e.attr_value(gimli::DW_AT_type))?;
                    out.push(self.declare(t, "", depth + 1)?);
                }
                gimli::DW_TAG_unspecified_parameters => out.push("...".to_owned()),
                _ => {}
            }
        }
        if out.is_empty() && prototyped {
            out.push("void".to_owned());
        }
        Ok(out.join(", "))
    }

    /// The struct or union DIE whose members follow a member of type `off`, if any. Like gdb,
    /// only a member whose type *is* a struct or union (possibly cv-qualified) is expanded; a
    /// typedef'd struct such as `refcount_t` is shown by its name.
    fn aggregate_of(
        &self,
        off: Option<UnitOffset>,
    ) -> Result<Option<(UnitOffset, AggregateKind)>, DwarfError> {
        let mut cur = off;
        for _ in 0..MAX_DEPTH {
            let Some(o) = cur else { return Ok(None) };
            let t = self.info(o)?;
            match t.tag {
                gimli::DW_TAG_structure_type if !t.declaration => {
                    return Ok(Some((o, AggregateKind::Struct)));
                }
                gimli::DW_TAG_union_type if !t.declaration => {
                    return Ok(Some((o, AggregateKind::Union)));
                }
                gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => cur = t.target,
                _ => return Ok(None),
            }
        }
        Err(self.err("type chain too deep (a reference loop?)"))
    }

    /// Build the layout of the struct or union DIE at `off`.
    pub fn build(&mut self, off: UnitOffset) -> Result<StructLayout, DwarfError> {
        let e = self.unit.entry(off).map_err(|e| self.gimli(e))?;
        let kind = match e.tag() {
            gimli::DW_TAG_union_type => AggregateKind::Union,
            _ => AggregateKind::Struct,
        };
        let name = e
            .attr_value(gimli::DW_AT_name)
            .and_then(|v| self.string(v))
            .unwrap_or_default();
        let size = e
            .attr(gimli::DW_AT_byte_size)
            .and_then(|a| a.udata_value())
            .unwrap_or(0);
        let decl_line = e.attr(gimli::DW_AT_decl_line).and_then(|a| a.udata_value());
        let decl_file = e
            .attr(gimli::DW_AT_decl_file)
            .and_then(|a| a.udata_value())
            .and_then(|i| self.file_name(i));
        let mut layout = StructLayout {
            name,
            kind,
            size,
            members: Vec::new(),
            holes: Vec::new(),
            decl_file,
            decl_line,
        };
        self.members(off, kind, 0, "", 0, size, &mut layout)?;
        Ok(layout)
    }

    fn file_name(&self, index: u64) -> Option<String> {
        let program = self.unit.line_program.as_ref()?;
        let header = program.header();
        let file = header.file(index)?;
        let name = self.string(file.path_name())?;
        if name.starts_with('/') || file.directory_index() == 0 {
            return Some(name);
        }
        let dir = file.directory(header).and_then(|d| self.string(d))?;
        Some(format!("{}/{name}", dir.trim_end_matches('/')))
    }

    /// Append the members of the aggregate at `off`, placed at `base` bytes from the outermost
    /// struct, to `out`; then its holes.
    #[allow(clippy::too_many_arguments)]
    fn members(
        &mut self,
        off: UnitOffset,
        kind: AggregateKind,
        base: u64,
        prefix: &str,
        depth: u32,
        agg_size: u64,
        out: &mut StructLayout,
    ) -> Result<(), DwarfError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested members too deep (a reference loop?)"));
        }
        // net_device, one of the largest kernel structs, flattens to a few hundred members.
        if out.members.len() > 100_000 {
            return Err(self.err("more than 100000 members (a reference loop?)"));
        }
        // Collect the direct member DIEs first: building nested members needs `&mut self`.
        struct Raw {
            name: Option<String>,
            ty: Option<UnitOffset>,
            location: Option<u64>,
            data_bit_offset: Option<u64>,
            old_bit_offset: Option<u64>,
            storage_size: Option<u64>,
            bit_size: Option<u64>,
        }
        let mut raws = Vec::new();
        {
            let mut tree = self
                .unit
                .entries_tree(Some(off))
                .map_err(|e| self.gimli(e))?;
            let root = tree.root().map_err(|e| self.gimli(e))?;
            let mut children = root.children();
            while let Some(child) = children.next().map_err(|e| self.gimli(e))? {
                let e = child.entry();
                if e.tag() != gimli::DW_TAG_member {
                    continue;
                }
                let location = match e.attr_value(gimli::DW_AT_data_member_location) {
                    None => None,
                    Some(AttributeValue::Exprloc(expr)) => {
                        Some(plus_uconst(expr).ok_or_else(|| {
                            self.err(
                                "member location is an expression other than DW_OP_plus_uconst",
                            )
                        })?)
                    }
                    Some(v) => v.udata_value(),
                };
                raws.push(Raw {
                    name: e.attr_value(gimli::DW_AT_name).and_then(|v| self.string(v)),
                    ty: self.type_ref(e.attr_value(gimli::DW_AT_type))?,
                    location,
                    data_bit_offset: e
                        .attr(gimli::DW_AT_data_bit_offset)
                        .and_then(|a| a.udata_value()),
                    old_bit_offset: e
                        .attr(gimli::DW_AT_bit_offset)
                        .and_then(|a| a.udata_value()),
                    storage_size: e.attr(gimli::DW_AT_byte_size).and_then(|a| a.udata_value()),
                    bit_size: e.attr(gimli::DW_AT_bit_size).and_then(|a| a.udata_value()),
                });
            }
        }

        let in_union = kind == AggregateKind::Union;
        let scope_start = base * 8;
        let mut end_bits = scope_start;
        let mut last_path = prefix.to_owned();
        for raw in raws {
            let size = match raw.ty {
                Some(t) => self.size_of(t, 0)?,
                None => 0,
            };
            let overflow = || self.err("member offset overflows");
            let start_bits = match (raw.bit_size, raw.data_bit_offset, raw.old_bit_offset) {
                (Some(_), Some(dbo), _) => scope_start.checked_add(dbo).ok_or_else(overflow)?,
                (Some(bits), None, Some(obo)) => {
                    // DWARF 2/3: bit_offset counts from the most significant bit of the storage
                    // unit at data_member_location; on little-endian x86 the lowest bit is at
                    // storage_bits - bit_offset - bit_size.
                    let storage = raw.storage_size.unwrap_or(size) * 8;
                    let loc = raw.location.unwrap_or(0) * 8;
                    let within = storage
                        .checked_sub(obo)
                        .and_then(|v| v.checked_sub(bits))
                        .ok_or_else(|| self.err("bitfield bit_offset larger than its storage"))?;
                    scope_start
                        .checked_add(loc)
                        .and_then(|v| v.checked_add(within))
                        .ok_or_else(overflow)?
                }
                _ => raw
                    .location
                    .unwrap_or(0)
                    .checked_mul(8)
                    .and_then(|l| scope_start.checked_add(l))
                    .ok_or_else(overflow)?,
            };
            let bit_size = raw.bit_size.map(|b| b as u32);
            let aggregate = self.aggregate_of(raw.ty)?;
            let anonymous = raw.name.is_none();
            let path = match (&raw.name, prefix.is_empty()) {
                (None, _) => prefix.to_owned(),
                (Some(n), true) => n.clone(),
                (Some(n), false) => format!("{prefix}.{n}"),
            };
            let type_name = self.declare(raw.ty, "", 0)?;
            let decl = match (&raw.name, bit_size) {
                (Some(n), Some(b)) => format!("{} : {b}", self.declare(raw.ty, n, 0)?),
                (Some(n), None) => self.declare(raw.ty, n, 0)?,
                (None, _) => type_name.clone(),
            };

            if !in_union && start_bits > end_bits {
                out.holes.push(Hole {
                    after: last_path.clone(),
                    pos: out.members.len(),
                    bit_start: end_bits,
                    bits: start_bits - end_bits,
                    padding: false,
                    depth,
                });
            }
            let member_bits = bit_size.map_or(size * 8, u64::from);
            end_bits = end_bits.max(start_bits.saturating_add(member_bits));
            last_path = path.clone();

            out.members.push(Member {
                path: path.clone(),
                offset: start_bits / 8,
                size,
                bit_offset: bit_size.map(|_| (start_bits % 8) as u32),
                bit_size,
                type_name,
                decl,
                depth,
                aggregate: aggregate.map(|(_, k)| k),
                anonymous,
                in_union,
            });
            if let Some((agg_off, agg_kind)) = aggregate {
                self.members(
                    agg_off,
                    agg_kind,
                    start_bits / 8,
                    &path,
                    depth + 1,
                    size,
                    out,
                )?;
            }
        }
        if !in_union {
            let scope_end = scope_start.saturating_add(agg_size * 8);
            if scope_end > end_bits {
                out.holes.push(Hole {
                    after: last_path,
                    pos: out.members.len(),
                    bit_start: end_bits,
                    bits: scope_end - end_bits,
                    padding: true,
                    depth,
                });
            }
        }
        Ok(())
    }
}

/// gcc names base types `long unsigned int`; print them the way C code (and gdb) spells them.
fn c_spelling(name: &str) -> &str {
    match name {
        "long unsigned int" => "unsigned long",
        "long int" => "long",
        "short int" => "short",
        "short unsigned int" => "unsigned short",
        "long long int" => "long long",
        "long long unsigned int" => "unsigned long long",
        other => other,
    }
}

/// The constant of a `DW_OP_plus_uconst N` location expression (DWARF 2 style member offsets).
fn plus_uconst(expr: gimli::Expression<R<'_>>) -> Option<u64> {
    let mut r = expr.0;
    use gimli::Reader;
    let op = r.read_u8().ok()?;
    if op != gimli::DW_OP_plus_uconst.0 {
        return None;
    }
    let v = r.read_uleb128().ok()?;
    r.is_empty().then_some(v)
}
