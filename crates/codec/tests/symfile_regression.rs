//! Regressions found by fuzzing the kallsyms parser and the symbol-file writer
//! (fuzz/fuzz_targets/kallsyms_symfile.rs); inputs kept in fixtures/kmod/.

use std::path::PathBuf;

use umldbg_codec::kmod::kallsyms::{self, KallsymsEntry, KallsymsError};
use umldbg_codec::kmod::symfile::{self, SymfileError};

/// Found by cargo-fuzz within its first 200 runs: a name with a NUL byte reached object's ELF
/// string table, whose `assert!(!string.contains(&0))` panicked.
#[test]
fn regression_nul_byte_in_symbol_name_panicked_in_the_elf_writer() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/kmod/fuzz-kallsyms-nul-in-name.txt");
    let text = String::from_utf8(std::fs::read(path).unwrap()).unwrap();
    match kallsyms::parse(&text) {
        Err(KallsymsError::BadLine { line, .. }) => assert_eq!(line, 4),
        other => panic!("expected the NUL line to be rejected, got {other:?}"),
    }
    // The writer refuses such a name too, whoever built the entries.
    let entries = vec![KallsymsEntry {
        address: 0x6000_0000,
        kind: 'T',
        name: "a\0b".into(),
        module: None,
    }];
    assert!(matches!(
        symfile::write_symfile(&entries),
        Err(SymfileError::NulInName(_))
    ));
}
