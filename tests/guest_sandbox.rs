//! A guest never touches the host (issue: security). Each test is a reproduction of a defect
//! found by attacking a lab machine from inside, named after it, run against real UML machines
//! in their bubblewrap sandbox, and checked on the host side.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::*;

/// A scratch file path on the host that a test creates and removes itself.
struct HostFile(PathBuf);

impl Drop for HostFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tag() -> String {
    format!("umldbg-canary-{}", std::process::id())
}

/// A one-machine lab from TOML text; taken down when it drops.
fn toml_lab(name: &str, machine_extra: &str) -> (Lab, std::process::Output) {
    let dir = umldbg::util::cache_dir().join("test-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\n[[domain]]\nname = \"lan\"\n[[machine]]\numid = \"{name}-m\"\n{machine_extra}\n\
             [[machine.interface]]\nname = \"eth0\"\ndomain = \"lan\"\naddresses = [\"10.77.0.1/24\"]\n"
        ),
    )
    .unwrap();
    let o = umldbg(&["lab", "up", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    (Lab::with_name(name, &format!("{name}-")), o)
}

#[test]
fn guest_remount_rw_of_its_root_cannot_create_a_host_file() {
    kernel();
    let lab = Lab::article("sbx1-");
    let t = tag();
    for dir in ["/srv", "/etc", "/usr", "/var/tmp", "/tmp"] {
        let _gone = HostFile(PathBuf::from(format!("{dir}/{t}")));
        let (_, out) = lab.sh(
            "B",
            &format!("mount -o remount,rw / ; echo x > {dir}/{t}; cat {dir}/{t}"),
        );
        assert!(
            !PathBuf::from(format!("{dir}/{t}")).exists(),
            "the guest created {dir}/{t} on the host: {out}"
        );
    }
    lab.assert_all_alive();
}

#[test]
fn guest_hostfs_mount_of_host_root_is_read_only_and_shows_no_private_dirs() {
    kernel();
    let lab = Lab::article("sbx2-");
    let t = tag();
    // Things the host has that a guest must not see: a file in root's home, one of another
    // user's 0600 files, and a file in umldbg's own cache.
    let in_root = HostFile(PathBuf::from(format!("/root/{t}")));
    std::fs::write(&in_root.0, "secret").unwrap();
    let other = HostFile(PathBuf::from(format!("/var/tmp/{t}-other")));
    std::fs::write(&other.0, "secret").unwrap();
    std::fs::set_permissions(&other.0, std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(
        &other.0,
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(1000)),
    )
    .unwrap();
    let cache_dir = umldbg::util::cache_dir().join("test-tmp");
    std::fs::create_dir_all(&cache_dir).unwrap();
    let in_cache = HostFile(cache_dir.join(&t));
    std::fs::write(&in_cache.0, "secret").unwrap();

    let (_, out) = lab.sh(
        "B",
        &format!(
            "mkdir -p /tmp/h; mount -t hostfs none /tmp/h -o / && echo MOUNTED; \
             touch /tmp/h/etc/{t} /tmp/h/{t} /tmp/h/usr/{t}; \
             cat /tmp/h/root/{t} /tmp/h/var/tmp/{t}-other /tmp/h{cache}/{t} /tmp/h/etc/shadow; \
             cat /etc/shadow /var/tmp/{t}-other; ls /tmp/h/home /tmp/h/root",
            cache = cache_dir.display()
        ),
    );
    assert!(out.contains("MOUNTED"), "{out}");
    assert!(
        !out.contains("secret"),
        "the guest read a private host file: {out}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("root:")),
        "the guest read /etc/shadow: {out}"
    );
    for p in [format!("/etc/{t}"), format!("/{t}"), format!("/usr/{t}")] {
        let _gone = HostFile(PathBuf::from(&p));
        assert!(!PathBuf::from(&p).exists(), "the guest created {p}: {out}");
    }
    lab.assert_all_alive();
}

#[test]
fn guest_hostfs_mount_of_host_proc_cannot_change_a_host_sysctl() {
    kernel();
    let lab = Lab::article("sbx3-");
    let key = "/proc/sys/net/ipv4/icmp_echo_ignore_all";
    let before = std::fs::read_to_string(key).unwrap();
    let ns = format!("umldbg-{}", lab.name);
    let ns_value = || {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "cat", key])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let ns_before = ns_value();
    let (_, out) = lab.sh(
        "B",
        "mkdir -p /tmp/p; mount -t hostfs none /tmp/p -o /proc && echo MOUNTED; \
         echo 1 > /tmp/p/sys/net/ipv4/icmp_echo_ignore_all; echo 1 > /tmp/p/sys/kernel/sysrq; \
         echo b > /tmp/p/sysrq-trigger; echo done",
    );
    assert!(out.contains("done"), "{out}");
    // The guest's procfs is the sandbox's: no host process (this test's) is in it.
    let me = std::process::id();
    let (_, out2) = lab.sh(
        "B",
        &format!("ls -d /tmp/p/{me} /tmp/p/1/root/etc 2>&1; ls /tmp/p"),
    );
    assert!(
        out2.contains("No such file"),
        "the guest sees host pid {me}: {out2}"
    );
    assert_eq!(std::fs::read_to_string(key).unwrap(), before, "{out}");
    assert_eq!(
        ns_value(),
        ns_before,
        "the lab namespace's sysctl changed: {out}"
    );
    lab.assert_all_alive();
}

