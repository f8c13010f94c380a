//! Helpers of the `umldbg serve` tests with real UML machines: the server as a child process
//! (stopped on drop), stock gdb in batch mode. `use common::serve::*;` after `mod common;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::bin;

/// `umldbg serve` running for the life of the value.
pub struct Server {
    pub child: Child,
    pub address: String,
    /// The server's first line ("... listening on ...; in gdb: file IMAGE, then target remote ...").
    pub banner: String,
    pub log: PathBuf,
}

impl Server {
    /// Start `program args...` (umldbg serve, or what an IDE task says) and wait for its
    /// "listening on" line.
    pub fn spawn(program: &str, args: &[String], tag: &str) -> Server {
        let log =
            std::env::temp_dir().join(format!("umldbg-serve-{tag}-{}.log", std::process::id()));
        let err = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start umldbg serve");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "umldbg serve did not say it listens: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        assert!(line.contains(" listening on "), "{line}");
        let address = line
            .rsplit("target remote ")
            .next()
            .unwrap()
            .trim()
            .to_string();
        Server {
            child,
            address,
            banner: line,
            log,
        }
    }

    pub fn start(umid: &str, extra: &[&str]) -> Server {
        let mut args = vec![
            "serve".to_string(),
            umid.to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn(bin(), &args, umid)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the server to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(15)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The image file the server's banner tells gdb to load.
pub fn banner_image(srv: &Server) -> PathBuf {
    let f = srv
        .banner
        .split("in gdb: file ")
        .nth(1)
        .and_then(|r| r.split(", then target remote").next())
        .unwrap_or_else(|| panic!("no image in {:?}", srv.banner));
    PathBuf::from(f)
}

/// Run a program (killed after `timeout`); its exit status and stdout and stderr together.
pub fn run_for(program: &str, args: &[String], timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o: Output = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// The cached kernel image.
pub fn kernel_image() -> PathBuf {
    let o = Command::new(bin())
        .args(["kernel", "path", "--json"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "no cached kernel: run `umldbg kernel build` (scripts/setup.sh)"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    PathBuf::from(v["linux"].as_str().unwrap())
}

/// gdb's batch-mode arguments: `-nx -batch` then `-ex` for each command.
pub fn gdb_args(cmds: &[String]) -> Vec<String> {
    // A gdb that meets an internal error when its server is killed under it must not leave a
    // core file in the working tree.
    let mut v = vec![
        "-nx".to_string(),
        "-batch".to_string(),
        "-iex".to_string(),
        "maint set internal-error corefile no".to_string(),
        "-iex".to_string(),
        "maint set internal-error quit yes".to_string(),
    ];
    for c in cmds {
        v.push("-ex".into());
        v.push(c.clone());
    }
    v
}

/// Run stock gdb in batch mode (killed after `timeout`); stdout and stderr together.
pub fn gdb(cmds: &[String], timeout: Duration) -> String {
    run_for("gdb", &gdb_args(cmds), timeout).1
}

/// gdb started in the background with its output going to a file (to watch it progress).
pub struct GdbRun {
    pub child: Child,
    pub out: PathBuf,
}

impl GdbRun {
    pub fn start(cmds: &[String], tag: &str) -> GdbRun {
        let out = std::env::temp_dir().join(format!("umldbg-gdb-{tag}-{}.out", std::process::id()));
        let f = std::fs::File::create(&out).unwrap();
        let child = Command::new("gdb")
            .args(gdb_args(cmds))
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("run gdb");
        GdbRun { child, out }
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Wait until gdb's output contains `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.text().contains(what) {
            assert!(
                Instant::now() < end,
                "gdb never printed {what:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// Wait for gdb to finish (killed after `timeout`); its whole output.
    pub fn finish(mut self, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.text()
    }
}

impl Drop for GdbRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.out);
    }
}

/// The kernel pid of a machine and its tracer (0: none).
pub fn tracer_pid(umid: &str) -> i32 {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let pid =
        std::fs::read_to_string(Path::new(&home).join(".uml").join(umid).join("pid")).unwrap();
    let st = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    st.lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The `info sharedlibrary` line of a module's file, if listed.
pub fn solib_line<'a>(out: &'a str, ko: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.starts_with("0x") && l.trim_end().ends_with(&format!("/{ko}")))
}

/// 3,000 UDP datagrams from A to B.
pub const UDP_FLOOD: &str = "python3 -c \"import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(3000):\n    s.sendto(b'x',('192.168.20.2',9))\n    time.sleep(0.0005)\n\"";

/// The console log of a lab machine (where a kernel panic is written).
pub fn console_log(lab: &str, umid: &str) -> String {
    std::fs::read_to_string(format!(
        "/run/umldbg/labs/{lab}/machines/{umid}.console.log"
    ))
    .unwrap_or_default()
}

/// Whether the machine's kernel process is alive.
pub fn machine_alive(umid: &str) -> bool {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let Ok(pid) = std::fs::read_to_string(Path::new(&home).join(".uml").join(umid).join("pid"))
    else {
        return false;
    };
    pid.trim().parse().is_ok_and(umldbg::util::pid_alive)
}
