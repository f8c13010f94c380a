//! `umldbg serve` with stock gdb (Debian's gdb 13, batch mode) on the article's lab: real UML
//! machines, real iptables, modules as shared libraries.

mod common;

use std::time::Duration;

use common::serve::*;
use common::*;

fn section(lab: &Lab, m: &str, module: &str, sec: &str) -> u64 {
    let out = lab.must(m, &format!("cat /sys/module/{module}/sections/{sec}"));
    u64::from_str_radix(out.trim().trim_start_matches("0x"), 16).unwrap()
}

/// The scenario: target remote, the module list, break reject_tg, a ping from A
/// through R's REJECT rule, the sk_buff, the backtrace, monitor skb, detach; R passes traffic
/// afterwards and nobody traces it.
#[test]
fn article_scenario_through_the_server_with_stock_gdb() {
    let image = kernel_image();
    let lab = Lab::article("tsa-");
    let r = lab.umid("R");
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let text = section(&lab, "R", "ipt_REJECT", ".text");
    let srv = Server::start(&r, &[]);
    // Pings for about 12 s; the first ones pass before the breakpoint is in.
    let ping = spawn_sh(&lab.umid("A"), "ping -c 40 -i 0.3 -W 1 192.168.20.2");
    let out = gdb(
        &[
            format!("file {}", image.display()),
            format!("target remote {}", srv.address),
            "info sharedlibrary".into(),
            "break reject_tg".into(),
            "continue".into(),
            "p skb->len".into(),
            "bt".into(),
            "monitor skb".into(),
            "detach".into(),
        ],
        Duration::from_secs(120),
    );
    let line =
        solib_line(&out, "ipt_REJECT.ko").unwrap_or_else(|| panic!("no ipt_REJECT.ko in:\n{out}"));
    assert!(
        line.starts_with(&format!("0x{text:016x}")),
        "{line} (.text is {text:#x})"
    );
    assert!(line.contains("Yes"), "{line}");
    for m in [
        "x_tables.ko",
        "ip_tables.ko",
        "nf_reject_ipv4.ko",
        "iptable_filter.ko",
    ] {
        assert!(solib_line(&out, m).is_some(), "{m} missing:\n{out}");
    }
    assert!(out.contains("hit Breakpoint 1, reject_tg (skb="), "{out}");
    assert!(out.contains("$1 = 84"), "{out}");
    let bt: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert!(bt.iter().any(|l| l.contains(" ipt_do_table ")), "{bt:#?}");
    assert!(bt.iter().any(|l| l.contains(" ip_forward ")), "{bt:#?}");
    assert!(
        out.contains("192.168.10.2 > 192.168.20.2") && out.contains("ICMP echo request"),
        "{out}"
    );
    assert!(out.contains("[Inferior 1 (process 1) detached]"), "{out}");
    let _ = ping.wait_with_output();
    // R runs on, untraced, with every int3 gone: the rule still rejects, then traffic passes.
    assert_eq!(tracer_pid(&r), 0);
    let (_, p) = lab.sh("A", "ping -c 1 -W 3 192.168.20.2");
    assert!(p.contains("Destination Port Unreachable"), "{p}");
    lab.must("R", "iptables-legacy -F");
    lab.must("A", "ping -c 2 -W 3 192.168.20.2");
    let log = srv.log_text();
    assert!(
        log.contains("Detached;")
            && log.contains("breakpoints removed, machine detached and running"),
        "{log}"
    );
}

