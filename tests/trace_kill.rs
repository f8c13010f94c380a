//! Tests UML, iptables and a network: a tracer killed with SIGKILL in the middle of a busy trace,
//! over and over, never leaves a breakpoint or probe byte in kernel text and never crashes the
//! machine; traffic through the traced functions goes on afterwards.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Lab, spawn_sh, wait_for};

/// Address of a function in the running kernel image (`nm` of /proc/<pid>/exe).
fn kernel_symbol(pid: i32, name: &str) -> u64 {
    let out = Command::new("nm")
        .arg(format!("/proc/{pid}/exe"))
        .output()
        .expect("run nm");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let (a, _, n) = (it.next()?, it.next()?, it.next()?);
            (n == name)
                .then(|| u64::from_str_radix(a, 16).ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("{name} not in the kernel image"))
}

/// reject_tg in the guest: its module's .text plus its offset in ipt_REJECT.ko.
fn reject_tg(lab: &Lab) -> u64 {
    let text = lab.must("R", "cat /sys/module/ipt_REJECT/sections/.text");
    let base = u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).unwrap();
    let k = common::kernel();
    let dir = std::path::PathBuf::from(k["modules_dir"].as_str().unwrap());
    let ko = Command::new("find")
        .arg(&dir)
        .args(["-name", "ipt_REJECT.ko"])
        .output()
        .unwrap();
    let ko = String::from_utf8_lossy(&ko.stdout)
        .lines()
        .next()
        .expect("ipt_REJECT.ko")
        .to_string();
    let out = Command::new("nm").arg(&ko).output().unwrap();
    let off = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.ends_with(" reject_tg")
                .then(|| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
                .flatten()
        })
        .expect("reject_tg in ipt_REJECT.ko");
    base + off
}

fn read(pid: i32, addr: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, addr).unwrap();
    b
}

