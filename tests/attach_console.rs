//! Issue 5: module addresses from the console of a machine started by hand (not in a lab): a
//! root shell on `ssl0=pts`, given with `attach --console PTY` or found through mconsole
//! `config ssl0`. Real UML, real gdb.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// A machine started by hand for the life of the value; detached and killed (by its pid) on drop,
/// also when the test fails.
struct HandMachine {
    child: std::process::Child,
    pid: i32,
    umid: String,
    dir: PathBuf,
    /// `.text` of ipt_REJECT as the guest printed it at boot.
    text: u64,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HandMachine {
    /// Boots the cached kernel on the host's `/` (read-only hostfs) with ipt_REJECT loaded, a
    /// root shell on ttyS0 (`ssl0=pts`) that comes back whenever the line hangs up, and a
    /// `modprobe` that finds the cached kernel's modules.
    fn boot(tag: &str) -> HandMachine {
        let linux = kernel_path("linux");
        let modules = kernel_path("modules_dir");
        let root = modules.ancestors().nth(3).unwrap().to_path_buf();
        let umid = format!("tac-{tag}-{}", std::process::id());
        let dir = umldbg::util::cache_dir().join("test-tmp").join(&umid);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let exe = |p: &PathBuf, text: String| {
            std::fs::write(p, text).unwrap();
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        };
        exe(
            &dir.join("bin/modprobe"),
            format!(
                "#!/bin/sh\nexec /sbin/modprobe -d {} \"$@\"\n",
                root.display()
            ),
        );
        let init = dir.join("init.sh");
        exe(
            &init,
            format!(
                "#!/bin/sh\nexport PATH={}:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb\n\
                 mount -t proc proc /proc\nmount -t sysfs sysfs /sys\n\
                 mount -t devtmpfs devtmpfs /dev 2>/dev/null\nmkdir -p /dev/pts\nmount -t devpts devpts /dev/pts\n\
                 modprobe ipt_REJECT\necho TEXT=$(cat /sys/module/ipt_REJECT/sections/.text)\n\
                 ( while :; do setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'; sleep 1; done ) &\n\
                 while :; do sleep 3600; done\n",
                dir.join("bin").display()
            ),
        );
        let free = umldbg::uml::ids::Umid::new(umid.clone()).unwrap();
        assert!(
            !umldbg::uml::instance::is_running(&umldbg::uml::instance::default_uml_dir(), &free),
            "{umid} is already running"
        );
        let mut child = std::process::Command::new(&linux)
            .args([
                "mem=64M",
                &format!("umid={umid}"),
                "rootfstype=hostfs",
                "rootflags=/",
                "ro",
            ])
            .arg(format!("init={}", init.display()))
            .args([
                "con0=fd:0,fd:1",
                "con=null",
                "ssl0=pts",
                "ssl=null",
                "loglevel=2",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let mut m = HandMachine {
            pid: child.id() as i32,
            child,
            umid,
            dir,
            text: 0,
            log: log.clone(),
        };
        // Everything the kernel and init print on con0, kept for a failing test's message.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(t) = l.strip_prefix("TEXT=") {
                    let _ = tx.send(t.trim().to_string());
                }
                log.lock().unwrap().push(l);
            }
        });
        let text = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no TEXT= from the machine: {:?}", m.log()));
        m.text = u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap();
        m
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn mconsole(&self) -> umldbg::uml::mconsole::Mconsole {
        let sock = umldbg::uml::instance::default_uml_dir()
            .join(&self.umid)
            .join("mconsole");
        wait_for("the mconsole socket", Duration::from_secs(20), || {
            umldbg::uml::mconsole::Mconsole::connect(&sock, Duration::from_secs(3)).ok()
        })
    }

    /// The host pty of ssl0, as mconsole says.
    fn ssl0(&self) -> PathBuf {
        let mc = self.mconsole();
        wait_for("ssl0 on a pty", Duration::from_secs(20), || {
            mc.config("ssl0")
                .ok()
                .and_then(|a| umldbg::uml::mconsole::pty_of_config(&a))
                .filter(|p| p.exists())
        })
    }

    fn ok(&self, args: &[&str]) -> String {
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

    fn module(&self, name: &str) -> serde_json::Value {
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

#[test]
fn hand_started_machine_gets_module_sections_from_its_console() {
    kernel();
    let m = HandMachine::boot("pty");
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
    let m = HandMachine::boot("mute");
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
