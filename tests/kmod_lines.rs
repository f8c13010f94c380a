//! Source lines of module functions, read from DWARF after relocation, against gdb's
//! `info line *FUNCTION` on the same .ko files; and the files a module is built from.

mod kmod_support;

use std::path::{Path, PathBuf};

use kmod_support::{gdb, kernel};
use umldbg::kmod::{self, ModuleInfo};

/// `Line 61 of "./include/linux/netfilter/x_tables.h" starts at address 0xee <reject_tg> ...`
fn gdb_lines(path: &Path, functions: &[String]) -> Vec<Option<(String, u64)>> {
    let commands: Vec<String> = functions
        .iter()
        .map(|f| format!("info line *'{f}'"))
        .collect();
    let text = gdb(path, &commands);
    let answers: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("Line ") || l.starts_with("No line number") || l.contains("No symbol")
        })
        .collect();
    assert_eq!(
        answers.len(),
        functions.len(),
        "one gdb answer per function:\n{text}"
    );
    answers
        .iter()
        .map(|l| {
            let rest = l.strip_prefix("Line ")?;
            let (line, rest) = rest.split_once(" of \"")?;
            let (file, _) = rest.split_once('"')?;
            Some((file.to_owned(), line.parse().ok()?))
        })
        .collect()
}

fn check_module(path: &Path) -> usize {
    let file = kmod::MappedFile::open(path).unwrap();
    let info = ModuleInfo::parse(&file).unwrap();
    assert!(
        info.warnings.is_empty(),
        "{}: {:?}",
        path.display(),
        info.warnings
    );
    let debug = info
        .debug
        .as_ref()
        .unwrap_or_else(|| panic!("{} has DWARF", path.display()));
    assert!(!debug.functions.is_empty());
    let names: Vec<String> = debug.functions.iter().map(|f| f.name.clone()).collect();
    let theirs = gdb_lines(path, &names);
    for (f, g) in debug.functions.iter().zip(&theirs) {
        let (file, line) = g
            .clone()
            .unwrap_or_else(|| panic!("gdb knows no line for {}", f.name));
        assert_eq!(f.line, Some(line), "{}: {} line", path.display(), f.name);
        assert_eq!(
            f.file.as_deref(),
            Some(file.as_str()),
            "{}: {} file",
            path.display(),
            f.name
        );
        // The entry offset is the symbol's value, as readelf shows it.
        if let Some(sym) = info.symbol(&f.name) {
            assert_eq!(Some(sym.offset), f.offset, "{} offset", f.name);
            assert_eq!(Some(&sym.section), f.section.as_ref(), "{} section", f.name);
        }
    }
    debug.functions.len()
}

#[test]
fn function_lines_equal_gdb_info_line() {
    let k = kernel();
    let mut total = 0;
    for m in ["ipt_REJECT.ko", "nf_reject_ipv4.ko", "x_tables.ko"] {
        total += check_module(&k.module(m));
    }
    eprintln!("{total} functions compared with gdb");
    assert!(total > 50);
}

#[test]
fn ipt_reject_sources_and_functions() {
    let k = kernel();
    let file = kmod::MappedFile::open(&k.module("ipt_REJECT.ko")).unwrap();
    let info = ModuleInfo::parse(&file).unwrap();
    let debug = info.debug.unwrap();
    assert!(
        debug
            .sources
            .iter()
            .any(|s| s.ends_with("net/ipv4/netfilter/ipt_REJECT.c")),
        "{:?}",
        debug.sources
    );
    assert!(debug.dwarf_version >= 4);
    assert_eq!(
        debug.comp_dir.as_deref().map(PathBuf::from),
        Some(k.build_dir.clone())
    );
    let tg = debug.function("reject_tg").unwrap();
    assert_eq!(tg.section.as_deref(), Some(".text"));
    assert_eq!(
        tg.decl_file.as_deref(),
        Some("net/ipv4/netfilter/ipt_REJECT.c")
    );
    let init = debug.function("reject_tg_init").unwrap();
    assert_eq!(
        init.section.as_deref(),
        Some(".init.text"),
        "init code keeps its own section"
    );
}

#[test]
fn fixture_module_lines_equal_gdb() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/kmod/umldbg_test.ko");
    let n = check_module(&path);
    assert!(n >= 3, "umldbg_test_len, init and exit");
    let file = kmod::MappedFile::open(&path).unwrap();
    let info = ModuleInfo::parse(&file).unwrap();
    let len = info
        .debug
        .as_ref()
        .unwrap()
        .function("umldbg_test_len")
        .unwrap();
    assert_eq!(
        len.decl_file
            .as_deref()
            .map(|f| f.ends_with("umldbg_test.c")),
        Some(true)
    );
}