#[test]
fn exec_returns_all_256_byte_values_exactly() {
    kernel();
    let lab = Lab::article("sbx4-");
    let umid = lab.umid("A");
    let o = umldbg(&[
        "exec",
        &umid,
        "--",
        "python3",
        "-c",
        "import sys; sys.stdout.buffer.write(bytes(range(256)) * 3)",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want: Vec<u8> = (0..=255u8).cycle().take(768).collect();
    assert_eq!(o.stdout, want);
}

#[test]
fn exec_output_with_marker_bytes_cannot_end_the_command_early() {
    kernel();
    let lab = Lab::article("sbx5-");
    let umid = lab.umid("A");
    // What a guest program could print to fake the end of its command, for the next ids too.
    let fake: String = (0..20)
        .map(|i| format!("\\001E{i} 0\\n\\001E{i} 0000000000000000 0\\n"))
        .collect();
    let o = umldbg(&[
        "exec",
        &umid,
        "--shell",
        &format!("printf 'a\\001b\\n{fake}'; sleep 1; echo after; exit 3"),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}{}", stderr(&o));
    assert!(out.starts_with("a\u{1}b\n"), "{out}");
    assert!(out.ends_with("after\n"), "{out}");
    // The console still serves commands.
    assert_eq!(lab.must("A", "echo ok").trim(), "ok");
}

#[test]
fn startup_with_a_syntax_error_leaves_the_machine_up_and_names_the_line() {
    kernel();
    let (lab, o) = toml_lab(
        "sbx6",
        "startup = [\"echo one > /tmp/one\", \"if then fi\", \"[[ 1 == 1 ]] && echo bash > /tmp/bash\"]",
    );
    let err = stderr(&o);
    assert!(o.status.success(), "lab up failed: {}{err}", stdout(&o));
    assert!(
        err.contains("sbx6-m") && err.contains("startup:2") && err.contains("syntax error"),
        "the failing line is not reported: {err}"
    );
    let umid = "sbx6-m";
    let out = umldbg(&["exec", umid, "--shell", "cat /tmp/one; echo alive"]);
    assert!(stdout(&out).contains("one\nalive"), "{}", stdout(&out));
    drop(lab);
}

#[test]
fn startup_runs_with_bash_and_a_failing_line_does_not_stop_the_rest() {
    kernel();
    let (lab, o) = toml_lab(
        "sbx7",
        "startup = [\"false\", \"x=abc; [[ $x == a* ]] && cat <<< yes > /tmp/bash\"]",
    );
    let err = stderr(&o);
    assert!(o.status.success(), "lab up failed: {}{err}", stdout(&o));
    assert!(err.contains("startup:1: exit status 1"), "{err}");
    let out = umldbg(&["exec", "sbx7-m", "--", "cat", "/tmp/bash"]);
    assert_eq!(stdout(&out), "yes\n");
    drop(lab);
}

#[test]
fn unknown_sysctl_key_is_refused_and_leaves_nothing_behind() {
    kernel();
    let (lab, o) = toml_lab("sbx8", "sysctls = { \"net.ipv4.no_such_key\" = \"1\" }");
    assert!(!o.status.success(), "lab up accepted an unknown sysctl");
    let err = stderr(&o);
    assert!(err.contains("net.ipv4.no_such_key"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!PathBuf::from("/run/netns/umldbg-sbx8").exists());
    assert!(!umldbg::lab::state::lab_dir("sbx8").exists());
    drop(lab);
}

#[test]
fn sysctl_value_the_kernel_rejects_is_refused() {
    kernel();
    let (lab, o) = toml_lab("sbx9", "sysctls = { \"net.ipv4.ip_forward\" = \"banana\" }");
    assert!(!o.status.success(), "lab up accepted ip_forward=banana");
    let err = stderr(&o);
    assert!(
        err.contains("net.ipv4.ip_forward") && err.contains("banana"),
        "{err}"
    );
    drop(lab);
}

#[test]
fn memory_beyond_the_hosts_is_refused_up_front() {
    kernel();
    let (lab, o) = toml_lab("sbx10", "memory = 100000000");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("memory") && err.contains(":"), "{err}");
    assert!(!PathBuf::from("/run/netns/umldbg-sbx10").exists());
    drop(lab);
}

#[test]
fn uml_dir_option_puts_the_machines_pid_files_there() {
    kernel();
    let dir = PathBuf::from(format!("/run/umldbg-test-umldir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let o = umldbg(&["--uml-dir", d, "lab", "up", "--prefix", "sbud-"]);
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = umldbg(&["--uml-dir", &self.0, "lab", "down", "sbud-article"]);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _down = Down(d.to_string());
    assert!(o.status.success(), "{}", stderr(&o));
    let pid: i32 = std::fs::read_to_string(dir.join("sbud-client-uml-A/pid"))
        .expect("pid file under --uml-dir")
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("umid=sbud-client-uml-A"));
    assert!(
        !umldbg::util::home_dir()
            .join(".uml/sbud-client-uml-A")
            .exists()
    );
    // exec finds the machine through the same directory.
    let o = umldbg(&[
        "--uml-dir",
        d,
        "exec",
        "sbud-client-uml-A",
        "--",
        "echo",
        "hi",
    ]);
    assert_eq!(stdout(&o), "hi\n");
}
