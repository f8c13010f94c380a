//! Tests UML, iptables and a network: "where is my packet?" — `umldbg trace --all-skb` with a
//! pcap-filter expression over every function that takes a `struct sk_buff *`, on one machine or
//! a whole lab, with real packets: the selected packet's path and the kernel's drop reason by
//! name, nothing for traffic the filter does not select, clear errors for bad input.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Lab;

/// A running trace: its stdout lines are collected; stderr is read until it says it traces.
struct Tracer {
    child: Child,
    lines: Option<std::thread::JoinHandle<Vec<String>>>,
    stderr: std::sync::mpsc::Receiver<String>,
}

fn start(args: &[&str]) -> Tracer {
    let mut child = Command::new(common::bin())
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the tracer");
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut seen = Vec::new();
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the tracer did not start: {seen:?}"));
        if l.contains("Ctrl-C stops") {
            break;
        }
        // Lines before the start say which functions were left out, and why.
        assert!(l.contains(": not probed: "), "{l}");
        seen.push(l);
    }
    Tracer {
        child,
        lines: Some(lines),
        stderr: rx,
    }
}

impl Tracer {
    /// Ctrl-C, then every JSON line it printed.
    fn stop(mut self) -> Vec<serde_json::Value> {
        std::thread::sleep(Duration::from_millis(700));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGINT,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        let lines = self.lines.take().unwrap().join().unwrap();
        let errs: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "tracer failed: {errs:?}");
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::SIGINT,
            );
            let _ = self.child.wait();
        }
    }
}

fn hits(v: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    v.iter().filter(|h| h.get("function").is_some()).collect()
}

fn on<'a>(hits: &[&'a serde_json::Value], machine: &str) -> Vec<&'a serde_json::Value> {
    hits.iter()
        .copied()
        .filter(|h| h["machine"] == machine)
        .collect()
}

