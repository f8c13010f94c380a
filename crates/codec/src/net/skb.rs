//! The sk_buff view: the metadata that matters and the packet it holds, from guest memory.
//!
//! Reading an skb through gdb expressions costs one round trip per member; here one skb costs
//! two reads of guest memory plus one small one: the `struct sk_buff` itself (`layout.size`
//! bytes), its linear data from `head` through `tail`, and the device name. Member offsets come
//! from the kernel's DWARF as a [`SkbLayout`]; the reads go through [`MemoryReader`], which the
//! caller implements over `process_vm_readv` or gdb, and tests over a byte map.
//!
//! Kernel conventions relied on (x86_64 UML, `NET_SKBUFF_DATA_USES_OFFSET`): `head` and `data`
//! are pointers; `tail` and `end` are `u32` offsets from `head` (a layout giving them 8 bytes is
//! read as pointers instead, for kernels without that option); `mac_header`, `network_header` and
//! `transport_header` are `u16` offsets from `head`, all ones meaning unset; `protocol` is
//! big-endian; `pkt_type` is a bitfield.

use std::error::Error as StdError;
use std::fmt::{self, Write as _};

use serde::{Serialize, Serializer};

use crate::net::hexdump::{HexDump, hex_string, hexdump};
use crate::net::layout::{FieldLoc, SkbLayout};
use crate::net::names::{ethertype_name, pkt_type_name};
use crate::net::packet::{Chain, Packet};
use crate::net::warning::Warning;

/// Reads guest memory. Implementations return exactly `len` bytes or an error.
pub trait MemoryReader {
    type Error: StdError + Send + Sync + 'static;

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, Self::Error>;
}

impl<R: MemoryReader + ?Sized> MemoryReader for &mut R {
    type Error = R::Error;

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, Self::Error> {
        (**self).read(addr, len)
    }
}

/// `IFNAMSIZ`: the size of `net_device.name`, used when the layout gives no size for it.
pub const IFNAMSIZ: usize = 16;

/// No `struct sk_buff` is anywhere near this big; a larger layout size is a layout bug, and
/// reading that much from a wrong pointer would only waste time.
const MAX_SKB_STRUCT: u64 = 4096;

/// Sanity bound on `end` (the linear buffer's size). Linear buffers are kmalloc'ed and a few
/// hundred KiB at most even with BIG TCP; a bigger value means the pointer is not an skb.
const MAX_END: u64 = 16 << 20;

/// How much to read and show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkbOptions {
    /// Most linear bytes read from guest memory (from `head`).
    pub linear_limit: usize,
    /// Most payload bytes kept in `payload_hex` and the hex dump.
    pub payload_limit: usize,
}

