//! CLion's "Remote Debug" run configuration, as text to copy into its dialog.

use super::{Setup, serve_args, setup_commands};
use crate::lab::init::sh_quote;

pub fn remote_debug_text(s: &Setup) -> String {
    let serve: Vec<String> = serve_args(s).iter().map(|a| sh_quote(a)).collect();
    let mut t = String::new();
    t.push_str(&format!(
        "CLion: Run | Edit Configurations... | + | Remote Debug, named \"umldbg: {umid}\":\n\
         \n  Debugger:             {gdb} (or the bundled GDB)\
         \n  'target remote' args: {addr}\
         \n  Symbol file:          {image}\
         \n  Sysroot:              (leave empty)\
         \n  Path mappings:        (none: the kernel and modules were built on this host)\n\
         \nStart the server first, in a terminal or as a Before launch | Run External tool step:\n\
         \n  {umldbg} {serve}\n\
         \nGDB setup: CLion runs a .gdbinit in the project root (allow it with\n\
         `set auto-load local-gdbinit on` and `add-auto-load-safe-path <project>` in ~/.gdbinit).\n\
         Put these lines in it; the first is also declared by the server itself:\n\n",
        umid = s.umid,
        gdb = s.gdb,
        addr = s.address,
        image = s.image.display(),
        umldbg = s.umldbg.display(),
        serve = serve.join(" "),
    ));
    for (cmd, why) in setup_commands() {
        t.push_str(&format!("  {cmd:<28} # {why}\n"));
    }
    t.push_str("\nThen Debug: CLion connects, modules appear as shared libraries, and breakpoints in\nmodule sources resolve when their module is loaded.\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn names_every_field_of_the_dialog() {
        let s = Setup {
            umid: "router-uml-R".into(),
            image: PathBuf::from("/k/linux"),
            address: "127.0.0.1:1234".into(),
            port: 1234,
            gdb: "/usr/bin/gdb".into(),
            umldbg: PathBuf::from("/usr/local/bin/umldbg"),
            module_paths: vec![],
        };
        let t = remote_debug_text(&s);
        assert!(t.contains("'target remote' args: 127.0.0.1:1234"), "{t}");
        assert!(t.contains("Symbol file:          /k/linux"), "{t}");
        assert!(
            t.contains("/usr/local/bin/umldbg serve router-uml-R --listen 127.0.0.1:1234 --once"),
            "{t}"
        );
        assert!(t.contains("set osabi none"), "{t}");
    }
}
