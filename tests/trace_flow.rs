//! Tests UML and a network: `umldbg flow` on A, R and B while A pings B. The echo request's
//! journey has hits on A, then on R (receive and forward), then on B, in that order, all with
//! one IP identification; the SVG has a lane per machine.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Lab;

#[test]
fn flow_follows_an_echo_request_from_a_through_r_to_b() {
    let lab = Lab::article("trf-");
    let dir = std::env::temp_dir().join(format!("umldbg-trace-flow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("flow.svg");
    let mut child = Command::new(common::bin())
        .args([
            "flow",
            "--lab",
            &lab.name,
            "--duration",
            "20",
            "--json",
            "--svg",
        ])
        .arg(&svg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flow");
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(
        first.contains("tracing 3 machines"),
        "flow did not start: {first}"
    );

    let out = lab.must("A", "ping -c 1 -W 5 192.168.20.2");
    assert!(out.contains("1 received"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(status.success(), "flow failed: {rest}");
    let lines = lines.join().unwrap();

    let journeys: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("steps").is_some())
        .collect();
    // The echo request: ICMP type 8 from A's address.
    let request = journeys
        .iter()
        .find(|j| {
            j["key"]["icmp_type"] == 8
                && j["steps"][0]["packet"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("192.168.10.2 > 192.168.20.2"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no echo request among {} journeys: {lines:#?}",
                journeys.len()
            )
        });
    let steps = request["steps"].as_array().unwrap();
    let machines: Vec<&str> = steps
        .iter()
        .map(|s| s["machine"].as_str().unwrap())
        .collect();
    let functions: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["machine"].as_str().unwrap(),
                s["function"].as_str().unwrap(),
            )
        })
        .collect();
    // A, then R, then B: the machines in the order their hits come.
    let mut order: Vec<&str> = machines.clone();
    order.dedup();
    assert_eq!(order, ["MachineA", "MachineR", "MachineB"], "{functions:?}");
    // A sends it (ip_output), R receives then forwards it, B receives it.
    let pos = |m: &str, f: &str| functions.iter().position(|x| *x == (m, f));
    let a_out = pos("MachineA", "ip_output").expect("ip_output on A");
    let r_rcv = pos("MachineR", "ip_rcv")
        .or(pos("MachineR", "ip_rcv_core"))
        .expect("receive on R");
    let r_fwd = pos("MachineR", "ip_forward").expect("ip_forward on R");
    let b_rcv = pos("MachineB", "ip_rcv")
        .or(pos("MachineB", "ip_rcv_core"))
        .expect("receive on B");
    assert!(
        a_out < r_rcv && r_rcv < r_fwd && r_fwd < b_rcv,
        "{functions:?}"
    );
    // One IP identification all the way (the journey's key), seen in every step's packet.
    let id = request["key"]["ip_id"].as_u64().unwrap();
    for s in steps {
        assert!(
            s["packet"]
                .as_str()
                .unwrap()
                .contains(&format!("ip-id {id} ")),
            "{s}"
        );
    }
    // Time order: the TSC never goes back.
    let tsc: Vec<u64> = steps.iter().map(|s| s["tsc"].as_u64().unwrap()).collect();
    assert!(tsc.windows(2).all(|w| w[0] <= w[1]));

    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.starts_with("<svg"));
    for lane in ["MachineA", "MachineR", "MachineB"] {
        assert!(
            drawing.contains(&format!(">{lane}</text>")),
            "no lane {lane}"
        );
    }
    assert!(drawing.contains("marker-end"));
    let _ = std::fs::remove_dir_all(&dir);
}
