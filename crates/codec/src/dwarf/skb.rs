//! Fill [`SkbLayout`], the plain numbers the skb view reads, from the DWARF layouts.

use crate::net::layout::{FieldLoc, SkbLayout};

use super::layout::{Member, StructLayout};
use super::{DwarfError, NetLayouts};

fn field(layout: &StructLayout, path: &str) -> Result<FieldLoc, DwarfError> {
    let m = layout
        .member(path)
        .ok_or_else(|| DwarfError::MissingMember {
            structure: layout.name.clone(),
            member: path.to_owned(),
        })?;
    Ok(loc(m))
}

/// A member as a [`FieldLoc`]. A bitfield is read as the bytes that hold it (one byte for
/// `pkt_type:3`), with its bit offset inside the first of them, little-endian.
pub(crate) fn loc(m: &Member) -> FieldLoc {
    match (m.bit_offset, m.bit_size) {
        (Some(bit), Some(width)) => FieldLoc {
            offset: m.offset,
            size: u64::from(bit + width).div_ceil(8),
            bit_offset: Some(bit),
            bit_size: Some(width),
        },
        _ => FieldLoc {
            offset: m.offset,
            size: m.size,
            bit_offset: None,
            bit_size: None,
        },
    }
}

/// The `struct sk_buff` and `struct net_device` members the skb view needs.
pub fn skb_layout(layouts: &NetLayouts) -> Result<SkbLayout, DwarfError> {
    let skb = layouts.require("sk_buff")?;
    let dev = layouts.require("net_device")?;
    Ok(SkbLayout {
        size: skb.size,
        head: field(skb, "head")?,
        data: field(skb, "data")?,
        len: field(skb, "len")?,
        data_len: field(skb, "data_len")?,
        protocol: field(skb, "protocol")?,
        pkt_type: field(skb, "pkt_type")?,
        mark: field(skb, "mark")?,
        dev: field(skb, "dev")?,
        transport_header: field(skb, "transport_header")?,
        network_header: field(skb, "network_header")?,
        mac_header: field(skb, "mac_header")?,
        tail: field(skb, "tail")?,
        end: field(skb, "end")?,
        dev_name: field(dev, "name")?,
    })
}
