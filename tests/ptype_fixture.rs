//! Layouts from fixtures/kmod/layouts.elf (a small C file with the shapes that matter: anonymous
//! unions, a struct group, bitfields, flexible and multi-dimensional arrays, function pointers,
//! typedefs, an empty struct) against gdb's `ptype /o`, plus the error paths of the builder.
//! Needs no kernel.

mod kmod_support;

use std::path::PathBuf;

use kmod_support::{gdb, parse_ptype_o, tempdir};
use umldbg::dwarf::{self, DwarfError, LayoutStore};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/kmod")
        .join(name)
}

const STRUCTS: [&str; 5] = ["sk_buff", "iphdr", "net_device", "s", "inner"];

#[test]
fn fixture_layouts_match_gdb_ptype_o() {
    let elf = fixture("layouts.elf");
    let bytes = std::fs::read(&elf).unwrap();
    let layouts = dwarf::build_layouts(&bytes, &STRUCTS).unwrap();
    let commands: Vec<String> = STRUCTS
        .iter()
        .map(|s| format!("ptype /o struct {s}"))
        .collect();
    let parsed = parse_ptype_o(&gdb(&elf, &commands));
    assert_eq!(parsed.len(), STRUCTS.len());
    for (name, size, members) in &parsed {
        kmod_support::assert_layout_matches(&layouts[name], *size, members);
    }
}

#[test]
fn member_paths_go_through_anonymous_members_only() {
    let bytes = std::fs::read(fixture("layouts.elf")).unwrap();
    let skb = dwarf::build_layouts(&bytes, &["sk_buff"])
        .unwrap()
        .remove("sk_buff")
        .unwrap();
    // `protocol` is in an anonymous struct in an anonymous union; `headers.protocol` is the
    // same bytes through the named struct of the group.
    let p = skb.member("protocol").unwrap();
    let hp = skb.member("headers.protocol").unwrap();
    assert_eq!((p.offset, p.size), (hp.offset, hp.size));
    assert_eq!(skb.member("dev").unwrap().offset, 16);
    assert_eq!(skb.member("list.first").unwrap().offset, 0);
    let pkt = skb.member("pkt_type").unwrap();
    assert_eq!((pkt.bit_offset, pkt.bit_size), (Some(0), Some(3)));
    let ip_summed = skb.member("ip_summed").unwrap();
    assert_eq!(
        (ip_summed.offset, ip_summed.bit_offset, ip_summed.bit_size),
        (pkt.offset, Some(4), Some(2))
    );
    assert_eq!(
        skb.member("destructor").unwrap().type_name,
        "void (*)(struct sk_buff *, int, ...)"
    );
    assert_eq!(
        skb.member("names").unwrap().type_name,
        "const char *const [2][3]"
    );
    assert_eq!(skb.member("data_area").unwrap().size, 0);
    assert_eq!(skb.member("users").unwrap().type_name, "atomic_t");
    assert!(
        skb.member("users.counter").is_none(),
        "typedef'd structs are not expanded, as in gdb"
    );
    let hole_after_marker = skb.holes.iter().any(|h| !h.padding);
    assert!(hole_after_marker, "the bitfield byte is followed by a hole");
}

#[test]
fn iphdr_nibbles_are_little_endian_bitfields() {
    let bytes = std::fs::read(fixture("layouts.elf")).unwrap();
    let ip = dwarf::build_layouts(&bytes, &["iphdr"])
        .unwrap()
        .remove("iphdr")
        .unwrap();
    let ihl = ip.member("ihl").unwrap();
    let version = ip.member("version").unwrap();
    assert_eq!(
        (ihl.offset, ihl.bit_offset, ihl.bit_size),
        (0, Some(0), Some(4))
    );
    assert_eq!(
        (version.offset, version.bit_offset, version.bit_size),
        (0, Some(4), Some(4))
    );
    assert_eq!(ip.size, 20);
}

