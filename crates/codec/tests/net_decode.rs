//! The packet decoders on byte fixtures: real frames captured on loopback and synthetic ones,
//! each checked against tcpdump's reading (kept as comments in the `.hex` files), against golden
//! JSON and text renderings, and mutated into every malformed case the decoders must survive.
//!
//! Re-bless the golden files with `UMLDBG_BLESS=1 cargo test -p umldbg-codec --test net_decode`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use umldbg_codec::net::warning::{Layer, Warning};
use umldbg_codec::net::{self, Packet, arp, icmp, ipv4, tcp, udp};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/net")
}

/// Bytes of `fixtures/net/NAME.hex`: whitespace-separated hex, `#` starts a comment line.
fn load(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("{name}: {b:?}: {e}")))
        .collect()
}

fn all_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixtures/net")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".hex").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn eth(name: &str) -> Packet {
    net::decode_ethernet(&load(name))
}

/// Compares `actual` with `fixtures/net/FILE`, or rewrites the file under `UMLDBG_BLESS=1`.
fn golden(file: &str, actual: &str) -> Result<(), String> {
    let path = fixture_dir().join(file);
    if std::env::var_os("UMLDBG_BLESS").is_some() {
        std::fs::write(&path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (bless with UMLDBG_BLESS=1)", path.display()))?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{file} differs:\n--- expected\n{expected}\n--- actual\n{actual}"
        ))
    }
}

