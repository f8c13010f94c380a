//! `symfile`: an ELF written from kallsyms text that gdb loads, and whose names resolve to the
//! kallsyms addresses. The kallsyms text is made from `nm` of the real kernel image (the same
//! `ADDRESS TYPE NAME` format), plus module lines that must be skipped.

mod kmod_support;

use std::collections::HashMap;

use kmod_support::{gdb, kernel, run, tempdir};
use umldbg::kmod::kallsyms::{self, KallsymsError};
use umldbg::kmod::symfile;

/// kallsyms-style text for the kernel image, and its function addresses by name.
fn kallsyms_from_nm(linux: &std::path::Path) -> (String, HashMap<String, u64>) {
    let nm = run("nm", &[linux.to_str().unwrap()]);
    let mut text = String::new();
    let mut funcs = HashMap::new();
    for line in nm.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 || !"TtDdBbRrWwVvAa".contains(f[1]) {
            continue;
        }
        text.push_str(line);
        text.push('\n');
        if f[1] == "T" || f[1] == "t" {
            funcs.insert(f[2].to_owned(), u64::from_str_radix(f[0], 16).unwrap());
        }
    }
    text.push_str("0000000070001000 t reject_tg\t[ipt_REJECT]\n");
    text.push_str("0000000070002000 T xt_register_target\t[x_tables]\n");
    (text, funcs)
}

#[test]
fn gdb_resolves_kernel_functions_to_kallsyms_addresses() {
    let k = kernel();
    let (text, funcs) = kallsyms_from_nm(&k.linux);
    let entries = kallsyms::parse(&text).unwrap();
    let (bytes, summary) = symfile::write_symfile(&entries).unwrap();
    assert_eq!(summary.skipped_module_symbols, 2);
    assert!(summary.functions > 10_000, "{summary:?}");
    let dir = tempdir();
    let out = dir.path().join("linux.sym");
    std::fs::write(&out, &bytes).unwrap();

    let names = [
        "start_kernel",
        "ip_rcv",
        "nf_hook_slow",
        "ip_forward",
        "__netif_receive_skb_core",
        "kfree_skb_list_reason",
    ];
    let names: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| funcs.contains_key(*n))
        .collect();
    assert!(names.len() >= 4, "the kernel has these functions");

    for load in ["symbol-file", "add-symbol-file"] {
        let mut cmds = vec![format!("{load} {}", out.display())];
        for n in &names {
            cmds.push(format!("info address {n}"));
            cmds.push(format!("info symbol {:#x}", funcs[*n] + 1));
            cmds.push(format!("break {n}"));
        }
        // gdb batch sessions need no file of their own: /dev/null stands for "no program".
        let answer = gdb(std::path::Path::new("/dev/null"), &cmds);
        for n in &names {
            let addr = funcs[*n];
            let at = format!("Symbol \"{n}\" is at {addr:#x}");
            assert!(
                answer.contains(&at),
                "{load}: gdb does not place {n} at {addr:#x}:\n{answer}"
            );
            let within = format!("{n} + 1 in section .text");
            assert!(
                answer.contains(&within),
                "{load}: gdb does not name {addr:#x}+1 {n}+1:\n{answer}"
            );
            assert!(
                answer.contains(&format!("at {addr:#x}")),
                "{load}: breakpoint on {n}:\n{answer}"
            );
        }
    }

    // The module lines are not in the file.
    let readelf = run("readelf", &["-sW", out.to_str().unwrap()]);
    assert!(!readelf.contains("reject_tg"));
    let sections = run("readelf", &["-SW", out.to_str().unwrap()]);
    assert!(sections.contains("NOBITS"), "{sections}");
}

#[test]
fn kallsyms_text_errors() {
    assert!(matches!(kallsyms::parse(""), Err(KallsymsError::Empty)));
    assert!(matches!(kallsyms::parse("\n\n"), Err(KallsymsError::Empty)));
    let hidden = "0000000000000000 T start_kernel\n0000000000000000 t helper\n";
    assert!(matches!(
        kallsyms::parse(hidden),
        Err(KallsymsError::AddressesHidden)
    ));
    match kallsyms::parse("0000000060000000 T ok\nnot a line\n") {
        Err(KallsymsError::BadLine { line, text }) => {
            assert_eq!((line, text.as_str()), (2, "not a line"))
        }
        other => panic!("{other:?}"),
    }
    assert!(kallsyms::parse("zz T name\n").is_err());
    assert!(kallsyms::parse("60000000 TT name\n").is_err());
    assert!(kallsyms::parse("60000000 T name module-without-brackets\n").is_err());
}

#[test]
fn sections_do_not_overlap_and_cover_their_symbols() {
    let text = "\
0000000060000000 T _stext
0000000060000040 t helper
0000000060000100 T main_func
0000000060400000 D jiffies
0000000060400010 d local_data
0000000060500000 B big_bss
0000000060000200 T _etext
0000000000001000 A abs_sym
0000000070000000 t mod_func\t[somemod]
";
    let entries = kallsyms::parse(text).unwrap();
    let (bytes, summary) = symfile::write_symfile(&entries).unwrap();
    assert_eq!(summary.skipped_module_symbols, 1);
    assert_eq!(summary.absolute, 1);
    assert_eq!((summary.functions, summary.objects), (4, 3));
    let mut ranges: Vec<(u64, u64)> = summary
        .sections
        .iter()
        .map(|(_, a, s)| (*a, a + s))
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap: {ranges:?}");
    }
    for e in entries
        .iter()
        .filter(|e| e.module.is_none() && e.kind != 'A')
    {
        assert!(
            ranges
                .iter()
                .any(|(a, b)| e.address >= *a && e.address < *b),
            "{} outside every section",
            e.name
        );
    }
    // object reads it back as an x86_64 executable with the symbols at their addresses.
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(&*bytes).unwrap();
    assert_eq!(file.architecture(), object::Architecture::X86_64);
    assert_eq!(file.kind(), object::ObjectKind::Executable);
    let helper = file.symbols().find(|s| s.name() == Ok("helper")).unwrap();
    assert_eq!((helper.address(), helper.size()), (0x6000_0040, 0xc0));
    assert!(helper.is_local());
}

#[test]
fn only_module_symbols_is_an_error() {
    let entries = kallsyms::parse("0000000070000000 t mod_func\t[somemod]\n").unwrap();
    assert!(symfile::write_symfile(&entries).is_err());
}