#[test]
fn display_looks_like_gdb_ptype_o() {
    let elf = fixture("layouts.elf");
    let bytes = std::fs::read(&elf).unwrap();
    let s = dwarf::build_layouts(&bytes, &["s"])
        .unwrap()
        .remove("s")
        .unwrap();
    let ours = s.to_string();
    let theirs = gdb(&elf, &["ptype /o struct s".to_owned()]);
    let norm = |t: &str| {
        t.lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(norm(&ours), norm(&theirs));
}

#[test]
fn typedef_of_anonymous_struct() {
    let bytes = std::fs::read(fixture("layouts.elf")).unwrap();
    let a = dwarf::build_layouts(&bytes, &["atomic_t"])
        .unwrap()
        .remove("atomic_t")
        .unwrap();
    assert_eq!(a.name, "atomic_t");
    assert_eq!(
        a.member("counter").map(|m| (m.offset, m.size)),
        Some((0, 4))
    );
}

#[test]
fn json_round_trip() {
    let bytes = std::fs::read(fixture("layouts.elf")).unwrap();
    let skb = dwarf::build_layouts(&bytes, &["sk_buff"])
        .unwrap()
        .remove("sk_buff")
        .unwrap();
    let text = serde_json::to_string(&skb).unwrap();
    let back: dwarf::StructLayout = serde_json::from_str(&text).unwrap();
    assert_eq!(back, skb);
}

#[test]
fn fixture_skb_layout_fills_every_field() {
    let bytes = std::fs::read(fixture("layouts.elf")).unwrap();
    let net = dwarf::build_net_layouts(&bytes).unwrap();
    assert!(
        net.absent.contains(&"ipv6hdr".to_owned()),
        "the fixture has no ipv6hdr"
    );
    let skb = dwarf::skb_layout(&net).unwrap();
    assert_eq!(skb.dev_name.offset, 0);
    assert_eq!(skb.dev_name.size, 16);
    assert_eq!(skb.pkt_type.bit_size, Some(3));
    assert_eq!(skb.head.size, 8);
}

#[test]
fn unknown_name_suggests_near_ones() {
    let bytes = std::fs::read(fixture("layouts.elf")).unwrap();
    match dwarf::build_layouts(&bytes, &["ipdhr"]).unwrap_err() {
        DwarfError::NotFound { suggestions, .. } => {
            assert_eq!(suggestions.first().map(String::as_str), Some("iphdr"))
        }
        e => panic!("expected NotFound, got {e}"),
    }
}

#[test]
fn bad_images_give_typed_errors() {
    type IsKind = fn(&DwarfError) -> bool;
    let cases: [(&str, IsKind); 4] = [
        ("notelf.txt", |e| matches!(e, DwarfError::Elf(_))),
        ("i386.o", |e| matches!(e, DwarfError::Elf(_))),
        ("umldbg_test.nodebug.ko", |e| {
            matches!(e, DwarfError::NoDebugInfo)
        }),
        ("truncated-header.ko", |e| matches!(e, DwarfError::Elf(_))),
    ];
    for (file, ok) in cases {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let err = dwarf::build_layouts(&bytes, &["sk_buff"]).unwrap_err();
        assert!(ok(&err), "{file}: unexpected error {err:?}");
    }
    let empty = dwarf::build_layouts(&[], &["sk_buff"]).unwrap_err();
    assert!(matches!(empty, DwarfError::Elf(_)), "{empty:?}");
}

#[test]
fn store_reports_the_file_and_a_missing_file() {
    let dir = tempdir();
    let store = LayoutStore::new(dir.path());
    let err = store.layout(&fixture("notelf.txt"), "sk_buff").unwrap_err();
    assert!(err.to_string().contains("notelf.txt"), "{err}");
    let missing = store
        .layout(&fixture("does-not-exist"), "sk_buff")
        .unwrap_err();
    assert!(matches!(missing, DwarfError::Load(_)), "{missing:?}");
}
