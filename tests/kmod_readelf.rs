//! `ModuleInfo` of the real modules (ipt_REJECT, nf_reject_ipv4, x_tables) against readelf on
//! the same files: every section (name, type, size, flags, alignment), every symbol (value,
//! size, type, binding, section index, name), the build-id and `.modinfo`; and the kernel
//! image's build-id against its manifest.

mod kmod_support;

use kmod_support::{kernel, run};
use umldbg::kmod::{self, ModuleInfo, SymbolBinding, SymbolKind};

const MODULES: [&str; 3] = ["ipt_REJECT.ko", "nf_reject_ipv4.ko", "x_tables.ko"];

fn parse(path: &std::path::Path) -> ModuleInfo {
    let file = kmod::MappedFile::open(path).unwrap();
    let info = ModuleInfo::parse(&file).unwrap();
    assert!(
        info.warnings.is_empty(),
        "{}: {:?}",
        path.display(),
        info.warnings
    );
    info
}

#[test]
fn sections_equal_readelf_s() {
    let k = kernel();
    for m in MODULES {
        let path = k.module(m);
        let info = parse(&path);
        let text = run("readelf", &["-SW", path.to_str().unwrap()]);
        let mut seen = 0;
        for line in text.lines() {
            // `  [ 3] .text   PROGBITS  0000000000000000 000080 00011a 00  AX  0   0  1`
            let Some(rest) = line.trim_start().strip_prefix('[') else {
                continue;
            };
            let Some((idx, rest)) = rest.split_once(']') else {
                continue;
            };
            let Ok(idx) = idx.trim().parse::<usize>() else {
                continue;
            };
            if idx == 0 {
                continue;
            }
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Flags may be empty, which shifts the columns: take them from the end.
            let (name, kind) = (f[0], f[1]);
            let size = u64::from_str_radix(f[4], 16).unwrap();
            let align: u64 = f[f.len() - 1].parse().unwrap();
            let flags = if f.len() == 10 { f[6] } else { "" };
            let sec = &info.sections[idx];
            assert_eq!(sec.name, name, "{m} section {idx} name");
            assert_eq!(sec.kind, kind, "{m} {name} type");
            assert_eq!(sec.size, size, "{m} {name} size");
            assert_eq!(sec.flags_str, flags, "{m} {name} flags");
            assert_eq!(sec.align, align, "{m} {name} alignment");
            assert_eq!(
                sec.alloc,
                flags.contains('A') && name != ".modinfo" && name != "__versions"
            );
            seen += 1;
        }
        assert_eq!(seen, info.sections.len() - 1, "{m}: every section compared");
        for needed in [".text", ".gnu.linkonce.this_module", ".modinfo", ".symtab"] {
            assert!(info.section(needed).is_some(), "{m} has {needed}");
        }
    }
}

#[test]
fn symbols_equal_readelf_s() {
    let k = kernel();
    for m in MODULES {
        let path = k.module(m);
        let info = parse(&path);
        let text = run("readelf", &["-sW", path.to_str().unwrap()]);
        let mut compared = 0;
        for line in text.lines() {
            // `    27: 000000000000009a   128 FUNC    LOCAL  DEFAULT    3 reject_tg`
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 7 || !f[0].ends_with(':') {
                continue;
            }
            let Ok(num) = f[0].trim_end_matches(':').parse::<usize>() else {
                continue;
            };
            if num == 0 {
                continue;
            }
            let sym = &info.symbols[num - 1];
            assert_eq!(sym.index, num);
            assert_eq!(
                sym.offset,
                u64::from_str_radix(f[1], 16).unwrap(),
                "{m} {line}"
            );
            assert_eq!(sym.size, f[2].parse::<u64>().unwrap(), "{m} {line}");
            let kind = match f[3] {
                "NOTYPE" => SymbolKind::NoType,
                "OBJECT" => SymbolKind::Object,
                "FUNC" => SymbolKind::Func,
                "SECTION" => SymbolKind::Section,
                "FILE" => SymbolKind::File,
                other => panic!("unexpected type {other}"),
            };
            assert_eq!(sym.kind, kind, "{m} {line}");
            let bind = match f[4] {
                "LOCAL" => SymbolBinding::Local,
                "GLOBAL" => SymbolBinding::Global,
                "WEAK" => SymbolBinding::Weak,
                other => panic!("unexpected binding {other}"),
            };
            assert_eq!(sym.binding, bind, "{m} {line}");
            match f[6] {
                "UND" => assert!(sym.is_undefined(), "{m} {line}"),
                "ABS" => assert_eq!(sym.section, "ABS"),
                n => {
                    let n: usize = n.parse().unwrap();
                    assert_eq!(sym.section_index as usize, n, "{m} {line}");
                    assert_eq!(sym.section, info.sections[n].name);
                }
            }
            if kind != SymbolKind::Section {
                assert_eq!(sym.name, f.get(7).copied().unwrap_or(""), "{m} {line}");
            }
            compared += 1;
        }
        assert_eq!(compared, info.symbols.len(), "{m}: every symbol compared");
    }
    let reject = parse(&k.module("ipt_REJECT.ko"));
    let tg = reject.symbol("reject_tg").expect("reject_tg");
    assert_eq!((tg.kind, tg.section.as_str()), (SymbolKind::Func, ".text"));
}

