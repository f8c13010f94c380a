//! A timing, not a test: how long one skb takes to read and decode from an in-memory fake guest,
//! and to serialise or render. Run with
//! `cargo bench -p umldbg-codec --bench net_decode`.

use std::hint::black_box;
use std::time::Instant;

use umldbg_codec::net::SkbLayout;
use umldbg_codec::net::skb::read_skb;

// The fake guest (memory regions, a made-up layout, the skb builder), shared with the main
// crate's `tests/net_skb.rs`.
#[path = "../tests/support/skb_fixture.rs"]
mod skb_fixture;

use skb_fixture::{FakeMem, SKB, Spec, layout};

fn setup() -> (SkbLayout, FakeMem) {
    // An Ethernet + IPv4 + ICMP echo frame with 56 bytes of data, as ping sends.
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
    let l = layout();
    let mem = Spec::received(frame).build(&l);
    (l, mem)
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
        // The fake memory logs each read for the tests; keep the log from growing here.
        mem.reads.clear();
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
