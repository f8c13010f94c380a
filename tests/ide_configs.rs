//! `umldbg ide`: the VS Code configuration's setup commands, replayed in stock gdb against the
//! server its task starts, reach the article's stop; the gdbinit script attaches gdb natively
//! with every module's symbols.

mod common;

use std::time::Duration;

use common::serve::*;
use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn vscode_launch_configuration_replayed_in_gdb_reaches_reject_tg() {
    kernel_image();
    let lab = Lab::article("tiv-");
    let r = lab.umid("R");
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let dir = std::env::temp_dir().join(format!("umldbg-ide-vscode-{}", std::process::id()));
    std::fs::create_dir_all(dir.join(".vscode")).unwrap();
    // A user's own configuration, with a comment, survives the merge.
    std::fs::write(
        dir.join(".vscode/launch.json"),
        "{\n  // mine\n  \"version\": \"0.2.0\",\n  \"configurations\": [{\"name\": \"mine\", \"type\": \"cppdbg\", \"request\": \"launch\", \"program\": \"a.out\"},]\n}\n",
    )
    .unwrap();
    let port = free_port();
    ok(&[
        "--umid",
        &r,
        "ide",
        "vscode",
        "--dir",
        dir.to_str().unwrap(),
        "--port",
        &port.to_string(),
    ]);
    let launch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".vscode/launch.json")).unwrap())
            .unwrap();
    let tasks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".vscode/tasks.json")).unwrap())
            .unwrap();
    let confs = launch["configurations"].as_array().unwrap();
    assert_eq!(confs[0]["name"], "mine");
    let c = confs
        .iter()
        .find(|c| c["name"] == format!("umldbg: {r}"))
        .unwrap();
    let t = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == c["preLaunchTask"])
        .unwrap();
    let setup: Vec<String> = c["setupCommands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    // No command that resumes the machine: the IDE does that.
    let resuming = [
        "c", "cont", "continue", "fg", "r", "run", "start", "next", "step",
    ];
    let post: Vec<String> = c["postRemoteConnectCommands"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["text"].as_str())
        .map(String::from)
        .collect();
    for cmd in setup.iter().chain(&post) {
        let w = cmd.split_whitespace().next().unwrap_or("");
        assert!(!resuming.contains(&w), "{cmd:?} resumes the machine");
    }

    // What VS Code does: the task, then gdb with the setup commands, `target remote`.
    let args: Vec<String> = t["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut srv = Server::spawn(t["command"].as_str().unwrap(), &args, "tiv");
    assert_eq!(srv.address, c["miDebuggerServerAddress"].as_str().unwrap());
    let ping = spawn_sh(&lab.umid("A"), "ping -c 40 -i 0.3 -W 1 192.168.20.2");
    let mut cmds = vec![format!("file {}", c["program"].as_str().unwrap())];
    cmds.extend(setup);
    cmds.push(format!(
        "target remote {}",
        c["miDebuggerServerAddress"].as_str().unwrap()
    ));
    cmds.extend(["break reject_tg", "continue", "p skb->len", "detach"].map(String::from));
    let out = gdb(&cmds, Duration::from_secs(120));
    assert!(out.contains("hit Breakpoint 1, reject_tg (skb="), "{out}");
    assert!(out.contains("$1 = 84"), "{out}");
    let mut ping = ping;
    let _ = ping.kill();
    let _ = ping.wait();
    // The task's server ends with its client (--once).
    assert!(
        srv.wait_exit(Duration::from_secs(20)).is_some(),
        "{}",
        srv.log_text()
    );
    assert_eq!(tracer_pid(&r), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gdbinit_attaches_gdb_natively_with_every_module() {
    kernel_image();
    let lab = Lab::article("tig-");
    let r = lab.umid("R");
    lab.must("R", "iptables-legacy -A FORWARD -p icmp -j REJECT");
    let file = std::env::temp_dir().join(format!("umldbg-gdbinit-{}", std::process::id()));
    ok(&["--umid", &r, "ide", "gdbinit", "-o", file.to_str().unwrap()]);
    let script = std::fs::read_to_string(&file).unwrap();
    assert!(
        script.contains("add-symbol-file ") && script.contains("ipt_REJECT.ko -s .text 0x"),
        "{script}"
    );
    assert!(
        script.contains("handle SIGSEGV nostop noprint pass"),
        "{script}"
    );
    let ping = spawn_sh(&lab.umid("A"), "ping -c 40 -i 0.3 -W 1 192.168.20.2");
    let out = gdb(
        &[
            format!("source {}", file.display()),
            "break reject_tg".into(),
            "continue".into(),
            "p skb->len".into(),
            "bt".into(),
            "detach".into(),
        ],
        Duration::from_secs(180),
    );
    assert!(out.contains("reject_tg (skb="), "{out}");
    assert!(out.contains("$1 = 84"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with('#') && l.contains(" ip_forward ")),
        "{out}"
    );
    assert_eq!(tracer_pid(&r), 0);
    let mut ping = ping;
    let _ = ping.kill();
    let _ = ping.wait();
    lab.must("A", "ping -c 1 -W 3 192.168.20.2 | grep -q Unreachable");
    let _ = std::fs::remove_file(&file);
}