impl Default for SkbOptions {
    fn default() -> Self {
        SkbOptions {
            linear_limit: 64 << 10,
            payload_limit: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SkbError {
    #[error("null sk_buff pointer")]
    Null,

    #[error("sk_buff layout: member `{field}` {problem}")]
    Layout {
        field: &'static str,
        problem: String,
    },

    #[error("cannot read {what} at {addr:#x} ({len} bytes)")]
    Read {
        what: &'static str,
        addr: u64,
        len: usize,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    #[error("short read of {what} at {addr:#x}: {got} of {len} bytes")]
    ShortRead {
        what: &'static str,
        addr: u64,
        len: usize,
        got: usize,
    },

    #[error("{addr:#x} does not look like an sk_buff: {reason}")]
    NotAnSkb { addr: u64, reason: String },
}

/// One decoded sk_buff: its metadata, its headers, and the start of its payload.
#[derive(Debug, Clone, Serialize)]
pub struct SkbView {
    #[serde(serialize_with = "hex_u64")]
    pub addr: u64,
    pub len: u32,
    pub data_len: u32,
    /// `skb->protocol` in host order: the EtherType.
    pub protocol: u16,
    pub protocol_name: Option<&'static str>,
    pub pkt_type: u8,
    pub pkt_type_name: Option<&'static str>,
    pub mark: u32,
    /// `skb->dev->name`; `None` when `dev` is NULL or unreadable.
    pub dev: Option<String>,
    pub headroom: u64,
    pub tailroom: u64,
    /// Which of `mac`, `network`, `transport` headers are set.
    pub headers_set: Vec<&'static str>,
    /// Header offsets from `head`; `None` when unset.
    pub mac_header: Option<u16>,
    pub network_header: Option<u16>,
    pub transport_header: Option<u16>,
    #[serde(flatten)]
    pub packet: Packet,
    /// Bytes after the last header decoded, up to the end of the linear data (or of the IP
    /// packet, when that comes first).
    pub payload_len: usize,
    /// The first `payload_limit` payload bytes in hex.
    pub payload_hex: String,
    #[serde(skip)]
    pub head: u64,
    #[serde(skip)]
    pub data: u64,
    /// Offsets from `head`, whatever the kernel's representation.
    #[serde(skip)]
    pub tail: u64,
    #[serde(skip)]
    pub end: u64,
    /// Guest bytes from `head`, at most `tail` (and `linear_limit`) of them.
    #[serde(skip)]
    pub linear: Vec<u8>,
    #[serde(skip)]
    pub payload_limit: usize,
}

fn hex_u64<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:#x}"))
}

/// Reads and decodes the sk_buff at `addr` with the default [`SkbOptions`].
pub fn read_skb(
    addr: u64,
    layout: &SkbLayout,
    mem: &mut impl MemoryReader,
) -> Result<SkbView, SkbError> {
    read_skb_with(addr, layout, mem, SkbOptions::default())
}

/// Reads and decodes the sk_buff at `addr`.
///
/// Errors are for an skb that cannot be shown at all: a NULL or unreadable pointer, a layout
/// that does not fit, or members that cannot describe a buffer. Everything short of that
/// (nonlinear data, headers past the bytes read, malformed packets, an unreadable device name)
/// gives a view with warnings.
pub fn read_skb_with(
    addr: u64,
    layout: &SkbLayout,
    mem: &mut impl MemoryReader,
    opts: SkbOptions,
) -> Result<SkbView, SkbError> {
    if addr == 0 {
        return Err(SkbError::Null);
    }
    if layout.size == 0 || layout.size > MAX_SKB_STRUCT {
        return Err(SkbError::Layout {
            field: "sizeof(struct sk_buff)",
            problem: format!("is {}; expected 1..={MAX_SKB_STRUCT}", layout.size),
        });
    }
    // Bounded by MAX_SKB_STRUCT just above.
    let raw = read_exact(mem, "struct sk_buff", addr, layout.size as usize)?;
    let m = Meta::parse(&raw, layout, addr)?;

    let mut warnings = Vec::new();
    if m.data_len > 0 {
        warnings.push(Warning::Nonlinear {
            len: m.len,
            data_len: m.data_len,
        });
    }
    let linear_len = offset_usize(m.tail).min(opts.linear_limit);
    if (linear_len as u64) < m.tail {
        warnings.push(Warning::LinearClipped {
            tail: m.tail,
            limit: opts.linear_limit,
        });
    }
    let expected = u64::from(m.len - m.data_len);
    let actual = m.tail - m.data_off;
    if expected != actual {
        warnings.push(Warning::LinearLenMismatch { expected, actual });
    }
    let linear = if linear_len == 0 {
        Vec::new()
    } else {
        read_exact(mem, "linear data", m.head, linear_len)?
    };
    let dev = read_dev_name(mem, layout, m.dev, &mut warnings);

    let headers = [
        ("mac", m.mac),
        ("network", m.network),
        ("transport", m.transport),
    ];
    let headers_set = headers
        .iter()
        .filter(|(_, h)| h.is_some())
        .map(|(name, _)| *name)
        .collect();
    let mut usable = |name: &'static str, h: Option<u16>| {
        let off = h?;
        if usize::from(off) > linear.len() {
            warnings.push(Warning::HeaderOutOfRange {
                header: name,
                offset: off,
                have: linear.len(),
            });
            return None;
        }
        Some(usize::from(off))
    };
    let (mac, net) = (usable("mac", m.mac), usable("network", m.network));
    let data_off = offset_usize(m.data_off);
    let mut packet = decode_linear(&linear, mac, net, data_off, m.protocol, &mut warnings);
    warnings.append(&mut packet.warnings);
    packet.warnings = warnings;
    let payload = packet.payload_of(&linear);

    Ok(SkbView {
        addr,
        len: m.len,
        data_len: m.data_len,
        protocol: m.protocol,
        protocol_name: ethertype_name(m.protocol),
        pkt_type: m.pkt_type,
        pkt_type_name: pkt_type_name(m.pkt_type),
        mark: m.mark,
        dev,
        headroom: m.data_off,
        tailroom: m.end - m.tail,
        headers_set,
        mac_header: m.mac,
        network_header: m.network,
        transport_header: m.transport,
        payload_len: payload.len(),
        payload_hex: hex_string(payload, opts.payload_limit),
        packet,
        head: m.head,
        data: m.head + m.data_off,
        tail: m.tail,
        end: m.end,
        linear,
        payload_limit: opts.payload_limit,
    })
}

/// The members of one `struct sk_buff`, checked to describe a buffer.
struct Meta {
    head: u64,
    /// `data - head`, at most `tail`.
    data_off: u64,
    len: u32,
    /// At most `len`.
    data_len: u32,
    protocol: u16,
    pkt_type: u8,
    mark: u32,
    dev: u64,
    mac: Option<u16>,
    network: Option<u16>,
    transport: Option<u16>,
    /// Offsets from `head`; `tail <= end <= MAX_END`.
    tail: u64,
    end: u64,
}

impl Meta {
    fn parse(raw: &[u8], layout: &SkbLayout, addr: u64) -> Result<Meta, SkbError> {
        let s = Fields { raw };
        let not_skb = |reason: String| SkbError::NotAnSkb { addr, reason };
        let head = s.get("head", &layout.head)?;
        let data = s.get("data", &layout.data)?;
        let len = s.get_u32("len", &layout.len)?;
        let data_len = s.get_u32("data_len", &layout.data_len)?;
        let tail = s.get_offset("tail", &layout.tail, head, addr)?;
        let end = s.get_offset("end", &layout.end, head, addr)?;
        if head == 0 {
            return Err(not_skb("head is NULL".into()));
        }
        if tail > end {
            return Err(not_skb(format!(
                "tail offset {tail} is past end offset {end}"
            )));
        }
        if end > MAX_END {
            return Err(not_skb(format!("end offset {end} is implausibly large")));
        }
        if data_len > len {
            return Err(not_skb(format!(
                "data_len {data_len} is larger than len {len}"
            )));
        }
        let data_off = data
            .checked_sub(head)
            .filter(|off| *off <= tail)
            .ok_or_else(|| {
                not_skb(format!(
                    "data {data:#x} is outside head {head:#x} .. head + tail ({tail})"
                ))
            })?;
        Ok(Meta {
            head,
            data_off,
            len,
            data_len,
            protocol: s.get_be16("protocol", &layout.protocol)?,
            // A 3-bit bitfield, or a whole byte in layouts without bit info: a u8 either way.
            pkt_type: s.get("pkt_type", &layout.pkt_type)? as u8,
            mark: s.get_u32("mark", &layout.mark)?,
            dev: s.get("dev", &layout.dev)?,
            mac: s.get_header("mac_header", &layout.mac_header)?,
            network: s.get_header("network_header", &layout.network_header)?,
            transport: s.get_header("transport_header", &layout.transport_header)?,
            tail,
            end,
        })
    }
}

/// `dev->name`, or `None` for a NULL `dev`; an unreadable name is a warning, not an error,
/// since the packet is still worth showing.
fn read_dev_name(
    mem: &mut impl MemoryReader,
    layout: &SkbLayout,
    dev: u64,
    warnings: &mut Vec<Warning>,
) -> Option<String> {
    if dev == 0 {
        return None;
    }
    let n = match layout.dev_name.size {
        0 => IFNAMSIZ,
        n => n.min(64) as usize,
    };
    let at = dev.wrapping_add(layout.dev_name.offset);
    match read_exact(mem, "net_device name", at, n) {
        Ok(b) => Some(c_string(&b)),
        Err(e) => {
            warnings.push(Warning::DevUnreadable {
                addr: at,
                reason: error_chain(&e),
            });
            None
        }
    }
}

/// Offsets here are bounded by `MAX_END`, far below `usize::MAX` on any host this runs on.
fn offset_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Chooses where to start decoding: the MAC header when it precedes the network header, the
/// network header, or failing both `data`, typed by `skb->protocol` where it names a protocol
/// this module decodes, else by the IP version nibble.
fn decode_linear(
    linear: &[u8],
    mac: Option<usize>,
    net: Option<usize>,
    data_off: usize,
    protocol: u16,
    warnings: &mut Vec<Warning>,
) -> Packet {
    let hint = matches!(protocol, 0x0800 | 0x86dd | 0x0806).then_some(protocol);
    let mut c = Chain::new(linear);
    match (mac, net) {
        (Some(m), n) if n.is_none_or(|n| m < n) => {
            let next = c.link(m);
            match (n, next) {
                // Trust the kernel's network header over our reading of the link layer: they
                // differ only when something (a tag, a tunnel) sits between them.
                (Some(n), _) => c.network(n, hint.or(next.map(|(t, _)| t))),
                (None, Some((t, at))) => c.network(at, Some(t)),
                (None, None) => {}
            }
        }
        (_, Some(n)) => c.network(n, hint),
        (_, None) => {
            let looks_ip = linear
                .get(data_off)
                .is_some_and(|b| matches!(b >> 4, 4 | 6));
            if hint.is_some() || looks_ip {
                warnings.push(Warning::DecodedFromData {
                    why: "no MAC or network header set",
                    what: "the network layer",
                });
                c.network(data_off, hint);
            } else {
                warnings.push(Warning::UnknownProtocol { protocol });
                c.pkt.payload = data_off.min(linear.len())..linear.len();
            }
        }
    }
    c.pkt
}

fn read_exact(
    mem: &mut impl MemoryReader,
    what: &'static str,
    addr: u64,
    len: usize,
) -> Result<Vec<u8>, SkbError> {
    let bytes = mem.read(addr, len).map_err(|e| SkbError::Read {
        what,
        addr,
        len,
        source: Box::new(e),
    })?;
    if bytes.len() < len {
        return Err(SkbError::ShortRead {
            what,
            addr,
            len,
            got: bytes.len(),
        });
    }
    Ok(bytes)
}

/// `err` and its sources on one line.
fn error_chain(err: &dyn StdError) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let _ = write!(s, ": {e}");
        cur = e.source();
    }
    s
}

