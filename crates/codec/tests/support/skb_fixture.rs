//! A fake guest with one `struct sk_buff` in it, for the sk_buff view's tests
//! (`tests/net_skb.rs` of the main crate) and its benchmark (`benches/net_decode.rs`): a made-up
//! [`SkbLayout`], guest memory as regions, and [`Spec`], which writes an skb, its linear buffer
//! and its device's name by that layout. Included by path (`#[path]`) from both.

#![allow(dead_code)]

use std::collections::BTreeMap;

use umldbg_codec::net::skb::MemoryReader;
use umldbg_codec::net::{FieldLoc, SkbLayout};

// ---- Fake guest memory ----

#[derive(Debug, thiserror::Error)]
#[error("no guest memory at {addr:#x}+{len}")]
pub struct Fault {
    pub addr: u64,
    pub len: usize,
}

/// Regions of guest memory by start address; a read must fall inside one region.
#[derive(Default)]
pub struct FakeMem {
    pub regions: BTreeMap<u64, Vec<u8>>,
    pub reads: Vec<(u64, usize)>,
}

impl FakeMem {
    pub fn map(&mut self, addr: u64, bytes: Vec<u8>) {
        self.regions.insert(addr, bytes);
    }
}

impl MemoryReader for FakeMem {
    type Error = Fault;

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, Fault> {
        self.reads.push((addr, len));
        let fault = Fault { addr, len };
        let (start, bytes) = self.regions.range(..=addr).next_back().ok_or(fault)?;
        let off = usize::try_from(addr - start).unwrap();
        bytes
            .get(off..off + len)
            .map(<[u8]>::to_vec)
            .ok_or(Fault { addr, len })
    }
}

// ---- A made-up layout and an skb built from it ----

pub fn loc(offset: u64, size: u64) -> FieldLoc {
    FieldLoc {
        offset,
        size,
        bit_offset: None,
        bit_size: None,
    }
}

/// Offsets invented for the test, in no particular kernel's order: the view must go by the
/// layout alone.
pub fn layout() -> SkbLayout {
    SkbLayout {
        size: 232,
        head: loc(200, 8),
        data: loc(208, 8),
        len: loc(112, 4),
        data_len: loc(116, 4),
        protocol: loc(180, 2),
        pkt_type: FieldLoc {
            offset: 128,
            size: 1,
            bit_offset: Some(2),
            bit_size: Some(3),
        },
        mark: loc(168, 4),
        dev: loc(16, 8),
        transport_header: loc(184, 2),
        network_header: loc(186, 2),
        mac_header: loc(188, 2),
        tail: loc(192, 4),
        end: loc(196, 4),
        dev_name: loc(0, 16),
    }
}

pub const SKB: u64 = 0x6123_abcd0;
pub const HEAD: u64 = 0x6200_0000;
pub const DEV: u64 = 0x6300_0000;

/// What goes into the fake sk_buff; defaults describe a received frame at `ip_rcv` time.
pub struct Spec {
    pub frame: Vec<u8>,
    pub mac: u16,
    pub network: u16,
    pub transport: u16,
    /// Offset of `data` from `head`.
    pub data: u64,
    /// Linear bytes from `head` (the frame sits at `mac`).
    pub tail: u32,
    pub end: u32,
    pub len: u32,
    pub data_len: u32,
    pub protocol: u16,
    pub pkt_type: u8,
    pub mark: u32,
    pub dev: u64,
}

impl Spec {
    pub fn received(frame: Vec<u8>) -> Spec {
        let n = u32::try_from(frame.len()).unwrap();
        Spec {
            mac: 64,
            network: 78,
            transport: 98,
            data: 78,
            tail: 64 + n,
            end: 320,
            len: n - 14,
            data_len: 0,
            protocol: 0x0800,
            pkt_type: 0,
            mark: 0x2a,
            dev: DEV,
            frame,
        }
    }

    /// Locally generated, before the neighbour layer: no MAC header, data at the IP header.
    pub fn sent(packet: Vec<u8>) -> Spec {
        let n = u32::try_from(packet.len()).unwrap();
        Spec {
            mac: u16::MAX,
            network: 96,
            transport: 116,
            data: 96,
            tail: 96 + n,
            len: n,
            pkt_type: 4, // OUTGOING
            ..Spec::received(packet)
        }
    }

    pub fn build(&self, l: &SkbLayout) -> FakeMem {
        let mut s = vec![0xeeu8; l.size as usize];
        let put = |s: &mut Vec<u8>, f: &FieldLoc, v: &[u8]| {
            let o = f.offset as usize;
            s[o..o + v.len()].copy_from_slice(v);
        };
        put(&mut s, &l.head, &HEAD.to_le_bytes());
        put(&mut s, &l.data, &(HEAD + self.data).to_le_bytes());
        put(&mut s, &l.len, &self.len.to_le_bytes());
        put(&mut s, &l.data_len, &self.data_len.to_le_bytes());
        put(&mut s, &l.protocol, &self.protocol.to_be_bytes());
        // pkt_type in bits 2..5, its neighbours set, so masking is tested.
        put(&mut s, &l.pkt_type, &[0b1110_0011 | (self.pkt_type << 2)]);
        put(&mut s, &l.mark, &self.mark.to_le_bytes());
        put(&mut s, &l.dev, &self.dev.to_le_bytes());
        put(&mut s, &l.transport_header, &self.transport.to_le_bytes());
        put(&mut s, &l.network_header, &self.network.to_le_bytes());
        put(&mut s, &l.mac_header, &self.mac.to_le_bytes());
        if l.tail.size == 8 {
            put(
                &mut s,
                &l.tail,
                &(HEAD + u64::from(self.tail)).to_le_bytes(),
            );
            put(&mut s, &l.end, &(HEAD + u64::from(self.end)).to_le_bytes());
        } else {
            put(&mut s, &l.tail, &self.tail.to_le_bytes());
            put(&mut s, &l.end, &self.end.to_le_bytes());
        }
        let mut buf = vec![0xccu8; self.end as usize + 64];
        let at = if self.mac == u16::MAX {
            usize::from(self.network)
        } else {
            usize::from(self.mac)
        };
        let at = if self.mac == u16::MAX && self.network == u16::MAX {
            self.data as usize
        } else {
            at
        };
        // Garbage specs may place the frame past the buffer: keep what fits.
        let n = self.frame.len().min(buf.len().saturating_sub(at));
        if n > 0 {
            buf[at..at + n].copy_from_slice(&self.frame[..n]);
        }
        let mut name = b"eth0".to_vec();
        name.resize(64, 0);
        let mut mem = FakeMem::default();
        mem.map(SKB, s);
        mem.map(HEAD, buf);
        mem.map(DEV, name);
        mem
    }
}