fn functions(hits: &[&serde_json::Value]) -> Vec<String> {
    hits.iter()
        .map(|h| h["function"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn all_skb_over_a_lab_follows_a_ping_to_rs_reject_and_names_the_drop() {
    let lab = Lab::article("tpw-");
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let t = start(&[
        "--lab",
        &lab.name,
        "--all-skb",
        "--json",
        "icmp and host 192.168.20.2",
    ]);
    // UDP and TCP at the same time are not reported.
    lab.sh(
        "A",
        "python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range(50): s.sendto(b'u'*20,('192.168.20.2',5555))\"",
    );
    let (_, out) = lab.sh("A", "ping -c 1 -W 3 192.168.20.2");
    assert!(out.contains("Unreachable"), "{out}");
    let v = t.stop();
    let all = hits(&v);
    // Only ICMP to or from B's address, followed by address: no UDP, no TCP.
    for h in &all {
        if let Some(ip) = h.get("skb").and_then(|s| s.get("ipv4")) {
            assert_eq!(ip["protocol"], 1, "{h}");
        }
    }
    let a = on(&all, "MachineA");
    let r = on(&all, "MachineR");
    let b = on(&all, "MachineB");
    // B never gets the echo request (it answers A's UDP with ICMP errors of its own, which the
    // filter rightly selects: ICMP from 192.168.20.2).
    assert!(
        b.iter().all(|h| h["skb"]["icmp"]["type"] != 8),
        "B saw the echo request: {:?}",
        functions(&b)
    );
    // A's output path.
    let fa = functions(&a);
    for f in ["ip_output", "ip_finish_output2", "__dev_queue_xmit"] {
        assert!(fa.iter().any(|x| x == f), "{f} not on A: {fa:?}");
    }
    let request = a
        .iter()
        .find(|h| h["function"] == "ip_output")
        .expect("ip_output on A");
    assert_eq!(request["skb"]["ipv4"]["src"], "192.168.10.2");
    assert_eq!(request["skb"]["ipv4"]["dst"], "192.168.20.2");
    assert_eq!(request["skb"]["icmp"]["type"], 8);
    // R's forward path, and the drop by the REJECT rule with the kernel's reason by name, on
    // the same skb R received.
    let fr = functions(&r);
    for f in ["ip_rcv_core", "ip_forward", "nf_hook_slow"] {
        assert!(fr.iter().any(|x| x == f), "{f} not on R: {fr:?}");
    }
    let fwd = r.iter().find(|h| h["function"] == "ip_forward").unwrap();
    let drop = r
        .iter()
        .find(|h| h["end"] == "dropped")
        .unwrap_or_else(|| panic!("no drop on R: {fr:?}"));
    assert_eq!(drop["function"], "sk_skb_reason_drop");
    assert_eq!(drop["reason"], "NETFILTER_DROP");
    assert_eq!(drop["skb_addr"], fwd["skb_addr"]);
    assert_eq!(drop["packet"], fwd["packet"]);
    let f_at = |f: &str| fr.iter().position(|x| x == f).unwrap();
    assert!(f_at("ip_rcv_core") < f_at("ip_forward"));
    assert!(f_at("ip_forward") < fr.iter().position(|x| x == "sk_skb_reason_drop").unwrap());
    // The journey joined across machines: A, then R, ending in the drop.
    let journey = v
        .iter()
        .filter_map(|x| x.get("journey"))
        .find(|j| {
            j["key"]["icmp_type"] == 8
                && j["steps"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["machine"] == "MachineR"))
        })
        .unwrap_or_else(|| panic!("no joined journey: {v:?}"));
    let steps = journey["steps"].as_array().unwrap();
    let mut order: Vec<&str> = steps
        .iter()
        .map(|s| s["machine"].as_str().unwrap())
        .collect();
    order.dedup();
    // A first, then R; A's own freeing of its copy may come after R's hits (TX completion).
    assert_eq!(order[..2], ["MachineA", "MachineR"], "{journey}");
    assert!(order.iter().all(|m| *m != "MachineB"), "{journey}");
    assert!(
        steps
            .iter()
            .any(|s| s["end"] == "dropped: NETFILTER_DROP" && s["machine"] == "MachineR"),
        "{journey}"
    );
    let summaries = summaries(&v);
    assert_eq!(summaries.len(), 3);
    for s in summaries {
        assert_eq!(s["lost"], 0, "{s}");
        assert!(s["functions"].as_u64().unwrap() > 1000, "{s}");
    }
    lab.assert_all_alive();
}

#[test]
fn udp_to_a_closed_port_ends_with_no_socket_and_a_filter_that_matches_nothing_shows_nothing() {
    let lab = Lab::article("tpu-");
    let b = lab.umid("B");
    // A UDP datagram to a port nobody listens on, on B.
    let pcap = std::env::temp_dir().join(format!("umldbg-trace-pwru-{}.pcap", std::process::id()));
    let t = start(&[
        &b,
        "--all-skb",
        "--json",
        "--pcap",
        pcap.to_str().unwrap(),
        "udp and dst port 4444",
    ]);
    lab.sh("A", "ping -c 1 -W 3 192.168.20.2");
    lab.must(
        "A",
        "python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.sendto(b'closed-port',('192.168.20.2',4444))\"",
    );
    let v = t.stop();
    let all = hits(&v);
    let f = functions(&all);
    assert!(f.iter().any(|x| x == "udp_rcv"), "{f:?}");
    for h in &all {
        if let Some(u) = h.get("skb").and_then(|s| s.get("udp")) {
            assert_eq!(u["dport"], 4444, "{h}");
        }
        assert!(h["skb"].get("icmp").is_none(), "ping reported: {h}");
    }
    let drop = all
        .iter()
        .find(|h| h["end"] == "dropped")
        .unwrap_or_else(|| panic!("no drop: {f:?}"));
    assert_eq!(drop["reason"], "NO_SOCKET", "{drop}");
    assert_eq!(drop["skb"]["udp"]["dport"], 4444);
    let summary = v.iter().find_map(|x| x.get("summary")).unwrap();
    assert_eq!(summary["packets"], 1, "{summary}");
    // The pcap holds the selected packet once, as tcpdump reads it.
    let out = Command::new("tcpdump")
        .arg("-r")
        .arg(&pcap)
        .args(["-nn", "-A"])
        .output()
        .expect("run tcpdump");
    let _ = std::fs::remove_file(&pcap);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" IP ")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("192.168.10.2."), "{text}");
    assert!(lines[0].contains("> 192.168.20.2.4444: UDP"), "{text}");
    assert!(text.contains("closed-port"), "{text}");

    // A filter that selects nothing: no hit, while the machine sees traffic.
    let t = start(&[&b, "--all-skb", "--json", "udp and port 4242"]);
    lab.must("A", "ping -c 2 -i 0.2 -W 3 192.168.20.2");
    let v = t.stop();
    assert!(hits(&v).is_empty(), "{v:?}");
    let summary = v.iter().find_map(|x| x.get("summary")).unwrap();
    assert_eq!(summary["packets"], 0);
    assert!(
        summary["unselected_hits"].as_u64().unwrap() > 0,
        "{summary}"
    );

    // Bad input: one line naming it, nothing started.
    for (args, want) in [
        (
            vec![b.as_str(), "--all-skb", "icmp andd host"],
            "bad filter expression `icmp andd host`: ",
        ),
        (
            vec![b.as_str(), "--match", "ip_(", "icmp"],
            "bad --match regex `ip_(`",
        ),
        (
            vec![b.as_str(), "--match", "^no_such_function_here$"],
            "--match `^no_such_function_here$`: no function",
        ),
    ] {
        let o = common::umldbg(&[&["trace"][..], &args].concat());
        let e = common::stderr(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(e.contains(want), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
    // --list: what --all-skb would probe, with the skb argument, modules included.
    let list = common::ok(&["trace", &lab.umid("R"), "--all-skb", "--list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("sk_skb_reason_drop ") && l.contains("skb: argument 1")),
        "{list}"
    );
    assert!(list.lines().any(|l| l.starts_with("ip_forward ")));
    let n: usize = list
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(n > 1000, "{n}");
    lab.assert_all_alive();
}

#[test]
fn a_packet_natted_by_r_is_followed_past_the_rewrite() {
    let lab = Lab::article("tpn-");
    // R masquerades what leaves towards B: A's address becomes R's own on that side.
    lab.must(
        "R",
        "iptables-legacy -t nat -A POSTROUTING -o eth2 -j MASQUERADE",
    );
    let t = start(&[
        &lab.umid("R"),
        "--all-skb",
        "--json",
        "--stack",
        "icmp and src host 192.168.10.2",
    ]);
    let out = lab.must("A", "ping -c 1 -W 3 192.168.20.2");
    assert!(out.contains("1 received"), "{out}");
    let v = t.stop();
    let all = hits(&v);
    let first = all
        .iter()
        .find(|h| h["skb"]["ipv4"]["src"] == "192.168.10.2")
        .unwrap_or_else(|| panic!("the request was not selected: {:?}", functions(&all)));
    // The same packet (number and skb) after MASQUERADE: the source is R's address now, which
    // the filter alone would not select.
    let after: Vec<&&serde_json::Value> = all
        .iter()
        .filter(|h| h["packet"] == first["packet"] && h["skb"]["ipv4"]["src"] == "192.168.20.1")
        .collect();
    assert!(
        !after.is_empty(),
        "not followed past the rewrite: {:?}",
        functions(&all)
    );
    // The same skb after the rewrite (and clones of it on the same buffer, as the neighbour
    // code makes while it resolves B's address).
    assert!(
        after.iter().any(|h| h["skb_addr"] == first["skb_addr"]),
        "{after:?}"
    );
    for h in &after {
        assert_eq!(h["skb"]["ipv4"]["id"], first["skb"]["ipv4"]["id"]);
        assert_eq!(h["skb"]["ipv4"]["dst"], "192.168.20.2");
    }
    // --stack: the kernel stack at each hit, named.
    let fwd = all
        .iter()
        .find(|h| h["function"] == "ip_forward")
        .expect("ip_forward on R");
    let stack: Vec<&str> = fwd["stack"]
        .as_array()
        .expect("a stack")
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(stack.len() >= 4, "{stack:?}");
    assert!(stack.iter().all(|f| f.contains("+0x")), "{stack:?}");
    assert!(
        stack
            .iter()
            .any(|f| f.starts_with("ip_") || f.contains("netif_receive")),
        "{stack:?}"
    );
    let fs: Vec<String> = after.iter().map(|h| h["function"].to_string()).collect();
    assert!(
        fs.iter()
            .any(|f| f.contains("dev_queue_xmit") || f.contains("start_xmit")),
        "{fs:?}"
    );
    lab.assert_all_alive();
}

/// The hits of one machine in the order they happened (the host's TSC).
fn by_time<'a>(hits: &[&'a serde_json::Value]) -> Vec<&'a serde_json::Value> {
    let mut v = hits.to_vec();
    v.sort_by_key(|h| h["tsc"].as_u64().unwrap());
    v
}

/// The innermost caller in a hit's `--stack`, without its offset.
/// The hits of one packet, in order.
fn of_packet<'a>(
    hits: &[&'a serde_json::Value],
    packet: &serde_json::Value,
) -> Vec<&'a serde_json::Value> {
    hits.iter()
        .copied()
        .filter(|h| h["packet"] == *packet)
        .collect()
}