/// A NUL-terminated C string, lossily as UTF-8.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Member access on the raw bytes of one `struct sk_buff`.
struct Fields<'a> {
    raw: &'a [u8],
}

impl Fields<'_> {
    /// The member's value, little-endian, bitfield bits extracted.
    fn get(&self, field: &'static str, loc: &FieldLoc) -> Result<u64, SkbError> {
        let bad = |problem: String| SkbError::Layout { field, problem };
        if !matches!(loc.size, 1 | 2 | 4 | 8) {
            return Err(bad(match loc.size {
                0 => "is missing from the layout (size 0)".into(),
                n => format!("has size {n}; expected 1, 2, 4 or 8"),
            }));
        }
        let bytes = loc
            .offset
            .checked_add(loc.size)
            .and_then(|end| {
                self.raw
                    .get(usize::try_from(loc.offset).ok()?..usize::try_from(end).ok()?)
            })
            .ok_or_else(|| {
                bad(format!(
                    "at offset {} size {} is outside sizeof(struct sk_buff) = {}",
                    loc.offset,
                    loc.size,
                    self.raw.len()
                ))
            })?;
        let mut buf = [0u8; 8];
        buf[..bytes.len()].copy_from_slice(bytes);
        let mut v = u64::from_le_bytes(buf);
        if let Some(bits) = loc.bit_size {
            let shift = loc.bit_offset.unwrap_or(0);
            if bits == 0 || bits >= 64 || u64::from(shift + bits) > loc.size * 8 {
                return Err(bad(format!(
                    "bitfield of {bits} bits at bit {shift} does not fit its {} bytes",
                    loc.size
                )));
            }
            v = (v >> shift) & ((1u64 << bits) - 1);
        }
        Ok(v)
    }

    fn get_u32(&self, field: &'static str, loc: &FieldLoc) -> Result<u32, SkbError> {
        let v = self.get(field, loc)?;
        u32::try_from(v).map_err(|_| SkbError::Layout {
            field,
            problem: format!("value {v:#x} does not fit 32 bits (size {})", loc.size),
        })
    }

    /// A `__be16` member in host order.
    fn get_be16(&self, field: &'static str, loc: &FieldLoc) -> Result<u16, SkbError> {
        if loc.size != 2 || loc.bit_size.is_some() {
            return Err(SkbError::Layout {
                field,
                problem: format!("has size {}; expected a 2-byte __be16", loc.size),
            });
        }
        Ok((self.get(field, loc)? as u16).swap_bytes())
    }

    /// A header offset from `head`, `None` when all ones (unset).
    fn get_header(&self, field: &'static str, loc: &FieldLoc) -> Result<Option<u16>, SkbError> {
        if loc.size != 2 {
            return Err(SkbError::Layout {
                field,
                problem: format!("has size {}; expected a 2-byte offset from head", loc.size),
            });
        }
        let v = self.get(field, loc)? as u16;
        Ok((v != u16::MAX).then_some(v))
    }

    /// `tail` or `end` as an offset from `head`: a `u32` offset, or on kernels without
    /// `NET_SKBUFF_DATA_USES_OFFSET` an 8-byte pointer. `addr` is the skb's, for the error.
    fn get_offset(
        &self,
        field: &'static str,
        loc: &FieldLoc,
        head: u64,
        addr: u64,
    ) -> Result<u64, SkbError> {
        let v = self.get(field, loc)?;
        match loc.size {
            4 => Ok(v),
            8 => v.checked_sub(head).ok_or_else(|| SkbError::NotAnSkb {
                addr,
                reason: format!("{field} pointer {v:#x} is below head {head:#x}"),
            }),
            n => Err(SkbError::Layout {
                field,
                problem: format!("has size {n}; expected a 4-byte offset or an 8-byte pointer"),
            }),
        }
    }
}

