//! Layouts from the real UML kernel image against gdb's `ptype /o` on the same file, the skb
//! layout the packet decoder uses, the layout cache, and near-name suggestions.

mod kmod_support;

use std::time::Instant;

use kmod_support::{gdb, kernel, parse_ptype_o, tempdir};
use umldbg::dwarf::{self, DwarfError, LayoutStore, NET_STRUCTS};

#[test]
fn net_layouts_match_gdb_ptype_o_member_by_member() {
    let k = kernel();
    let cache = tempdir();
    let store = LayoutStore::new(cache.path());
    let t0 = Instant::now();
    let net = store.net_layouts(&k.linux).expect("net layouts");
    eprintln!("net layouts, cold: {:?}", t0.elapsed());
    assert!(!net.from_cache);
    assert_eq!(
        net.build_id, k.build_id,
        "cache key is the kernel's build-id"
    );
    assert!(
        net.absent.is_empty(),
        "every net struct is in this kernel: absent {:?}",
        net.absent
    );

    let commands: Vec<String> = NET_STRUCTS
        .iter()
        .map(|s| format!("ptype /o struct {s}"))
        .collect();
    let text = gdb(&k.linux, &commands);
    let parsed = parse_ptype_o(&text);
    assert_eq!(
        parsed.len(),
        NET_STRUCTS.len(),
        "gdb printed every struct:\n{text}"
    );
    let mut compared = 0;
    for (name, size, members) in &parsed {
        let ours = net
            .get(name)
            .unwrap_or_else(|| panic!("no layout for {name}"));
        compared += kmod_support::assert_layout_matches(ours, *size, members);
    }
    eprintln!(
        "compared {compared} members of {} structs with gdb",
        parsed.len()
    );
    assert!(
        compared > 300,
        "sk_buff and net_device alone have hundreds of members"
    );
}

#[test]
fn other_large_structs_match_gdb_ptype_o() {
    // Beyond the net set: the biggest and most nested kernel structs.
    let k = kernel();
    let names = ["task_struct", "sock", "page", "nf_hook_state"];
    let bytes = umldbg::kmod::MappedFile::open(&k.linux).unwrap();
    let layouts = dwarf::build_layouts(&bytes, &names).unwrap();
    let commands: Vec<String> = names
        .iter()
        .map(|s| format!("ptype /o struct {s}"))
        .collect();
    let parsed = parse_ptype_o(&gdb(&k.linux, &commands));
    assert_eq!(parsed.len(), names.len());
    for (name, size, members) in &parsed {
        kmod_support::assert_layout_matches(&layouts[name], *size, members);
    }
}

#[test]
fn skb_layout_agrees_with_gdb_on_the_members_the_decoder_reads() {
    let k = kernel();
    let net = LayoutStore::new(tempdir().path())
        .net_layouts(&k.linux)
        .unwrap();
    let skb = dwarf::skb_layout(&net).expect("skb layout");
    // One gdb run for every offset: loading the image's symbols takes gdb seconds.
    let exprs = [
        "head",
        "data",
        "len",
        "data_len",
        "protocol",
        "mark",
        "dev",
        "transport_header",
        "network_header",
        "mac_header",
        "tail",
        "end",
        "__pkt_type_offset",
    ];
    let commands: Vec<String> = exprs
        .iter()
        .map(|e| format!("print (unsigned long)&((struct sk_buff *)0)->{e}"))
        .collect();
    let out = gdb(&k.linux, &commands);
    let values: Vec<u64> = out
        .lines()
        .filter_map(|l| l.split_once(" = ").and_then(|(_, v)| v.trim().parse().ok()))
        .collect();
    assert_eq!(
        values.len(),
        exprs.len(),
        "one value per expression:\n{out}"
    );
    let probe = |expr: &str| values[exprs.iter().position(|e| *e == expr).unwrap()];
    for (name, loc) in [
        ("head", skb.head),
        ("data", skb.data),
        ("len", skb.len),
        ("data_len", skb.data_len),
        ("protocol", skb.protocol),
        ("mark", skb.mark),
        ("dev", skb.dev),
        ("transport_header", skb.transport_header),
        ("network_header", skb.network_header),
        ("mac_header", skb.mac_header),
        ("tail", skb.tail),
        ("end", skb.end),
    ] {
        assert_eq!(loc.offset, probe(name), "offsetof(struct sk_buff, {name})");
        assert_eq!(loc.bit_size, None);
    }
    // pkt_type is a 3-bit field: gdb cannot take its address; its byte is
    // __pkt_type_offset, and gdb's ptype /o shows it at bit 0 of that byte.
    assert_eq!(skb.pkt_type.offset, probe("__pkt_type_offset"));
    assert_eq!((skb.pkt_type.size, skb.pkt_type.bit_size), (1, Some(3)));
    let sk_buff = net.get("sk_buff").unwrap();
    let pkt = sk_buff.member("pkt_type").unwrap();
    assert_eq!(skb.pkt_type.bit_offset, pkt.bit_offset);
    assert_eq!(skb.size, sk_buff.size);
    assert_eq!(skb.dev_name.size, 16, "IFNAMSIZ");
}

#[test]
fn second_load_comes_from_the_cache_and_is_identical() {
    let k = kernel();
    let cache = tempdir();
    let store = LayoutStore::new(cache.path());
    let cold = store.net_layouts(&k.linux).unwrap();
    let file = store.cache_file(&k.build_id);
    assert!(file.is_file(), "cache written at {}", file.display());
    let t0 = Instant::now();
    let warm = store.net_layouts(&k.linux).unwrap();
    eprintln!("net layouts, cached: {:?}", t0.elapsed());
    assert!(warm.from_cache);
    assert_eq!(cold.layouts, warm.layouts);

    // ptype of another struct adds it to the same file; asking again reads it back.
    let first = store.layout(&k.linux, "sock").unwrap();
    assert!(!first.from_cache);
    let again = store.layout(&k.linux, "sock").unwrap();
    assert!(again.from_cache);
    assert_eq!(first.layout, again.layout);
    assert!(
        store.net_layouts(&k.linux).unwrap().from_cache,
        "adding sock kept the net layouts"
    );

    // A damaged cache file is ignored and rewritten.
    std::fs::write(&file, b"{ not json").unwrap();
    let rebuilt = store.net_layouts(&k.linux).unwrap();
    assert!(!rebuilt.from_cache);
    assert_eq!(rebuilt.layouts, cold.layouts);
}

#[test]
fn unknown_struct_names_near_ones() {
    let k = kernel();
    let err = LayoutStore::new(tempdir().path())
        .layout(&k.linux, "sk_bufff")
        .unwrap_err();
    match err.root() {
        DwarfError::NotFound { name, suggestions } => {
            assert_eq!(name, "sk_bufff");
            assert_eq!(
                suggestions.first().map(String::as_str),
                Some("sk_buff"),
                "{suggestions:?}"
            );
        }
        other => panic!("expected NotFound, got {other}"),
    }
    let text = format!("{err}: {}", err.root());
    assert!(text.contains("did you mean sk_buff"), "{text}");
}

#[test]
fn typedef_names_resolve_to_their_struct() {
    let k = kernel();
    let l = LayoutStore::new(tempdir().path())
        .layout(&k.linux, "atomic_t")
        .unwrap();
    assert_eq!(l.layout.size, 4);
    assert_eq!(
        l.layout.member("counter").map(|m| (m.offset, m.size)),
        Some((0, 4))
    );
}
