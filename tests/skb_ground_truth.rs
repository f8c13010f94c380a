//! The sk_buff view against ground truth (issue: sk_buff decoded): packets whose every field the
//! test chose, sent from A by a raw-socket sender, stopped at reject_tg on R, decoded by umldbg
//! from the UML process's memory, and compared with what was sent and with gdb's own reading.

mod common;

use common::*;

const SENDER: &str = include_str!("../scripts/guest/sendpkt.py");

/// Send one packet from A in the background; the sender's JSON line is read afterwards.
fn send(lab: &Lab, args: &str) -> std::process::Child {
    let line = format!("python3 - {args} <<'UMLDBG_EOF'\n{SENDER}\nUMLDBG_EOF\n");
    spawn_sh(&lab.umid("A"), &line)
}

fn sent(child: std::process::Child) -> serde_json::Value {
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("sender printed: {text}"));
    serde_json::from_str(line).unwrap()
}

/// gdb's value of a C expression at the current stop.
fn gdb_value(s: &Attached, expr: &str) -> u64 {
    let v = s.ok(&["print", expr]);
    // gdb shows a __u8 as `49 '1'`: the number is the first word.
    let t = v.split_whitespace().next().unwrap_or("");
    t.strip_prefix("0x")
        .map(|h| u64::from_str_radix(h, 16).unwrap())
        .unwrap_or_else(|| t.parse().unwrap_or_else(|_| panic!("{expr} = {t}")))
}

/// A gdb expression for a big-endian 16-bit field in host order.
fn be16(field: &str) -> String {
    format!("((({field}) & 0xff) << 8) | ((({field}) >> 8) & 0xff)")
}

const IPH: &str = "((struct iphdr *)(skb->head + skb->network_header))";

#[test]
fn decoded_skb_equals_what_was_sent_and_what_gdb_reads() {
    kernel();
    let lab = Lab::article("tsk-");
    lab.must(
        "R",
        "iptables-legacy -A FORWARD -p icmp -j REJECT; iptables-legacy -A FORWARD -p udp -j REJECT; \
         iptables-legacy -A FORWARD -p tcp -j REJECT --reject-with tcp-reset",
    );
    // ARP first, so that every test packet reaches R at once.
    lab.sh("A", "ping -c 1 -W 1 192.168.10.1");
    let s = Attached::new(&lab.umid("R"));
    s.ok(&["break", "reject_tg"]);

    // ICMP echo with chosen id, sequence and payload.
    let child = send(
        &lab,
        "icmp --dst 192.168.20.2 --ttl 50 --ip-id 4242 --id 777 --seq 9 --payload hello-umldbg",
    );
    let stop = s.json(&["wait", "--timeout", "30"]);
    let skb = &stop["skb"];
    let tx = sent(child);
    assert_eq!(skb["ipv4"]["src"], tx["src"], "{skb}");
    assert_eq!(skb["ipv4"]["dst"], "192.168.20.2");
    assert_eq!(skb["ipv4"]["ttl"], 49, "R forwarded it: ttl one lower");
    assert_eq!(skb["ipv4"]["id"], 4242);
    assert_eq!(skb["ipv4"]["protocol"], 1);
    assert_eq!(skb["ipv4"]["tot_len"], tx["tot_len"]);
    assert_eq!(skb["ipv4"]["checksum_ok"], true);
    assert_eq!(skb["icmp"]["type"], 8);
    assert_eq!(skb["icmp"]["code"], 0);
    assert_eq!(skb["icmp"]["id"], 777);
    assert_eq!(skb["icmp"]["seq"], 9);
    assert_eq!(skb["payload_hex"], tx["payload_hex"]);
    assert_eq!(skb["len"], tx["tot_len"]);
    assert_eq!(skb["data_len"], 0);
    assert_eq!(skb["dev"], "eth0");
    // The same fields through gdb at the same stop.
    assert_eq!(gdb_value(&s, "skb->len"), skb["len"].as_u64().unwrap());
    assert_eq!(gdb_value(&s, &format!("{IPH}->ttl")), 49);
    assert_eq!(gdb_value(&s, &format!("{IPH}->protocol")), 1);
    assert_eq!(gdb_value(&s, &be16(&format!("{IPH}->id"))), 4242);
    s.ok(&["continue"]);

    // UDP with chosen ports and payload.
    let child = send(
        &lab,
        "udp --dst 192.168.20.2 --ttl 33 --ip-id 999 --sport 40000 --dport 5353 --payload 0123456789",
    );
    let stop = s.json(&["wait", "--timeout", "30"]);
    let skb = &stop["skb"];
    let tx = sent(child);
    assert_eq!(skb["ipv4"]["ttl"], 32, "{skb}");
    assert_eq!(skb["ipv4"]["id"], 999);
    assert_eq!(skb["ipv4"]["protocol"], 17);
    assert_eq!(skb["udp"]["sport"], 40000);
    assert_eq!(skb["udp"]["dport"], 5353);
    assert_eq!(skb["udp"]["len"], tx["udp_len"]);
    assert_eq!(skb["payload_hex"], tx["payload_hex"]);
    let th = "((struct udphdr *)(skb->head + skb->transport_header))";
    assert_eq!(gdb_value(&s, &be16(&format!("{th}->dest"))), 5353);
    s.ok(&["continue"]);

    // A TCP SYN to a port on B, rejected with a reset.
    let child = send(
        &lab,
        "tcp-syn --dst 192.168.20.2 --ttl 20 --ip-id 31337 --sport 45678 --dport 8080 --seq 123456789",
    );
    let stop = s.json(&["wait", "--timeout", "30"]);
    let skb = &stop["skb"];
    let _ = sent(child);
    assert_eq!(skb["ipv4"]["ttl"], 19, "{skb}");
    assert_eq!(skb["ipv4"]["id"], 31337);
    assert_eq!(skb["tcp"]["sport"], 45678);
    assert_eq!(skb["tcp"]["dport"], 8080);
    assert_eq!(skb["tcp"]["seq"], 123456789u64);
    assert_eq!(skb["tcp"]["flags"], serde_json::json!(["SYN"]));
    let text = s.ok(&["skb"]);
    assert!(
        text.contains("TCP 45678 > 8080") || text.contains("45678 > 8080"),
        "{text}"
    );

    // Not an sk_buff, and a pointer that cannot be read: clear errors, the session goes on.
    let o = s.run(&["skb", "par"]);
    assert!(
        !o.status.success() && stderr(&o).contains("not a struct sk_buff"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["skb", "(struct sk_buff *)8"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(s.ok(&["status"]).contains("stopped"));
    s.ok(&["continue"]);
}
