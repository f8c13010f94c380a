//! The sk_buff view over a fake guest memory: a synthetic `struct sk_buff` laid out by a made-up
//! [`SkbLayout`], its linear buffer holding a real loopback frame, and a net_device name; then
//! each way an skb can be odd (nonlinear, headers unset, pointers wrong, memory unreadable).
//! Also the pcap writer over the same views.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use umldbg::net::FieldLoc;
use umldbg::net::pcap::{PcapSink, PcapSinkError};
use umldbg::net::skb::{MemoryReader, SkbError, SkbOptions, read_skb, read_skb_with};
use umldbg::net::warning::{Layer, Warning};

// The fake guest (memory regions, a made-up layout, the skb builder), shared with the codec
// crate's benchmark.
#[path = "../crates/codec/tests/support/skb_fixture.rs"]
mod skb_fixture;

use skb_fixture::{DEV, Fault, HEAD, SKB, Spec, layout, loc};

fn load(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/net/{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn echo_frame() -> Vec<u8> {
    load("lo_icmp_echo_id77")
}

// ---- The view ----

#[test]
fn received_icmp_echo_in_three_reads() {
    let l = layout();
    let mut mem = Spec::received(echo_frame()).build(&l);
    let v = read_skb(SKB, &l, &mut mem).unwrap();
    assert_eq!(mem.reads, [(SKB, 232), (HEAD, 118), (DEV, 16)]);
    assert_eq!(
        (v.len, v.data_len, v.protocol, v.protocol_name),
        (40, 0, 0x0800, Some("IPv4"))
    );
    assert_eq!(
        (v.pkt_type, v.pkt_type_name, v.mark),
        (0, Some("HOST"), 0x2a)
    );
    assert_eq!(v.dev.as_deref(), Some("eth0"));
    assert_eq!((v.headroom, v.tailroom), (78, 202));
    assert_eq!(v.headers_set, ["mac", "network", "transport"]);
    assert_eq!(
        (v.mac_header, v.network_header, v.transport_header),
        (Some(64), Some(78), Some(98))
    );
    let ip = v.packet.ipv4.as_ref().unwrap();
    assert_eq!(
        (ip.ttl, ip.id, ip.df, ip.checksum_ok),
        (63, 4321, true, Some(true))
    );
    let m = v.packet.icmp.as_ref().unwrap();
    assert_eq!((m.id, m.seq), (Some(77), Some(1)));
    assert_eq!(v.payload(), b"hello-umldbg");
    assert_eq!(v.payload_hex, "68656c6c6f2d756d6c646267");
    assert!(v.packet.warnings.is_empty(), "{:?}", v.packet.warnings);
}

#[test]
fn json_shape() {
    let l = layout();
    let v = read_skb(SKB, &l, &mut Spec::received(echo_frame()).build(&l)).unwrap();
    let j = serde_json::to_value(&v).unwrap();
    assert_eq!(j["addr"], "0x6123abcd0");
    assert_eq!(j["protocol"], 2048);
    assert_eq!(j["protocol_name"], "IPv4");
    assert_eq!(j["pkt_type_name"], "HOST");
    assert_eq!(j["dev"], "eth0");
    assert_eq!(
        j["headers_set"],
        serde_json::json!(["mac", "network", "transport"])
    );
    assert_eq!(j["eth"]["type"], 2048);
    assert_eq!(j["ipv4"]["ttl"], 63);
    assert_eq!(j["ipv4"]["checksum_ok"], true);
    assert_eq!(j["icmp"]["type_name"], "echo-request");
    assert_eq!(j["icmp"]["id"], 77);
    assert_eq!(j["payload_len"], 12);
    assert!(j.get("warnings").is_none());
    for key in [
        "len",
        "data_len",
        "pkt_type",
        "mark",
        "headroom",
        "tailroom",
        "payload_hex",
    ] {
        assert!(j.get(key).is_some(), "{key} missing: {j}");
    }
}

#[test]
fn text_rendering() {
    let l = layout();
    let v = read_skb(SKB, &l, &mut Spec::received(echo_frame()).build(&l)).unwrap();
    let expected = "\
skb 0x6123abcd0 len 40 data_len 0 proto IPv4 pkt_type HOST dev eth0 headroom 78 tailroom 202 mark 0x2a headers mac@64,network@78,transport@98
  Ethernet 00:00:00:00:00:00 > 00:00:00:00:00:00 type IPv4 (0x0800)
  IPv4 127.0.0.1 > 127.0.0.1 ttl 63 id 4321 DF len 40 proto ICMP csum ok
  ICMP echo request id 77 seq 1
  payload 12 bytes
";
    assert_eq!(v.render(false), expected);
    assert_eq!(v.to_string(), expected);
    let hex = v.render(true);
    assert!(
        hex.ends_with("    0000  68 65 6c 6c 6f 2d 75 6d  6c 64 62 67              hello-umldbg\n"),
        "{hex}"
    );
}

#[test]
fn transmit_path_without_mac_header() {
    let l = layout();
    let v = read_skb(
        SKB,
        &l,
        &mut Spec::sent(echo_frame()[14..].to_vec()).build(&l),
    )
    .unwrap();
    assert!(v.packet.warnings.is_empty(), "{:?}", v.packet.warnings);
    assert_eq!(v.headers_set, ["network", "transport"]);
    assert_eq!(v.pkt_type_name, Some("OUTGOING"));
    assert!(v.packet.eth.is_none());
    assert_eq!(v.packet.icmp.as_ref().unwrap().seq, Some(1));
    assert_eq!(v.headroom, 96);
    assert!(v.render(false).contains("headers network@96,transport@116"));
}

#[test]
fn nonlinear_skb_decodes_its_linear_part() {
    // 40-byte packet of which 12 (the ICMP data) sit in a page fragment.
    let mut spec = Spec::received(echo_frame()[..14 + 28].to_vec());
    (spec.len, spec.data_len) = (40, 12);
    let l = layout();
    let v = read_skb(SKB, &l, &mut spec.build(&l)).unwrap();
    let w = &v.packet.warnings;
    assert_eq!(
        w[0],
        Warning::Nonlinear {
            len: 40,
            data_len: 12
        }
    );
    let ip = v.packet.ipv4.as_ref().unwrap();
    assert_eq!(
        ip.warnings,
        [Warning::LengthPastBuffer {
            layer: Layer::Ipv4,
            claimed: 40,
            have: 28
        }]
    );
    let m = v.packet.icmp.as_ref().unwrap();
    assert_eq!((m.id, m.checksum_ok), (Some(77), None));
    assert!(
        v.render(false)
            .contains("warning: skb: nonlinear: 12 of its 40 bytes")
    );
}

#[test]
fn no_header_set_decodes_from_data_by_protocol() {
    let mut spec = Spec::sent(echo_frame()[14..].to_vec());
    (spec.network, spec.transport) = (u16::MAX, u16::MAX);
    (spec.data, spec.tail) = (100, 140);
    let l = layout();
    let v = read_skb(SKB, &l, &mut spec.build(&l)).unwrap();
    assert!(v.headers_set.is_empty());
    assert!(matches!(
        v.packet.warnings[..],
        [Warning::DecodedFromData { .. }]
    ));
    assert_eq!(v.packet.ipv4.as_ref().unwrap().id, 4321);
    assert!(v.render(false).contains("headers none"));

    // Neither a header nor a protocol this module knows: nothing decoded, said so.
    spec.protocol = 0x88cc;
    spec.frame = vec![0x02; 40];
    let v = read_skb(SKB, &l, &mut spec.build(&l)).unwrap();
    assert_eq!(
        v.packet.warnings,
        [Warning::UnknownProtocol { protocol: 0x88cc }]
    );
    assert_eq!(v.payload_len, 40);
}

#[test]
fn protocol_unset_falls_back_on_version_nibble() {
    let mut spec = Spec::received(echo_frame());
    spec.protocol = 0;
    let l = layout();
    let v = read_skb(SKB, &l, &mut spec.build(&l)).unwrap();
    assert_eq!(v.protocol_name, None);
    assert_eq!(v.packet.ipv4.as_ref().unwrap().ttl, 63);
}

#[test]
fn malformed_packet_in_skb_is_a_partial_view() {
    let mut frame = echo_frame();
    frame[14] = 0x43; // IHL 3
    let l = layout();
    let v = read_skb(SKB, &l, &mut Spec::received(frame).build(&l)).unwrap();
    let ip = v.packet.ipv4.as_ref().unwrap();
    assert_eq!(ip.warnings, [Warning::BadIhl { ihl: 3 }]);
    assert!(v.packet.icmp.is_none());
    let j = serde_json::to_value(&v).unwrap();
    assert!(
        j["ipv4"]["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("ipv4: bad IHL 3")
    );
}

#[test]
fn header_offset_past_the_linear_data() {
    let mut spec = Spec::received(echo_frame());
    spec.network = 300;
    let l = layout();
    let v = read_skb(SKB, &l, &mut spec.build(&l)).unwrap();
    assert!(v.packet.warnings.contains(&Warning::HeaderOutOfRange {
        header: "network",
        offset: 300,
        have: 118
    }));
    // The MAC header still leads to the IP header.
    assert_eq!(v.packet.ipv4.as_ref().unwrap().id, 4321);
}

#[test]
fn linear_read_is_bounded() {
    let l = layout();
    let mut mem = Spec::received(echo_frame()).build(&l);
    let opts = SkbOptions {
        linear_limit: 100,
        payload_limit: 4,
    };
    let v = read_skb_with(SKB, &l, &mut mem, opts).unwrap();
    assert_eq!(mem.reads[1], (HEAD, 100));
    assert_eq!(
        v.packet.warnings[0],
        Warning::LinearClipped {
            tail: 118,
            limit: 100
        }
    );
    assert_eq!(v.packet.ipv4.as_ref().unwrap().id, 4321);
    let mut mem = Spec::received(echo_frame()).build(&l);
    let v = read_skb_with(
        SKB,
        &l,
        &mut mem,
        SkbOptions {
            payload_limit: 4,
            ..SkbOptions::default()
        },
    )
    .unwrap();
    assert_eq!((v.payload_len, v.payload_hex.as_str()), (12, "68656c6c"));
}

#[test]
fn tail_and_end_as_pointers() {
    let mut l = layout();
    l.tail = loc(144, 8);
    l.end = loc(152, 8);
    let v = read_skb(SKB, &l, &mut Spec::received(echo_frame()).build(&l)).unwrap();
    assert_eq!((v.tail, v.end, v.tailroom), (118, 320, 202));
    assert_eq!(v.packet.icmp.as_ref().unwrap().id, Some(77));
}

#[test]
fn device_null_or_unreadable() {
    let l = layout();
    let mut spec = Spec::received(echo_frame());
    spec.dev = 0;
    let mut mem = spec.build(&l);
    let v = read_skb(SKB, &l, &mut mem).unwrap();
    assert_eq!(v.dev, None);
    assert_eq!(mem.reads.len(), 2);
    spec.dev = 0xdead_0000;
    let v = read_skb(SKB, &l, &mut spec.build(&l)).unwrap();
    assert_eq!(v.dev, None);
    assert_eq!(
        v.packet.warnings[0].to_string(),
        "skb: device name unreadable at 0xdead0000: cannot read net_device name at 0xdead0000 \
         (16 bytes): no guest memory at 0xdead0000+16"
    );
}

#[test]
fn linear_len_mismatch_is_a_warning() {
    let mut spec = Spec::received(echo_frame());
    spec.len = 50;
    let l = layout();
    let v = read_skb(SKB, &l, &mut spec.build(&l)).unwrap();
    assert_eq!(
        v.packet.warnings,
        [Warning::LinearLenMismatch {
            expected: 50,
            actual: 40
        }]
    );
}

// ---- Errors: nothing sensible to show ----

#[test]
fn null_and_unreadable_pointers() {
    let l = layout();
    let mut mem = Spec::received(echo_frame()).build(&l);
    assert!(matches!(read_skb(0, &l, &mut mem), Err(SkbError::Null)));
    let e = read_skb(0x10, &l, &mut mem).unwrap_err();
    assert!(matches!(
        e,
        SkbError::Read {
            what: "struct sk_buff",
            addr: 0x10,
            len: 232,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "cannot read struct sk_buff at 0x10 (232 bytes)"
    );
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "no guest memory at 0x10+232"
    );
    // Struct readable, linear data not.
    mem.regions.remove(&HEAD);
    let e = read_skb(SKB, &l, &mut mem).unwrap_err();
    assert!(
        matches!(
            e,
            SkbError::Read {
                what: "linear data",
                addr: HEAD,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn not_an_skb() {
    let l = layout();
    let check = |f: &dyn Fn(&mut Spec), needle: &str| {
        let mut spec = Spec::received(echo_frame());
        f(&mut spec);
        let mut mem = spec.build(&l);
        match read_skb(SKB, &l, &mut mem) {
            Err(SkbError::NotAnSkb { addr: SKB, reason }) => {
                assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
            }
            other => panic!("{needle}: {other:?}"),
        }
    };
    check(&|s| s.tail = 400, "tail offset 400 is past end offset 320");
    check(&|s| s.data = 200, "is outside head");
    check(&|s| s.data_len = 41, "data_len 41 is larger than len 40");
    check(&|s| s.end = 0x7fff_ffff, "implausibly large");
}

#[test]
fn layout_errors() {
    let spec = Spec::received(echo_frame());
    let mut l = layout();
    l.mark = FieldLoc::default();
    let e = read_skb(SKB, &l, &mut spec.build(&layout())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sk_buff layout: member `mark` is missing from the layout (size 0)"
    );
    let mut l = layout();
    l.protocol = loc(231, 2);
    let e = read_skb(SKB, &l, &mut spec.build(&layout())).unwrap_err();
    assert!(
        matches!(
            e,
            SkbError::Layout {
                field: "protocol",
                ..
            }
        ),
        "{e}"
    );
    let mut l = layout();
    l.pkt_type.bit_size = Some(7);
    let e = read_skb(SKB, &l, &mut spec.build(&layout())).unwrap_err();
    assert!(e.to_string().contains("bitfield of 7 bits at bit 2"), "{e}");
    let mut l = layout();
    l.size = 0;
    assert!(matches!(
        read_skb(SKB, &l, &mut spec.build(&layout())),
        Err(SkbError::Layout { .. })
    ));
}

#[test]
fn short_read_is_an_error() {
    struct Short;
    impl MemoryReader for Short {
        type Error = Fault;
        fn read(&mut self, _addr: u64, len: usize) -> Result<Vec<u8>, Fault> {
            Ok(vec![0; len / 2])
        }
    }
    let e = read_skb(SKB, &layout(), &mut Short).unwrap_err();
    assert!(
        matches!(
            e,
            SkbError::ShortRead {
                got: 116,
                len: 232,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn garbage_skbs_never_panic() {
    let l = layout();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut spec = Spec::received(echo_frame());
        spec.mac = (next() % 400) as u16;
        spec.network = if next() % 4 == 0 {
            u16::MAX
        } else {
            (next() % 400) as u16
        };
        spec.data = next() % 200;
        spec.tail = (next() % 320) as u32;
        spec.len = (next() % 200) as u32;
        spec.data_len = (next() % 50) as u32;
        spec.protocol = [0x0800, 0x86dd, 0x0806, 0, 0x1234][(next() % 5) as usize];
        let mut mem = spec.build(&l);
        // Scribble on the frame too.
        if let Some(buf) = mem.regions.get_mut(&HEAD) {
            for _ in 0..4 {
                let i = (next() % buf.len() as u64) as usize;
                buf[i] = next() as u8;
            }
        }
        if let Ok(v) = read_skb(SKB, &l, &mut mem) {
            serde_json::to_string(&v).unwrap();
            let _ = v.render(true);
            let mut sink = PcapSink::new(Vec::new()).unwrap();
            sink.write_skb(Duration::ZERO, &v).unwrap();
        }
    }
}

// ---- pcap ----

fn read_pcap(bytes: &[u8]) -> (pcap_file::DataLink, Vec<(Vec<u8>, u32)>) {
    let mut r = pcap_file::pcap::PcapReader::new(bytes).unwrap();
    let link = r.header().datalink;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        out.push((p.data.into_owned(), p.orig_len));
    }
    (link, out)
}

#[test]
fn pcap_has_ethernet_frames_real_or_synthesised() {
    let l = layout();
    let rx = read_skb(SKB, &l, &mut Spec::received(echo_frame()).build(&l)).unwrap();
    let tx = read_skb(
        SKB,
        &l,
        &mut Spec::sent(echo_frame()[14..].to_vec()).build(&l),
    )
    .unwrap();

    let mut sink = PcapSink::new(Vec::new()).unwrap();
    sink.write_skb(Duration::new(1_700_000_000, 5), &rx)
        .unwrap();
    sink.write_skb(Duration::new(1_700_000_001, 0), &tx)
        .unwrap();
    sink.write_packet(Duration::new(1_700_000_002, 0), &echo_frame())
        .unwrap();
    assert_eq!(sink.packets(), 3);
    let bytes = sink.finish().unwrap();

    let (link, pkts) = read_pcap(&bytes);
    assert_eq!(link, pcap_file::DataLink::ETHERNET);
    assert_eq!(pkts[0], (echo_frame(), 54));
    let mut synth = vec![0u8; 12];
    synth.extend([0x08, 0x00]);
    synth.extend(&echo_frame()[14..]);
    assert_eq!(pkts[1], (synth, 54));
    assert_eq!(pkts[2].0, echo_frame());
}

#[test]
fn pcap_orig_len_counts_nonlinear_bytes() {
    let mut spec = Spec::received(echo_frame()[..42].to_vec());
    (spec.len, spec.data_len) = (40, 12);
    let l = layout();
    let v = read_skb(SKB, &l, &mut spec.build(&l)).unwrap();
    let mut sink = PcapSink::new(Vec::new()).unwrap();
    sink.write_skb(Duration::ZERO, &v).unwrap();
    let (_, pkts) = read_pcap(&sink.finish().unwrap());
    assert_eq!((pkts[0].0.len(), pkts[0].1), (42, 54));
}

#[test]
fn pcap_disk_full_is_typed() {
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        assert!(matches!(
            PcapSink::new(full),
            Err(PcapSinkError::DiskFull(_))
        ));
    }
    /// Takes the 24-byte file header, then reports ENOSPC.
    struct FillsUp(usize);
    impl Write for FillsUp {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 + buf.len() > 24 {
                return Err(io::Error::from_raw_os_error(libc_enospc()));
            }
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut sink = PcapSink::new(FillsUp(0)).unwrap();
    let e = sink
        .write_packet(Duration::ZERO, &echo_frame())
        .unwrap_err();
    assert!(matches!(e, PcapSinkError::DiskFull(_)), "{e:?}");
    assert_eq!(e.to_string(), "disk full while writing the pcap file");
    // Timestamps past 2106 do not fit the format: a typed error, not a panic.
    let mut sink = PcapSink::new(Vec::new()).unwrap();
    let e = sink
        .write_packet(Duration::from_secs(1 << 33), &[0; 14])
        .unwrap_err();
    assert!(matches!(e, PcapSinkError::Invalid(_)), "{e:?}");
}

/// ENOSPC on Linux, without a libc dependency in the test.
fn libc_enospc() -> i32 {
    28
}
