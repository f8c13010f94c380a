//! A UML machine started by hand (not in a lab): the cached kernel on the host's `/` (read-only
//! hostfs), an init script of the test's, everything it prints on con0 kept. Detached, killed
//! by its process group and cleaned up on drop, also when the test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::{kernel_path, stderr, stdout, umldbg, wait_for};

/// How the machine is started.
pub struct Boot<'a> {
    /// In the umid and the scratch directory's name, with the test's pid.
    pub tag: &'a str,
    /// Lines of the init script after PATH is set and /proc and /sys are mounted; `{dir}` is
    /// the machine's scratch directory (on the host's disk, visible to the guest).
    pub init: &'a str,
    /// A root shell on ttyS0 (`ssl0=pts`) that comes back whenever the line hangs up.
    pub console_shell: bool,
    /// Load ipt_REJECT at boot (from the cached kernel's modules) and print `TEXT=` with its
    /// `.text`; [`HandMachine::text`] holds it.
    pub ipt_reject: bool,
}

pub struct HandMachine {
    child: std::process::Child,
    pub pid: i32,
    pub umid: String,
    /// Scratch directory of this machine (init script, helper scripts).
    pub dir: PathBuf,
    /// `.text` of ipt_REJECT as the guest printed it at boot (with `ipt_reject`).
    pub text: u64,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn executable(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

impl HandMachine {
    /// Boot a machine; with `ipt_reject`, wait until it printed the module's `.text`.
    pub fn boot(b: Boot) -> HandMachine {
        let linux = kernel_path("linux");
        let umid = format!("h{}-{}", b.tag, std::process::id());
        // Not under /tmp: a guest sees its own tmpfs there, which would hide the init script.
        let dir = umldbg::util::cache_dir().join("test-tmp").join(&umid);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let mut init = format!(
            "#!/bin/sh\nexport PATH={}:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb\n\
             mount -t proc proc /proc\nmount -t sysfs sysfs /sys\n",
            dir.join("bin").display()
        );
        if b.ipt_reject {
            let modules = kernel_path("modules_dir");
            let root = modules.ancestors().nth(3).unwrap().to_path_buf();
            executable(
                &dir.join("bin/modprobe"),
                &format!(
                    "#!/bin/sh\nexec /sbin/modprobe -d {} \"$@\"\n",
                    root.display()
                ),
            );
            init.push_str(
                "modprobe ipt_REJECT\necho TEXT=$(cat /sys/module/ipt_REJECT/sections/.text)\n",
            );
        }
        if b.console_shell {
            init.push_str(
                "mount -t devtmpfs devtmpfs /dev 2>/dev/null\nmkdir -p /dev/pts\nmount -t devpts devpts /dev/pts\n\
                 ( while :; do setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'; sleep 1; done ) &\n",
            );
        }
        init.push_str(&b.init.replace("{dir}", &dir.display().to_string()));
        init.push_str("\nwhile :; do sleep 3600; done\n");
        let script = dir.join("init.sh");
        executable(&script, &init);
        let free = umldbg::uml::ids::Umid::new(umid.clone()).unwrap();
        assert!(
            !umldbg::uml::instance::is_running(&umldbg::uml::instance::default_uml_dir(), &free),
            "{umid} is already running"
        );
        let mut cmd = std::process::Command::new(&linux);
        cmd.args([
            "mem=64M",
            &format!("umid={umid}"),
            "rootfstype=hostfs",
            "rootflags=/",
            "ro",
        ])
        .arg(format!("init={}", script.display()))
        .args(["con0=fd:0,fd:1", "con=null"]);
        if b.console_shell {
            cmd.args(["ssl0=pts", "ssl=null"]);
        }
        let mut child = cmd
            .arg("loglevel=2")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let mut m = HandMachine {
            pid: child.id() as i32,
            child,
            umid,
            dir,
            text: 0,
            log: log.clone(),
            lines,
            reader: None,
        };
        // Everything the kernel and init print on con0, kept for a failing test's message.
        m.reader = Some(std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                log.lock().unwrap().push(l.clone());
                let _ = tx.send(l);
            }
        }));
        if b.ipt_reject {
            let text = m
                .line_with("TEXT=", Duration::from_secs(60))
                .unwrap_or_else(|| panic!("no TEXT= from the machine: {:?}", m.log()));
            m.text = u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).unwrap();
        }
        m
    }

    /// The rest of the next con0 line that starts with `prefix`, within `timeout`.
    pub fn line_with(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            let l = self.lines.recv_timeout(left).ok()?;
            if let Some(rest) = l.strip_prefix(prefix) {
                return Some(rest.to_string());
            }
        }
    }

    /// Wait for the machine to end by itself (e.g. its init halted it); then [`log`](Self::log)
    /// holds all it printed.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let status = wait_for("the machine to halt", timeout, || {
            self.child.try_wait().ok().flatten()
        });
        // UML's helper processes may hold con0 open a moment longer.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::SIGKILL,
        );
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }

    /// What the machine printed on con0 so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn mconsole(&self) -> umldbg::uml::mconsole::Mconsole {
        let sock = umldbg::uml::instance::default_uml_dir()
            .join(&self.umid)
            .join("mconsole");
        wait_for("the mconsole socket", Duration::from_secs(20), || {
            umldbg::uml::mconsole::Mconsole::connect(&sock, Duration::from_secs(3)).ok()
        })
    }

    /// The host pty of ssl0, as mconsole says.
    pub fn ssl0(&self) -> PathBuf {
        let mc = self.mconsole();
        wait_for("ssl0 on a pty", Duration::from_secs(20), || {
            mc.config("ssl0")
                .ok()
                .and_then(|a| umldbg::uml::mconsole::pty_of_config(&a))
                .filter(|p| p.exists())
        })
    }

    /// umldbg with `--umid` of this machine; must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let mut v = vec!["--umid", &self.umid];
        v.extend_from_slice(args);
        let o = umldbg(&v);
        assert!(
            o.status.success(),
            "umldbg {args:?}: {}{}\nmachine log: {:?}",
            stdout(&o),
            stderr(&o),
            self.log()
        );
        stdout(&o)
    }

    /// A module's entry in the session's `status --json`.
    pub fn module(&self, name: &str) -> serde_json::Value {
        let st: serde_json::Value = serde_json::from_str(&self.ok(&["--json", "status"])).unwrap();
        st["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in status: {st}"))
            .clone()
    }
}

impl Drop for HandMachine {
    fn drop(&mut self) {
        let _ = umldbg(&["--umid", &self.umid, "detach"]);
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::SIGKILL,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(umldbg::util::home_dir().join(".uml").join(&self.umid));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