/// Starts a trace and waits until its probes (or breakpoints) are in.
fn start(umid: &str, extra: &[&str]) -> std::process::Child {
    let mut args = vec!["trace", umid];
    if !extra.contains(&"--all-skb") {
        args.extend_from_slice(&["reject_tg", "ip_forward", "ip_rcv_core", "--skb"]);
    }
    args.push("--quiet");
    args.extend_from_slice(extra);
    let mut c = Command::new(common::bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(c.stderr.as_mut().unwrap());
    let mut line = String::new();
    // Functions --all-skb leaves out come first, one line each.
    while line.is_empty() || line.contains(": not probed: ") {
        line.clear();
        err.read_line(&mut line).unwrap();
    }
    let want = if extra.contains(&"--all-skb") {
        "function(s) on"
    } else {
        "tracing 3 function"
    };
    assert!(line.contains(want), "tracer did not start: {line}");
    c
}

fn kill_rounds(lab: &Lab, pid: i32, sites: &[(u64, Vec<u8>)], rounds: usize, extra: &[&str]) {
    for round in 0..rounds {
        let mut c = start(&lab.umid("R"), extra);
        // Some hits first, then SIGKILL at a varying moment.
        std::thread::sleep(Duration::from_millis(150 + (round as u64 * 37) % 400));
        c.kill().unwrap();
        c.wait().unwrap();
        // The guard puts the bytes back within milliseconds.
        wait_for("original bytes back", Duration::from_secs(2), || {
            sites
                .iter()
                .all(|(a, orig)| read(pid, *a, orig.len()) == *orig)
                .then_some(())
        });
        assert!(
            common::umldbg(&["exec", &lab.umid("R"), "--", "true"])
                .status
                .success(),
            "R died in round {round}"
        );
    }
}

/// A lab with R's REJECT rule, a UDP stream from A, and the bytes of the traced functions.
struct Busy {
    lab: Lab,
    pid: i32,
    sites: Vec<(u64, Vec<u8>)>,
    sender: std::process::Child,
}

fn busy(prefix: &str) -> Busy {
    let lab = Lab::article(prefix);
    lab.must("R", "iptables-legacy -A FORWARD -p udp -j REJECT");
    let pid: i32 = std::fs::read_to_string(
        umldbg::uml::instance::default_uml_dir()
            .join(lab.umid("R"))
            .join("pid"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let sites: Vec<(u64, Vec<u8>)> = [
        reject_tg(&lab),
        kernel_symbol(pid, "ip_forward"),
        kernel_symbol(pid, "ip_rcv_core"),
    ]
    .into_iter()
    .map(|a| (a, read(pid, a, 8)))
    .collect();
    for (a, orig) in &sites {
        assert_ne!(orig[0], 0xcc, "{a:#x} already holds an int3");
    }
    // A steady UDP stream through R's REJECT rule while the tracers come and go.
    let sender = spawn_sh(
        &lab.umid("A"),
        "python3 -c \"import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nend=time.time()+55\n\
         while time.time()<end: s.sendto(b'x'*32,('192.168.20.2',9999))\"",
    );
    std::thread::sleep(Duration::from_millis(500));
    Busy {
        lab,
        pid,
        sites,
        sender,
    }
}

/// No int3, no jump left, and the traced functions still do their work.
fn check_after(b: &mut Busy) {
    let _ = b.sender.kill();
    let _ = b.sender.wait();
    for (a, orig) in &b.sites {
        assert_eq!(
            &read(b.pid, *a, orig.len()),
            orig,
            "bytes at {a:#x} changed"
        );
    }
    let lab = &b.lab;
    let before = lab.forward_rejects();
    lab.must(
        "A",
        "python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range(1000): s.sendto(b'y'*32,('192.168.20.2',9999))\"",
    );
    wait_for("1000 more rejects", Duration::from_secs(30), || {
        (lab.forward_rejects() >= before + 1000).then_some(())
    });
    let ping = lab.must("A", "ping -c 1 -W 5 192.168.20.2");
    assert!(ping.contains("1 received"), "{ping}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid)).unwrap();
    assert!(status.contains("TracerPid:\t0"), "R is still traced");
}

#[test]
fn sigkill_of_the_tracer_leaves_no_trap_in_kernel_text() {
    // The default mode: probes, no ptrace while they record.
    let mut b = busy("trk-");
    kill_rounds(&b.lab, b.pid, &b.sites, 20, &[]);
    check_after(&mut b);
}

#[test]
fn sigkill_of_a_stop_mode_tracer_leaves_the_machine_running() {
    // Breakpoints (trap probes): threads stopped in the tracer's hands when it dies. This one
    // needs the kernel's patch 0001 (a stray kernel-mode SIGTRAP waits for its byte).
    let mut b = busy("trs-");
    let image = format!("/proc/{}/exe", b.pid);
    let has = Command::new("grep")
        .args(["-c", "left by a dead debugger", &image])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&has.stdout).trim() != "0",
        "the machine's kernel lacks patch 0001 (scripts/kernel-patches): rebuild it with `umldbg kernel build`"
    );
    kill_rounds(&b.lab, b.pid, &b.sites, 20, &["--stop"]);
    check_after(&mut b);
}

#[test]
fn sigkill_with_every_skb_function_probed_leaves_every_byte_and_the_machine_forwarding() {
    // More than a thousand probes at once, with the in-kernel filter (nothing selected: the
    // stream is UDP) and without.
    let mut b = busy("trk1k-");
    let list = common::ok(&["trace", &b.lab.umid("R"), "--all-skb", "--list", "--json"]);
    let sites: Vec<(u64, Vec<u8>)> = list
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| u64::from_str_radix(v["addr"].as_str()?.trim_start_matches("0x"), 16).ok())
        .map(|a| (a, read(b.pid, a, 8)))
        .collect();
    assert!(sites.len() > 1000, "{}", sites.len());
    b.sites = sites;
    kill_rounds(&b.lab, b.pid, &b.sites, 10, &["--all-skb", "icmp"]);
    kill_rounds(&b.lab, b.pid, &b.sites, 10, &["--all-skb"]);
    check_after(&mut b);
}