/// The function of each hit, in order.
fn function_names<'a>(hits: &[&'a serde_json::Value]) -> Vec<&'a str> {
    hits.iter()
        .map(|h| h["function"].as_str().unwrap())
        .collect()
}

/// The per-machine summaries of a `--lab` trace's output.
fn summaries(v: &[serde_json::Value]) -> &[serde_json::Value] {
    v.iter()
        .find_map(|x| x.get("summaries"))
        .and_then(|s| s.as_array())
        .expect("a summaries line")
}

/// Where `f` stands in R's story of a packet (the functions its hits were in, in order).
fn position_in_story(story: &[&str], f: &str) -> usize {
    story
        .iter()
        .position(|x| *x == f)
        .unwrap_or_else(|| panic!("{f} not in R's story: {story:?}"))
}

fn caller(h: &serde_json::Value) -> &str {
    h["stack"]
        .as_array()
        .and_then(|s| s.first())
        .and_then(|f| f.as_str())
        .and_then(|f| f.split('+').next())
        .unwrap_or("")
}

/// A machine's interface's MAC address, as the kernel reports it.
fn mac(lab: &Lab, m: &str, dev: &str) -> String {
    lab.must(m, &format!("cat /sys/class/net/{dev}/address"))
        .trim()
        .to_string()
}

