//! `umldbg serve` with LLDB (Debian's lldb 14, batch mode) on the article's lab: real UML
//! machines, real iptables. LLDB takes its registers from the target description, places the
//! modules from the SVR4 library list, and evaluates expressions in memory the server keeps.

mod common;

use std::time::Duration;

use common::serve::*;
use common::*;

fn section(lab: &Lab, m: &str, module: &str, sec: &str) -> u64 {
    let out = lab.must(m, &format!("cat /sys/module/{module}/sections/{sec}"));
    u64::from_str_radix(out.trim().trim_start_matches("0x"), 16).unwrap()
}

/// Connect, read registers, list the modules, break on reject_tg by name, stop there on a ping
/// from A with the frame decoded, `p skb->len`, detach; R is untraced afterwards and still
/// rejects.
#[test]
fn lldb_breaks_on_reject_tg_by_name_through_the_server() {
    kernel_image();
    let lab = Lab::article("tll-");
    let r = lab.umid("R");
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let text = section(&lab, "R", "ipt_REJECT", ".text");
    let srv = Server::start(&r, &[]);
    let image = banner_image(&srv);
    assert!(image.ends_with("vmlinux"), "{}", srv.banner);
    // Pings for about 12 s; the first ones pass before the breakpoint is in.
    let ping = spawn_sh(&lab.umid("A"), "ping -c 40 -i 0.3 -W 1 192.168.20.2");
    let mut args: Vec<String> = vec!["-b".into(), "--no-use-colors".into()];
    for c in [
        format!("target create {}", image.display()),
        format!("gdb-remote {}", srv.address),
        "register read rip rsp".into(),
        "image list".into(),
        "image dump sections ipt_REJECT.ko".into(),
        "breakpoint set -n reject_tg".into(),
        "continue".into(),
        "bt 4".into(),
        "up".into(),
        "frame variable skb".into(),
        "p skb->len".into(),
        "detach".into(),
    ] {
        args.push("-o".into());
        args.push(c);
    }
    let (_, out) = run_for("lldb", &args, Duration::from_secs(180));
    let _ = ping.wait_with_output();
    // Registers from the target description.
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("rip = 0x")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("rsp = 0x")),
        "{out}"
    );
    // Every module listed, ipt_REJECT's .text where the guest has it.
    for ko in [
        "ipt_REJECT.ko",
        "x_tables.ko",
        "ip_tables.ko",
        "nf_reject_ipv4.ko",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with('[') && l.trim_end().ends_with(&format!("/{ko}"))),
            "{ko} not in image list:\n{out}"
        );
    }
    let text_line = out
        .lines()
        .find(|l| l.contains("ipt_REJECT.ko..text"))
        .unwrap_or_else(|| panic!("no .text section:\n{out}"));
    assert!(
        text_line.contains(&format!("[0x{text:016x}-")),
        "{text_line} (.text is {text:#x})"
    );
    // The breakpoint by name resolves in the module, and the stop is a breakpoint stop.
    assert!(
        out.contains("Breakpoint 1: where = ipt_REJECT.ko`reject_tg"),
        "{out}"
    );
    assert!(out.contains("stop reason = breakpoint 1.1"), "{out}");
    assert!(out.contains("ipt_REJECT.ko`reject_tg"), "{out}");
    assert!(out.contains("ip_tables.ko`ipt_do_table"), "{out}");
    assert!(out.contains("(sk_buff *) skb = 0x"), "{out}");
    assert!(out.contains("$0 = 84"), "{out}");
    assert!(out.contains("detached"), "{out}");
    // R runs on, untraced, every int3 gone: the rule still rejects.
    wait_for("the server to detach", Duration::from_secs(30), || {
        (tracer_pid(&r) == 0).then_some(())
    });
    let (_, p) = lab.sh("A", "ping -c 1 -W 3 192.168.20.2");
    assert!(p.contains("Destination Port Unreachable"), "{p}");
    let log = srv.log_text();
    assert!(
        log.contains("machine detached and running") && !log.contains("exited"),
        "{log}"
    );
}
