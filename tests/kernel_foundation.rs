//! The cached kernel (issue: Foundation): it boots here from a read-only hostfs root, carries full
//! DWARF, ships ipt_REJECT as a module that describes struct sk_buff, and a rebuild is a cache hit.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn cached_kernel_boots_read_only_and_prints_uname() {
    let version = kernel()["version"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    let mut m = common::hand::HandMachine::boot(common::hand::Boot {
        tag: "boot",
        init: "echo \"UNAME=$(uname -r)\"\n\
               if echo x > {dir}/host-file-written-by-guest 2>/dev/null; then echo WRITE=ok; else echo WRITE=refused; fi\n\
               echo o > /proc/sysrq-trigger\nsleep 30",
        console_shell: false,
        ipt_reject: false,
    });
    let marker = m.dir.join("host-file-written-by-guest");
    let status = m.wait_exit(Duration::from_secs(20));
    let elapsed = t0.elapsed();
    let out = m.log().join("\n");
    eprintln!("booted and halted in {elapsed:?}, status {status}");
    assert!(
        out.contains(&format!("UNAME={version}")),
        "no uname -r {version} in: {out}"
    );
    assert!(
        out.contains("WRITE=refused"),
        "the guest could write to the host's /: {out}"
    );
    assert!(
        !marker.exists(),
        "the guest wrote {} on the host",
        marker.display()
    );
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    // Not under /tmp: that is where a guest sees its own tmpfs, which would hide the init script's
    // neighbours; the cache is on the host's disk and readable by the guest.
    let d = umldbg::util::cache_dir()
        .join("test-tmp")
        .join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn linux_has_full_dwarf() {
    use object::{Object, ObjectSection};
    let linux = kernel_path("linux");
    let bytes = std::fs::read(&linux).unwrap();
    let obj = object::File::parse(&*bytes).unwrap();
    let info = obj
        .section_by_name(".debug_info")
        .expect("linux has .debug_info");
    assert!(
        info.size() > 10_000_000,
        ".debug_info is only {} bytes: reduced DWARF?",
        info.size()
    );
}

/// The patches in scripts/kernel-patches are in the image: patch 0001 adds `mc_get_rip`, which
/// the stock kernel does not have.
#[test]
fn kernel_patches_are_applied() {
    use object::{Object, ObjectSymbol};
    let linux = kernel_path("linux");
    let bytes = std::fs::read(&linux).unwrap();
    let obj = object::File::parse(&*bytes).unwrap();
    let names: Vec<&str> = obj.symbols().filter_map(|s| s.name().ok()).collect();
    for sym in ["mc_get_rip", "mc_clear_trap_flag"] {
        assert!(
            names.contains(&sym),
            "{sym} is not in {}: patch 0001 was not applied",
            linux.display()
        );
    }
}

#[test]
fn ipt_reject_is_a_module_whose_dwarf_describes_sk_buff() {
    let mods = kernel_path("modules_dir");
    let builtin = std::fs::read_to_string(mods.join("modules.builtin")).unwrap_or_default();
    assert!(!builtin.contains("ipt_REJECT"), "ipt_REJECT is built in");
    let dep = std::fs::read_to_string(mods.join("modules.dep")).unwrap();
    let rel = dep
        .lines()
        .find_map(|l| {
            l.split(':')
                .next()
                .filter(|p| p.ends_with("/ipt_REJECT.ko"))
        })
        .expect("ipt_REJECT.ko in modules.dep");
    let ko = mods.join(rel);
    let o = Command::new("gdb")
        .args([
            "-batch",
            "-nx",
            "-ex",
            "ptype struct sk_buff",
            "-ex",
            "print sizeof(((struct sk_buff *)0)->network_header)",
        ])
        .arg(&ko)
        .output()
        .expect("run gdb");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("type = struct sk_buff {"),
        "gdb on {}: {text}",
        ko.display()
    );
    assert!(
        text.contains("$1 = 2"),
        "sk_buff without a 2-byte network_header: {text}"
    );
}

#[test]
fn rebuild_is_a_cache_hit() {
    let t0 = Instant::now();
    let out = ok(&["kernel", "build"]);
    eprintln!("second kernel build answered in {:?}: {out}", t0.elapsed());
    // "cached in 0.0s", or for a tree "cached (the tree has not changed since) in 0.0s".
    assert!(out.contains(" cached"), "not a cache hit: {out}");
    let listed = ok(&["kernel", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(v.as_array().unwrap().iter().any(|e| e["valid"] == true));
}

#[test]
fn kernel_source_that_is_not_a_tree_is_refused() {
    let dir = tempdir("notatree");
    let o = umldbg(&[
        "--cache",
        dir.to_str().unwrap(),
        "kernel",
        "build",
        "--source",
        dir.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("is not a Linux kernel tree"), "{err}");
    // Progress lines may come first; the error itself is one line with no further causes.
    let errors: Vec<&str> = err.lines().filter(|l| !l.starts_with('[')).collect();
    assert_eq!(errors.len(), 1, "one-line error expected: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kernel_older_than_6_13_is_refused() {
    let dir = tempdir("oldtree");
    std::fs::create_dir_all(dir.join("arch/um")).unwrap();
    std::fs::write(
        dir.join("Makefile"),
        "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 9\n",
    )
    .unwrap();
    let o = umldbg(&[
        "--cache",
        dir.join("cache").to_str().unwrap(),
        "kernel",
        "build",
        "--source",
        dir.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("6.12.9") && err.contains("AMX"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kernel prune` in a cache of its own whose manifests point at the real build: the older valid
/// build and a dead incomplete one go; the newest and a build whose log is fresh stay; the real
/// cache is not touched (prune removes build directories, never what a manifest points to).
#[test]
fn prune_removes_old_and_dead_builds_only() {
    let real = kernel();
    let cache = tempdir("prune");
    let kernels = cache.join("kernels");
    let mut m = real.clone();
    let built_at = real["built_at"].as_u64().unwrap();
    for (name, at) in [("uml-old", built_at - 1000), ("uml-new", built_at)] {
        std::fs::create_dir_all(kernels.join(name)).unwrap();
        m["built_at"] = at.into();
        std::fs::write(
            kernels.join(name).join("manifest.json"),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
    }
    for name in ["uml-dead", "uml-building"] {
        std::fs::create_dir_all(kernels.join(name)).unwrap();
        std::fs::write(kernels.join(name).join("build.log"), "make\n").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(kernels.join("uml-dead/build.log"))
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let c = cache.to_str().unwrap();

    let o = umldbg(&["--cache", c, "kernel", "prune", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("would rm") && out.contains("uml-old"), "{out}");
    assert!(kernels.join("uml-old").exists() && kernels.join("uml-dead").exists());

    let o = umldbg(&["--cache", c, "kernel", "prune"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for gone in ["uml-old", "uml-dead"] {
        assert!(!kernels.join(gone).exists(), "{gone} left:\n{out}");
    }
    for kept in ["uml-new", "uml-building"] {
        assert!(kernels.join(kept).exists(), "{kept} removed:\n{out}");
    }
    assert!(out.contains("the newest valid build"), "{out}");
    assert!(kernel_path("linux").is_file());
    let _ = std::fs::remove_dir_all(&cache);
}
