//! Shared harness of the tests that run real UML machines: the cached kernel, labs that are
//! taken down on drop (also when a test fails), polling with deadlines instead of sleeps.
#![allow(dead_code)]

pub mod hand;
pub mod serve;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_umldbg")
}

/// Run umldbg with arguments; return the output whatever the exit status.
pub fn umldbg(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run umldbg")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run umldbg and require success.
pub fn ok(args: &[&str]) -> String {
    let o = umldbg(args);
    assert!(
        o.status.success(),
        "umldbg {args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// The cached kernel's manifest; fails (does not skip) when the kernel is not built.
pub fn kernel() -> serde_json::Value {
    let o = umldbg(&["kernel", "path", "--json"]);
    assert!(
        o.status.success(),
        "no cached kernel: run `umldbg kernel build` (scripts/setup.sh): {}",
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).expect("kernel path --json is JSON")
}

pub fn kernel_path(key: &str) -> PathBuf {
    PathBuf::from(kernel()[key].as_str().expect("manifest field"))
}

/// Poll `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A lab that is up for the life of the value and taken down when it drops.
pub struct Lab {
    pub name: String,
    pub prefix: String,
}

impl Lab {
    /// The article's lab with every umid and the lab name prefixed, so tests run side by side.
    pub fn article(prefix: &str) -> Lab {
        Lab::up(prefix, None)
    }

    pub fn up(prefix: &str, path: Option<&str>) -> Lab {
        let mut args = vec!["lab", "up", "--prefix", prefix];
        if let Some(p) = path {
            args.insert(2, p);
        }
        let o = umldbg(&args);
        let lab = Lab {
            name: format!("{prefix}article"),
            prefix: prefix.to_string(),
        };
        assert!(
            o.status.success(),
            "lab up failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        lab
    }

    pub fn with_name(name: &str, prefix: &str) -> Lab {
        Lab {
            name: name.to_string(),
            prefix: prefix.to_string(),
        }
    }

    /// The umid of one of the article's machines: "A", "R" or "B".
    pub fn umid(&self, m: &str) -> String {
        match m {
            "A" => format!("{}client-uml-A", self.prefix),
            "B" => format!("{}client-uml-B", self.prefix),
            "R" => format!("{}router-uml-R", self.prefix),
            other => format!("{}{other}", self.prefix),
        }
    }

    /// Run a shell line on a machine; returns (exit status, output).
    pub fn sh(&self, m: &str, line: &str) -> (i32, String) {
        let umid = self.umid(m);
        let o = umldbg(&["exec", &umid, "--timeout", "60", "--shell", line]);
        (o.status.code().unwrap_or(-1), stdout(&o) + &stderr(&o))
    }

    /// Run a shell line that must succeed.
    pub fn must(&self, m: &str, line: &str) -> String {
        let (rc, out) = self.sh(m, line);
        assert_eq!(rc, 0, "`{line}` on {m} failed: {out}");
        out
    }

    /// `lab status` shows every machine of this lab alive.
    pub fn assert_all_alive(&self) {
        let st: serde_json::Value =
            serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
        let me = st
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == self.name.as_str())
            .unwrap();
        assert!(
            me["machines"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["alive"] == true),
            "{me}"
        );
    }

    /// Packets R's REJECT rules in FORWARD have matched (the first such rule's counter).
    pub fn forward_rejects(&self) -> u64 {
        let out = self.must("R", "iptables-legacy -L FORWARD -v -x -n | grep REJECT");
        out.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A failing test shows what its machines printed last (a panic, a stuck startup).
        if std::thread::panicking() {
            let dir = umldbg::lab::state::lab_dir(&self.name).join("machines");
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(25).collect();
                    eprintln!("--- {} (last lines) ---", p.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        let _ = umldbg(&["lab", "down", &self.name]);
    }
}

/// A debug session attached for the life of the value; detached on drop.
pub struct Attached {
    pub umid: String,
}

impl Attached {
    pub fn new(umid: &str) -> Attached {
        let o = umldbg(&["attach", umid]);
        assert!(
            o.status.success(),
            "attach {umid}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        Attached {
            umid: umid.to_string(),
        }
    }

    /// Run a debug command against this session.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut v = vec!["--umid", &self.umid];
        v.extend_from_slice(args);
        umldbg(&v)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "umldbg {args:?} on {}: {}{}",
            self.umid,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut v = vec!["--json"];
        v.extend_from_slice(args);
        serde_json::from_str(&self.ok(&v)).expect("JSON output")
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // A failing test shows what the session daemon said last (a panic, gdb's last words).
        if std::thread::panicking() {
            let dir = umldbg::uml::instance::default_uml_dir().join(&self.umid);
            for f in ["umldbg.log", "umldbg.last"] {
                let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                eprintln!("--- {} of {} (last lines) ---", f, self.umid);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        let _ = umldbg(&["--umid", &self.umid, "detach"]);
    }
}

/// Run a shell line on a lab machine in the background (e.g. traffic while a test waits).
pub fn spawn_sh(umid: &str, line: &str) -> std::process::Child {
    Command::new(bin())
        .args(["exec", umid, "--timeout", "60", "--shell", line])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn umldbg exec")
}

/// `lab up labs/kathara/<name> --prefix <prefix>`: the lab (taken down when it drops) and what
/// `lab up` printed; the caller decides whether it had to succeed.
pub fn kathara_lab(name: &str, prefix: &str) -> (Lab, Output) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("labs/kathara")
        .join(name);
    let o = umldbg(&["lab", "up", dir.to_str().unwrap(), "--prefix", prefix]);
    (Lab::with_name(&format!("{prefix}{name}"), prefix), o)
}

/// [`kathara_lab`] that must come up.
pub fn kathara_up(name: &str, prefix: &str) -> Lab {
    let (lab, o) = kathara_lab(name, prefix);
    assert!(
        o.status.success(),
        "lab up {name} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    lab
}
