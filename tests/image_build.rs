//! Root filesystem images (issue 14, the building half): real mmdebstrap from the machine's own
//! mirror, real mke2fs, and our cached UML kernel booting an image through a copy-on-write file
//! with the boot stub. Builds with bad input run in scratch caches of their own; the frr image is
//! built into (or found in) the real cache, as `umldbg image build kathara/frr` would.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A scratch directory removed on drop (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        // Under the cache, not /tmp: a guest sees its own tmpfs at /tmp.
        let d = umldbg::util::cache_dir()
            .join("test-tmp")
            .join(format!("image-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A recipe with nothing but umldbg's own layer: the quickest real build.
const SMALL: &str = "name = \"test/small\"\ndescription = \"the layer alone\"\n";

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The frr image from the real cache (built on first use).
fn frr_image() -> serde_json::Value {
    let t0 = Instant::now();
    let v = json(&ok(&["--json", "image", "build", "kathara/frr"]));
    eprintln!(
        "kathara/frr: {} in {:?}",
        if v["cached"] == true {
            "cached"
        } else {
            "built"
        },
        t0.elapsed()
    );
    v["manifest"].clone()
}

/// One UML machine booted from an image for the life of the value; killed (its whole process
/// group) on drop.
struct Booted {
    pid: i32,
    umid: String,
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::SIGKILL,
        );
        let _ = std::fs::remove_dir_all(umldbg::util::home_dir().join(".uml").join(&self.umid));
    }
}

/// Boot `image` through `cow` with the boot stub running `dir/init.sh` (which powers off at its
/// end); returns what the console printed.
fn boot(image: &Path, cow: &Path, dir: &Path, init: &str, tag: &str) -> String {
    let script = dir.join("init.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             mount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t tmpfs tmpfs /run\n\
             {init}\nsync\necho o > /proc/sysrq-trigger\nsleep 30\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let umid = format!("t-img-{tag}-{}", std::process::id());
    let args = umldbg::image::kernel_args(image, cow, &[dir], &script, false).unwrap();
    let mut child = Command::new(kernel_path("linux"))
        .args(["mem=256M", &format!("umid={umid}")])
        .args(&args)
        .args(["con0=fd:0,fd:1", "con=null", "loglevel=2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start linux");
    let booted = Booted {
        pid: child.id() as i32,
        umid,
    };
    let mut so = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = so.read_to_string(&mut out);
        out
    });
    let t0 = Instant::now();
    wait_for("the machine to power off", Duration::from_secs(90), || {
        child.try_wait().unwrap()
    });
    eprintln!(
        "{tag}: booted, ran its init and powered off in {:?}",
        t0.elapsed()
    );
    drop(booted);
    reader.join().unwrap()
}

#[test]
fn frr_image_builds_once_and_is_found_again_in_well_under_100_ms() {
    let m = frr_image();
    let image = PathBuf::from(m["image"].as_str().unwrap());
    assert!(image.is_file(), "{m}");
    assert_eq!(m["boot_stub"], "/usr/local/sbin/umldbg-boot");
    assert_eq!(m["suite"], "bookworm");
    let pkgs: Vec<&str> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in ["frr", "bash", "coreutils", "kmod", "iproute2", "tcpdump"] {
        assert!(pkgs.contains(&p), "{p} missing from {pkgs:?}");
    }
    assert_eq!(
        image.parent().unwrap().file_name().unwrap(),
        m["hash"].as_str().unwrap(),
        "the image lives under its hash"
    );

    let again = json(&ok(&["--json", "image", "build", "kathara/frr"]));
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["manifest"], m);

    // The lookup `lab up` makes: by name, by Kathara's quagga name with a tag.
    let mut best = Duration::MAX;
    for name in ["kathara/frr", "kathara/quagga:latest", "kathara/frr"] {
        let t0 = Instant::now();
        let out = ok(&["image", "path", name]);
        best = best.min(t0.elapsed());
        assert_eq!(out.trim(), image.to_str().unwrap(), "{name}");
    }
    eprintln!("image path answered in {best:?} (best of 3, process start included)");
    assert!(
        best < Duration::from_millis(100),
        "image path took {best:?}"
    );
    let listed = ok(&["image", "list"]);
    assert!(
        listed.contains("kathara/frr") && listed.contains("built"),
        "{listed}"
    );
}

