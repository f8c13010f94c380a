//! A gdb script for plain gdb users who attach natively (no server): the kernel image, UML's
//! own signals passed through silently, the attach, and `add-symbol-file` for every module the
//! guest has loaded, at the addresses it loaded them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::guest::modules::{GuestModule, add_symbol_file_command};

/// Signals UML's kernel uses for itself (page faults, timers, I/O, its helpers).
pub const UML_SIGNALS: &[&str] = &[
    "SIGSEGV",
    "SIGUSR1",
    "SIGALRM",
    "SIGVTALRM",
    "SIGIO",
    "SIGCHLD",
    "SIGWINCH",
];

/// One module with its host file (and the file's section names), or without a file.
pub struct ModuleSymbols {
    pub module: GuestModule,
    pub file: Option<(PathBuf, Vec<String>)>,
}

pub fn script(umid: &str, pid: i32, image: &Path, modules: &[ModuleSymbols]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# gdb attached natively to UML machine {umid} (kernel pid {pid}), with every module's symbols."
    );
    let _ = writeln!(
        t,
        "# Written by `umldbg ide gdbinit`; regenerate it when the machine restarts or loads modules."
    );
    let _ = writeln!(
        t,
        "# Use: gdb -x THIS_FILE   (then `continue`; the machine is stopped while gdb holds it)"
    );
    let _ = writeln!(t, "set pagination off");
    let _ = writeln!(t, "set breakpoint pending on");
    let _ = writeln!(t, "file {}", image.display());
    for s in UML_SIGNALS {
        let _ = writeln!(t, "handle {s} nostop noprint pass");
    }
    let _ = writeln!(t, "attach {pid}");
    for m in modules {
        match &m.file {
            Some((file, secs)) => match add_symbol_file_command(file, &m.module, secs) {
                Some(cmd) => {
                    let _ = writeln!(t, "{cmd}");
                }
                None => {
                    let _ = writeln!(t, "# {}: no .text address in the guest", m.module.name);
                }
            },
            None => {
                let _ = writeln!(
                    t,
                    "# {}: no .ko found on the host (pass --module-path DIR)",
                    m.module.name
                );
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn attaches_then_adds_each_module() {
        let m = GuestModule {
            name: "ipt_REJECT".into(),
            sections: BTreeMap::from([
                (".text".to_string(), 0x60b5e000),
                (".data".to_string(), 0x60b62000),
            ]),
            build_id: None,
        };
        let other = GuestModule {
            name: "mystery".into(),
            sections: BTreeMap::new(),
            build_id: None,
        };
        let mods = [
            ModuleSymbols {
                module: m,
                file: Some((
                    PathBuf::from("/m/ipt_REJECT.ko"),
                    vec![".text".into(), ".data".into()],
                )),
            },
            ModuleSymbols {
                module: other,
                file: None,
            },
        ];
        let t = script("router-uml-R", 4242, Path::new("/k/linux"), &mods);
        let attach = t.find("attach 4242").unwrap();
        let add = t
            .find("add-symbol-file /m/ipt_REJECT.ko -s .text 0x60b5e000 -s .data 0x60b62000")
            .unwrap();
        assert!(
            t.find("file /k/linux").unwrap() < attach && attach < add,
            "{t}"
        );
        assert!(t.contains("handle SIGSEGV nostop noprint pass"));
        assert!(t.contains("# mystery: no .ko found"));
        assert!(!t.lines().any(|l| l.trim() == "continue" || l.trim() == "c"));
    }
}
