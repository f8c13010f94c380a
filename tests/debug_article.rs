//! The article's debugging scenario through the CLI (issue: the debug daemon), on a real lab,
//! real gdb and the real iptables.

mod common;

use std::time::Duration;

use common::*;

fn functions(stop: &serde_json::Value) -> Vec<String> {
    stop["backtrace"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn article_scenario_attach_load_break_wait_print_detach() {
    kernel();
    let lab = Lab::article("tda-");
    let r = lab.umid("R");
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let s = Attached::new(&r);
    let out = s.ok(&["load", "ipt_REJECT.ko"]);
    assert!(out.contains("ipt_REJECT: .text 0x"), "{out}");
    s.ok(&["break", "reject_tg"]);
    let ping = spawn_sh(&lab.umid("A"), "ping -c 5 -i 0.5 -W 5 192.168.20.2");
    let stop = s.json(&["wait", "--timeout", "60"]);
    assert_eq!(stop["function"], "reject_tg", "{stop}");
    assert_eq!(stop["reason"], "breakpoint-hit");
    assert!(
        stop["args"]["skb"].as_str().unwrap().starts_with("0x"),
        "{stop}"
    );
    let f = functions(&stop);
    assert!(f.iter().any(|n| n == "ipt_do_table"), "{f:?}");
    assert!(f.iter().any(|n| n == "ip_forward"), "{f:?}");
    assert_eq!(s.ok(&["print", "skb->len"]).trim(), "84");
    // The article's `s` and `list`.
    let stepped = s.ok(&["step"]);
    assert!(
        stepped.contains("ipt_REJECT.c") || stepped.contains("x_tables.h"),
        "{stepped}"
    );
    assert!(!s.ok(&["list"]).trim().is_empty());
    s.ok(&["detach"]);
    let _ = ping.wait_with_output();
    // R keeps running, and the rule still rejects until it is flushed.
    let (rc, out) = lab.sh("A", "ping -c 1 -W 3 192.168.20.2");
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("Destination Port Unreachable"), "{out}");
    lab.must("R", "iptables-legacy -F");
    lab.must("A", "ping -c 1 -W 3 192.168.20.2");
}

#[test]
fn module_built_out_of_tree_loads_from_host_tmp_with_its_dependencies() {
    let build = kernel_path("build_dir");
    // The article's "Building Modules": ipt_REJECT.c out of the tree, a one-line Makefile.
    let dir = std::env::temp_dir().join(format!("umldbg-oot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        build.join("net/ipv4/netfilter/ipt_REJECT.c"),
        dir.join("ipt_REJECT.c"),
    )
    .unwrap();
    std::fs::write(dir.join("Makefile"), "obj-m += ipt_REJECT.o\n").unwrap();
    let o = std::process::Command::new("make")
        .arg("-C")
        .arg(&build)
        .arg(format!("M={}", dir.display()))
        .args(["ARCH=um", "modules"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ko = dir.join("ipt_REJECT.ko");

    let lab = Lab::article("tdo-");
    let r = lab.umid("R");
    let (_, lsmod) = lab.sh("R", "lsmod");
    assert!(!lsmod.contains("ipt_REJECT"), "already loaded: {lsmod}");
    let s = Attached::new(&r);
    let out = s.ok(&["load", ko.to_str().unwrap()]);
    assert!(out.contains(&ko.display().to_string()), "{out}");
    let lsmod = lab.must("R", "lsmod");
    assert!(
        lsmod.contains("ipt_REJECT") && lsmod.contains("nf_reject_ipv4"),
        "{lsmod}"
    );
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    s.ok(&["break", "reject_tg"]);
    let mut ping = spawn_sh(&lab.umid("A"), "ping -c 5 -i 0.5 -W 5 192.168.20.2");
    let stop = s.json(&["wait", "--timeout", "60"]);
    assert_eq!(stop["function"], "reject_tg", "{stop}");
    let files: Vec<&str> = stop["backtrace"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["file"].as_str())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.contains("ipt_REJECT.c") || f.contains("x_tables.h")),
        "{files:?}"
    );
    s.ok(&["continue"]);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = ping.kill();
    let _ = ping.wait();
}

#[test]
fn symbols_follow_modules_loaded_later_and_breakpoints_survive_forks() {
    kernel();
    let lab = Lab::article("tdf-");
    let r = lab.umid("R");
    // gdb missing: one line naming it, and the machine is left alone.
    let o = umldbg(&["attach", &r, "--gdb", "/nonexistent/gdb"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/gdb"), "{}", stderr(&o));
    let s = Attached::new(&r);
    // Loaded in the guest by hand after attach: its symbols arrive with no command.
    lab.must("R", "modprobe ipt_REJECT");
    let st = s.json(&["status"]);
    let mods: Vec<&str> = st["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(mods.contains(&"ipt_REJECT"), "{mods:?}");
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    s.ok(&["break", "reject_tg"]);
    // Guest processes fork (each command line forks several); the breakpoint must stay.
    lab.must(
        "R",
        "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; sh -c true; done",
    );
    let ping = spawn_sh(&lab.umid("A"), "ping -c 5 -i 0.5 -W 5 192.168.20.2");
    let stop = s.json(&["wait", "--timeout", "60"]);
    assert_eq!(stop["function"], "reject_tg", "{stop}");
    // The other pings would stop the machine again: drop the breakpoint, let them finish.
    let id = stop["breakpoint"]
        .as_u64()
        .expect("breakpoint number")
        .to_string();
    s.ok(&["delete", &id]);
    s.ok(&["continue"]);
    let _ = ping.wait_with_output();

    // Bad input: one-line errors, and the session goes on.
    let o = s.run(&["break", "rejet_tg"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("did you mean reject_tg"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["load", "/nonexistent/x.ko"]);
    assert!(
        !o.status.success() && stderr(&o).contains("/nonexistent/x.ko"),
        "{}",
        stderr(&o)
    );
    let o = umldbg(&["attach", &r]);
    assert!(
        !o.status.success() && stderr(&o).contains("already attached"),
        "{}",
        stderr(&o)
    );
    let o = umldbg(&["attach", "tdf-no-such-machine"]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    let st = s.ok(&["status"]);
    assert!(st.contains("session on"), "{st}");
    // The daemon's log, named by status, is there.
    let log = st
        .lines()
        .find_map(|l| l.strip_prefix("log "))
        .unwrap_or_else(|| panic!("status names no log: {st}"));
    assert!(std::path::Path::new(log).is_file(), "{log}");
}

/// 300 UDP datagrams from A to B through R's REJECT rule.
const UDP_BURST: &str = "python3 -c \"import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(300):\n    s.sendto(b'x',('192.168.20.2',9))\n    time.sleep(0.001)\n\"";

#[test]
fn killing_gdb_or_the_daemon_never_brings_the_machine_down() {
    kernel();
    let lab = Lab::article("tdk-");
    let r = lab.umid("R");
    lab.must("R", "iptables-legacy -A FORWARD -p udp -j REJECT");
    for round in 0..6 {
        let s = Attached::new(&r);
        // The breakpoint is in reject_tg's text while the machine runs; a condition that never
        // holds keeps gdb resuming by itself from every hit.
        s.ok(&["break", "reject_tg", "--if", "skb->len == 1"]);
        lab.must("A", UDP_BURST);
        // gdb handles each hit (evaluates the condition, steps over, resumes); the kill comes once
        // R has worked through its queue (a kill that lands in the middle of a hit is the case the
        // kernel patch cannot tell apart yet: see the README).
        let mut last = String::new();
        wait_for("R to drain its queue", Duration::from_secs(60), || {
            std::thread::sleep(Duration::from_millis(300));
            let now = lab.must("R", "iptables-legacy -L FORWARD -v -x -n | grep REJECT");
            let same = now == last;
            last = now;
            same.then_some(())
        });
        let st = s.json(&["status"]);
        let uml_pid = st["pid"].as_i64().unwrap() as i32;
        let breaks = s.json(&["breaks"]);
        let addr = breaks[0]["addr"]
            .as_str()
            .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(|| panic!("no address in {breaks}"));
        let victim = if round % 2 == 0 {
            st["gdb_pid"].as_i64()
        } else {
            st["daemon_pid"].as_i64()
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim.unwrap() as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        wait_for("the session to end", Duration::from_secs(10), || {
            (!umldbg(&["--umid", &r, "status"]).status.success()).then_some(())
        });
        std::mem::forget(s);
        // The guard (watching gdb) puts the byte back once gdb is gone, whichever was killed.
        let text_byte = || {
            use std::os::unix::fs::FileExt;
            let mut b = [0u8; 1];
            std::fs::File::open(format!("/proc/{uml_pid}/mem"))
                .and_then(|f| f.read_exact_at(&mut b, addr))
                .map(|()| b[0])
                .unwrap()
        };
        wait_for(
            "reject_tg's first byte to be back",
            Duration::from_secs(10),
            || (text_byte() != 0xcc).then_some(()),
        );
        // Then traffic through the path where the breakpoint sat.
        lab.must("A", UDP_BURST);
    }
    lab.must(
        "R",
        "iptables-legacy -F; iptables-legacy -A FORWARD -p icmp -j REJECT",
    );
    let (_, out) = lab.sh("A", "ping -c 2 -W 3 192.168.20.2");
    assert!(
        out.contains("Destination Port Unreachable"),
        "R did not reject: {out}"
    );
    let counters = lab.must("R", "iptables-legacy -L FORWARD -v -x -n");
    assert!(counters.contains("REJECT"), "{counters}");
    lab.assert_all_alive();
}

#[test]
fn hand_started_machine_gets_module_sections_from_kernel_memory() {
    // No shell on a console: module addresses can only come from kernel memory.
    let m = common::hand::HandMachine::boot(common::hand::Boot {
        tag: "mem",
        init: "",
        console_shell: false,
        ipt_reject: true,
    });
    let (umid, text) = (m.umid.clone(), m.text);

    let o = umldbg(&["attach", &umid]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("from kernel memory"), "{}", stdout(&o));
    let st: serde_json::Value =
        serde_json::from_str(&ok(&["--json", "--umid", &umid, "status"])).unwrap();
    let m = st["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ipt_REJECT")
        .expect("ipt_REJECT in status");
    assert_eq!(m["text"].as_u64().unwrap(), text, "{m}");
    assert_eq!(m["source"], "memory");
    let out = ok(&["--umid", &umid, "break", "reject_tg"]);
    assert!(out.contains("reject_tg"), "{out}");
    ok(&["--umid", &umid, "detach"]);
}