#[test]
fn frr_image_boots_through_a_cow_runs_the_host_init_and_stays_unchanged() {
    let m = frr_image();
    let image = PathBuf::from(m["image"].as_str().unwrap());
    let before = (
        sha256(&image),
        std::fs::metadata(&image).unwrap().modified().unwrap(),
    );
    let dir = Scratch::new("boot");
    let cow = dir.path().join("machine.cow");
    let out = boot(
        &image,
        &cow,
        dir.path(),
        r#"echo "INIT-RAN $0"
grep -q ' hostfs ro' /proc/mounts && echo HOSTDIR=ro
[ -d /lib/modules ] && [ -z "$(ls -A /lib/modules)" ] && echo MODULES-DIR=empty
test -x /usr/lib/frr/zebra && echo ZEBRA=present
for t in bash base64 timeout setsid stty modprobe ip; do command -v $t >/dev/null || echo MISSING=$t; done
echo written-in-the-guest > /root/guest-file && echo WROTE=yes
mkdir -p /etc/quagga
printf 'zebra=yes\nbgpd=yes\n' > /etc/quagga/daemons
printf 'hostname r1\npassword zebra\n' > /etc/quagga/zebra.conf
printf 'hostname r1\npassword zebra\nrouter bgp 65001\n network 10.1.0.0/16\n neighbor 10.0.0.2 remote-as 65002\nlog file /var/log/quagga/bgpd.log\n' > /etc/quagga/bgpd.conf
ip link set lo up
systemctl start quagga >/dev/null 2>&1; echo "QUAGGA-START=$?"
vtysh -c 'show running-config' | sed 's/^/RUNNING: /'
systemctl status frr >/dev/null 2>&1; echo "FRR-STATUS=$?"
service frr stop >/dev/null 2>&1; echo "FRR-STOP=$?"
systemctl start no-such-daemon 2>&1; echo "UNKNOWN-UNIT=$?""#,
        "boot",
    );
    for want in [
        "INIT-RAN ",
        "HOSTDIR=ro",
        "MODULES-DIR=empty",
        "ZEBRA=present",
        "WROTE=yes",
        "QUAGGA-START=0",
        "RUNNING: router bgp 65001",
        "RUNNING:  neighbor 10.0.0.2 remote-as 65002",
        "RUNNING:  no bgp ebgp-requires-policy",
        "RUNNING:   network 10.1.0.0/16",
        "FRR-STATUS=0",
        "FRR-STOP=0",
        "no init script for unit no-such-daemon",
        "UNKNOWN-UNIT=5",
    ] {
        assert!(
            out.contains(want),
            "no `{want}` in the console output:\n{out}"
        );
    }
    assert!(!out.contains("MISSING="), "{out}");

    // The guest's writes went into its COW file; the image is as the build left it.
    let after = (
        sha256(&image),
        std::fs::metadata(&image).unwrap().modified().unwrap(),
    );
    assert_eq!(before, after, "the image changed");
    let cow_disk = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&cow).unwrap()) * 512;
    eprintln!("COW file after boot: {} KB on disk", cow_disk / 1024);
    assert!(cow_disk > 0);
    ok(&["image", "path", "kathara/frr"]);

    // Booted again from the same COW: the file the guest wrote is there.
    let out = boot(&image, &cow, dir.path(), "cat /root/guest-file", "reboot");
    assert!(out.contains("written-in-the-guest"), "{out}");
    assert_eq!(sha256(&image), before.0);
}

#[test]
fn two_builds_at_once_make_one_image_and_a_changed_image_is_rebuilt() {
    let cache = Scratch::new("twice");
    let recipe = cache.path().join("small.toml");
    std::fs::write(&recipe, SMALL).unwrap();
    let r = recipe.to_str().unwrap();
    let spawn = || {
        Command::new(bin())
            .args(["--cache", cache.s(), "--json", "image", "build", r])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    }
    let (va, vb) = (json(&stdout(&a)), json(&stdout(&b)));
    let built = [&va, &vb].iter().filter(|v| v["cached"] == false).count();
    assert_eq!(built, 1, "exactly one build: {va} {vb}");
    assert_eq!(va["manifest"], vb["manifest"]);
    let waited = stderr(&a) + &stderr(&b);
    assert!(waited.contains("waiting for it"), "{waited}");
    let m = &va["manifest"];
    eprintln!(
        "small image: {:.1} s, {} MB on disk",
        va["seconds"]
            .as_f64()
            .unwrap()
            .max(vb["seconds"].as_f64().unwrap()),
        m["disk_bytes"].as_u64().unwrap() / 1_000_000
    );
    let image = PathBuf::from(m["image"].as_str().unwrap());
    let dir = image.parent().unwrap();
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == "root" || n.ends_with(".tmp")),
        "left over: {names:?}"
    );

    // The image changed behind the cache's back: no longer valid, rebuilt on request.
    std::fs::File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let o = umldbg(&["--cache", cache.s(), "image", "path", r]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("changed after the build") && stderr(&o).contains("image build"),
        "{}",
        stderr(&o)
    );
    let pruned = ok(&["--cache", cache.s(), "image", "prune", "--dry-run"]);
    assert!(pruned.contains("would rm"), "{pruned}");
    let v = json(&ok(&["--cache", cache.s(), "--json", "image", "build", r]));
    assert_eq!(v["cached"], false, "{v}");
    ok(&["--cache", cache.s(), "image", "path", r]);
    // A current image of a recipe file that still exists stays through prune.
    let pruned = ok(&["--cache", cache.s(), "image", "prune"]);
    assert!(pruned.contains("keep"), "{pruned}");
    ok(&["--cache", cache.s(), "image", "path", r]);
}