#[test]
fn a_udp_port_dropped_by_r_is_followed_from_as_socket_to_the_netfilter_drop_and_icmp_and_tcp_beside_it_are_not_reported()
 {
    let lab = Lab::article("tpd-");
    // R drops one UDP port on the way from A to B; everything else goes through.
    lab.must(
        "R",
        "iptables-legacy -A FORWARD -p udp --dport 7777 -j DROP",
    );
    let t = start(&[
        "--lab",
        &lab.name,
        "--all-skb",
        "--json",
        "--stack",
        "udp and dst port 7777",
    ]);
    // At the same time: a ping to B, TCP connections to B's port 7777 (B refuses them: a SYN
    // and a RST each way), and three datagrams to UDP port 7777, from one socket.
    let out = lab.must(
        "A",
        "ping -c 4 -i 0.2 -W 2 192.168.20.2 > /tmp/tpd-ping.out 2>&1 &
python3 -c \"
import socket, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(('0.0.0.0', 40777))
for i in range(3):
    t = socket.socket()
    t.settimeout(3)
    try:
        t.connect(('192.168.20.2', 7777))
    except OSError as e:
        print('tcp', e.errno)
    u.sendto(b'dropped-by-r-%d' % i, ('192.168.20.2', 7777))
    time.sleep(0.2)
\"
wait; cat /tmp/tpd-ping.out",
    );
    // The other traffic really was there: ICMP through R and back, TCP refused by B.
    assert!(out.contains("4 received"), "{out}");
    assert_eq!(out.matches("tcp 111").count(), 3, "{out}");
    let v = t.stop();
    let all = hits(&v);
    // Only the UDP datagrams to port 7777: no ICMP, no TCP (not even to the same port).
    for h in &all {
        let skb = &h["skb"];
        assert!(skb.get("icmp").is_none(), "ICMP reported: {h}");
        assert!(skb.get("tcp").is_none(), "TCP reported: {h}");
        assert_eq!(skb["ipv4"]["protocol"], 17, "{h}");
        assert_eq!(skb["udp"]["dport"], 7777, "{h}");
        assert_eq!(skb["udp"]["sport"], 40777, "{h}");
    }
    let a = by_time(&on(&all, "MachineA"));
    let r = by_time(&on(&all, "MachineR"));
    let b = on(&all, "MachineB");
    assert!(b.is_empty(), "B saw the dropped port: {:?}", functions(&b));

    // A: from the socket's send path down to the device.
    let fa = functions(&a);
    let first = a.first().expect("no hit on A");
    assert!(
        first["function"] == "udp_send_skb" || caller(first) == "udp_send_skb",
        "A's first hit is not UDP's send path: {first}"
    );
    let at = |hits: &[&serde_json::Value], f: &str| {
        hits.iter()
            .position(|h| h["function"] == f)
            .unwrap_or_else(|| panic!("{f} missing: {:?}", functions(hits)))
    };
    assert!(at(&a, "ip_output") < at(&a, "ip_finish_output2"), "{fa:?}");
    assert!(
        at(&a, "ip_finish_output2") < at(&a, "__dev_queue_xmit"),
        "{fa:?}"
    );
    assert!(fa.iter().any(|f| f == "vector_net_start_xmit"), "{fa:?}");
    assert!(
        a.iter().all(|h| h["end"] != "dropped"),
        "A dropped it: {fa:?}"
    );

    // R: received, routed, forwarded, and dropped by the FORWARD hook's rule: the kernel's
    // reason, given where netfilter drops (nf_hook_slow, called from ip_forward).
    let fr = functions(&r);
    let drops: Vec<&&serde_json::Value> = r.iter().filter(|h| h["end"] == "dropped").collect();
    assert_eq!(drops.len(), 3, "not one drop per datagram on R: {fr:?}");
    for drop in &drops {
        assert_eq!(drop["function"], "sk_skb_reason_drop", "{drop}");
        assert_eq!(drop["reason"], "NETFILTER_DROP", "{drop}");
        let stack: Vec<&str> = drop["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(stack[0].starts_with("nf_hook_slow+"), "{stack:?}");
        assert!(stack[1].starts_with("ip_forward+"), "{stack:?}");
        // The same packet and skb that R received and forwarded, in that order.
        let story = of_packet(&r, &drop["packet"]);
        let names = function_names(&story);
        let pos = |f: &str| position_in_story(&names, f);
        assert!(pos("ip_rcv_core") < pos("ip_forward"), "{names:?}");
        // The FORWARD hook runs after ip_forward's entry (PREROUTING's came before it).
        let hook = names[pos("ip_forward")..]
            .iter()
            .position(|x| *x == "nf_hook_slow")
            .map(|i| i + pos("ip_forward"))
            .unwrap_or_else(|| panic!("no FORWARD hook: {names:?}"));
        assert!(hook < pos("sk_skb_reason_drop"), "{names:?}");
        let fwd = story[pos("ip_forward")];
        assert_eq!(fwd["skb_addr"], drop["skb_addr"]);
        // Nothing of it leaves R.
        for f in ["ip_output", "ip_finish_output2", "__dev_queue_xmit"] {
            assert!(!names.contains(&f), "{f} after the drop: {names:?}");
        }
    }

    // Each datagram's journey: A, then R, ending in the drop there.
    let journeys: Vec<&serde_json::Value> = v
        .iter()
        .filter_map(|x| x.get("journey"))
        .filter(|j| j["key"]["protocol"] == 17)
        .collect();
    let dropped_journeys = journeys
        .iter()
        .filter(|j| {
            let steps = j["steps"].as_array().unwrap();
            steps.first().is_some_and(|s| s["machine"] == "MachineA")
                && steps
                    .iter()
                    .any(|s| s["machine"] == "MachineR" && s["end"] == "dropped: NETFILTER_DROP")
                && steps.iter().all(|s| s["machine"] != "MachineB")
        })
        .count();
    assert_eq!(dropped_journeys, 3, "{journeys:?}");

    for s in summaries(&v) {
        assert_eq!(s["lost"], 0, "{s}");
        let want = if s["machine"] == "MachineB" { 0 } else { 3 };
        assert_eq!(s["packets"], want, "{s}");
        // The ping and the TCP packets passed the probes and were left out in the kernel.
        assert!(s["unselected_hits"].as_u64().unwrap() > 0, "{s}");
    }
    lab.assert_all_alive();
}

#[test]
fn a_ping_to_an_address_r_has_no_route_for_ends_in_rs_no_route_drop() {
    let lab = Lab::article("tpr-");
    // R forgets its default route: 192.168.40.0/24 (in no lab subnet) has no route there. A
    // still sends it to R (its default route); nothing leaves the lab's namespace either way.
    lab.must("R", "ip route del default");
    let t = start(&[
        &format!("{},{}", lab.umid("A"), lab.umid("R")),
        "--all-skb",
        "--json",
        "--stack",
        "icmp and host 192.168.40.2",
    ]);
    let (_, out) = lab.sh("A", "ping -c 1 -W 3 192.168.40.2");
    assert!(out.contains("Destination Net Unreachable"), "{out}");
    let v = t.stop();
    let all = hits(&v);
    let a = by_time(&on(&all, &lab.umid("A")));
    let r = by_time(&on(&all, &lab.umid("R")));
    // A sends it out: no drop there.
    let fa = functions(&a);
    for f in ["ip_output", "__dev_queue_xmit"] {
        assert!(fa.iter().any(|x| x == f), "{f} not on A: {fa:?}");
    }
    assert!(a.iter().all(|h| h["end"] != "dropped"), "{fa:?}");
    // R: the input route lookup fails, ip_error answers and drops it with the kernel's reason
    // for a forwarded packet without a route.
    let fr = functions(&r);
    let drop = r
        .iter()
        .find(|h| h["end"] == "dropped")
        .unwrap_or_else(|| panic!("no drop on R: {fr:?}"));
    assert_eq!(drop["function"], "sk_skb_reason_drop", "{drop}");
    assert_eq!(drop["reason"], "IP_INNOROUTES", "{drop}");
    assert_eq!(caller(drop), "ip_error", "{drop}");
    assert_eq!(drop["skb"]["ipv4"]["dst"], "192.168.40.2");
    assert_eq!(drop["skb"]["icmp"]["type"], 8);
    let story = function_names(&of_packet(&r, &drop["packet"]));
    let pos = |f: &str| position_in_story(&story, f);
    assert!(pos("ip_rcv_core") < pos("ip_route_input_slow"), "{story:?}");
    assert!(pos("ip_route_input_slow") < pos("ip_error"), "{story:?}");
    assert!(pos("ip_error") < pos("sk_skb_reason_drop"), "{story:?}");
    assert!(!story.contains(&"ip_forward"), "{story:?}");
    for s in summaries(&v) {
        assert_eq!(s["lost"], 0, "{s}");
    }
    lab.assert_all_alive();
}

#[test]
fn a_hits_json_fields_are_what_a_sent_and_what_b_received() {
    let lab = Lab::article("tpj-");
    let (a_mac, b_mac) = (mac(&lab, "A", "eth0"), mac(&lab, "B", "eth0"));
    let (r_lan_a, r_lan_b) = (mac(&lab, "R", "eth0"), mac(&lab, "R", "eth2"));
    let (a, b) = (lab.umid("A"), lab.umid("B"));
    let t = start(&[
        &format!("{a},{b}"),
        "--all-skb",
        "--json",
        "udp and port 7000",
    ]);
    // One datagram with a mark, a TOS and a payload of our own, from a port of our own.
    let payload = "umldbg-json-fields-check-0123456789";
    lab.must(
        "A",
        &format!(
            "python3 -c \"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x2a)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xb8)
s.bind(('0.0.0.0', 40700))
s.sendto(b'{payload}', ('192.168.20.2', 7000))
\""
        ),
    );
    let v = t.stop();
    let all = hits(&v);
    let udp_len = 8 + payload.len() as u64;
    let ip_len = 20 + udp_len;
    let payload_hex: String = payload.bytes().map(|c| format!("{c:02x}")).collect();
    let check = |h: &serde_json::Value, ttl: u64, mark: u64, len: u64| {
        let s = &h["skb"];
        assert_eq!(h["skb_addr"], s["addr"], "{h}");
        assert_eq!(s["protocol"], 0x800, "{h}");
        assert_eq!(s["protocol_name"], "IPv4", "{h}");
        assert_eq!(s["dev"], "eth0", "{h}");
        assert_eq!(s["mark"], mark, "{h}");
        assert_eq!(s["len"], len, "{h}");
        let ip = &s["ipv4"];
        assert_eq!(ip["src"], "192.168.10.2", "{h}");
        assert_eq!(ip["dst"], "192.168.20.2", "{h}");
        assert_eq!(ip["protocol"], 17, "{h}");
        assert_eq!(ip["protocol_name"], "UDP", "{h}");
        assert_eq!(ip["tot_len"], ip_len, "{h}");
        assert_eq!(ip["ttl"], ttl, "{h}");
        assert_eq!(ip["dscp"], 0xb8 >> 2, "{h}");
        assert_eq!(ip["ecn"], 0, "{h}");
        assert_eq!(ip["checksum_ok"], true, "{h}");
        let u = &s["udp"];
        assert_eq!(u["sport"], 40700, "{h}");
        assert_eq!(u["dport"], 7000, "{h}");
        assert_eq!(u["len"], udp_len, "{h}");
        assert_eq!(s["payload_len"], payload.len(), "{h}");
        assert_eq!(s["payload_hex"], payload_hex.as_str(), "{h}");
    };
    // On A, as the device gets it: A's mark, an Ethernet header from A to R's side of lan-a,
    // the frame's length.
    let sent = on(&all, &a)
        .into_iter()
        .find(|h| h["function"] == "dev_hard_start_xmit")
        .unwrap_or_else(|| panic!("no dev_hard_start_xmit on A: {:?}", functions(&all)));
    check(sent, 64, 0x2a, 14 + ip_len);
    assert_eq!(sent["skb"]["eth"]["src"], a_mac.as_str(), "{sent}");
    assert_eq!(sent["skb"]["eth"]["dst"], r_lan_a.as_str(), "{sent}");
    assert_eq!(sent["skb"]["eth"]["type"], 0x800, "{sent}");
    // On B, as IP gets it: one hop less, no mark (marks do not cross the wire), R's side of
    // lan-b as the sender, the IP packet's length, the same IP id.
    let got = on(&all, &b)
        .into_iter()
        .find(|h| h["function"] == "ip_rcv_core")
        .unwrap_or_else(|| panic!("no ip_rcv_core on B: {:?}", functions(&all)));
    check(got, 63, 0, ip_len);
    assert_eq!(got["skb"]["eth"]["src"], r_lan_b.as_str(), "{got}");
    assert_eq!(got["skb"]["eth"]["dst"], b_mac.as_str(), "{got}");
    assert_eq!(got["skb"]["ipv4"]["id"], sent["skb"]["ipv4"]["id"]);
    assert_eq!(got["skb"]["pkt_type_name"], "HOST", "{got}");
    // Every hit is the one packet, numbered 1 on each machine; B has no socket on the port.
    for h in &all {
        assert_eq!(h["packet"], 1, "{h}");
        assert_eq!(h["skb"]["udp"]["sport"], 40700, "{h}");
    }
    let drop = all
        .iter()
        .find(|h| h["end"] == "dropped")
        .unwrap_or_else(|| panic!("no drop on B: {:?}", functions(&all)));
    assert_eq!(drop["machine"], b.as_str());
    assert_eq!(drop["reason"], "NO_SOCKET");
    lab.assert_all_alive();
}

#[test]
fn a_clone_freed_by_the_neighbour_queue_does_not_end_the_packet_it_was_cloned_from() {
    let lab = Lab::article("tpc-");
    // R knows no next hop yet: each first packet each way waits in the neighbour's queue for
    // ARP, and neigh_probe clones it for arp_solicit and frees the clone at once.
    lab.must("R", "ip neigh flush all");
    let t = start(&[&lab.umid("R"), "--all-skb", "--json", "icmp"]);
    let out = lab.must("A", "ping -c 4 -i 0.3 -W 3 192.168.20.2");
    assert!(out.contains("4 received"), "{out}");
    let v = t.stop();
    let all = by_time(&hits(&v));
    let mut stories: std::collections::BTreeMap<u64, Vec<&serde_json::Value>> = Default::default();
    for h in &all {
        let n = h["packet"]
            .as_u64()
            .unwrap_or_else(|| panic!("a hit of no packet: {h}"));
        stories.entry(n).or_default().push(h);
    }
    let summary = v.iter().find_map(|x| x.get("summary")).unwrap();
    assert_eq!(summary["lost"], 0, "{summary}");
    // Every echo request and every reply, each once, each forwarded: none hidden by the
    // address a freed clone (or packet) gave back, no clone counted as a packet of its own.
    let mut seen: Vec<(u64, u64)> = Vec::new();
    for (n, s) in &stories {
        let icmp = &s[0]["skb"]["icmp"];
        let kind = (
            icmp["type"].as_u64().unwrap(),
            icmp["seq"].as_u64().unwrap(),
        );
        assert!(
            s.iter().any(|h| h["function"] == "ip_forward"),
            "packet {n} {kind:?} not forwarded: {:?}",
            functions(s)
        );
        seen.push(kind);
    }
    seen.sort();
    let want: Vec<(u64, u64)> = [0, 8]
        .iter()
        .flat_map(|t| (1..=4).map(move |q| (*t, q)))
        .collect();
    assert_eq!(seen, want, "{:?}", stories.keys());
    assert_eq!(summary["packets"], 8, "{summary}");
    // The first request: cloned while it waited, the clone freed with its own end, the
    // request itself sent on afterwards and ending at its real free.
    let first = stories
        .values()
        .find(|s| s[0]["skb"]["icmp"]["type"] == 8 && s[0]["skb"]["icmp"]["seq"] == 1)
        .unwrap();
    let names = functions(first);
    let orig = first
        .iter()
        .find(|h| h["function"] == "ip_forward")
        .unwrap()["skb_addr"]
        .clone();
    let clone_end = first
        .iter()
        .position(|h| h["skb_addr"] != orig && h["end"] == "freed")
        .unwrap_or_else(|| panic!("no clone freed while the request waited: {names:?}"));
    assert!(
        first[..clone_end]
            .iter()
            .any(|h| h["function"] == "arp_solicit" && h["skb_addr"] != orig),
        "{names:?}"
    );
    let ends: Vec<usize> = (0..first.len())
        .filter(|&i| first[i]["skb_addr"] == orig && first[i].get("end").is_some())
        .collect();
    assert_eq!(ends.len(), 1, "not one end of the request's skb: {names:?}");
    let end = ends[0];
    let sent = first
        .iter()
        .position(|h| h["function"] == "vector_net_start_xmit" && h["skb_addr"] == orig)
        .unwrap_or_else(|| panic!("the request never left R: {names:?}"));
    assert!(clone_end < sent && sent < end, "{names:?}");
    assert_eq!(first[end]["end"], "freed", "{}", first[end]);
    // After its end, only the freeing it starts, down to the skb's memory going back.
    let after: Vec<&str> = first[end + 1..]
        .iter()
        .filter(|h| h["skb_addr"] == orig)
        .map(|h| h["function"].as_str().unwrap())
        .collect();
    assert_eq!(after.last(), Some(&"kfree_skbmem"), "{names:?}");
    assert!(after.contains(&"skb_free_head"), "{names:?}");
    for f in &after {
        assert!(
            !["xmit", "output", "forward", "rcv", "neigh"]
                .iter()
                .any(|w| f.contains(w)),
            "{f} on the request after its end: {names:?}"
        );
    }
    lab.assert_all_alive();
}
