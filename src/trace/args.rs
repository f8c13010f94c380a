//! Which argument of a traced function is the `struct sk_buff *`.
//!
//! A table covers the functions of the IPv4 path; for the others the kernel image's DWARF says
//! (the compilation unit holding the address, found through `.debug_aranges`, then the
//! subprogram's formal parameters, following `DW_AT_abstract_origin` for out-of-line copies of
//! inlined functions). Module functions outside the table have no answer here (their DWARF
//! needs relocating first); `--skb-arg` gives one.

use std::path::Path;

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

/// The index of the first `struct sk_buff *` parameter of the function at `addr` in a linked
/// image (the kernel), from its DWARF.
pub fn skb_arg_from_dwarf(image: &Path, addr: u64) -> Option<u8> {
    let file = crate::kmod::loader::MappedFile::open(image).ok()?;
    let obj = object::File::parse(file.bytes()).ok()?;
    let names = [
        ".debug_info",
        ".debug_abbrev",
        ".debug_str",
        ".debug_line",
        ".debug_line_str",
        ".debug_aranges",
        ".debug_addr",
        ".debug_str_offsets",
        ".debug_rnglists",
        ".debug_ranges",
    ];
    let data: Vec<(&str, std::borrow::Cow<[u8]>)> =
        names.iter().map(|n| (*n, section(&obj, n))).collect();
    let dwarf = gimli::Dwarf::load(|id| -> Result<R<'_>, gimli::Error> {
        let d = data
            .iter()
            .find(|(n, _)| *n == id.name())
            .map(|(_, d)| d.as_ref())
            .unwrap_or(&[]);
        Ok(EndianSlice::new(d, LittleEndian))
    })
    .ok()?;
    let mut headers = dwarf.debug_aranges.headers();
    let mut cu = None;
    while let Ok(Some(h)) = headers.next() {
        let mut entries = h.entries();
        while let Ok(Some(e)) = entries.next() {
            let r = e.range();
            if addr >= r.begin && addr < r.end {
                cu = Some(h.debug_info_offset());
            }
        }
        if cu.is_some() {
            break;
        }
    }
    let header = dwarf.debug_info.header_from_offset(cu?).ok()?;
    let unit = dwarf.unit(header).ok()?;
    // The subprogram whose low_pc is addr.
    let mut tree = unit.entries_tree(None).ok()?;
    let root = tree.root().ok()?;
    find_subprogram(&dwarf, &unit, root, addr)
}

fn find_subprogram(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    node: gimli::EntriesTreeNode<R<'_>>,
    addr: u64,
) -> Option<u8> {
    let mut children = node.children();
    while let Ok(Some(child)) = children.next() {
        let e = child.entry();
        if e.tag() == gimli::DW_TAG_subprogram {
            let low = e
                .attr_value(gimli::DW_AT_low_pc)
                .and_then(|v| dwarf.attr_address(unit, v).ok().flatten());
            if low == Some(addr) {
                let origin = match e.attr_value(gimli::DW_AT_abstract_origin) {
                    Some(AttributeValue::UnitRef(o)) => Some(o),
                    _ => None,
                };
                return params_skb(dwarf, unit, child, origin);
            }
            continue;
        }
        if let Some(i) = find_subprogram(dwarf, unit, child, addr) {
            return Some(i);
        }
    }
    None
}

/// Index of the first sk_buff pointer among the subprogram's formal parameters.
fn params_skb(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    node: gimli::EntriesTreeNode<R<'_>>,
    origin: Option<UnitOffset>,
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
        if ty.is_some_and(|t| is_skb_pointer(dwarf, unit, t)) {
            return Some(idx);
        }
        idx += 1;
    }
    if !any {
        // An out-of-line copy listing no parameters: the abstract instance has them.
        let o = origin?;
        let mut tree = unit.entries_tree(Some(o)).ok()?;
        let root = tree.root().ok()?;
        return params_skb(dwarf, unit, root, None);
    }
    None
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

#[cfg(test)]
mod tests {
    #[test]
    fn table_knows_the_ipv4_path() {
        assert_eq!(super::known("ip_output"), Some(2));
        assert_eq!(super::known("reject_tg"), Some(0));
        assert_eq!(super::known("nope"), None);
    }
}
