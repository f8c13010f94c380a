//! The kernel developer's loop (issue: the kernel developer's loop): a kernel tree built with
//! `kernel build --source` in a build directory of its own, one line under `net/` changed, an
//! incremental build, `lab restart` onto it, the change running in the guest, and a debug
//! session that ends on the restart and attaches again at once. Real builds, real machines.
//!
//! The tree is `<cache>/test-tree` (Debian's linux-source unpacked by scripts/test-tree.sh;
//! scripts/setup.sh prepares and builds it once). Its build directory stays in the cache from
//! run to run, so a run rebuilds only what the one-line change touches. Runs of this test (and
//! scripts/bench-loop.sh) take a lock on the tree: they edit the same file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The marker line the test writes into `icmp_echo` (the path a ping to the machine takes).
const TAG: &str = "/* umldbg kernel loop test */";
const FUNCTION: &str = "icmp_echo(struct sk_buff *skb)\n{\n";
const ANCHOR: &str = "\tnet = skb_dst_dev_net_rcu(skb);\n";
const FILE: &str = "net/ipv4/icmp.c";

fn cache() -> PathBuf {
    umldbg::util::cache_dir()
}

/// The tree, unpacked if it is not there yet (scripts/test-tree.sh), locked for this test.
fn test_tree() -> (PathBuf, nix::fcntl::Flock<std::fs::File>) {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache().join("test-tree.lock"))
        .unwrap();
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let o = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-tree.sh"))
        .env("UMLDBG_CACHE", cache())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "scripts/test-tree.sh: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tree = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    (tree, lock)
}

/// Put `pr_info("umldbg-loop NONCE")` into icmp_echo (an earlier run's line goes).
fn set_marker(tree: &Path, nonce: &str) {
    let p = tree.join(FILE);
    let text: String = std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .filter(|l| !l.contains(TAG))
        .map(|l| format!("{l}\n"))
        .collect();
    let start = text
        .find(FUNCTION)
        .unwrap_or_else(|| panic!("{FILE} has no {FUNCTION:?}: adapt the test"));
    let at = start
        + text[start..]
            .find(ANCHOR)
            .unwrap_or_else(|| panic!("icmp_echo in {FILE} has no {ANCHOR:?}: adapt the test"))
        + ANCHOR.len();
    let line = format!("\tpr_info(\"umldbg-loop %s\\n\", \"{nonce}\"); {TAG}\n");
    std::fs::write(&p, format!("{}{line}{}", &text[..at], &text[at..])).unwrap();
}

