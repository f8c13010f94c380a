//! SIGKILL of `umldbg serve` while its breakpoints are in the kernel's text: while gdb makes
//! the machine hit a breakpoint thousands of times (a condition that never holds: a stop, a
//! step over, a resume each time), and while the machine sits stopped on one. The machine must
//! live on, untraced, with its text intact.

mod common;

use std::time::Duration;

use common::serve::*;
use common::*;

#[test]
fn killing_the_server_never_brings_the_machine_down() {
    let image = kernel_image();
    let lab = Lab::article("tsk-");
    let r = lab.umid("R");
    lab.must("R", "iptables-legacy -A FORWARD -p udp -j REJECT");
    for round in 0..4 {
        let mut srv = Server::start(&r, &[]);
        let run = GdbRun::start(
            &[
                format!("file {}", image.display()),
                format!("target remote {}", srv.address),
                "break reject_tg if skb->len == 1".into(),
                "continue".into(),
            ],
            &format!("tsk{round}"),
        );
        run.wait_for("Breakpoint 1 at", Duration::from_secs(60));
        let flood = spawn_sh(&lab.umid("A"), UDP_FLOOD);
        std::thread::sleep(Duration::from_millis(700 + 300 * round));
        srv.sigkill();
        let _ = flood.wait_with_output();
        let gdb_out = run.finish(Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            machine_alive(&r),
            "round {round}: R died:\n{}\ngdb:\n{gdb_out}\njournal: {}",
            console_log(&lab.name, &r),
            std::fs::read_to_string(format!(
                "{}/.uml/{r}/umldbg.trace-journal",
                std::env::var("HOME").unwrap_or_default()
            ))
            .unwrap_or_default()
        );
        wait_for("the tracer to be gone", Duration::from_secs(10), || {
            (tracer_pid(&r) == 0).then_some(())
        });
    }
    // Killed while the machine is stopped on the breakpoint.
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let mut srv = Server::start(&r, &[]);
    let run = GdbRun::start(
        &[
            format!("file {}", image.display()),
            format!("target remote {}", srv.address),
            "break reject_tg".into(),
            "continue".into(),
        ],
        "tsk-stopped",
    );
    run.wait_for("Breakpoint 1 at", Duration::from_secs(60));
    let ping = spawn_sh(&lab.umid("A"), "ping -c 1 -W 5 192.168.20.2");
    run.wait_for("hit Breakpoint 1, reject_tg", Duration::from_secs(60));
    srv.sigkill();
    let _ = run.finish(Duration::from_secs(30));
    let _ = ping.wait_with_output();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        machine_alive(&r),
        "stopped on the breakpoint: R died:\n{}",
        console_log(&lab.name, &r)
    );
    wait_for("the tracer to be gone", Duration::from_secs(10), || {
        (tracer_pid(&r) == 0).then_some(())
    });

    // The machine answers through the path where the breakpoints sat.
    let (_, out) = lab.sh("A", "ping -c 2 -W 3 192.168.20.2");
    assert!(
        out.contains("Destination Port Unreachable"),
        "R did not reject: {out}"
    );
    lab.assert_all_alive();
    // And a new server attaches cleanly.
    let srv = Server::start(&r, &[]);
    let out = gdb(
        &[format!("target remote {}", srv.address), "detach".into()],
        Duration::from_secs(60),
    );
    assert!(out.contains("detached"), "{out}");
}
