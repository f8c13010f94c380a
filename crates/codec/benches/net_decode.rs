//! A timing, not a test: how long one skb takes to read and decode from an in-memory fake guest,
//! and to serialise or render. Run with
//! `cargo bench -p umldbg-codec --bench net_decode`.

use std::hint::black_box;
use std::time::Instant;

use umldbg_codec::net::skb::{MemoryReader, read_skb};
use umldbg_codec::net::{FieldLoc, SkbLayout};

/// Three flat regions, as a `process_vm_readv` reader would see them, minus the syscall.
struct Mem {
    skb: Vec<u8>,
    head: Vec<u8>,
    dev: Vec<u8>,
}

const SKB: u64 = 0x6000_0000;
const HEAD: u64 = 0x6100_0000;
const DEV: u64 = 0x6200_0000;

#[derive(Debug, thiserror::Error)]
#[error("unmapped")]
struct Unmapped;

impl MemoryReader for Mem {
    type Error = Unmapped;

    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, Unmapped> {
        let (base, bytes) = match addr {
            a if a >= DEV => (DEV, &self.dev),
            a if a >= HEAD => (HEAD, &self.head),
            _ => (SKB, &self.skb),
        };
        let off = (addr - base) as usize;
        bytes
            .get(off..off + len)
            .map(<[u8]>::to_vec)
            .ok_or(Unmapped)
    }
}

fn loc(offset: u64, size: u64) -> FieldLoc {
    FieldLoc {
        offset,
        size,
        bit_offset: None,
        bit_size: None,
    }
}

fn setup() -> (SkbLayout, Mem) {
    let l = SkbLayout {
        size: 232,
        head: loc(200, 8),
        data: loc(208, 8),
        len: loc(112, 4),
        data_len: loc(116, 4),
        protocol: loc(180, 2),
        pkt_type: FieldLoc {
            offset: 128,
            size: 1,
            bit_offset: Some(0),
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
    };
    // An Ethernet + IPv4 + ICMP echo frame with 56 bytes of data, as ping sends, at head+64.
    let mut frame = vec![0u8; 12];
    frame.extend([0x08, 0x00]);
    let mut ip = vec![
        0x45, 0, 0, 84, 0x10, 0xe1, 0x40, 0, 63, 1, 0, 0, 192, 168, 10, 2, 192, 168, 20, 2,
    ];
    let sum = umldbg_codec::net::wire::internet_checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend(ip);
    let mut icmp = vec![8, 0, 0, 0, 0, 77, 0, 1];
    icmp.extend((0..56u8).map(|i| 0x10 + i));
    let sum = umldbg_codec::net::wire::internet_checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    frame.extend(icmp);

    let mut skb = vec![0u8; 232];
    let mut put = |f: &FieldLoc, v: &[u8]| {
        let o = f.offset as usize;
        skb[o..o + v.len()].copy_from_slice(v);
    };
    put(&l.head, &HEAD.to_le_bytes());
    put(&l.data, &(HEAD + 78).to_le_bytes());
    put(&l.len, &84u32.to_le_bytes());
    put(&l.protocol, &0x0800u16.to_be_bytes());
    put(&l.dev, &DEV.to_le_bytes());
    put(&l.transport_header, &98u16.to_le_bytes());
    put(&l.network_header, &78u16.to_le_bytes());
    put(&l.mac_header, &64u16.to_le_bytes());
    put(&l.tail, &(64 + frame.len() as u32).to_le_bytes());
    put(&l.end, &320u32.to_le_bytes());
    let mut head = vec![0u8; 384];
    head[64..64 + frame.len()].copy_from_slice(&frame);
    let mut dev = b"eth0".to_vec();
    dev.resize(16, 0);
    (l, Mem { skb, head, dev })
}

fn time<T>(what: &str, n: u32, mut f: impl FnMut() -> T) {
    for _ in 0..n / 10 {
        black_box(f());
    }
    let t = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    let ns = t.elapsed().as_nanos() / u128::from(n);
    println!("{what}: {ns} ns per call ({n} calls)");
}

fn skb_decode_timing() {
    let (l, mut mem) = setup();
    let v = read_skb(SKB, &l, &mut mem).unwrap();
    assert!(v.packet.warnings.is_empty(), "{:?}", v.packet.warnings);
    assert_eq!(v.packet.icmp.as_ref().unwrap().seq, Some(1));
    let n = 200_000;
    time("read_skb (3 fake reads + decode)", n, || {
        read_skb(SKB, &l, &mut mem).unwrap()
    });
    time("serde_json::to_string(&view)", n, || {
        serde_json::to_string(&v).unwrap()
    });
    time("view.render(false)", n, || v.render(false));
    time("view.render(true)", n, || v.render(true));
    let frame = v.linear[64..].to_vec();
    time("decode_ethernet (bytes only)", n, || {
        umldbg_codec::net::decode_ethernet(&frame)
    });
}

fn main() {
    skb_decode_timing();
}