/// `kernel build --source TREE --json`, which must succeed.
fn build(tree: &Path) -> serde_json::Value {
    let o = umldbg(&[
        "--json",
        "kernel",
        "build",
        "--source",
        tree.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "kernel build --source {}: {}{}",
        tree.display(),
        stdout(&o),
        stderr(&o)
    );
    serde_json::from_str(&stdout(&o)).expect("kernel build --json")
}

fn dmesg_has(lab: &Lab, m: &str, what: &str) -> bool {
    let (_, out) = lab.sh(m, &format!("dmesg | grep -c '{what}' || true"));
    out.trim().parse::<u32>().unwrap_or(0) > 0
}

#[test]
fn kernel_loop_one_line_under_net_rebuilt_incrementally_runs_after_lab_restart() {
    kernel();
    let (tree, _lock) = test_tree();
    let tree_s = tree.to_str().unwrap().to_string();
    // Whatever the tree holds now (after an earlier run: a cache answer in about a second).
    let first = build(&tree);
    let first_linux = first["manifest"]["linux"].as_str().unwrap().to_string();
    assert_ne!(
        first_linux,
        kernel()["linux"].as_str().unwrap(),
        "a tree's build must not become `kernel path`'s kernel"
    );

    let prefix = "tkl-";
    let o = umldbg(&["lab", "up", "--prefix", prefix, "--kernel", &tree_s]);
    let lab = Lab::with_name(&format!("{prefix}article"), prefix);
    assert!(
        o.status.success(),
        "lab up --kernel: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let r = lab.umid("R");
    let st: serde_json::Value = serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
    let me = st
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == lab.name.as_str())
        .unwrap()
        .clone();
    assert!(
        me["machines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["kernel"] == first_linux.as_str()),
        "{me}"
    );

    // One line under net/ changed; the build compiles a handful of objects, not the tree.
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    set_marker(&tree, &nonce);
    let t0 = std::time::Instant::now();
    let second = build(&tree);
    eprintln!(
        "incremental build after a one-line change: {:.1}s, {} objects compiled",
        t0.elapsed().as_secs_f64(),
        second["compiled"]
    );
    assert_eq!(second["cache_hit"], false, "{second}");
    let compiled = second["compiled"].as_u64().unwrap();
    assert!((1..=10).contains(&compiled), "{second}");
    assert_ne!(
        second["manifest"]["build_id"], first["manifest"]["build_id"],
        "{second}"
    );
    let second_linux = second["manifest"]["linux"].as_str().unwrap().to_string();
    // The same tree again: answered from the cache, with the build just made.
    let again = build(&tree);
    assert_eq!(again["cache_hit"], true, "{again}");
    assert_eq!(again["manifest"]["linux"], second_linux.as_str());

    // The old kernel does not print the marker.
    lab.must("A", "ping -c 1 -W 3 192.168.10.1");
    assert!(!dmesg_has(&lab, "R", &nonce));

    // A session on R ends with the restart, and says why.
    let s = Attached::new(&r);
    s.ok(&["break", "icmp_echo"]);
    let t0 = std::time::Instant::now();
    let o = umldbg(&["lab", "restart", &lab.name, &r, "--kernel", &tree_s]);
    let out = stdout(&o);
    assert!(o.status.success(), "lab restart: {out}{}", stderr(&o));
    eprintln!("lab restart: {:.1}s\n{out}", t0.elapsed().as_secs_f64());
    assert!(
        out.contains(&format!("{r} (pid ")) && out.contains(&second_linux),
        "{out}"
    );
    assert!(
        out.contains(&format!("the debug session on {r} ended")),
        "{out}"
    );
    let o = s.run(&["status"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("restarted by `umldbg lab restart`"),
        "{}",
        stderr(&o)
    );
    lab.assert_all_alive();

    // R runs the change: the marker after a ping to it.
    lab.must("A", "ping -c 1 -W 3 192.168.10.1");
    assert!(dmesg_has(&lab, "R", &format!("umldbg-loop {nonce}")));
    // A and B were not restarted: they run the first build still.
    let st: serde_json::Value = serde_json::from_str(&ok(&["lab", "status", "--json"])).unwrap();
    let machines = st
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == lab.name.as_str())
        .unwrap()["machines"]
        .clone();
    for m in machines.as_array().unwrap() {
        let want = if m["umid"] == r.as_str() {
            &second_linux
        } else {
            &first_linux
        };
        assert_eq!(m["kernel"], want.as_str(), "{machines}");
    }

    // attach works again at once, and a breakpoint in the changed function hits.
    let s = Attached::new(&r);
    s.ok(&["break", "icmp_echo"]);
    let ping = spawn_sh(&lab.umid("A"), "ping -c 1 -W 5 192.168.10.1");
    let stop = s.json(&["wait", "--timeout", "60"]);
    assert_eq!(stop["function"], "icmp_echo", "{stop}");
    assert!(
        stop["file"].as_str().unwrap().ends_with("net/ipv4/icmp.c"),
        "{stop}"
    );
    let id = stop["breakpoint"].as_u64().unwrap().to_string();
    s.ok(&["delete", &id]);
    s.ok(&["continue"]);
    let _ = ping.wait_with_output();
    drop(s);

    // The whole lab again on the kernels the machines run: network, addresses and startups
    // (R forwards) as before.
    let out = ok(&["lab", "restart", &lab.name]);
    assert_eq!(
        out.lines().filter(|l| l.contains(") runs ")).count(),
        3,
        "{out}"
    );
    lab.assert_all_alive();
    let ping = lab.must("A", "ping -c 1 -W 3 192.168.20.2");
    assert!(ping.contains("ttl=63"), "{ping}");
    lab.must("A", "ping -c 1 -W 3 192.168.10.1");
    assert!(dmesg_has(&lab, "R", &format!("umldbg-loop {nonce}")));

    // Bad input: one line naming it, and the lab keeps running.
    let o = umldbg(&["lab", "restart", &lab.name, "tkl-no-such-machine"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tkl-no-such-machine"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    let o = umldbg(&[
        "lab",
        "restart",
        &lab.name,
        "--kernel",
        "/nonexistent/linux",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/linux"), "{}", stderr(&o));
    lab.assert_all_alive();
}

/// Scratch directories under the cache (hard links need the tree's file system), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = cache()
            .join("test-tmp")
            .join(format!("kloop-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake tree: a top Makefile with the given version and an `arch/um`.
fn fake_tree(dir: &Path, version: (u32, u32)) {
    std::fs::create_dir_all(dir.join("arch/um")).unwrap();
    std::fs::write(
        dir.join("Makefile"),
        format!(
            "VERSION = {}\nPATCHLEVEL = {}\nSUBLEVEL = 0\n",
            version.0, version.1
        ),
    )
    .unwrap();
}

fn build_fails(args: &[&str]) -> String {
    let mut v = vec!["kernel", "build"];
    v.extend_from_slice(args);
    let o = umldbg(&v);
    assert!(!o.status.success(), "{v:?} succeeded: {}", stdout(&o));
    // Progress lines (`[  3s] kernel: configure`) come before the error.
    let e: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| !l.starts_with('['))
        .map(str::to_string)
        .collect();
    assert_eq!(e.len(), 1, "{e:?}");
    e[0].clone()
}

#[test]
fn kernel_build_source_refuses_what_make_o_cannot_build() {
    let s = Scratch::new("bad");
    // Not a kernel tree.
    let e = build_fails(&["--source", s.0.to_str().unwrap()]);
    assert!(e.contains("is not a Linux kernel tree"), "{e}");
    // Too old.
    let old = s.0.join("old");
    fake_tree(&old, (6, 1));
    let e = build_fails(&["--source", old.to_str().unwrap()]);
    assert!(e.contains("6.1.0") && e.contains("6.13"), "{e}");
    // Built in place: make O= refuses it; say how to clean it.
    let inplace = s.0.join("inplace");
    fake_tree(&inplace, (7, 2));
    std::fs::write(inplace.join(".config"), "CONFIG_UML=y\n").unwrap();
    std::fs::create_dir_all(inplace.join("include/config")).unwrap();
    let e = build_fails(&["--source", inplace.to_str().unwrap()]);
    assert!(
        e.contains("was configured or built in place (.config, include/config)")
            && e.contains("mrproper")
            && e.contains("--config my.config"),
        "{e}"
    );
    // --config that is no file.
    let e = build_fails(&[
        "--source",
        inplace.to_str().unwrap(),
        "--config",
        "/nonexistent/my.config",
    ]);
    assert!(e.contains("/nonexistent/my.config"), "{e}");
}

/// A configuration that turns off what umldbg needs, in a way kconfig will not undo (MCONSOLE off
/// takes MAGIC_SYSRQ with it): the option is named. A hard-linked copy of the test tree gets a
/// build directory of its own, so the shared one is not touched; kconfig runs, make does not.
#[test]
fn kernel_build_source_names_required_options_a_configuration_turns_off() {
    kernel();
    let (tree, lock) = test_tree();
    let s = Scratch::new("cfg");
    let copy = s.0.join("tree");
    let o = Command::new("cp")
        .arg("-al")
        .arg(&tree)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(lock);
    let good = umldbg::kernel::tree::tree_dir(&cache(), &tree).join("build/.config");
    let text = std::fs::read_to_string(&good).expect("the test tree's build has a .config");
    let bad = s.0.join("bad.config");
    std::fs::write(
        &bad,
        text.replace("CONFIG_MCONSOLE=y", "# CONFIG_MCONSOLE is not set"),
    )
    .unwrap();
    let copy = std::fs::canonicalize(&copy).unwrap();
    let dir = umldbg::kernel::tree::tree_dir(&cache(), &copy);
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = RemoveDir(dir);
    let e = build_fails(&[
        "--source",
        copy.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(
        e.contains("turns off what umldbg needs: MAGIC_SYSRQ=n (umldbg needs y)")
            && e.contains("menuconfig"),
        "{e}"
    );
}