#[test]
fn golden_json_and_text_for_every_fixture() {
    let names = all_fixtures();
    assert!(names.len() >= 16, "fixtures missing: {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let pkt = eth(name);
        let json = serde_json::to_string_pretty(&pkt).expect("serialises") + "\n";
        failures.extend(golden(&format!("{name}.json"), &json).err());
        failures.extend(golden(&format!("{name}.txt"), &pkt.to_string()).err());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn real_fixtures_decode_without_warnings() {
    for name in all_fixtures() {
        let pkt = eth(&name);
        assert!(
            !pkt.is_partial() || name == "syn_ipv4_later_fragment",
            "{name}: {:?}",
            pkt.all_warnings()
        );
    }
}

// ---- Ethernet, IPv4, ICMP: compared with tcpdump's reading of the same bytes ----

#[test]
fn loopback_ping_request_matches_tcpdump() {
    // tcpdump: ttl 64, id 20362, flags [DF], proto ICMP (1), length 52;
    //          ICMP echo request, id 32585, seq 1, length 32
    let bytes = load("lo_ping_request");
    let pkt = net::decode_ethernet(&bytes);
    let e = pkt.eth.as_ref().unwrap();
    assert_eq!(e.src.to_string(), "00:00:00:00:00:00");
    assert_eq!((e.ether_type, e.type_name), (0x0800, Some("IPv4")));
    let ip = pkt.ipv4.as_ref().unwrap();
    assert_eq!((ip.src, ip.dst), (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
    assert_eq!(
        (ip.ttl, ip.id, ip.df, ip.mf, ip.frag_offset),
        (64, 20362, true, false, 0)
    );
    assert_eq!((ip.protocol, ip.tot_len, ip.ihl), (1, 52, 5));
    assert_eq!(ip.checksum_ok, Some(true));
    let m = pkt.icmp.as_ref().unwrap();
    assert_eq!(
        (m.icmp_type, m.code, m.type_name),
        (8, 0, Some("echo-request"))
    );
    assert_eq!(
        (m.id, m.seq, m.checksum_ok),
        (Some(32585), Some(1), Some(true))
    );
    // ping -s 24: 32 bytes of ICMP, so 24 of data; its -p pattern "umldbg" fills the tail.
    let payload = pkt.payload_of(&bytes);
    assert_eq!(payload.len(), 24);
    assert!(payload.ends_with(b"umldbg"), "{payload:02x?}");
}

#[test]
fn sendpkt_icmp_echo_matches_what_was_sent() {
    // sendpkt.py icmp --id 77 --seq 1 --payload text:hello-umldbg --ttl 63 --ip-id 4321 --df
    let bytes = load("lo_icmp_echo_id77");
    let pkt = net::decode_ethernet(&bytes);
    let ip = pkt.ipv4.as_ref().unwrap();
    assert_eq!(
        (ip.ttl, ip.id, ip.df, ip.tot_len, ip.checksum),
        (63, 4321, true, 40, 11506)
    );
    assert_eq!(ip.checksum_ok, Some(true));
    let m = pkt.icmp.as_ref().unwrap();
    assert_eq!((m.id, m.seq, m.checksum), (Some(77), Some(1), 28537));
    assert_eq!(pkt.payload_of(&bytes), b"hello-umldbg");
    let reply = eth("lo_icmp_echo_reply_id77");
    let m = reply.icmp.as_ref().unwrap();
    assert_eq!(
        (m.type_name, m.id, m.seq),
        (Some("echo-reply"), Some(77), Some(1))
    );
    assert_eq!(reply.ipv4.as_ref().unwrap().id, 20375);
}

#[test]
fn icmp_port_unreachable_quotes_the_udp_datagram() {
    // tcpdump: (tos 0xc0, ttl 64, id 20400 ... length 61) ICMP 127.0.0.1 udp port 40001
    // unreachable, quoting (tos 0x0, ttl 17, id 555, proto UDP (17), length 33) 40000 > 40001
    let pkt = eth("lo_icmp_port_unreachable");
    let ip = pkt.ipv4.as_ref().unwrap();
    assert_eq!((ip.dscp, ip.ecn, ip.id, ip.tot_len), (48, 0, 20400, 61));
    let m = pkt.icmp.as_ref().unwrap();
    assert_eq!((m.icmp_type, m.code), (3, 3));
    assert_eq!(
        (m.type_name, m.code_name),
        (Some("destination-unreachable"), Some("port-unreachable"))
    );
    assert_eq!((m.id, m.seq, m.checksum_ok), (None, None, Some(true)));
    let q = m.original.as_ref().unwrap();
    assert_eq!(
        (q.ipv4.ttl, q.ipv4.id, q.ipv4.protocol, q.ipv4.tot_len),
        (17, 555, 17, 33)
    );
    assert_eq!((q.sport, q.dport), (Some(40000), Some(40001)));
    assert!(q.ipv4.warnings.is_empty(), "{:?}", q.ipv4.warnings);
    assert_eq!(
        pkt.to_string().lines().nth(2),
        Some(
            "ICMP destination unreachable (port unreachable); quoted IPv4 127.0.0.1 > 127.0.0.1 \
             id 555 ttl 17 proto UDP 40000 > 40001"
        )
    );
}

#[test]
fn udp_matches_tcpdump() {
    // tcpdump: ttl 17, id 555, proto UDP (17), length 33; 40000 > 40001 UDP, length 5
    let bytes = load("lo_udp_closed_port");
    let pkt = net::decode_ethernet(&bytes);
    let u = pkt.udp.as_ref().unwrap();
    assert_eq!(
        (u.sport, u.dport, u.len, u.checksum),
        (40000, 40001, 13, 10930)
    );
    assert_eq!(pkt.payload_of(&bytes), [0xde, 0xad, 0xbe, 0xef, 0x01]);
}

#[test]
fn tcp_syn_and_rst_match_tcpdump() {
    // tcpdump: id 999 ... 40002 > 40003: Flags [S], cksum 0xa0e9, seq 123456789, win 1024
    let syn = eth("lo_tcp_syn");
    let t = syn.tcp.as_ref().unwrap();
    assert_eq!(
        (t.sport, t.dport, t.seq, t.ack),
        (40002, 40003, 123456789, 0)
    );
    assert_eq!(
        (t.flags.clone(), t.window, t.data_offset, t.checksum),
        (vec!["SYN"], 1024, 5, 0xa0e9)
    );
    // tcpdump: id 0, flags [DF] ... 40003 > 40002: Flags [R.], seq 0, ack 123456790, win 0
    let rst = eth("lo_tcp_rst_ack");
    let t = rst.tcp.as_ref().unwrap();
    assert_eq!(t.flags, ["RST", "ACK"]);
    assert_eq!((t.seq, t.ack, t.window), (0, 123456790, 0));
    let ip = rst.ipv4.as_ref().unwrap();
    assert_eq!((ip.id, ip.df), (0, true));
}

#[test]
fn tcp_flag_names_in_bit_order() {
    assert_eq!(
        tcp::flag_names(0xff),
        ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"]
    );
    assert_eq!(tcp::flag_names(0x18), ["PSH", "ACK"]);
    assert!(tcp::flag_names(0).is_empty());
}

// ---- ARP, VLAN, fragments, IPv6 (synthetic, read by tcpdump too) ----

#[test]
fn arp_request_and_reply() {
    let req = eth("syn_arp_request");
    assert!(req.eth.as_ref().unwrap().dst.is_broadcast());
    let a = req.arp.as_ref().unwrap();
    assert_eq!((a.oper, a.oper_name), (1, Some("request")));
    assert_eq!(a.spa, Some(Ipv4Addr::new(192, 168, 10, 2)));
    assert_eq!(a.tpa, Some(Ipv4Addr::new(192, 168, 10, 1)));
    assert_eq!(
        req.to_string().lines().nth(1),
        Some("ARP request who-has 192.168.10.1 tell 192.168.10.2")
    );
    // The 18 bytes of Ethernet padding are not payload.
    assert!(req.payload.is_empty());
    let rep = eth("syn_arp_reply");
    let a = rep.arp.as_ref().unwrap();
    assert_eq!(a.sha.unwrap().to_string(), "02:00:00:00:00:0b");
    assert_eq!(
        rep.to_string().lines().nth(1),
        Some("ARP reply 192.168.10.1 is-at 02:00:00:00:00:0b")
    );
}

#[test]
fn vlan_tag_then_ipv4() {
    // tcpdump: vlan 10, p 5, ethertype IPv4, ttl 5, id 42 ... echo request, id 4660, seq 7
    let pkt = eth("syn_vlan_icmp_echo");
    let e = pkt.eth.as_ref().unwrap();
    let v = e.vlan.unwrap();
    assert_eq!(
        (v.tpid, v.id, v.pcp, v.dei, e.ether_type),
        (0x8100, 10, 5, false, 0x0800)
    );
    let ip = pkt.ipv4.as_ref().unwrap();
    assert_eq!((ip.ttl, ip.id, ip.checksum_ok), (5, 42, Some(true)));
    assert_eq!(pkt.icmp.as_ref().unwrap().id, Some(4660));
}

#[test]
fn later_ipv4_fragment_has_no_transport() {
    // tcpdump: id 777, offset 1480, flags [none], proto UDP (17): ip-proto-17
    let pkt = eth("syn_ipv4_later_fragment");
    let ip = pkt.ipv4.as_ref().unwrap();
    assert_eq!((ip.frag_offset, ip.mf, ip.id), (1480, false, 777));
    assert!(pkt.udp.is_none());
    assert_eq!(
        ip.warnings,
        [Warning::LaterFragment {
            layer: Layer::Ipv4,
            offset: 1480
        }]
    );
    assert_eq!(pkt.payload.len(), 24);
}

#[test]
fn ipv6_icmpv6_echo() {
    // tcpdump: flowlabel 0x12345, hlim 63, payload length 13, icmp6 sum ok, id 16962, seq 3
    let pkt = eth("syn_ipv6_icmpv6_echo");
    let ip = pkt.ipv6.as_ref().unwrap();
    assert_eq!(ip.src, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(
        (ip.hop_limit, ip.next_header, ip.payload_len, ip.flow_label),
        (63, 58, 13, 0x12345)
    );
    let m = pkt.icmpv6.as_ref().unwrap();
    assert_eq!(
        (m.type_name, m.id, m.seq, m.checksum_ok),
        (Some("echo-request"), Some(16962), Some(3), Some(true))
    );
}

#[test]
fn ipv6_hop_by_hop_then_udp() {
    let bytes = load("syn_ipv6_hbh_udp");
    let pkt = net::decode_ethernet(&bytes);
    let ip = pkt.ipv6.as_ref().unwrap();
    assert_eq!(
        (ip.next_header, ip.upper_protocol, ip.hop_limit),
        (0, Some(17), 1)
    );
    assert_eq!(ip.ext_headers, ["hop-by-hop"]);
    let u = pkt.udp.as_ref().unwrap();
    assert_eq!((u.sport, u.dport, u.len), (5353, 40005, 11));
    assert_eq!(pkt.payload_of(&bytes), b"hop");
}

#[test]
fn icmpv6_errors_and_neighbour_discovery() {
    let pkt = eth("syn_icmpv6_port_unreachable");
    let m = pkt.icmpv6.as_ref().unwrap();
    assert_eq!(
        (m.type_name, m.code_name),
        (Some("destination-unreachable"), Some("port-unreachable"))
    );
    assert_eq!(m.checksum_ok, Some(true));
    let q = m.original.as_ref().unwrap();
    assert_eq!(q.ipv6.dst, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!((q.sport, q.dport), (Some(40000), Some(40005)));
    let ns = eth("syn_icmpv6_neighbour_solicitation");
    let m = ns.icmpv6.as_ref().unwrap();
    assert_eq!(m.type_name, Some("neighbour-solicitation"));
    assert_eq!(m.target, Some("2001:db8::2".parse().unwrap()));
    assert_eq!(m.checksum_ok, Some(true));
}

// ---- JSON shape ----

#[test]
fn json_field_names() {
    let v = serde_json::to_value(eth("lo_icmp_echo_id77")).unwrap();
    assert_eq!(v["eth"]["type"], 2048);
    assert_eq!(v["eth"]["src"], "00:00:00:00:00:00");
    assert_eq!(v["ipv4"]["src"], "127.0.0.1");
    assert_eq!(v["ipv4"]["checksum_ok"], true);
    assert_eq!(v["ipv4"]["protocol"], 1);
    assert_eq!(v["icmp"]["type"], 8);
    assert_eq!(v["icmp"]["type_name"], "echo-request");
    assert_eq!(v["icmp"]["seq"], 1);
    // No warnings: no key.
    assert!(v.get("warnings").is_none() && v["ipv4"].get("warnings").is_none());
    let v = serde_json::to_value(eth("lo_tcp_rst_ack")).unwrap();
    assert_eq!(v["tcp"]["flags"], serde_json::json!(["RST", "ACK"]));
}

// ---- Malformed input: partial decodes with warnings, never a panic ----

/// The echo request of `lo_icmp_echo_id77` from its IPv4 header on.
fn ip_echo() -> Vec<u8> {
    load("lo_icmp_echo_id77")[14..].to_vec()
}

/// Rewrites the IPv4 header checksum after a mutation, so only the mutation is tested.
fn fix_ip_checksum(ip: &mut [u8]) {
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    ip[10] = 0;
    ip[11] = 0;
    let sum = net::wire::internet_checksum(&[&ip[..hlen.min(ip.len())]]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn bad_ihl_below_five() {
    let mut ip = ip_echo();
    ip[0] = 0x44;
    let pkt = net::decode_network(0x0800, &ip);
    let h = pkt.ipv4.as_ref().expect("fixed fields still decoded");
    assert_eq!((h.ihl, h.ttl, h.id), (4, 63, 4321));
    assert_eq!(h.warnings, [Warning::BadIhl { ihl: 4 }]);
    assert_eq!(h.checksum_ok, None);
    assert!(pkt.icmp.is_none());
    assert!(
        pkt.to_string().contains("warning: ipv4: bad IHL 4"),
        "{pkt}"
    );
}

#[test]
fn ihl_past_the_buffer() {
    let mut ip = ip_echo();
    ip[0] = 0x4f;
    let pkt = net::decode_network(0x0800, &ip);
    let h = pkt.ipv4.as_ref().unwrap();
    assert_eq!(
        h.warnings,
        [Warning::Truncated {
            layer: Layer::Ipv4,
            need: 60,
            have: 40
        }]
    );
    assert!(pkt.icmp.is_none());
}

#[test]
fn tot_len_past_the_buffer() {
    let mut ip = ip_echo();
    ip[2..4].copy_from_slice(&200u16.to_be_bytes());
    fix_ip_checksum(&mut ip);
    let pkt = net::decode_network(0x0800, &ip);
    let h = pkt.ipv4.as_ref().unwrap();
    assert_eq!(h.checksum_ok, Some(true));
    assert_eq!(
        h.warnings,
        [Warning::LengthPastBuffer {
            layer: Layer::Ipv4,
            claimed: 200,
            have: 40
        }]
    );
    // ICMP is decoded from what is there, its checksum unverifiable.
    let m = pkt.icmp.as_ref().unwrap();
    assert_eq!((m.id, m.checksum_ok), (Some(77), None));
    let json = serde_json::to_value(&pkt).unwrap();
    assert_eq!(
        json["ipv4"]["warnings"][0],
        "ipv4: length field says 200 bytes but only 40 are present; decoded what is there"
    );
}

#[test]
fn tot_len_shorter_than_header_and_zero() {
    for (tot, expected) in [
        (
            12u16,
            Warning::LengthTooShort {
                layer: Layer::Ipv4,
                claimed: 12,
                min: 20,
            },
        ),
        (
            0,
            Warning::LengthZero {
                layer: Layer::Ipv4,
                have: 40,
            },
        ),
    ] {
        let mut ip = ip_echo();
        ip[2..4].copy_from_slice(&tot.to_be_bytes());
        fix_ip_checksum(&mut ip);
        let pkt = net::decode_network(0x0800, &ip);
        assert_eq!(pkt.ipv4.as_ref().unwrap().warnings, [expected]);
        assert_eq!(pkt.icmp.as_ref().unwrap().seq, Some(1));
    }
}

#[test]
fn tot_len_shorter_than_buffer_drops_link_padding() {
    // A 60-byte minimum Ethernet frame pads a 40-byte IP packet; the padding is not payload.
    let mut frame = load("lo_icmp_echo_id77");
    frame.extend([0u8; 6]);
    let pkt = net::decode_ethernet(&frame);
    assert_eq!(pkt.payload_of(&frame), b"hello-umldbg");
    assert_eq!(pkt.icmp.as_ref().unwrap().checksum_ok, Some(true));
}

#[test]
fn wrong_header_checksum_is_reported_not_fatal() {
    let mut ip = ip_echo();
    ip[8] = 62; // ttl changed, checksum left alone
    let pkt = net::decode_network(0x0800, &ip);
    let h = pkt.ipv4.as_ref().unwrap();
    assert_eq!((h.ttl, h.checksum_ok), (62, Some(false)));
    assert!(pkt.to_string().contains("csum BAD 0x2cf2"), "{pkt}");
    assert!(pkt.icmp.is_some());
}

#[test]
fn wrong_version_for_the_ethertype() {
    let v6 = load("syn_ipv6_icmpv6_echo")[14..].to_vec();
    let pkt = net::decode_network(0x0800, &v6);
    assert!(pkt.ipv4.is_none());
    assert_eq!(
        pkt.warnings,
        [Warning::WrongVersion {
            layer: Layer::Ipv4,
            version: 6,
            expected: 4
        }]
    );
    // Guessing from the nibble finds it.
    assert!(net::decode_ip(&v6).icmpv6.is_some());
    let pkt = net::decode_ip(&[0x12, 0x34]);
    assert!(pkt.ipv4.is_none() && pkt.ipv6.is_none() && pkt.is_partial());
}

#[test]
fn truncated_headers_at_each_layer() {
    let frame = load("lo_tcp_syn");
    let cases: [(usize, Warning); 3] = [
        (
            10,
            Warning::Truncated {
                layer: Layer::Ethernet,
                need: 14,
                have: 10,
            },
        ),
        (
            30,
            Warning::Truncated {
                layer: Layer::Ipv4,
                need: 20,
                have: 16,
            },
        ),
        (
            44,
            Warning::Truncated {
                layer: Layer::Tcp,
                need: 20,
                have: 10,
            },
        ),
    ];
    for (len, w) in cases {
        let pkt = net::decode_ethernet(&frame[..len]);
        assert!(
            pkt.all_warnings().contains(&&w),
            "{len}: {:?}",
            pkt.all_warnings()
        );
    }
    // Cut inside the TCP header: IPv4 says 40 bytes, 30 are there; TCP not decoded.
    let pkt = net::decode_ethernet(&frame[..44]);
    assert!(pkt.ipv4.is_some() && pkt.tcp.is_none());
}

#[test]
fn tcp_bad_data_offset() {
    let mut t = load("lo_tcp_syn")[34..].to_vec();
    t[12] = 3 << 4;
    let h = tcp::decode(&t).unwrap();
    assert_eq!(h.warnings, [Warning::BadDataOffset { doff: 3 }]);
    assert_eq!(h.payload_start, None);
    t[12] = 15 << 4;
    let h = tcp::decode(&t).unwrap();
    assert_eq!(
        h.warnings,
        [Warning::Truncated {
            layer: Layer::Tcp,
            need: 60,
            have: 20
        }]
    );
    assert_eq!(h.seq, 123456789);
}

#[test]
fn udp_length_field_out_of_range() {
    let u = load("lo_udp_closed_port")[34..].to_vec();
    let mut short = u.clone();
    short[4..6].copy_from_slice(&4u16.to_be_bytes());
    let h = udp::decode(&short).unwrap();
    assert_eq!(
        h.warnings,
        [Warning::LengthTooShort {
            layer: Layer::Udp,
            claimed: 4,
            min: 8
        }]
    );
    assert_eq!(h.payload, 8..13);
    let mut long = u;
    long[4..6].copy_from_slice(&100u16.to_be_bytes());
    let h = udp::decode(&long).unwrap();
    assert_eq!(
        h.warnings,
        [Warning::LengthPastBuffer {
            layer: Layer::Udp,
            claimed: 100,
            have: 13
        }]
    );
}

#[test]
fn icmp_cut_short() {
    let m = load("lo_icmp_echo_id77")[34..40].to_vec();
    let h = icmp::decode(&m).unwrap();
    assert_eq!((h.icmp_type, h.id), (8, None));
    assert_eq!(
        h.warnings,
        [Warning::Truncated {
            layer: Layer::Icmp,
            need: 8,
            have: 6
        }]
    );
    assert!(icmp::decode(&m[..3]).is_err());
    // An error message whose quote is cut short keeps its type and says why there is no quote.
    let unreach = load("lo_icmp_port_unreachable")[34..50].to_vec();
    let h = icmp::decode(&unreach).unwrap();
    assert_eq!(h.code_name, Some("port-unreachable"));
    assert!(h.original.is_none());
    assert_eq!(
        h.warnings,
        [Warning::Truncated {
            layer: Layer::Ipv4,
            need: 20,
            have: 8
        }]
    );
}

#[test]
fn ipv6_payload_len_and_ext_header_past_buffer() {
    let v6 = load("syn_ipv6_hbh_udp")[14..].to_vec();
    let mut long = v6.clone();
    long[4..6].copy_from_slice(&500u16.to_be_bytes());
    let pkt = net::decode_network(0x86dd, &long);
    let ip = pkt.ipv6.as_ref().unwrap();
    assert_eq!(
        ip.warnings,
        [Warning::LengthPastBuffer {
            layer: Layer::Ipv6,
            claimed: 540,
            have: 59
        }]
    );
    assert!(pkt.udp.is_some());
    // Hop-by-hop header claiming 256 bytes.
    let mut ext = v6;
    ext[41] = 31;
    let pkt = net::decode_network(0x86dd, &ext);
    let ip = pkt.ipv6.as_ref().unwrap();
    assert_eq!(
        ip.warnings,
        [Warning::Truncated {
            layer: Layer::Ipv6,
            need: 296,
            have: 59
        }]
    );
    assert!(pkt.udp.is_none() && ip.upper_protocol.is_none());
}

#[test]
fn vlan_tag_cut_short_and_arp_of_other_types() {
    let frame = load("syn_vlan_icmp_echo");
    let pkt = net::decode_ethernet(&frame[..16]);
    let e = pkt.eth.as_ref().unwrap();
    assert_eq!((e.ether_type, e.vlan), (0x8100, None));
    assert_eq!(
        e.warnings,
        [Warning::Truncated {
            layer: Layer::Vlan,
            need: 18,
            have: 16
        }]
    );
    assert!(pkt.ipv4.is_none());

    let mut a = load("syn_arp_reply")[14..].to_vec();
    a[1] = 6; // IEEE 802 hardware type
    let h = arp::decode(&a).unwrap();
    assert_eq!((h.htype, h.sha), (6, None));
    assert!(matches!(
        h.warnings[..],
        [Warning::Unsupported {
            layer: Layer::Arp,
            ..
        }]
    ));
    // Cut after the sender's addresses.
    let h = arp::decode(&load("syn_arp_reply")[14..32]).unwrap();
    assert_eq!(
        (h.spa, h.tha, h.tpa),
        (Some(Ipv4Addr::new(192, 168, 10, 1)), None, None)
    );
    assert_eq!(
        h.warnings,
        [Warning::Truncated {
            layer: Layer::Arp,
            need: 28,
            have: 18
        }]
    );
}

#[test]
fn every_prefix_of_every_fixture_decodes() {
    for name in all_fixtures() {
        let frame = load(&name);
        for len in 0..=frame.len() {
            let pkt = net::decode_ethernet(&frame[..len]);
            assert!(
                pkt.payload.end <= len,
                "{name}[..{len}]: payload {:?}",
                pkt.payload
            );
            serde_json::to_string(&pkt).unwrap();
            let _ = pkt.to_string();
            let _ = net::decode_ip(frame.get(14..len).unwrap_or_default());
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    // xorshift: deterministic, no dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ethertypes = [0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8];
    for i in 0..20_000 {
        let len = (next() % 140) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 14 {
            let t = ethertypes[i % ethertypes.len()];
            b[12..14].copy_from_slice(&t.to_be_bytes());
        }
        if len >= 15 && i % 2 == 0 {
            // Valid-looking version and IHL, so the deeper layers are reached too.
            b[14] = if i % 4 == 0 { 0x45 } else { 0x60 };
        }
        for pkt in [
            net::decode_ethernet(&b),
            net::decode_ip(b.get(14..).unwrap_or_default()),
        ] {
            assert!(pkt.payload.start <= pkt.payload.end && pkt.payload.end <= b.len());
            serde_json::to_string(&pkt).unwrap();
            let _ = pkt.to_string();
        }
    }
}

#[test]
fn ipv4_decoder_alone() {
    let ip = ip_echo();
    let h = ipv4::decode(&ip).unwrap();
    assert_eq!(h.payload, Some(20..40));
    assert!(h.payload_complete);
    assert_eq!(
        h.to_string(),
        "IPv4 127.0.0.1 > 127.0.0.1 ttl 63 id 4321 DF len 40 proto ICMP csum ok"
    );
    assert!(ipv4::decode(&ip[..19]).is_err());
}

#[test]
fn hex_dump_is_bounded() {
    let frame = load("lo_ping_request");
    let d = net::hexdump(&frame, 32);
    assert_eq!(d.lines.len(), 2);
    assert_eq!((d.shown_len, d.total_len), (32, 66));
    assert_eq!(
        d.lines[0].hex,
        "00 00 00 00 00 00 00 00 00 00 00 00 08 00 45 00"
    );
    assert_eq!(d.lines[0].ascii, "..............E.");
    let text = d.to_string();
    assert!(
        text.starts_with("0000  00 00 00 00 00 00 00 00  00 00 00 00 08 00 45 00  ..."),
        "{text}"
    );
    assert!(text.ends_with("... 34 more bytes\n"));
    assert_eq!(net::hex_string(&frame[14..], 4), "45000034");
}