#[test]
fn an_unknown_package_is_named_and_leaves_no_image() {
    let cache = Scratch::new("nopkg");
    let recipe = cache.path().join("bad.toml");
    std::fs::write(
        &recipe,
        "name = \"test/bad\"\npackages = [\"umldbg-no-such-package\"]\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let o = umldbg(&[
        "--cache",
        cache.s(),
        "image",
        "build",
        recipe.to_str().unwrap(),
    ]);
    eprintln!("unknown package refused in {:?}", t0.elapsed());
    assert!(!o.status.success());
    let err = stderr(&o);
    let last = err
        .lines()
        .filter(|l| l.starts_with("umldbg:"))
        .collect::<Vec<_>>();
    assert_eq!(last.len(), 1, "{err}");
    assert!(
        last[0].contains("`umldbg-no-such-package`") && last[0].contains("apt-cache search"),
        "{err}"
    );
    let images = cache.path().join("images");
    for e in std::fs::read_dir(&images).unwrap() {
        let p = e.unwrap().path();
        assert!(!p.is_dir(), "a build directory was left: {}", p.display());
    }
}

#[test]
fn an_unreachable_mirror_is_named() {
    let cache = Scratch::new("mirror");
    let recipe = cache.path().join("small.toml");
    std::fs::write(&recipe, SMALL).unwrap();
    // A closed port on loopback: refused at once, no traffic leaves the machine.
    let mirror = "http://127.0.0.1:9/debian";
    let o = umldbg(&[
        "--cache",
        cache.s(),
        "image",
        "build",
        recipe.to_str().unwrap(),
        "--mirror",
        mirror,
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(mirror) && err.contains("--mirror") && err.contains("refused"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_recipe_syntax_error_names_file_line_and_column() {
    let dir = Scratch::new("syntax");
    let recipe = dir.path().join("broken.toml");
    std::fs::write(&recipe, "name = \"x\"\npackages = [\"frr\",\n   frr2]\n").unwrap();
    let o = umldbg(&[
        "--cache",
        dir.s(),
        "image",
        "build",
        recipe.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&format!("{}:3:4", recipe.display())), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_unknown_image_name_lists_the_known_ones() {
    let o = umldbg(&["image", "path", "lscr.io/linuxserver/wireshark"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("lscr.io/linuxserver/wireshark")
            && err.contains("kathara/frr")
            && err.contains("kathara/base"),
        "{err}"
    );
    let o = umldbg(&["image", "build", "kathara/nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("known:"), "{}", stderr(&o));
}

/// A disk that fills up during a build (a recipe command writes more than the file system holds)
/// leaves neither an image nor a manifest, and says so.
#[test]
fn a_full_disk_during_a_build_leaves_no_half_image() {
    let dir = Scratch::new("full");
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1600m", "tmpfs"])
        .arg(&cache)
        .status()
        .unwrap();
    assert!(mount.success(), "mount a tmpfs for the scratch cache");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(cache.clone());
    let recipe = dir.path().join("fill.toml");
    std::fs::write(
        &recipe,
        format!("{SMALL}commands = [\"dd if=/dev/zero of=/fill bs=1M count=2000\"]\n"),
    )
    .unwrap();
    let o = umldbg(&[
        "--cache",
        cache.to_str().unwrap(),
        "image",
        "build",
        recipe.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("no space left") && err.contains("nothing of the image was kept"),
        "{err}"
    );
    let images = cache.join("images");
    let left: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter()
            .all(|n| n.ends_with(".lock") || n.ends_with(".failed.log")),
        "left behind: {left:?}"
    );
    let o = umldbg(&[
        "--cache",
        cache.to_str().unwrap(),
        "image",
        "path",
        recipe.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
}

/// Ctrl-C in the middle of mmdebstrap: the directory left behind is not an image (`image path`
/// says the build is incomplete), and `image prune` removes it.
#[test]
fn an_interrupted_build_never_looks_valid_and_prune_removes_it() {
    let cache = Scratch::new("interrupt");
    let recipe = cache.path().join("small.toml");
    std::fs::write(&recipe, SMALL).unwrap();
    let r = recipe.to_str().unwrap();
    let mut child = Command::new(bin())
        .args(["--cache", cache.s(), "image", "build", r])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    struct KillGroup(nix::unistd::Pid);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(self.0, nix::sys::signal::SIGKILL);
        }
    }
    let _group = KillGroup(pgid);
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(
            n > 0,
            "the build ended before mmdebstrap downloaded: {seen}"
        );
        seen.push_str(&line);
        if line.contains("downloading packages") {
            break;
        }
    }
    // What a terminal's Ctrl-C does: SIGINT to the whole foreground group.
    nix::sys::signal::killpg(pgid, nix::sys::signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    wait_for(
        "every process of the build to end",
        Duration::from_secs(60),
        || nix::sys::signal::killpg(pgid, None).is_err().then_some(()),
    );
    let o = umldbg(&["--cache", cache.s(), "image", "path", r]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("incomplete build"), "{}", stderr(&o));
    let out = ok(&["--cache", cache.s(), "image", "prune"]);
    assert!(
        out.contains("removed") && out.contains("incomplete"),
        "{out}"
    );
    let left = std::fs::read_dir(cache.path().join("images"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(left, 0, "{out}");
}
