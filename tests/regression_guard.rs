//! Regression tests of issue 18 on the command line and the session daemon: every bug is a test
//! named after it, asserting the safe outcome.
//!
//! Destructive input (`lab down ..`, a path, a lab whose run directory is gone) runs against a
//! scratch `UMLDBG_RUN_DIR` holding canary directories that must survive. Labs are real (UML
//! machines booted from the cached kernel in namespaces of their own) and are taken down on drop,
//! also when a test fails; a process a test started that is still running then is ended by pid.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A scratch directory under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch::new_in(&std::env::temp_dir(), tag)
    }

    fn new_in(base: &Path, tag: &str) -> Scratch {
        let p = base.join(format!("umldbg-guard-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run umldbg with extra environment; a run that has not ended after `limit` is killed (by its
/// pid).
fn run_env(env: &[(&str, &Path)], args: &[&str], limit: Duration) -> Output {
    run_limited(env, args, limit, false)
}

/// As [`run_env`]; with `cap_memory` the address space is capped at 2 GiB, so that a regression
/// that reads a device forever cannot take the machine's memory (not for `lab up`: its
/// supervisor and machines would inherit the cap).
fn run_limited(env: &[(&str, &Path)], args: &[&str], limit: Duration, cap_memory: bool) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: setrlimit is async-signal-safe.
    if cap_memory {
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 2 << 30,
                    rlim_max: 2 << 30,
                };
                libc::setrlimit(libc::RLIMIT_AS, &lim);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().expect("run umldbg");
    let end = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "umldbg {args:?} still ran after {limit:?}: {}{}",
                stdout(&o),
                stderr(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The command failed with exactly one line on stderr (and printed nothing on stdout).
fn assert_one_line_failure(o: &Output, args: &[&str]) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "umldbg {args:?} succeeded: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "umldbg {args:?}: not one line: {err:?}"
    );
    assert!(err.starts_with("umldbg: "), "{err}");
    err
}

/// A canary directory with a file in it; `alive` says whether both are still there.
fn canary(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let f = dir.join("canary.txt");
    std::fs::write(&f, "still here").unwrap();
    f
}

fn alive(pid: i32) -> bool {
    umldbg::util::pid_alive(pid)
}

/// A scratch run directory with a lab of canaries: `<run>/labs/tg-canary/` (a lab name that
/// `lab down` must not touch unless named), `<run>/canary/` beside `labs`, and `<root>/victim/`
/// above the run directory.
struct CanaryRun {
    root: Scratch,
    files: Vec<PathBuf>,
}

impl CanaryRun {
    fn new(tag: &str) -> CanaryRun {
        let root = Scratch::new(tag);
        let run = root.path().join("run");
        let files = vec![
            canary(&run.join("labs").join("tg-canary")),
            canary(&run.join("canary")),
            canary(&root.path().join("victim")),
            canary(&root.path().join("cache").join("stage").join("tg-canary")),
        ];
        CanaryRun { root, files }
    }

    fn run_dir(&self) -> PathBuf {
        self.root.path().join("run")
    }

    fn cache(&self) -> PathBuf {
        self.root.path().join("cache")
    }

    fn down(&self, name: &str) -> Output {
        let (run, cache) = (self.run_dir(), self.cache());
        run_env(
            &[("UMLDBG_RUN_DIR", &run), ("UMLDBG_CACHE", &cache)],
            &["lab", "down", name],
            Duration::from_secs(30),
        )
    }

    fn assert_all_survive(&self, after: &str) {
        for f in &self.files {
            assert!(
                f.exists(),
                "{} was removed by `lab down {after}`",
                f.display()
            );
        }
        assert!(self.run_dir().join("labs").is_dir());
    }
}

#[test]
fn lab_down_of_empty_dot_and_dotdot_removes_nothing() {
    let c = CanaryRun::new("dots");
    for name in ["", ".", "..", "...", "./", "../"] {
        let o = c.down(name);
        let err = assert_one_line_failure(&o, &["lab", "down", name]);
        assert!(err.contains("is not a lab name"), "{name:?}: {err}");
        c.assert_all_survive(name);
    }
}

#[test]
fn lab_down_of_a_path_removes_nothing() {
    let c = CanaryRun::new("path");
    let victim = c.root.path().join("victim");
    let victim_rel = "../../victim".to_string();
    for name in [
        victim.to_str().unwrap(),
        victim_rel.as_str(),
        "../canary",
        "tg-canary/../..",
        "tg-canary/",
    ] {
        let o = c.down(name);
        let err = assert_one_line_failure(&o, &["lab", "down", name]);
        assert!(err.contains("is not a lab name"), "{name:?}: {err}");
        c.assert_all_survive(name);
    }
}

#[test]
fn lab_down_of_a_name_that_is_no_lab_fails_and_removes_nothing() {
    let c = CanaryRun::new("nolab");
    let o = c.down("tg-no-such-lab");
    let err = assert_one_line_failure(&o, &["lab", "down", "tg-no-such-lab"]);
    assert!(err.contains("no lab named tg-no-such-lab"), "{err}");
    c.assert_all_survive("tg-no-such-lab");
}

#[test]
fn lab_down_as_non_root_is_an_error_and_stops_nothing() {
    let c = CanaryRun::new("nonroot");
    // The binary where an unprivileged user can run it.
    let exe = c.root.path().join("umldbg");
    std::fs::copy(bin(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [c.root.path(), &exe] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["lab", "down", "tg-canary"])
        .env("UMLDBG_RUN_DIR", c.run_dir())
        .env("UMLDBG_CACHE", c.cache())
        .output()
        .expect("setpriv (util-linux)");
    let err = assert_one_line_failure(&o, &["lab", "down", "tg-canary"]);
    assert!(
        err.contains("needs root") && err.contains("nothing was stopped"),
        "{err}"
    );
    assert!(!stdout(&o).contains("down"), "{}", stdout(&o));
    c.assert_all_survive("tg-canary (as nobody)");
}

#[test]
fn lab_up_dev_zero_is_refused() {
    let args = ["lab", "up", "/dev/zero"];
    let o = run_limited(&[], &args, Duration::from_secs(20), true);
    let err = assert_one_line_failure(&o, &args);
    assert!(
        err.contains("/dev/zero") && err.contains("not a regular file"),
        "{err}"
    );
}

#[test]
fn lab_up_of_a_fifo_is_refused_without_waiting_for_a_writer() {
    let s = Scratch::new("fifo");
    let fifo = s.path().join("lab.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let args = ["lab", "up", fifo.to_str().unwrap()];
    let o = run_env(&[], &args, Duration::from_secs(20));
    let err = assert_one_line_failure(&o, &args);
    assert!(err.contains("a pipe, not a regular file"), "{err}");
}

#[test]
fn symfile_kallsyms_dev_zero_is_refused() {
    let s = Scratch::new("symfile");
    let out = s.path().join("syms.elf");
    let args = [
        "symfile",
        "--kallsyms",
        "/dev/zero",
        "-o",
        out.to_str().unwrap(),
    ];
    let o = run_limited(&[], &args, Duration::from_secs(20), true);
    let err = assert_one_line_failure(&o, &args);
    assert!(err.contains("not a regular file"), "{err}");
    assert!(!out.exists());
}

#[test]
fn umid_empty_is_a_one_line_error() {
    for args in [
        &["--umid", "", "status"][..],
        &["--umid", "", "break", "reject_tg"],
        &["exec", "", "--", "true"],
        &["console", ""],
        &["attach", ""],
        &["--umid", "../x", "bt"],
    ] {
        let o = umldbg(args);
        let err = assert_one_line_failure(&o, args);
        assert!(
            err.contains("umid is empty") || err.contains("umid `../x`"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("no session on"), "{err}");
    }
}

#[test]
fn clap_errors_are_one_line_with_the_usage_on_a_second() {
    for args in [
        &["exec"][..],
        &["lab", "down", "--bogus"],
        &["no-such-command"],
        &["wait", "--timeout", "soon"],
    ] {
        let o = umldbg(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        let lines: Vec<&str> = err.trim_end().lines().collect();
        assert!(
            (1..=2).contains(&lines.len()) && lines[0].starts_with("umldbg: "),
            "{args:?}: {err:?}"
        );
        if let Some(second) = lines.get(1) {
            assert!(second.starts_with("usage: "), "{args:?}: {err:?}");
        }
    }
}

#[test]
fn wait_timeout_that_is_not_seconds_is_refused_by_the_cli() {
    for t in ["-1", "1e308", "NaN", "inf", "-inf"] {
        let eq = format!("--timeout={t}");
        for args in [
            &["--umid", "tg-nothing", "wait", eq.as_str()][..],
            &["--umid", "tg-nothing", "wait", "--timeout", t],
        ] {
            let o = umldbg(args);
            let err = assert_one_line_failure(&o, args);
            assert!(err.contains("give a number of seconds"), "{args:?}: {err}");
        }
    }
}

#[test]
fn break_empty_location_is_refused_by_the_cli() {
    for loc in ["", " ", "\t \n"] {
        let args = ["--umid", "tg-nothing", "break", loc];
        let o = umldbg(&args);
        let err = assert_one_line_failure(&o, &args);
        assert!(err.contains("location is empty"), "{loc:?}: {err}");
    }
}

/// Raw lines to a session daemon's socket: one reply line per request line.
struct RawSession {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl RawSession {
    fn open(umid: &str) -> RawSession {
        let sock =
            umldbg::daemon::client::socket_path(&umldbg::util::home_dir().join(".uml"), umid);
        let w = UnixStream::connect(&sock).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        RawSession { w, r }
    }

    fn send(&mut self, line: &[u8]) -> serde_json::Value {
        self.w.write_all(line).unwrap();
        self.w.write_all(b"\n").unwrap();
        let mut reply = String::new();
        let n = self.r.read_line(&mut reply).unwrap();
        assert!(n > 0, "the daemon closed the connection after {line:?}");
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
    }
}

fn refused(v: &serde_json::Value, what: &str) -> String {
    assert_eq!(v["ok"], false, "{what} was accepted: {v}");
    let e = v["error"].as_str().unwrap_or_default().to_string();
    assert!(!e.is_empty() && !e.contains('\n'), "{what}: {v}");
    e
}

#[test]
fn wait_timeout_negative_is_refused_and_session_stays() {
    kernel();
    let lab = Lab::article("tgw-");
    let s = Attached::new(&lab.umid("R"));
    for t in ["-1", "1e308", "NaN", "inf"] {
        let o = s.run(&["wait", &format!("--timeout={t}")]);
        let err = assert_one_line_failure(&o, &["wait", t]);
        assert!(err.contains("give a number of seconds"), "{err}");
    }
    // The daemon checks too: a raw request must not end the connection or the session.
    let mut raw = RawSession::open(&s.umid);
    for line in [
        &br#"{"op":"wait","timeout":-1}"#[..],
        br#"{"op":"wait","timeout":1e308}"#,
        br#"{"op":"wait","timeout":-1e-9}"#,
        br#"{"op":"wait","timeout":NaN}"#,
        b"",
        b"   ",
        b"\xff\xfe{\"op\":\"status\"}",
        br#"{"op":"nothing-like-this"}"#,
    ] {
        refused(&raw.send(line), &String::from_utf8_lossy(line));
    }
    let long = vec![b'x'; (1 << 20) + 10];
    let e = refused(&raw.send(&long), "a line over 1 MiB");
    assert!(e.contains("longer than"), "{e}");
    let st = raw.send(br#"{"op":"status"}"#);
    assert_eq!(st["ok"], true, "{st}");
    // And a fresh connection and the CLI still work.
    s.ok(&["status"]);
    lab.must("A", "ping -c 1 -W 3 192.168.20.2");
}

#[test]
fn break_empty_location_is_refused() {
    kernel();
    let lab = Lab::article("tgb-");
    let s = Attached::new(&lab.umid("R"));
    for loc in ["", "  "] {
        let o = s.run(&["break", loc]);
        let err = assert_one_line_failure(&o, &["break", loc]);
        assert!(err.contains("location is empty"), "{err}");
    }
    let mut raw = RawSession::open(&s.umid);
    for line in [
        &br#"{"op":"break","location":""}"#[..],
        br#"{"op":"break","location":" \t"}"#,
        br#"{"op":"break","location":"reject_tg","cond":""}"#,
    ] {
        let e = refused(&raw.send(line), &String::from_utf8_lossy(line));
        assert!(e.contains("is empty"), "{e}");
    }
    // Nothing reached gdb: no breakpoint, and the machine runs (it forwards A's ping to B).
    let breaks = s.json(&["breaks"]);
    assert!(
        breaks.as_array().is_some_and(|a| a.is_empty()),
        "breakpoints after refused requests: {breaks}"
    );
    lab.must("A", "ping -c 1 -W 3 192.168.20.2");
}

/// A lab started under a scratch run directory, taken down with the same environment on drop;
/// any process of it still running after that (recorded when it came up) is killed by pid.
struct ScratchLab {
    prefix: String,
    name: String,
    run: Scratch,
    pids: Vec<(i32, Option<String>)>,
}

impl ScratchLab {
    fn up(prefix: &str) -> ScratchLab {
        // Not under /tmp: a machine's sandbox has a /tmp of its own, so a lab directory there
        // is out of its reach.
        let run = Scratch::new_in(Path::new("/run"), prefix.trim_end_matches('-'));
        let mut lab = ScratchLab {
            prefix: prefix.into(),
            name: format!("{prefix}article"),
            run,
            pids: Vec::new(),
        };
        let o = lab.umldbg(&["lab", "up", "--prefix", prefix]);
        assert!(o.status.success(), "lab up: {}{}", stdout(&o), stderr(&o));
        let st = lab.state();
        lab.pids.push((st.supervisor_pid, None));
        for m in &st.machines {
            lab.pids.push((m.pid, Some(m.umid.clone())));
        }
        lab
    }

    fn run_dir(&self) -> PathBuf {
        self.run.path().join("run")
    }

    fn umldbg(&self, args: &[&str]) -> Output {
        let run = self.run_dir();
        run_env(&[("UMLDBG_RUN_DIR", &run)], args, Duration::from_secs(180))
    }

    fn lab_dir(&self) -> PathBuf {
        self.run_dir().join("labs").join(&self.name)
    }

    fn state(&self) -> umldbg::lab::state::LabState {
        umldbg::lab::state::LabState::read(&self.lab_dir()).expect("the lab's state")
    }

    fn umid(&self, m: &str) -> String {
        match m {
            "A" => format!("{}client-uml-A", self.prefix),
            "B" => format!("{}client-uml-B", self.prefix),
            _ => format!("{}router-uml-R", self.prefix),
        }
    }
}

impl Drop for ScratchLab {
    fn drop(&mut self) {
        let _ = self.umldbg(&["lab", "down", &self.name]);
        for (pid, umid) in &self.pids {
            let ours = match umid {
                Some(u) => umldbg::lab::marks::runs_umid(*pid, u),
                None => umldbg::lab::marks::supervisor_runs(*pid, &self.name),
            };
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        let _ = umldbg::lab::netns::delete(&umldbg::lab::state::netns_name(&self.name));
    }
}

/// A process whose argv holds `umid=<umid>` like a UML kernel's, started by the test and killed
/// (by pid) on drop.
struct Decoy(std::process::Child);

impl Decoy {
    fn start(umid: &str) -> Decoy {
        let child = Command::new("python3")
            .args(["-c", "import time; time.sleep(300)"])
            .arg(format!("umid={umid}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        let d = Decoy(child);
        let pid = d.pid();
        wait_for("the decoy's argv", Duration::from_secs(5), || {
            umldbg::lab::marks::runs_umid(pid, umid).then_some(())
        });
        d
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn netns_exists(name: &str) -> bool {
    umldbg::lab::netns::exists(&umldbg::lab::state::netns_name(name))
}

fn stage_dir(lab: &str) -> PathBuf {
    umldbg::util::cache_dir().join("stage").join(lab)
}

#[test]
fn lab_down_without_state_dir_stops_everything() {
    kernel();
    let lab = ScratchLab::up("tgs-");
    let beside = canary(&lab.run_dir().join("labs").join("tgs-canary"));
    let above = canary(&lab.run_dir().join("canary"));
    let st = lab.state();
    assert!(stage_dir(&lab.name).is_dir());
    // A process that carries one of the lab's umids but no mark of the lab: not ours to stop.
    let decoy = Decoy::start(&lab.umid("A"));
    std::fs::remove_dir_all(lab.lab_dir()).unwrap();

    let o = lab.umldbg(&["lab", "down", &lab.name]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    for m in &st.machines {
        assert!(
            out.contains(&format!("stopped machine {} (pid {})", m.umid, m.pid)),
            "{out}"
        );
    }
    assert!(
        out.contains(&format!("stopped supervisor (pid {})", st.supervisor_pid)),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed namespace umldbg-{}", lab.name)),
        "{out}"
    );
    for (pid, what) in &lab.pids {
        assert!(
            !alive(*pid),
            "{what:?} (pid {pid}) still runs after lab down"
        );
    }
    assert!(!netns_exists(&lab.name));
    assert!(!stage_dir(&lab.name).exists(), "the stage dir remains");
    for m in ["A", "B", "R"] {
        let d = umldbg::util::home_dir().join(".uml").join(lab.umid(m));
        assert!(!d.exists(), "{} remains", d.display());
    }
    assert!(
        beside.exists() && above.exists(),
        "lab down removed a canary"
    );
    assert!(
        alive(decoy.pid()),
        "lab down stopped a process that is not the lab's"
    );
    // Down again: nothing is left, so it is no lab any more.
    let o = lab.umldbg(&["lab", "down", &lab.name]);
    let err = assert_one_line_failure(&o, &["lab", "down", &lab.name]);
    assert!(err.contains("no lab named"), "{err}");
}

#[test]
fn exec_after_supervisor_killed_says_what_to_do_and_lab_down_cleans_up() {
    kernel();
    let lab = ScratchLab::up("tgk-");
    let st = lab.state();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(st.supervisor_pid),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    wait_for("the supervisor to go", Duration::from_secs(10), || {
        (!alive(st.supervisor_pid)).then_some(())
    });
    let args = ["exec", &lab.umid("A"), "--", "true"];
    let o = lab.umldbg(&args);
    let err = assert_one_line_failure(&o, &args);
    assert!(
        err.contains("supervisor of lab tgk-article")
            && err.contains("is gone")
            && err.contains("umldbg lab down tgk-article"),
        "{err}"
    );
    assert!(!err.contains("Connection refused"), "{err}");

    let o = lab.umldbg(&["lab", "down", &lab.name]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    // A sandboxed machine dies with its supervisor (bubblewrap's --die-with-parent); one that
    // still ran is stopped and listed. Either way none is left.
    for m in &st.machines {
        assert!(!alive(m.pid), "{} still runs", m.umid);
    }
    assert!(!netns_exists(&lab.name));
    assert!(!lab.lab_dir().exists());
    assert!(
        !stage_dir(&lab.name).exists(),
        "lab down left {}",
        stage_dir(&lab.name).display()
    );
}

#[test]
fn capture_to_dev_full_reports_the_write_error() {
    kernel();
    let lab = ScratchLab::up("tgc-");
    let args = [
        "capture",
        "uplink",
        "--lab",
        &lab.name,
        "--duration",
        "5",
        "-w",
        "/dev/full",
    ];
    let o = lab.umldbg(&args);
    let err = stderr(&o);
    assert!(!o.status.success(), "capture to /dev/full succeeded: {err}");
    assert!(
        err.contains("/dev/full") && err.contains("No space left"),
        "{err}"
    );
    // A capture to a good file still works.
    let pcap = lab.run.path().join("uplink.pcap");
    let mut cap = Command::new(bin())
        .args(["capture", "uplink", "--lab", &lab.name, "--count", "1"])
        .args(["--duration", "20", "-w"])
        .arg(&pcap)
        .env("UMLDBG_RUN_DIR", lab.run_dir())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for("a packet on the uplink", Duration::from_secs(25), || {
        let _ = lab.umldbg(&[
            "exec",
            &lab.umid("A"),
            "--shell",
            "ping -c 1 -W 1 192.168.30.1",
        ]);
        cap.try_wait().unwrap()
    });
    let mut e = String::new();
    cap.stderr.take().unwrap().read_to_string(&mut e).unwrap();
    assert!(status.success(), "{e}");
    let bytes = std::fs::read(&pcap).unwrap();
    // pcap magic, then at least one record beyond the 24-byte header.
    assert!(
        bytes.len() > 24 && bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "{bytes:?}"
    );
}
