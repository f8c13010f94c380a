//! Which argument of a traced function is the `struct sk_buff *`.
//!
//! A table covers the functions of the IPv4 path; for the others the kernel image's DWARF says:
//! one pass over every unit ([`scan_skb_dwarf`], cached per build-id in [`SkbDwarf::load`])
//! records each out-of-line function's entry address and its first `struct sk_buff *` parameter,
//! following `DW_AT_abstract_origin` for out-of-line copies of inlined functions. A module
//! function named on the command line outside the table has no answer here (its DWARF
//! addresses need relocating first); `--skb-arg` gives one. Which register holds that argument
//! at a stop is [`crate::guest::skb::skb_candidates`]'s business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gimli::{AttributeValue, EndianSlice, LittleEndian, UnitOffset};

type R<'a> = EndianSlice<'a, LittleEndian>;

/// Functions whose skb argument is known: (name, argument index, 0 = first).
pub const KNOWN: &[(&str, u8)] = &[
    ("reject_tg", 0),
    ("reject_tg6", 0),
    ("ip_rcv", 0),
    ("ip_rcv_finish", 2),
    ("ip_rcv_core", 0),
    ("ip_forward", 0),
    ("ip_forward_finish", 2),
    ("ip_local_deliver", 0),
    ("ip_local_deliver_finish", 2),
    ("ip_output", 2),
    ("ip_finish_output", 2),
    ("ip_finish_output2", 2),
    ("ip_local_out", 2),
    ("__ip_local_out", 2),
    ("ip_send_skb", 1),
    ("__dev_queue_xmit", 0),
    ("dev_hard_start_xmit", 0),
    ("__netif_receive_skb", 0),
    ("netif_receive_skb", 0),
    ("netif_rx", 0),
    ("nf_hook_slow", 0),
    ("ipt_do_table", 1),
    ("icmp_rcv", 0),
    ("__icmp_send", 0),
    ("udp_rcv", 0),
    ("tcp_v4_rcv", 0),
    ("arp_rcv", 0),
    ("neigh_resolve_output", 1),
    ("nf_send_unreach", 0),
    ("ipv6_rcv", 0),
    ("ip6_forward", 0),
    ("ip6_output", 2),
    ("kfree_skb_reason", 0),
    ("sk_skb_reason_drop", 1),
    ("consume_skb", 0),
    ("__kfree_skb", 0),
    ("__napi_kfree_skb", 0),
    ("napi_consume_skb", 0),
];

/// The skb argument of `name` from the table.
pub fn known(name: &str) -> Option<u8> {
    KNOWN.iter().find(|(n, _)| *n == name).map(|(_, i)| *i)
}

fn section<'a>(obj: &'a object::File<'a>, name: &str) -> std::borrow::Cow<'a, [u8]> {
    use object::{Object, ObjectSection};
    obj.section_by_name(name)
        .and_then(|s| s.uncompressed_data().ok())
        .unwrap_or(std::borrow::Cow::Borrowed(&[]))
}

fn is_skb_pointer(dwarf: &gimli::Dwarf<R<'_>>, unit: &gimli::Unit<R<'_>>, ty: UnitOffset) -> bool {
    let Ok(e) = unit.entry(ty) else { return false };
    if e.tag() != gimli::DW_TAG_pointer_type {
        return false;
    }
    let mut cur = match e.attr_value(gimli::DW_AT_type) {
        Some(AttributeValue::UnitRef(t)) => t,
        _ => return false,
    };
    for _ in 0..8 {
        let Ok(e) = unit.entry(cur) else { return false };
        match e.tag() {
            gimli::DW_TAG_structure_type => {
                return e
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| dwarf.attr_string(unit, v).ok())
                    .is_some_and(|s| s.slice() == b"sk_buff");
            }
            gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type | gimli::DW_TAG_typedef => {
                cur = match e.attr_value(gimli::DW_AT_type) {
                    Some(AttributeValue::UnitRef(t)) => t,
                    _ => return false,
                };
            }
            _ => return false,
        }
    }
    false
}

/// What one ELF file's DWARF says about sk_buffs: which functions take one and in which
/// argument register, and the names of the kernel's drop reasons.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkbDwarf {
    /// Out-of-line functions with a `struct sk_buff *` among their first six parameters, by
    /// entry address (the kernel image: addresses are final) and argument index.
    pub by_addr: BTreeMap<u64, u8>,
    /// The same by name, for functions named in their own DWARF entry (a module: its
    /// addresses are not relocated yet, so the name is what ties DWARF to the symbol).
    pub by_name: BTreeMap<String, u8>,
    /// `enum skb_drop_reason`: value to name, without the `SKB_DROP_REASON_` prefix.
    pub drop_reasons: BTreeMap<u64, String>,
}

