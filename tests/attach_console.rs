//! Issue 5: module addresses from the console of a machine started by hand (not in a lab): a
//! root shell on `ssl0=pts`, given with `attach --console PTY` or found through mconsole
//! `config ssl0`. Real UML, real gdb.

mod common;

use common::hand::{Boot, HandMachine};
use common::*;

fn shell_machine(tag: &str) -> HandMachine {
    HandMachine::boot(Boot {
        tag,
        init: "",
        console_shell: true,
        ipt_reject: true,
    })
}

#[test]
fn hand_started_machine_gets_module_sections_from_its_console() {
    kernel();
    let m = shell_machine("pty");
    let pty = m.ssl0();
    let pty_s = pty.display().to_string();

    // Given with --console: the summary names that pty as the source.
    let o = umldbg(&["attach", &m.umid, "--console", &pty_s]);
    assert!(
        o.status.success(),
        "{}{}\nmachine log: {:?}",
        stdout(&o),
        stderr(&o),
        m.log()
    );
    let summary = stdout(&o);
    assert!(
        summary.contains(&format!(
            "from /sys/module on the console ({pty_s}, given with --console)"
        )),
        "{summary}"
    );
    let rej = m.module("ipt_REJECT");
    assert_eq!(rej["text"].as_u64().unwrap(), m.text, "{rej}");
    assert_eq!(rej["source"], "console");
    // `load` runs modprobe on the same console.
    let out = m.ok(&["load", "dummy"]);
    assert!(out.contains("dummy: .text 0x"), "{out}");
    assert!(
        out.contains(&format!(
            "addresses from /sys/module on the console ({pty_s}"
        )),
        "{out}"
    );
    m.ok(&["detach"]);

    // Without --console: mconsole says where ssl0 is. The detach above closed the pty, so the
    // guest hung the line up and opens a new one when its shell comes back.
    let o = umldbg(&["attach", &m.umid]);
    assert!(
        o.status.success(),
        "{}{}\nmachine log: {:?}",
        stdout(&o),
        stderr(&o),
        m.log()
    );
    let summary = stdout(&o);
    assert!(
        summary.contains("from /sys/module on the console (/dev/pts/")
            && summary.contains("ssl0 per mconsole)"),
        "{summary}"
    );
    assert_eq!(m.module("dummy")["source"], "console");
    assert_eq!(m.module("ipt_REJECT")["text"].as_u64().unwrap(), m.text);
    let st: serde_json::Value = serde_json::from_str(&m.ok(&["--json", "status"])).unwrap();
    assert!(
        st["console"]
            .as_str()
            .unwrap()
            .ends_with("ssl0 per mconsole"),
        "{st}"
    );
    m.ok(&["detach"]);
}

#[test]
fn console_where_no_shell_answers_is_a_one_line_error() {
    kernel();
    let m = shell_machine("mute");
    // A pty whose other side never answers (a stopped machine, a login prompt that waits for a
    // password): only its master stays open here.
    let pty = nix::pty::openpty(None, None).unwrap();
    let path = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
    ))
    .unwrap();
    drop(pty.slave);
    let p = path.display().to_string();
    let o = umldbg(&["attach", &m.umid, "--console", &p]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&p) && err.contains("did not answer") && err.contains("log in"),
        "{err}"
    );
    // The machine is left alone, and its own console still serves an attach.
    let o = umldbg(&["attach", &m.umid]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ssl0 per mconsole"), "{}", stdout(&o));
    m.ok(&["detach"]);
    drop(pty.master);
}