impl SkbView {
    /// Bytes after the last header decoded, bounded as in `payload_len`.
    pub fn payload(&self) -> &[u8] {
        self.packet.payload_of(&self.linear)
    }

    /// The payload's hex dump, bounded by `payload_limit`: what `render(true)` appends.
    pub fn payload_dump(&self) -> HexDump {
        hexdump(self.payload(), self.payload_limit)
    }

    /// The linear bytes from the MAC header (when set and before the network header), else from
    /// the network header, else from `data`, through `tail`.
    pub fn frame(&self) -> (FrameStart, &[u8]) {
        let start = self.frame_start();
        let at = match start {
            FrameStart::Mac(at) | FrameStart::Network(at) | FrameStart::Data(at) => at,
        };
        (start, self.linear.get(at..).unwrap_or_default())
    }

    fn frame_start(&self) -> FrameStart {
        let have = self.linear.len();
        let ok = |h: Option<u16>| h.map(usize::from).filter(|&o| o <= have);
        match (ok(self.mac_header), ok(self.network_header)) {
            (Some(m), n) if self.packet.eth.is_some() && n.is_none_or(|n| m < n) => {
                FrameStart::Mac(m)
            }
            (_, Some(n)) => FrameStart::Network(n),
            _ => FrameStart::Data(offset_usize(self.data.saturating_sub(self.head)).min(have)),
        }
    }