/// Bumped when [`SkbDwarf`] or its scan changes, so that old cache files are not used.
const SKB_DWARF_FORMAT: u32 = 1;

/// Why an ELF file's DWARF gave no [`SkbDwarf`].
#[derive(Debug, thiserror::Error)]
pub enum DwarfScanError {
    #[error("not an ELF file: {0}")]
    NotElf(#[source] object::Error),
    #[error("no DWARF (.debug_info)")]
    NoDwarf,
    #[error(transparent)]
    Gimli(#[from] gimli::Error),
}

/// [`SkbDwarf::load`] failed, for the file named.
#[derive(Debug, thiserror::Error)]
pub enum SkbDwarfError {
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: crate::kmod::loader::LoadError,
    },
    #[error("{}: {source}", path.display())]
    Scan {
        path: PathBuf,
        #[source]
        source: DwarfScanError,
    },
}

impl SkbDwarf {
    /// The drop reason's name, or its number.
    pub fn reason_name(&self, value: u64) -> String {
        self.drop_reasons
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("reason {value}"))
    }

    /// Reads an ELF file's DWARF, through a cache under `cache` keyed by its build-id.
    pub fn load(path: &Path, cache: &Path) -> Result<SkbDwarf, SkbDwarfError> {
        let file =
            crate::kmod::loader::MappedFile::open(path).map_err(|source| SkbDwarfError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let id = crate::kmod::elf_build_id(file.bytes());
        let cache_file = id.as_ref().map(|id| {
            cache
                .join("trace")
                .join(format!("skb-{id}-v{SKB_DWARF_FORMAT}.json"))
        });
        if let Some(c) = &cache_file
            && let Ok(t) = std::fs::read_to_string(c)
            && let Ok(d) = serde_json::from_str::<SkbDwarf>(&t)
        {
            return Ok(d);
        }
        let d = scan_skb_dwarf(file.bytes()).map_err(|source| SkbDwarfError::Scan {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(c) = &cache_file
            && let Some(dir) = c.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let tmp = c.with_extension("tmp");
            if std::fs::write(&tmp, serde_json::to_vec(&d).unwrap_or_default()).is_ok() {
                let _ = std::fs::rename(tmp, c);
            }
        }
        Ok(d)
    }
}

/// One pass over every unit of an ELF file's DWARF for [`SkbDwarf`].
pub fn scan_skb_dwarf(bytes: &[u8]) -> Result<SkbDwarf, DwarfScanError> {
    let obj = object::File::parse(bytes).map_err(DwarfScanError::NotElf)?;
    let names = [
        ".debug_info",
        ".debug_abbrev",
        ".debug_str",
        ".debug_line",
        ".debug_line_str",
        ".debug_addr",
        ".debug_str_offsets",
        ".debug_rnglists",
        ".debug_ranges",
    ];
    let data: Vec<(&str, std::borrow::Cow<[u8]>)> =
        names.iter().map(|n| (*n, section(&obj, n))).collect();
    if data[0].1.is_empty() {
        return Err(DwarfScanError::NoDwarf);
    }
    let dwarf = gimli::Dwarf::load(|id| -> Result<R<'_>, gimli::Error> {
        let d = data
            .iter()
            .find(|(n, _)| *n == id.name())
            .map(|(_, d)| d.as_ref())
            .unwrap_or(&[]);
        Ok(EndianSlice::new(d, LittleEndian))
    })?;
    let mut out = SkbDwarf::default();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        scan_unit(&dwarf, &unit, &mut out);
    }
    Ok(out)
}

