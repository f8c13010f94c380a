//! The command line itself: every subcommand listed with one line of help, doctor on this machine,
//! the topology drawing, and one-line errors for bad input.

mod common;

use common::*;

#[test]
fn help_lists_every_subcommand_with_one_line() {
    let out = ok(&["--help"]);
    for cmd in [
        "kernel",
        "doctor",
        "lab",
        "exec",
        "console",
        "capture",
        "attach",
        "load",
        "break",
        "delete",
        "breaks",
        "continue",
        "interrupt",
        "wait",
        "bt",
        "print",
        "step",
        "next",
        "finish",
        "list",
        "skb",
        "gdb",
        "detach",
        "status",
        "shell",
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{cmd} ")))
            .unwrap_or_else(|| panic!("{cmd} missing from --help:\n{out}"));
        assert!(
            line.split_whitespace().count() > 1,
            "{cmd} has no help line"
        );
    }
}

#[test]
fn doctor_passes_on_a_prepared_machine() {
    let o = umldbg(&["doctor"]);
    let text = stdout(&o);
    assert!(o.status.success(), "{text}");
    for item in [
        "gdb",
        "iptables",
        "kmod",
        "iproute2",
        "python3",
        "/dev/net/tun",
        "network namespaces",
        "kernel cache",
    ] {
        assert!(text.contains(item), "doctor does not check {item}: {text}");
    }
}

#[test]
fn doctor_names_the_fix_when_the_kernel_is_missing() {
    let empty = umldbg::util::cache_dir()
        .join("test-tmp")
        .join(format!("empty-cache-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = umldbg(&["--cache", empty.to_str().unwrap(), "doctor"]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("fix: umldbg kernel build"),
        "{}",
        stdout(&o)
    );
    let o = umldbg(&[
        "--cache",
        empty.to_str().unwrap(),
        "lab",
        "up",
        "--prefix",
        "tcb-",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("umldbg kernel build"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn graph_draws_the_article_lab() {
    let dot = ok(&["lab", "graph"]);
    assert!(
        dot.starts_with("graph") || dot.starts_with("digraph"),
        "{dot}"
    );
    let svg = ok(&["lab", "graph", "--format", "svg"]);
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    for name in [
        "MachineA", "MachineR", "MachineB", "lan-a", "lan-b", "uplink",
    ] {
        assert!(svg.contains(name), "{name} not in the SVG");
    }
}

#[test]
fn debug_commands_without_a_session_say_so() {
    let o = umldbg(&["--umid", "tcb-nothing-here", "bt"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("no session on tcb-nothing-here: run `umldbg attach tcb-nothing-here` first"),
        "{}",
        stderr(&o)
    );
    let o = umldbg(&["--uml-dir", "/nonexistent-uml-dir", "status"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no session is running"),
        "{}",
        stderr(&o)
    );
}

/// A global option a command has no use for is refused by name, before the command runs,
/// instead of being dropped without a word (`console --json`, `kernel --umid`).
#[test]
fn global_options_a_command_does_not_take_are_refused() {
    for (args, flag, cmd) in [
        (
            &["console", "cb-nothing", "--json"][..],
            "--json",
            "console",
        ),
        (
            &["--umid", "cb-nothing", "kernel", "path"][..],
            "--umid",
            "kernel",
        ),
        (
            &[
                "symfile",
                "--uml-dir",
                "/x",
                "--kallsyms",
                "k",
                "--output",
                "o",
            ][..],
            "--uml-dir",
            "symfile",
        ),
        (&["lab", "graph", "--json"][..], "--json", "lab graph"),
    ] {
        let o = umldbg(args);
        assert!(!o.status.success(), "{args:?}");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.starts_with(&format!("umldbg: {flag} means nothing to `umldbg {cmd}`")),
            "{e}"
        );
    }
    // The same options where they mean something are taken.
    assert!(umldbg(&["kernel", "path", "--json"]).status.success());
    // exec with --uml-dir looks for the machine there.
    let o = umldbg(&[
        "exec",
        "--uml-dir",
        "/nonexistent",
        "cb-nothing",
        "--",
        "true",
    ]);
    assert!(stderr(&o).starts_with("umldbg: no machine cb-nothing under --uml-dir /nonexistent"));
}
