//! The module developer's loop (issue: the kernel developer's loop): an out-of-tree module
//! built by `load --build`, a breakpoint hit in it, a line of its source changed, `load --build`
//! again, and the breakpoint hits in the new code while the netfilter rules that use the module
//! stay. Real lab machines, real gdb, real iptables (legacy and nft) in the guest.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A module source directory for one test, removed when the test ends.
struct ModDir(PathBuf);

impl ModDir {
    /// A copy of one of the cached kernel's netfilter sources with a one-line Makefile.
    fn from_kernel(tag: &str, source: &str) -> ModDir {
        let build = kernel_path("build_dir");
        let file = Path::new(source).file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(build.join(source)).unwrap();
        let obj = file.replace(".c", ".o");
        ModDir::with(
            tag,
            &[(file, &text), ("Makefile", &format!("obj-m += {obj}\n"))],
        )
    }

    fn with(tag: &str, files: &[(&str, &str)]) -> ModDir {
        let dir = std::env::temp_dir().join(format!("umldbg-modloop-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        ModDir(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Replace `from` (which must be there exactly once) by `to` in one file.
    fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.0.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{from:?} in {}", p.display());
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }
}

impl Drop for ModDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PORT_UNREACH: &str = "nf_send_unreach(skb, ICMP_PORT_UNREACH, hook);";
/// The one-line change: the rule's port-unreachable case sends host-unreachable (marked, as the
/// switch has a host-unreachable case of its own).
const HOST_UNREACH: &str = "nf_send_unreach(skb, ICMP_HOST_UNREACH, hook); /* was port */";

/// What a single ping from A through R's REJECT rule gets back.
fn ping_reply(lab: &Lab) -> String {
    let (_, out) = lab.sh("A", "ping -c 2 -i 0.5 -W 3 192.168.20.2");
    out
}

fn delete_all(s: &Attached) {
    let bps = s.ok(&["breaks"]);
    for id in bps.lines().filter_map(|l| l.split_whitespace().next()) {
        if id.chars().all(|c| c.is_ascii_digit()) {
            s.ok(&["delete", id]);
        }
    }
}

#[test]
fn module_loop_build_break_edit_rebuild_hits_the_new_code_with_its_rules_kept() {
    kernel();
    let lab = Lab::article("tml-");
    let r = lab.umid("R");
    let m = ModDir::from_kernel("loop", "net/ipv4/netfilter/ipt_REJECT.c");
    let s = Attached::new(&r);

    // The first build: not loaded yet, so a plain load.
    let out = s.ok(&["load", "--build", m.path()]);
    assert!(out.contains("loaded (it was not loaded)"), "{out}");
    // A legacy rule that the pings hit, and an nft rule (xt compat) that also holds the module.
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    lab.must(
        "R",
        "iptables-nft -A FORWARD -s 192.168.99.0/24 -p udp -j REJECT",
    );
    let reply = ping_reply(&lab);
    assert!(reply.contains("Destination Port Unreachable"), "{reply}");

    // A breakpoint in the module's code, hit. (Each breakpoint is deleted before the machine
    // goes on: a timer signal that lands while gdb steps over one can report it twice.)
    s.ok(&["break", "reject_tg"]);
    let ping = spawn_sh(&lab.umid("A"), "ping -c 1 -W 3 192.168.20.2");
    let stop = s.json(&["wait", "--timeout", "60"]);
    assert_eq!(stop["function"], "reject_tg", "{stop}");
    delete_all(&s);
    s.ok(&["continue"]);
    let _ = ping.wait_with_output();
    // The breakpoints that the swap must move: by function, and by file and line (the line
    // that sends the ICMP error).
    s.ok(&["break", "reject_tg"]);
    let line = std::fs::read_to_string(m.0.join("ipt_REJECT.c"))
        .unwrap()
        .lines()
        .position(|l| l.contains(PORT_UNREACH))
        .unwrap()
        + 1;
    let by_line = format!("ipt_REJECT.c:{line}");
    s.ok(&["break", &by_line]);
    let before = lab.forward_rejects();

    // One line changed (the ICMP code sent), and a comment above the function moves its code.
    m.edit("ipt_REJECT.c", PORT_UNREACH, HOST_UNREACH);
    m.edit(
        "ipt_REJECT.c",
        "static unsigned int\nreject_tg(",
        "/* edited by the module loop test */\nstatic unsigned int\nreject_tg(",
    );
    let t0 = std::time::Instant::now();
    let o = s.run(&["load", "--build", m.path()]);
    let text = stdout(&o);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    eprintln!(
        "load --build (build and swap) took {:.1}s:\n{text}",
        t0.elapsed().as_secs_f64()
    );
    assert!(text.contains("ipt_REJECT: replaced"), "{text}");
    assert!(
        text.contains("netfilter rules set aside and restored: iptables-legacy (")
            && text.contains("iptables-nft (1 rule)"),
        "{text}"
    );
    assert!(
        text.contains("breakpoints set again in the new code: ")
            && text.contains(" reject_tg -> ")
            && text.contains(&format!(" {by_line} -> ")),
        "{text}"
    );
    assert!(!text.contains("could not be placed"), "{text}");

    // The rules are there, with their counters.
    let legacy = lab.must("R", "iptables-legacy -S FORWARD");
    assert!(legacy.contains("-A FORWARD -p icmp -j REJECT"), "{legacy}");
    let nft = lab.must("R", "iptables-nft -S FORWARD 2>/dev/null");
    assert!(nft.contains("-s 192.168.99.0/24 -p udp -j REJECT"), "{nft}");
    assert!(lab.forward_rejects() >= before, "counters lost");

    // The breakpoints hit in the new code: first the function, then the moved line.
    let ping = spawn_sh(&lab.umid("A"), "ping -c 1 -W 3 192.168.20.2");
    let stop = s.json(&["wait", "--timeout", "60"]);
    assert_eq!(stop["function"], "reject_tg", "{stop}");
    let first = stop["breakpoint"].as_u64().unwrap().to_string();
    s.ok(&["delete", &first]);
    s.ok(&["continue"]);
    let stop = s.json(&["wait", "--timeout", "60"]);
    assert_eq!(stop["function"], "reject_tg", "{stop}");
    assert!(
        stop["file"]
            .as_str()
            .unwrap_or("")
            .ends_with("ipt_REJECT.c"),
        "{stop}"
    );
    // It is the line breakpoint as set again (its new number is in the report).
    let new_id: u64 = text
        .split(&format!(" {by_line} -> "))
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no new number for {by_line}: {text}"));
    assert_eq!(stop["breakpoint"].as_u64(), Some(new_id), "{stop}");
    let listed = s.ok(&["list", &format!("ipt_REJECT.c:{}", stop["line"])]);
    assert!(listed.contains("ICMP_HOST_UNREACH"), "{listed}");
    delete_all(&s);
    s.ok(&["continue"]);
    let _ = ping.wait_with_output();

    // The changed behaviour shows in the guest, through the rule that stayed.
    let reply = ping_reply(&lab);
    assert!(reply.contains("Destination Host Unreachable"), "{reply}");
    assert!(
        lab.forward_rejects() > before,
        "the rule did not match again"
    );
    let st = s.json(&["status"]);
    let mods = st["modules"].as_array().unwrap();
    let rej = mods.iter().find(|x| x["name"] == "ipt_REJECT").unwrap();
    assert!(rej["file"].as_str().unwrap().starts_with(m.path()), "{rej}");
    lab.assert_all_alive();
}

/// A module that takes a reference on itself: removal is blocked by something other than rules.
const PINNED: &str = r#"#include <linux/module.h>
noinline int umldbg_pin_value(void) { return 1; }
EXPORT_SYMBOL(umldbg_pin_value);
static int __init pin_init(void)
{
	__module_get(THIS_MODULE);
	pr_info("umldbg_pin %d\n", umldbg_pin_value());
	return 0;
}
static void __exit pin_exit(void) {}
module_init(pin_init);
module_exit(pin_exit);
MODULE_LICENSE("GPL");
"#;

#[test]
fn module_replace_refuses_bad_input_and_the_machine_keeps_running() {
    kernel();
    let lab = Lab::article("tmb-");
    let r = lab.umid("R");
    let m = ModDir::from_kernel("bad", "net/ipv4/netfilter/ipt_REJECT.c");
    let s = Attached::new(&r);
    s.ok(&["load", "--build", m.path()]);
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let still_old = |what: &str| {
        let reply = ping_reply(&lab);
        assert!(
            reply.contains("Destination Port Unreachable"),
            "after {what}: {reply}"
        );
        lab.assert_all_alive();
    };

    // Another build of a loaded module without --replace: the error says how to replace.
    m.edit("ipt_REJECT.c", PORT_UNREACH, HOST_UNREACH);
    let build = kernel_path("build_dir");
    let o = std::process::Command::new("make")
        .arg("-C")
        .arg(&build)
        .arg(format!("M={}", m.path()))
        .args(["ARCH=um", "modules"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ko = format!("{}/ipt_REJECT.ko", m.path());
    let o = s.run(&["load", &ko]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("not the loaded module") && e.contains(&format!("load --replace {ko}")),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    still_old("a load without --replace");

    // A module that does not build: the compiler's first error, with file and line.
    m.edit(
        "ipt_REJECT.c",
        HOST_UNREACH,
        "nf_send_unreach(skb, ICMP_HOST_UNREACH, hook)",
    );
    let o = s.run(&["load", "--build", m.path()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{}/ipt_REJECT.c:", m.path())) && e.contains("error:"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    still_old("a build that failed");

    // A build whose init fails: the previous build is put back, with its rule.
    m.edit(
        "ipt_REJECT.c",
        "ICMP_HOST_UNREACH, hook)\n",
        "ICMP_HOST_UNREACH, hook);\n",
    );
    m.edit(
        "ipt_REJECT.c",
        "return xt_register_target(&reject_tg_reg);",
        "return -EINVAL;",
    );
    let o = s.run(&["load", "--build", m.path()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("the new build does not load") && e.contains("the previous build runs again"),
        "{e}"
    );
    let legacy = lab.must("R", "iptables-legacy -S FORWARD");
    assert!(legacy.contains("-A FORWARD -p icmp -j REJECT"), "{legacy}");
    still_old("a build whose init fails");

    // A module that others depend on: they are named.
    let dep = ModDir::from_kernel("dep", "net/ipv4/netfilter/nf_reject_ipv4.c");
    let o = s.run(&["load", "--build", dep.path()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("module(s) ipt_REJECT depend on it") && e.contains("rmmod ipt_REJECT"),
        "{e}"
    );
    still_old("a module with dependants");

    // A module held by something other than rules: said so, with its reference count.
    let pin = ModDir::with(
        "pin",
        &[
            ("umldbg_pin.c", PINNED),
            ("Makefile", "obj-m += umldbg_pin.o\n"),
        ],
    );
    s.ok(&["load", "--build", pin.path()]);
    pin.edit("umldbg_pin.c", "return 1;", "return 2;");
    let o = s.run(&["load", "--build", pin.path()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("by something other than netfilter rules") && e.contains("umldbg_pin"),
        "{e}"
    );
    let (_, dmesg) = lab.sh("R", "dmesg | grep umldbg_pin");
    assert!(
        dmesg.contains("umldbg_pin 1") && !dmesg.contains("umldbg_pin 2"),
        "{dmesg}"
    );
    still_old("a pinned module");

    // Directories that are no module source.
    let o = s.run(&["load", "--build", "/nonexistent/module"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/module"), "{}", stderr(&o));
    let empty = ModDir::with("empty", &[]);
    let o = s.run(&["load", "--build", empty.path()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("no Makefile or Kbuild"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    let o = s.run(&["load", "--replace"]);
    assert!(!o.status.success());
    still_old("bad directories");
    assert!(s.ok(&["status"]).contains("session on"));
}

/// Regression: giving gdb a module's symbols first removed the old ones by address
/// (`remove-symbol-file -a TEXT`), and gdb removes the first symbol file with any section there:
/// loading an out-of-tree ipt_REJECT dropped nf_reject_ipv4's symbols and kept the installed
/// ipt_REJECT's beside the loaded build's, so `break ipt_REJECT.c:LINE` went to the wrong file.
#[test]
fn loading_a_module_replaces_its_own_symbols_not_another_modules() {
    kernel();
    let lab = Lab::article("tms-");
    let m = ModDir::from_kernel("syms", "net/ipv4/netfilter/ipt_REJECT.c");
    let build = kernel_path("build_dir");
    let o = std::process::Command::new("make")
        .arg("-C")
        .arg(&build)
        .arg(format!("M={}", m.path()))
        .args(["ARCH=um", "modules"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = Attached::new(&lab.umid("R"));
    s.ok(&["load", &format!("{}/ipt_REJECT.ko", m.path())]);
    let files = s.ok(&["gdb", "info sources"]);
    let objfiles: Vec<&str> = files
        .lines()
        .filter(|l| l.starts_with('/') && l.ends_with(".ko:"))
        .collect();
    let rejects: Vec<&&str> = objfiles
        .iter()
        .filter(|l| l.ends_with("/ipt_REJECT.ko:"))
        .collect();
    assert_eq!(
        rejects,
        vec![&format!("{}/ipt_REJECT.ko:", m.path()).as_str()],
        "{objfiles:?}"
    );
    assert!(
        objfiles.iter().any(|l| l.ends_with("/nf_reject_ipv4.ko:")),
        "{objfiles:?}"
    );
    let line = std::fs::read_to_string(m.0.join("ipt_REJECT.c"))
        .unwrap()
        .lines()
        .position(|l| l.contains(PORT_UNREACH))
        .unwrap()
        + 1;
    let out = s.ok(&["break", &format!("ipt_REJECT.c:{line}")]);
    assert!(out.contains(&format!(" at ipt_REJECT.c:{line} ")), "{out}");
}
