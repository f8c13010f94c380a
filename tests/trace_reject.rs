//! Tests UML, iptables and a network: `umldbg trace reject_tg --skb --pcap` on R while A sends
//! 1,000 UDP packets of known content to B through R's REJECT rule. Every packet is one hit,
//! decoded with the right addresses, ports and payload, and the pcap file reads back in tcpdump
//! the same way.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Lab, wait_for};

const N: usize = 1000;
const SPORT: u16 = 40000;
const DPORT: u16 = 9999;

fn payload(i: usize) -> String {
    format!("umldbg-trace-{i:04}-payload")
}

#[test]
fn trace_reject_tg_decodes_every_udp_packet_and_writes_a_pcap() {
    let lab = Lab::article("trr-");
    lab.must("R", "iptables-legacy -A FORWARD -p udp -j REJECT");
    let dir = std::env::temp_dir().join(format!("umldbg-trace-reject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("reject.pcap");

    let mut child = Command::new(common::bin())
        .args([
            "trace",
            &lab.umid("R"),
            "reject_tg",
            "--skb",
            "--json",
            "--pcap",
        ])
        .arg(&pcap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the tracer");
    // Hits come on stdout; the "tracing ..." line on stderr says the probes are in.
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("tracer says something");
    assert!(
        first.contains("tracing 1 function"),
        "tracer did not start: {first}"
    );

    let before = lab.forward_rejects();
    let script = format!(
        "python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{SPORT}))\n\
         for i in range({N}): s.sendto(b'umldbg-trace-%04d-payload' % i, ('192.168.20.2',{DPORT}))\""
    );
    lab.must("A", &script);
    wait_for("R to reject all packets", Duration::from_secs(60), || {
        (lab.forward_rejects() >= before + N as u64).then_some(())
    });
    assert_eq!(
        lab.forward_rejects(),
        before + N as u64,
        "R counted other packets"
    );
    // Ctrl-C: the summary comes out and the probes go.
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let lines = lines.join().unwrap();
    let errs: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "tracer failed: {errs:?}");

    let (hits, summary) = lines.split_at(lines.len() - 1);
    let summary: serde_json::Value = serde_json::from_str(&summary[0]).unwrap();
    assert_eq!(summary["summary"]["hits"], N as u64, "{summary}");
    assert_eq!(summary["summary"]["lost"], 0);
    assert_eq!(summary["summary"]["per_function"]["reject_tg"], N as u64);
    assert_eq!(summary["summary"]["pcap_packets"], N as u64);
    assert_eq!(summary["summary"]["ended_by"], "interrupted");
    assert_eq!(hits.len(), N);
    let mut seen = BTreeSet::new();
    for l in hits {
        let h: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(h["function"], "reject_tg");
        let skb = &h["skb"];
        assert_eq!(skb["ipv4"]["src"], "192.168.10.2", "{h}");
        assert_eq!(skb["ipv4"]["dst"], "192.168.20.2");
        assert_eq!(skb["ipv4"]["protocol"], 17);
        assert_eq!(skb["udp"]["sport"], SPORT);
        assert_eq!(skb["udp"]["dport"], DPORT);
        let hex = skb["payload_hex"].as_str().unwrap().replace(' ', "");
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let text = String::from_utf8(bytes).unwrap();
        let i: usize = text
            .strip_prefix("umldbg-trace-")
            .and_then(|r| r.get(..4))
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(text, payload(i));
        assert!(seen.insert(i), "payload {i} twice");
    }
    assert_eq!(seen.len(), N);

    // tcpdump reads the file back: same addresses, ports and payloads.
    let out = Command::new("tcpdump")
        .args(["-r"])
        .arg(&pcap)
        .args(["-nn", "-A"])
        .output()
        .expect("run tcpdump");
    assert!(
        out.status.success(),
        "tcpdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let headers: Vec<&str> = text.lines().filter(|l| l.contains(" IP ")).collect();
    assert_eq!(headers.len(), N, "{}", &text[..text.len().min(2000)]);
    for h in &headers {
        let want = format!(
            "192.168.10.2.{SPORT} > 192.168.20.2.{DPORT}: UDP, length {}",
            payload(0).len()
        );
        assert!(h.contains(&want), "{h}");
    }
    let payloads: BTreeSet<usize> = text
        .match_indices("umldbg-trace-")
        .filter_map(|(at, _)| text.get(at + 13..at + 17)?.parse().ok())
        .collect();
    assert_eq!(payloads.len(), N);
    let _ = std::fs::remove_dir_all(&dir);
}
