//! The article's network as a lab (issue: Lab), on real UML machines, real bridges and taps in a
//! network namespace of the lab's own, and the real iptables.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn article_lab_forwards_nats_rejects_and_cleans_up() {
    kernel();
    let lab = Lab::article("tla-");
    let st: serde_json::Value = serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
    let me = st
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == lab.name.as_str())
        .expect("lab in status");
    let pids: Vec<i64> = me["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(pids.len(), 3);
    // The supervisor's log, named by status, is where it writes.
    let log = me["log"]
        .as_str()
        .expect("status names the supervisor's log");
    assert!(std::path::Path::new(log).is_file(), "{log}");

    // A pings B through R: one hop, so the replies arrive with ttl 63.
    let out = lab.must("A", "ping -c 2 -W 3 192.168.20.2");
    assert!(out.contains("ttl=63"), "{out}");

    // The route leaves A through R: the first hop towards the lab host is 192.168.10.1.
    let out = lab.must("A", "traceroute -n -q 1 -w 2 192.168.30.1");
    let first = out
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or("");
    assert!(first.contains("192.168.10.1"), "first hop: {out}");

    // NAT: on the uplink, A's ping leaves with R's uplink address.
    let pcap = umldbg::util::cache_dir()
        .join("test-tmp")
        .join(format!("uplink-{}.pcap", std::process::id()));
    std::fs::create_dir_all(pcap.parent().unwrap()).unwrap();
    let mut cap = Command::new(bin())
        .args([
            "capture",
            "uplink",
            "--lab",
            &lab.name,
            // The uplink also carries the guests' IPv6 multicast reports.
            "--count",
            "12",
            "--duration",
            "20",
            "-w",
        ])
        .arg(&pcap)
        .spawn()
        .unwrap();
    // tcpdump needs a moment to open the bridge; ping until the capture has its packets.
    let status = wait_for("the uplink capture", Duration::from_secs(25), || {
        lab.sh("A", "ping -c 1 -W 1 192.168.30.1");
        cap.try_wait().unwrap()
    });
    assert!(status.success());
    let read = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&pcap)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(
        text.contains("192.168.30.2 > 192.168.30.1: ICMP echo request"),
        "capture: {text}"
    );
    assert!(
        !text.contains("192.168.10.2 >"),
        "A's own address leaked onto the uplink: {text}"
    );
    let _ = std::fs::remove_file(&pcap);

    // The article's demonstration: REJECT on R's FORWARD chain, then flush.
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let (rc, out) = lab.sh("A", "ping -c 1 -W 3 192.168.20.2");
    assert_ne!(rc, 0, "ping went through the REJECT rule: {out}");
    assert!(
        out.contains("From 192.168.10.1") && out.contains("Destination Port Unreachable"),
        "{out}"
    );
    lab.must("R", "iptables-legacy -F");
    lab.must("A", "ping -c 1 -W 3 192.168.20.2");

    // The guest's root is a read-only view of the host's: /root, /etc, /var are the machine's own
    // overlay, so a write there succeeds in the guest and nothing appears on the host.
    let marker = umldbg::util::cache_dir().join(format!("guest-write-{}", std::process::id()));
    let out = lab.must(
        "A",
        &format!("echo x > {m} && cat {m}", m = marker.display()),
    );
    assert_eq!(out.trim(), "x");
    assert!(!marker.exists(), "a guest wrote {}", marker.display());
    let (rc, _) = lab.sh("A", "echo x > /usr/umldbg-guest-write");
    assert_ne!(rc, 0, "a guest wrote into /usr");

    // Down: no UML process, namespace (with its taps and bridges) or ~/.uml dir of the lab stays.
    ok(&["lab", "down", &lab.name]);
    for p in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "pid {p} still runs"
        );
    }
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ns.stdout).contains(&format!("umldbg-{}", lab.name)));
    for m in ["A", "R", "B"] {
        let d = umldbg::util::home_dir().join(".uml").join(lab.umid(m));
        assert!(!d.exists(), "{} remains", d.display());
    }
}

#[test]
fn kathara_lab_machines_ping_each_other() {
    kernel();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/lab/kathara-two");
    let prefix = "tlk-";
    let o = umldbg(&["lab", "up", dir, "--prefix", prefix]);
    let lab = Lab::with_name(&format!("{prefix}kathara-two"), prefix);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = lab.must("pc1", "ping -c 2 -W 3 10.0.0.2");
    assert!(out.contains("2 received"), "{out}");
}

#[test]
fn bad_lab_input_gets_one_line_errors() {
    kernel();
    let dir = umldbg::util::cache_dir()
        .join("test-tmp")
        .join(format!("badlab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(&f, "name = \"x\"\n[[machine]]\numid = \"a\"\nbogus = 1\n").unwrap();
    let o = umldbg(&["lab", "up", f.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("bad.toml:4:"), "no file:line:col in {e}");

    // A umid that is running already (here: a lab of our own) is refused, and nothing is created.
    let lab = Lab::article("tlb-");
    let o = umldbg(&["lab", "up", "--name", "tlb-other", "--prefix", "tlb-"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("already running"), "{e}");
    assert!(!std::path::Path::new("/run/netns/umldbg-tlb-tlb-other").exists());

    // exec on an unknown machine; a command that outlives its timeout; the console still works.
    let o = umldbg(&["exec", "no-such-machine", "--", "true"]);
    assert!(
        !o.status.success() && stderr(&o).contains("no running lab has a machine no-such-machine")
    );
    let o = umldbg(&[
        "exec",
        &lab.umid("A"),
        "--timeout",
        "1",
        "--",
        "sleep",
        "30",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("did not finish within 1 s"),
        "{}",
        stderr(&o)
    );
    let o = umldbg(&[
        "exec",
        &lab.umid("A"),
        "--",
        "python3",
        "-c",
        "print('it''s', 1+1)",
    ]);
    assert_eq!(stdout(&o).trim(), "its 2");

    // The interactive console: a shell on the machine's serial line, left with Ctrl-].
    use std::io::Write;
    let mut c = std::process::Command::new(bin())
        .args(["console", &lab.umid("A")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(b"echo console-$((6*7))\n").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    stdin.write_all(&[0x1d]).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("console-42"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