    /// The human rendering: one metadata line, one line per header, warnings, and with `hex` a
    /// dump of the payload bounded by `payload_limit`.
    pub fn render(&self, hex: bool) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "skb {:#x} len {} data_len {}",
            self.addr, self.len, self.data_len
        );
        match self.protocol_name {
            Some(name) => {
                let _ = write!(out, " proto {name}");
            }
            None => {
                let _ = write!(out, " proto {:#06x}", self.protocol);
            }
        }
        match self.pkt_type_name {
            Some(name) => {
                let _ = write!(out, " pkt_type {name}");
            }
            None => {
                let _ = write!(out, " pkt_type {}", self.pkt_type);
            }
        }
        let _ = write!(
            out,
            " dev {} headroom {} tailroom {} mark {:#x}",
            self.dev.as_deref().unwrap_or("-"),
            self.headroom,
            self.tailroom,
            self.mark
        );
        let mut sep = " headers ";
        for (name, off) in [
            ("mac", self.mac_header),
            ("network", self.network_header),
            ("transport", self.transport_header),
        ] {
            if let Some(off) = off {
                let _ = write!(out, "{sep}{name}@{off}");
                sep = ",";
            }
        }
        if sep == " headers " {
            out.push_str(" headers none");
        }
        out.push('\n');
        self.packet.write_lines(&mut out, "  ");
        if self.payload_len > 0 {
            let _ = writeln!(out, "  payload {} bytes", self.payload_len);
            if hex {
                for line in self.payload_dump().to_string().lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        out
    }
}

/// Where [`SkbView::frame`] starts, as an offset from `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStart {
    Mac(usize),
    Network(usize),
    Data(usize),
}

impl fmt::Display for SkbView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}
