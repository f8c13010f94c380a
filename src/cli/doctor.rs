//! `umldbg doctor`: is this machine ready for labs and debugging, and what fixes it.

use std::path::Path;
use std::process::Command;

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    fix: &'static str,
    required: bool,
}

use umldbg::util::which;

fn tool(name: &'static str, prog: &str, pkg: &'static str) -> Check {
    let found = which(prog);
    Check {
        name,
        ok: found.is_some(),
        detail: found
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("{prog} not found")),
        fix: pkg,
        required: true,
    }
}

pub fn run(cache: &Path) -> anyhow::Result<bool> {
    let root = nix::unistd::geteuid().is_root();
    let mut checks = vec![
        Check {
            name: "root",
            ok: root,
            detail: if root {
                "uid 0".into()
            } else {
                "not root".into()
            },
            fix: "run umldbg as root (sudo)",
            required: true,
        },
        tool("gdb", "gdb", "apt-get install -y gdb"),
        tool("iptables", "iptables-legacy", "apt-get install -y iptables"),
        tool("kmod", "modprobe", "apt-get install -y kmod"),
        tool("iproute2", "ip", "apt-get install -y iproute2"),
        tool("python3", "python3", "apt-get install -y python3"),
        tool("ping", "ping", "apt-get install -y iputils-ping"),
        tool("tcpdump", "tcpdump", "apt-get install -y tcpdump"),
        tool("bubblewrap", "bwrap", "apt-get install -y bubblewrap"),
    ];
    let tun = Path::new("/dev/net/tun").exists();
    checks.push(Check {
        name: "/dev/net/tun",
        ok: tun,
        detail: if tun {
            "present".into()
        } else {
            "missing".into()
        },
        fix: "modprobe tun (or run where /dev/net/tun exists)",
        required: true,
    });
    let ns = format!("umldbg-doctor-{}", std::process::id());
    let ok = root
        && Command::new("ip")
            .args(["netns", "add", &ns])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if ok {
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    }
    checks.push(Check {
        name: "network namespaces",
        ok,
        detail: if ok {
            "ip netns add works".into()
        } else {
            "cannot create a network namespace".into()
        },
        fix: "run as root on a kernel with network namespaces",
        required: true,
    });
    match umldbg::kernel::cached(cache) {
        Ok(m) => checks.push(Check {
            name: "kernel cache",
            ok: true,
            detail: format!("{} {}", m.version, m.linux.display()),
            fix: "",
            required: true,
        }),
        Err(e) => checks.push(Check {
            name: "kernel cache",
            ok: false,
            detail: e.to_string(),
            fix: "umldbg kernel build",
            required: true,
        }),
    }
    let mut all = true;
    for c in &checks {
        let mark = if c.ok {
            "ok  "
        } else if c.required {
            "MISS"
        } else {
            "warn"
        };
        if c.ok {
            println!("{mark} {:<20} {}", c.name, c.detail);
        } else {
            println!("{mark} {:<20} {}  -> fix: {}", c.name, c.detail, c.fix);
            if c.required {
                all = false;
            }
        }
    }
    Ok(all)
}