fn scan_unit(dwarf: &gimli::Dwarf<R<'_>>, unit: &gimli::Unit<R<'_>>, out: &mut SkbDwarf) {
    let mut skb_ptr: std::collections::HashMap<UnitOffset, bool> = Default::default();
    let mut concrete: Vec<(UnitOffset, u64, Option<String>)> = Vec::new();
    let mut enums: Vec<UnitOffset> = Vec::new();
    let mut cursor = unit.entries();
    while let Ok(Some(e)) = cursor.next_dfs() {
        match e.tag() {
            gimli::DW_TAG_subprogram => {
                if e.attr(gimli::DW_AT_declaration).is_some() {
                    continue;
                }
                let Some(low) = e
                    .attr_value(gimli::DW_AT_low_pc)
                    .and_then(|v| dwarf.attr_address(unit, v).ok().flatten())
                else {
                    continue;
                };
                let own = e
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| dwarf.attr_string(unit, v).ok())
                    .map(|s| String::from_utf8_lossy(s.slice()).into_owned());
                concrete.push((e.offset(), low, own));
            }
            gimli::DW_TAG_enumeration_type => {
                let named = e
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| dwarf.attr_string(unit, v).ok())
                    .is_some_and(|s| s.slice() == b"skb_drop_reason");
                if named && out.drop_reasons.is_empty() {
                    enums.push(e.offset());
                }
            }
            _ => {}
        }
    }
    for off in enums {
        let Ok(mut tree) = unit.entries_tree(Some(off)) else {
            continue;
        };
        let Ok(root) = tree.root() else { continue };
        let mut children = root.children();
        while let Ok(Some(c)) = children.next() {
            let e = c.entry();
            let name = e
                .attr_value(gimli::DW_AT_name)
                .and_then(|v| dwarf.attr_string(unit, v).ok())
                .map(|s| String::from_utf8_lossy(s.slice()).into_owned());
            let value = match e.attr_value(gimli::DW_AT_const_value) {
                Some(AttributeValue::Udata(v)) => Some(v),
                Some(AttributeValue::Sdata(v)) => Some(v as u64),
                Some(AttributeValue::Data1(v)) => Some(v as u64),
                Some(AttributeValue::Data2(v)) => Some(v as u64),
                Some(AttributeValue::Data4(v)) => Some(v as u64),
                Some(AttributeValue::Data8(v)) => Some(v),
                _ => None,
            };
            if let (Some(n), Some(v)) = (name, value) {
                let short = n
                    .strip_prefix("SKB_DROP_REASON_")
                    .or_else(|| n.strip_prefix("SKB_"))
                    .unwrap_or(&n)
                    .to_string();
                out.drop_reasons.entry(v).or_insert(short);
            }
        }
    }
    for (off, low, own) in concrete {
        let Ok(mut tree) = unit.entries_tree(Some(off)) else {
            continue;
        };
        let Ok(root) = tree.root() else { continue };
        let origin = match root.entry().attr_value(gimli::DW_AT_abstract_origin) {
            Some(AttributeValue::UnitRef(o)) => Some(o),
            _ => None,
        };
        if let Some(i) = params_skb(dwarf, unit, root, origin, &mut skb_ptr)
            && i < 6
        {
            out.by_addr.insert(low, i);
            if let Some(n) = own {
                out.by_name.insert(n, i);
            }
        }
    }
}

/// Index of the first sk_buff pointer among a subprogram's first six formal parameters (the
/// ones passed in registers), following `DW_AT_abstract_origin` for an out-of-line copy that
/// lists none; `cache` remembers per unit which types are `struct sk_buff *`.
fn params_skb(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    node: gimli::EntriesTreeNode<R<'_>>,
    origin: Option<UnitOffset>,
    cache: &mut std::collections::HashMap<UnitOffset, bool>,
) -> Option<u8> {
    let mut idx = 0u8;
    let mut children = node.children();
    let mut any = false;
    while let Ok(Some(child)) = children.next() {
        let e = child.entry();
        if e.tag() != gimli::DW_TAG_formal_parameter {
            continue;
        }
        any = true;
        let ty = match e.attr_value(gimli::DW_AT_type) {
            Some(AttributeValue::UnitRef(t)) => Some(t),
            _ => match e.attr_value(gimli::DW_AT_abstract_origin) {
                Some(AttributeValue::UnitRef(o)) => {
                    unit.entry(o)
                        .ok()
                        .and_then(|p| match p.attr_value(gimli::DW_AT_type) {
                            Some(AttributeValue::UnitRef(t)) => Some(t),
                            _ => None,
                        })
                }
                _ => None,
            },
        };
        if let Some(t) = ty {
            let is = *cache
                .entry(t)
                .or_insert_with(|| is_skb_pointer(dwarf, unit, t));
            if is {
                return Some(idx);
            }
        }
        idx += 1;
        if idx >= 6 {
            return None;
        }
    }
    if !any {
        let o = origin?;
        let mut tree = unit.entries_tree(Some(o)).ok()?;
        let root = tree.root().ok()?;
        // An out-of-line copy listing no parameters: the abstract instance has them.
        return params_skb(dwarf, unit, root, None, cache);
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_knows_the_ipv4_path() {
        assert_eq!(super::known("ip_output"), Some(2));
        assert_eq!(super::known("reject_tg"), Some(0));
        assert_eq!(super::known("nope"), None);
    }
}