/// Modules loaded and unloaded while gdb is connected: a pending breakpoint in a module the
/// guest loads by itself (iptables) resolves at the library-change stop gdb resumes from on its
/// own; the module's unload drops it from gdb's list; Ctrl-C (SIGINT to gdb) stops the machine;
/// `monitor load` brings the module back.
#[test]
fn modules_loaded_and_unloaded_later_follow_in_gdb_and_ctrl_c_stops() {
    let image = kernel_image();
    let lab = Lab::article("tsl-");
    let r = lab.umid("R");
    let (_, lsmod) = lab.sh("R", "lsmod");
    assert!(!lsmod.contains("ipt_REJECT"), "{lsmod}");
    let srv = Server::start(&r, &[]);
    let run = GdbRun::start(
        &[
            format!("file {}", image.display()),
            format!("target remote {}", srv.address),
            "set breakpoint pending on".into(),
            "break reject_tg".into(),
            "continue".into(),
            "p skb->len".into(),
            "delete".into(),
            "continue".into(),
            "echo ==after-interrupt==\\n".into(),
            "info sharedlibrary".into(),
            "echo ==monitor-load==\\n".into(),
            "monitor load ipt_REJECT.ko".into(),
            "sharedlibrary".into(),
            "info sharedlibrary".into(),
            "detach".into(),
        ],
        "tsl",
    );
    run.wait_for(
        "Breakpoint 1 (reject_tg) pending.",
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_secs(1));
    // iptables makes the guest load ipt_REJECT, nf_reject_ipv4 and iptable_filter.
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let ping = spawn_sh(&lab.umid("A"), "ping -c 1 -W 5 192.168.20.2");
    run.wait_for("$1 = 84", Duration::from_secs(60));
    let _ = ping.wait_with_output();
    std::thread::sleep(Duration::from_secs(1));
    lab.must("R", "iptables-legacy -F FORWARD && rmmod ipt_REJECT");
    std::thread::sleep(Duration::from_secs(1));
    run.signal(nix::sys::signal::Signal::SIGINT);
    let out = run.finish(Duration::from_secs(120));
    let (before, rest) = out
        .split_once("==after-interrupt==")
        .unwrap_or_else(|| panic!("{out}"));
    let (after, reloaded) = rest
        .split_once("==monitor-load==")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        before.contains("hit Breakpoint 1, reject_tg (skb="),
        "{before}"
    );
    assert!(before.contains("received signal SIGINT"), "{out}");
    assert!(
        solib_line(after, "ipt_REJECT.ko").is_none(),
        "still listed after rmmod:\n{after}"
    );
    assert!(solib_line(after, "nf_reject_ipv4.ko").is_some(), "{after}");
    assert!(
        reloaded.contains("ipt_REJECT: loaded, .text 0x"),
        "{reloaded}"
    );
    let line = solib_line(reloaded, "ipt_REJECT.ko").unwrap_or_else(|| panic!("{reloaded}"));
    assert!(line.contains("Yes"), "{line}");
    assert!(reloaded.contains("detached"), "{reloaded}");
    let log = wait_for(
        "the server's end-of-session line",
        Duration::from_secs(20),
        || {
            let l = srv.log_text();
            l.contains("library events").then_some(l)
        },
    );
    let events: u32 = log
        .split(" library events")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // ipt_REJECT, nf_reject_ipv4 and iptable_filter loaded, ipt_REJECT unloaded.
    assert!(events >= 3, "{log}");
    assert_eq!(tracer_pid(&r), 0);
    drop(srv);
    let (_, lsmod) = lab.sh("R", "lsmod");
    assert!(lsmod.contains("ipt_REJECT"), "{lsmod}");
}

