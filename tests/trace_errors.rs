//! Tests UML and gdb: what `umldbg trace` says when it cannot do its job, and that the machine
//! keeps running each time: an unknown function (near names offered), a machine another
//! debugger holds, a full disk under the pcap file, a machine that exits during the trace.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Attached, Lab, stderr};

fn trace(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .arg("trace")
        .args(args)
        .output()
        .expect("run the tracer")
}

fn pid_of(umid: &str) -> i32 {
    std::fs::read_to_string(
        umldbg::uml::instance::default_uml_dir()
            .join(umid)
            .join("pid"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn trace_errors_are_clear_and_leave_the_machine_running() {
    let lab = Lab::article("tre-");
    lab.must("R", "iptables-legacy -A FORWARD -p udp -j REJECT");
    let r = lab.umid("R");

    // Unknown names: the nearest kernel and module functions are offered.
    let o = trace(&[&r, "rejct_tg"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no function `rejct_tg`") && e.contains("reject_tg"),
        "{e}"
    );
    let o = trace(&[&r, "ip_forwrd"]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("did you mean ip_forward"),
        "{e}"
    );

    // Another debugger on the machine: a umldbg session (gdb) holds it.
    {
        let _s = Attached::new(&r);
        let o = trace(&[&r, "ip_forward"]);
        let e = stderr(&o);
        assert!(!o.status.success(), "traced a machine gdb holds");
        assert!(
            e.contains("already traced by process") && e.contains("gdb"),
            "{e}"
        );
    }
    // And plain gdb attached by hand.
    let pid = pid_of(&r);
    let mut gdb = Command::new("gdb")
        .args([
            "-nx",
            "-q",
            "-p",
            &pid.to_string(),
            "-ex",
            "handle all nostop noprint pass",
            "-ex",
            "continue &",
            "-ex",
            "shell sleep 30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gdb");
    common::wait_for("gdb attached", Duration::from_secs(20), || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()?
            .lines()
            .any(|l| l.starts_with("TracerPid:") && !l.ends_with("\t0"))
            .then_some(())
    });
    let o = trace(&[&r, "ip_forward"]);
    let e = stderr(&o);
    let _ = gdb.kill();
    let _ = gdb.wait();
    assert!(
        !o.status.success() && e.contains("already traced by process") && e.contains("gdb"),
        "{e}"
    );
    common::wait_for("gdb gone", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()?
            .contains("TracerPid:\t0")
            .then_some(())
    });

    // Another umldbg trace holds the machine (its probes work without ptrace, so TracerPid
    // says nothing): the second one is refused.
    let mut first = Command::new(common::bin())
        .args(["trace", &r, "ip_forward", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(first.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("tracing 1 function"), "{line}");
    let o = trace(&[&r, "ip_rcv_core"]);
    let e = stderr(&o);
    assert!(
        !o.status.success()
            && e.contains(&format!("being traced by umldbg process {}", first.id())),
        "{e}"
    );
    // ... and so is a gdb session: both would change the same text.
    let o = Command::new(common::bin())
        .args(["attach", &r])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(
        !o.status.success()
            && e.contains(&format!("being traced by umldbg process {}", first.id()))
            && e.lines().count() == 1,
        "{e}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    assert!(first.wait().unwrap().success());

    // A full disk under the pcap file: a clear error, probes out, machine fine.
    let before = {
        let f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        let mut b = [0u8; 8];
        let nm = Command::new("nm")
            .arg(format!("/proc/{pid}/exe"))
            .output()
            .unwrap();
        let addr = String::from_utf8_lossy(&nm.stdout)
            .lines()
            .find_map(|l| {
                l.ends_with(" ip_forward")
                    .then(|| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
                    .flatten()
            })
            .unwrap();
        f.read_exact_at(&mut b, addr).unwrap();
        (addr, b)
    };
    let mut c = Command::new(common::bin())
        .args(["trace", &r, "ip_forward", "--pcap", "/dev/full", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(c.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("tracing 1 function"), "{line}");
    lab.must(
        "A",
        "python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range(3000): s.sendto(b'z'*200,('192.168.20.2',9999))\"",
    );
    let status = common::wait_for("the tracer to give up", Duration::from_secs(30), || {
        c.try_wait().ok().flatten()
    });
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    assert!(!status.success());
    assert!(rest.contains("disk full while writing /dev/full"), "{rest}");
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut now = [0u8; 8];
    f.read_exact_at(&mut now, before.0).unwrap();
    assert_eq!(now, before.1, "ip_forward's bytes changed");
    let ping = lab.must("A", "ping -c 1 -W 5 192.168.20.2");
    assert!(ping.contains("1 received"), "{ping}");

    // The machine goes away during the trace: the trace says so and ends.
    let b = lab.umid("B");
    let bpid = pid_of(&b);
    let mut c = Command::new(common::bin())
        .args(["trace", &b, "ip_rcv_core", "--duration", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(c.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("tracing 1 function"), "{line}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(bpid), nix::sys::signal::SIGKILL).unwrap();
    let status = common::wait_for("the tracer to notice", Duration::from_secs(10), || {
        c.try_wait().ok().flatten()
    });
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    assert!(!status.success());
    assert!(rest.contains("exited during the trace"), "{rest}");
}