#[test]
fn build_id_and_modinfo_equal_readelf() {
    let k = kernel();
    for m in MODULES {
        let path = k.module(m);
        let info = parse(&path);
        let notes = run("readelf", &["-n", path.to_str().unwrap()]);
        let id = notes
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .expect("readelf shows a build-id");
        assert_eq!(info.build_id.as_deref(), Some(id), "{m} build-id");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(kmod::elf_build_id(&bytes).as_deref(), Some(id));

        // `readelf -p .modinfo` prints each string as `  [   off]  key=value`.
        let dump = run("readelf", &["-p", ".modinfo", path.to_str().unwrap()]);
        let strings: Vec<(String, String)> = dump
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('['))
            .filter_map(|l| l.split_once(']'))
            .filter_map(|(_, s)| s.trim_start().split_once('='))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        assert_eq!(info.modinfo, strings, "{m} .modinfo");
        let stem = m.trim_end_matches(".ko");
        assert_eq!(info.name, stem, "{m} name");
        assert_eq!(
            info.this_module_name.as_deref(),
            Some(stem),
            "{m} struct module name"
        );
        assert!(
            info.vermagic().is_some_and(
                |v| v.starts_with(k.modules_dir.file_name().unwrap().to_str().unwrap())
            )
        );
    }
    let reject = parse(&k.module("ipt_REJECT.ko"));
    let mut deps = reject.depends();
    deps.sort();
    assert_eq!(deps, ["nf_reject_ipv4", "x_tables"]);
    assert!(parse(&k.module("x_tables.ko")).depends().is_empty());
}

#[test]
fn kernel_image_build_id_equals_the_manifest() {
    let k = kernel();
    let file = kmod::MappedFile::open(&k.linux).unwrap();
    assert_eq!(
        kmod::elf_build_id(&file).as_deref(),
        Some(k.build_id.as_str())
    );
}

#[test]
fn alloc_sections_are_the_ones_add_symbol_file_needs() {
    let k = kernel();
    let info = parse(&k.module("ipt_REJECT.ko"));
    let alloc: Vec<&str> = info.alloc_sections().map(|s| s.name.as_str()).collect();
    for s in [
        ".text",
        ".init.text",
        ".exit.text",
        ".data",
        ".rodata",
        ".gnu.linkonce.this_module",
    ] {
        assert!(alloc.contains(&s), "{s} is allocated: {alloc:?}");
    }
    for s in [".modinfo", ".symtab", ".debug_info", ".rela.text"] {
        assert!(!alloc.contains(&s), "{s} is not allocated");
    }
    // What the guest showed under /sys/module/ipt_REJECT/sections (docs: UML-NOTES.md).
    let sysfs = info.sysfs_section_names();
    for s in [
        ".text",
        ".data",
        ".rodata",
        ".init.text",
        ".exit.text",
        ".gnu.linkonce.this_module",
        ".symtab",
        ".strtab",
    ] {
        assert!(sysfs.contains(&s), "{s} in {sysfs:?}");
    }
    assert!(
        !sysfs.contains(&".bss"),
        "empty .bss is not listed: {sysfs:?}"
    );
}
