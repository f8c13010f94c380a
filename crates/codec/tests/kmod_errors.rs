//! Bad module files give typed errors or clearly labelled partial results, never a panic.
//! Fixtures come from scripts/build-test-module.sh.

use std::path::PathBuf;

use umldbg_codec::kmod::{KmodError, ModuleInfo};

fn read(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/kmod")
        .join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-test-module.sh)", p.display()))
}

fn err(name: &str) -> KmodError {
    match ModuleInfo::parse(&read(name)) {
        Ok(_) => panic!("{name} parsed as a module"),
        Err(e) => e,
    }
}

#[test]
fn the_fixture_module_parses_whole() {
    let info = ModuleInfo::parse(&read("umldbg_test.ko")).unwrap();
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert_eq!(info.name, "umldbg_test");
    assert_eq!(info.modinfo_value("license"), Some("GPL"));
    assert_eq!(
        info.modinfo_value("parm"),
        Some("depth:added to every length")
    );
    assert!(info.depends().is_empty());
    assert!(info.build_id.as_ref().is_some_and(|b| b.len() == 40));
    assert!(
        info.symbol("umldbg_test_len")
            .is_some_and(|s| s.section == ".text")
    );
    let imports: Vec<&str> = info
        .symbols
        .iter()
        .filter(|s| s.is_undefined() && !s.name.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert!(imports.contains(&"_printk"), "{imports:?}");
    assert!(info.debug.is_some());
}

#[test]
fn not_elf() {
    assert!(matches!(err("notelf.txt"), KmodError::NotElf { .. }));
    assert!(matches!(
        ModuleInfo::parse(&[]).unwrap_err(),
        KmodError::NotElf { .. }
    ));
}

#[test]
fn compressed_module_says_so() {
    let xz = b"\xfd7zXZ\0\0\x04\xe6\xd6\xb4\x46";
    match ModuleInfo::parse(xz).unwrap_err() {
        KmodError::Compressed { format } => assert_eq!(format, "xz"),
        e => panic!("{e}"),
    }
}

#[test]
fn thirty_two_bit_module_is_another_architecture() {
    match err("i386.o") {
        KmodError::WrongArch { bits, machine } => {
            assert_eq!(bits, 32);
            assert!(machine.contains("386"), "{machine}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn executable_is_not_relocatable() {
    match err("layouts.elf") {
        KmodError::NotRelocatable { kind } => assert_eq!(kind, "EXEC"),
        e => panic!("{e}"),
    }
}

#[test]
fn plain_object_is_not_a_module() {
    assert!(matches!(err("layouts.o"), KmodError::NotAModule));
}

#[test]
fn truncated_files() {
    for f in [
        "truncated-header.ko",
        "truncated-middle.ko",
        "truncated-shdrs.ko",
        "badshoff.ko",
    ] {
        let e = err(f);
        assert!(matches!(e, KmodError::Truncated { .. }), "{f}: {e}");
        assert!(e.to_string().contains("truncated or corrupted"), "{f}: {e}");
    }
    // Every prefix of a real module: an error or a result, never a panic.
    let whole = read("umldbg_test.ko");
    for len in (0..whole.len()).step_by(499) {
        let _ = ModuleInfo::parse(&whole[..len]);
    }
}

#[test]
fn section_outside_the_file_is_named() {
    match err("badsection.ko") {
        KmodError::SectionOutOfFile { name, .. } => assert_eq!(name, ".modinfo"),
        e => panic!("{e}"),
    }
}

#[test]
fn corrupted_dwarf_is_a_labelled_partial_result() {
    let info = ModuleInfo::parse(&read("baddwarf.ko")).unwrap();
    assert!(info.debug.is_none());
    assert!(
        info.warnings.iter().any(|w| w.contains("DWARF unreadable")),
        "{:?}",
        info.warnings
    );
    assert!(
        info.symbol("umldbg_test_len").is_some(),
        "the rest is still there"
    );
}

#[test]
fn module_without_dwarf_has_no_lines_and_no_warning() {
    let info = ModuleInfo::parse(&read("umldbg_test.nodebug.ko")).unwrap();
    assert!(info.debug.is_none());
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert!(info.section(".debug_info").is_none());
}

#[test]
fn module_without_symbols_is_a_labelled_partial_result() {
    let info = ModuleInfo::parse(&read("umldbg_test.nosymtab.ko")).unwrap();
    assert!(info.symbols.is_empty());
    assert!(
        info.warnings.iter().any(|w| w.contains("no .symtab")),
        "{:?}",
        info.warnings
    );
    assert_eq!(info.name, "umldbg_test");
}

#[test]
fn flipped_bytes_never_panic() {
    // A cheap, deterministic cousin of the fuzz target: corrupt one byte at a time in the
    // headers and tables of a real module.
    let whole = read("umldbg_test.ko");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..800 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut b = whole.clone();
        let at = if seed.is_multiple_of(2) {
            (seed >> 8) as usize % 64
        } else {
            b.len() - 1 - (seed >> 8) as usize % 4096
        };
        b[at] ^= (seed >> 40) as u8 | 1;
        let _ = ModuleInfo::parse(&b);
    }
}
