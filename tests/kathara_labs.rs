//! Kathará labs run unchanged (issue: Kathará labs): the labs in `labs/kathara/`, written by the
//! team in Kathará's format, booted on real UML machines in their sandbox and checked from
//! inside the machines.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn lab_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("labs/kathara")
        .join(name)
}

#[test]
fn two_routers_forward_with_katharas_default_sysctls() {
    kernel();
    let lab = kathara_up("two-routers", "k2r-");
    let out = lab.must("pc1", "ping -c 2 -W 3 10.0.2.1");
    assert!(out.contains("ttl=62"), "two hops: {out}");
    let out = lab.must("pc1", "traceroute -n -q 1 -w 2 10.0.2.1");
    assert!(
        out.contains("10.0.1.254") && out.contains("10.0.12.2"),
        "traceroute: {out}"
    );
    // Kathará's defaults, not the kernel's: rp_filter off, forwarding on.
    let out = lab.must(
        "r1",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/rp_filter",
    );
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["1", "0"]);
}

#[test]
fn mac_from_lab_conf_and_a_live_change_in_a_startup_reach_the_neighbours() {
    kernel();
    let lab = kathara_up("mac", "kmac-");
    assert!(
        lab.must("pc1", "ip link show eth0")
            .contains("02:00:00:00:00:01")
    );
    assert!(
        lab.must("pc2", "ip link show eth0")
            .contains("02:00:00:00:00:02")
    );
    lab.must("pc1", "ping -c 1 -W 3 10.0.0.2");
    assert!(lab.must("pc1", "ip neigh").contains("02:00:00:00:00:02"));
    assert!(lab.must("pc2", "ip neigh").contains("02:00:00:00:00:01"));
}

#[test]
fn vlan_filtering_bridge_keeps_vlans_apart() {
    kernel();
    let lab = kathara_up("vlan-bridge", "kvl-");
    lab.must("h1", "ping -c 1 -W 3 10.0.10.3");
    lab.must("h2", "ping -c 1 -W 3 10.0.20.3");
    let (rc, out) = lab.sh("h1", "ping -c 1 -W 2 10.0.10.2");
    assert_ne!(rc, 0, "h1 reached h2 across VLANs: {out}");
}

#[test]
fn netem_delay_shows_in_the_ping_rtt() {
    kernel();
    let lab = kathara_up("netem", "knet-");
    let out = lab.must("pc1", "ping -c 3 -W 3 10.0.0.2");
    let min: f64 = out
        .lines()
        .find_map(|l| l.split_once("min/avg/max/mdev = "))
        .and_then(|(_, v)| v.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no rtt line: {out}"));
    assert!(
        min >= 50.0,
        "rtt {min} ms under the 50 ms netem delay: {out}"
    );
}

#[test]
fn dnat_with_statistic_random_balances_over_two_servers() {
    kernel();
    let lab = kathara_up("dnat-lb", "kdn-");
    for s in ["s1", "s2"] {
        wait_for(
            &format!("{s}'s web server"),
            std::time::Duration::from_secs(30),
            || (lab.sh(s, "curl -s -m 2 http://127.0.0.1/").0 == 0).then_some(()),
        );
    }
    lab.must(
        "client",
        "for i in $(seq 20); do curl -s -m 3 http://100.0.0.2/; done",
    );
    for s in ["s1", "s2"] {
        let log = lab.must(s, "grep -c 'GET / ' /tmp/http.log || true");
        let n: u32 = log.trim().parse().unwrap_or(0);
        // Each server also answered its own readiness probe.
        assert!(n >= 2, "{s} got no balanced connection ({n} GETs)");
    }
}

#[test]
fn nft_iptables_masquerade_counts_the_translated_packets() {
    kernel();
    let lab = kathara_up("nft-masq", "knft-");
    lab.must("pc1", "ping -c 2 -W 3 203.0.113.2");
    let out = lab.must("r1", "iptables-nft -t nat -L POSTROUTING -v -n -x");
    let pkts: u64 = out
        .lines()
        .find(|l| l.contains("MASQUERADE"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(pkts >= 1, "MASQUERADE counted nothing: {out}");
}

#[test]
fn ipv6_lab_forwards_through_its_router() {
    kernel();
    let lab = kathara_up("ipv6", "kv6-");
    let out = lab.must("pc1", "ping -6 -c 2 -W 3 2001:db8:2::2");
    assert!(out.contains("ttl=63") || out.contains("hlim=63"), "{out}");
}

#[test]
fn startup_with_bash_syntax_runs_under_bash() {
    kernel();
    let lab = kathara_up("bash-startup", "kbs-");
    assert_eq!(
        lab.must("pc1", "cat /tmp/bash-startup").trim(),
        "bash 5 client"
    );
    lab.must("pc1", "ping -c 1 -W 3 10.0.0.2");
}

#[test]
fn startup_error_is_reported_with_its_line_and_the_lab_comes_up() {
    kernel();
    let (lab, o) = kathara_lab("bad-startup", "kbad-");
    let err = stderr(&o);
    assert!(o.status.success(), "lab up failed: {}{err}", stdout(&o));
    let line = err
        .lines()
        .find(|l| l.contains("pc1.startup:3"))
        .unwrap_or_else(|| panic!("the failing line is not reported: {err}"));
    assert!(
        line.contains("kbad-pc1") && line.contains("not found"),
        "{line}"
    );
    assert_eq!(
        lab.must("pc1", "cat /tmp/after-error").trim(),
        "after-the-error"
    );
}

#[test]
fn machine_folder_lands_in_its_own_machine_only() {
    kernel();
    let (lab, o) = kathara_lab("folders", "kfo-");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // Regression (copying the machine folder failed on a read-only root): tar restored the
    // time of `/` itself and failed, so every folder gave a false warning.
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !said.contains("copying the machine folder failed"),
        "{said}"
    );
    let want = std::fs::read_to_string(lab_dir("folders").join("pc1/etc/umldbg-test")).unwrap();
    assert_eq!(lab.must("pc1", "cat /etc/umldbg-test"), want);
    let (rc, _) = lab.sh("pc2", "test -e /etc/umldbg-test");
    assert_ne!(rc, 0, "pc2 has pc1's file");
    // Nothing of it reached the host's /etc.
    assert!(!Path::new("/etc/umldbg-test").exists());
}

#[test]
fn shutdown_files_run_at_lab_down() {
    kernel();
    let shared = lab_dir("shutdown").join("shared");
    for f in ["pc1.down", "shutdown.log"] {
        let _ = std::fs::remove_file(shared.join(f));
    }
    let lab = kathara_up("shutdown", "ksd-");
    lab.must("pc1", "test -d /shared");
    let o = umldbg(&["lab", "down", &lab.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let down = std::fs::read_to_string(shared.join("pc1.down")).unwrap_or_default();
    assert_eq!(down.trim(), "pc1.shutdown ran");
    let log = std::fs::read_to_string(shared.join("shutdown.log")).unwrap_or_default();
    assert_eq!(log.lines().count(), 2, "{log}");
    for f in ["pc1.down", "shutdown.log"] {
        let _ = std::fs::remove_file(shared.join(f));
    }
}