/// Bad input: an unknown umid, a non-loopback address, a machine another debugger holds, a
/// second client while one is served, a malformed packet. Clear one-line errors; the machine
/// runs on.
#[test]
fn bad_input_gets_clear_errors_and_the_machine_runs_on() {
    kernel_image();
    let lab = Lab::article("tsb-");
    let r = lab.umid("R");

    let o = umldbg(&["serve", "tsb-no-such-machine"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no UML machine `tsb-no-such-machine`"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim().lines().count(), 2, "{}", stderr(&o));

    let o = umldbg(&["serve", &r, "--listen", "0.0.0.0:0"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a loopback address") && stderr(&o).contains("--allow-remote"),
        "{}",
        stderr(&o)
    );

    // Held by the session daemon's gdb.
    let s = Attached::new(&r);
    let o = umldbg(&["serve", &r, "--listen", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already traced by process"),
        "{}",
        stderr(&o)
    );
    drop(s);
    wait_for(
        "the session's gdb to let go",
        Duration::from_secs(20),
        || (tracer_pid(&r) == 0).then_some(()),
    );

    // One client at a time: the first is a raw connection, the second a gdb.
    let srv = Server::start(&r, &[]);
    let mut first = std::net::TcpStream::connect(&srv.address).unwrap();
    wait_for(
        "the first client to attach",
        Duration::from_secs(30),
        || (tracer_pid(&r) != 0).then_some(()),
    );
    let out = gdb(
        &[
            format!("target remote {}", srv.address),
            "info threads".into(),
        ],
        Duration::from_secs(60),
    );
    assert!(out.contains("one client at a time"), "{out}");
    // A malformed command on the first connection: an E. reply, and the session goes on.
    use std::io::{Read, Write};
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = b"mzz,zz";
    let sum = body.iter().fold(0u8, |a, &c| a.wrapping_add(c));
    first
        .write_all(format!("$mzz,zz#{sum:02x}").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(3).any(|w| w == b"$E.") {
        let n = first.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    first.write_all(b"$?#3f").unwrap();
    let mut got = Vec::new();
    while !got
        .windows(4)
        .any(|w| w == b"$T05" || w == b"$T02" || w == b"$S05")
    {
        let n = first.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    drop(first);
    wait_for("the server to detach", Duration::from_secs(30), || {
        (tracer_pid(&r) == 0).then_some(())
    });
    lab.must("A", "ping -c 1 -W 3 192.168.20.2");
    drop(srv);
}

/// The kernel's own GDB scripts through the server, the README's way: gdb given the image the
/// server names (`build/vmlinux`) with `vmlinux-gdb.py` sourced; `lx-symbols` finds the kernel
/// and every module, `lx-lsmod` and `lx-dmesg` read the guest; `monitor info version` (the
/// scripts' QEMU probe) fails, and a failing `monitor` command stops the gdb script.
#[test]
fn lx_symbols_through_the_server_and_a_failing_monitor_command_stops_the_script() {
    kernel_image();
    let lab = Lab::article("tlx-");
    let r = lab.umid("R");
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let text = section(&lab, "R", "ipt_REJECT", ".text");
    let srv = Server::start(&r, &[]);
    let image = banner_image(&srv);
    assert_eq!(image.file_name().unwrap(), "vmlinux", "{}", srv.banner);
    let build = image.parent().unwrap();
    let modroot = build.parent().unwrap().join("modroot");
    let script = std::env::temp_dir().join(format!("umldbg-tlx-{}.gdb", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "set pagination off\ntarget remote {}\nlx-symbols {}\nlx-lsmod\nlx-dmesg\n\
             echo ==bogus==\\n\nmonitor bogus\necho NOT-REACHED\\n\n",
            srv.address,
            modroot.display()
        ),
    )
    .unwrap();
    let args: Vec<String> = vec![
        "-nx".into(),
        "-batch".into(),
        "-iex".into(),
        "maint set internal-error corefile no".into(),
        "-ex".into(),
        format!("source {}", build.join("vmlinux-gdb.py").display()),
        image.display().to_string(),
        "-x".into(),
        script.display().to_string(),
    ];
    let (status, out) = run_for("gdb", &args, Duration::from_secs(180));
    let _ = std::fs::remove_file(&script);
    assert!(out.contains("loading vmlinux"), "{out}");
    assert!(!out.contains("vmlinux: No such file"), "{out}");
    let loaded = out
        .lines()
        .find(|l| l.starts_with("loading @") && l.ends_with("/ipt_REJECT.ko"))
        .unwrap_or_else(|| panic!("lx-symbols did not load ipt_REJECT:\n{out}"));
    assert!(
        loaded.starts_with(&format!("loading @{text:#x}:")),
        "{loaded}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{text:#x} ipt_REJECT"))),
        "lx-lsmod:\n{out}"
    );
    assert!(out.contains("Linux version"), "lx-dmesg:\n{out}");
    let (_, after) = out
        .split_once("==bogus==")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        after.contains("unknown monitor command \"bogus\""),
        "{after}"
    );
    assert!(
        !after.contains("NOT-REACHED"),
        "the script went on:\n{after}"
    );
    assert_ne!(status, Some(0), "{out}");
    wait_for("the server to detach", Duration::from_secs(30), || {
        (tracer_pid(&r) == 0).then_some(())
    });
    let (_, p) = lab.sh("A", "ping -c 1 -W 3 192.168.20.2");
    assert!(p.contains("Destination Port Unreachable"), "{p}");
}

/// gdb's own breakpoint on `do_init_module`, where the server watches module loads too (as
/// lx-symbols does): a guest `modprobe` stops gdb there, the library list follows when gdb
/// continues, and the server logs nothing wrong at detach.
#[test]
fn a_client_breakpoint_on_do_init_module_and_the_library_change_both_arrive() {
    let image = kernel_image();
    let lab = Lab::article("tlh-");
    let r = lab.umid("R");
    let srv = Server::start(&r, &[]);
    let run = GdbRun::start(
        &[
            format!("file {}", image.display()),
            format!("target remote {}", srv.address),
            "break do_init_module".into(),
            "continue".into(),
            "delete".into(),
            "continue".into(),
            "echo ==after-interrupt==\\n".into(),
            "info sharedlibrary".into(),
            "detach".into(),
        ],
        "tlh",
    );
    run.wait_for("Breakpoint 1 at", Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(1));
    let probe = spawn_sh(&r, "modprobe dummy");
    run.wait_for("Breakpoint 1, do_init_module", Duration::from_secs(60));
    let _ = probe.wait_with_output();
    let (_, lsmod) = lab.sh("R", "lsmod");
    assert!(lsmod.contains("dummy"), "{lsmod}");
    run.signal(nix::sys::signal::Signal::SIGINT);
    let out = run.finish(Duration::from_secs(120));
    let (_, after) = out
        .split_once("==after-interrupt==")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(solib_line(after, "dummy.ko").is_some(), "{after}");
    wait_for("the server to detach", Duration::from_secs(30), || {
        (tracer_pid(&r) == 0).then_some(())
    });
    let log = srv.log_text();
    assert!(!log.contains("no breakpoint at"), "{log}");
    assert!(log.contains("machine detached and running"), "{log}");
    let events: u32 = log
        .split(" library events")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(events >= 1, "{log}");
    lab.must("A", "ping -c 1 -W 3 192.168.20.2");
}
