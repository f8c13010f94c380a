//! Kathará/Netkit lab directories: conversion with Kathará's device semantics (sysctls, MACs,
//! [ipv6], [env], [exec], lab.dep, machine and shared folders, startup and shutdown scripts),
//! warnings for what is ignored, and errors that name file:line:col.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use umldbg::lab::kathara::{self, LabFiles, kathara_sysctls};
use umldbg::lab::spec::{IfAddr, LabSpec, MacAddr, MachineSpec, Problem, SpecError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lab")
        .join(name)
}

fn a(s: &str) -> IfAddr {
    s.parse().unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// Checks the error is one line and points at `file:line` (and `:col` when given).
fn fails_at(dir: &Path, file: &str, line: usize, col: Option<usize>) -> SpecError {
    let e = kathara::load_dir(dir).expect_err("the lab should be refused");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    let loc = e.location().unwrap_or_else(|| panic!("no location: {msg}"));
    assert_eq!(
        (loc.file.as_path(), loc.line),
        (dir.join(file).as_path(), line),
        "{msg}"
    );
    let mut at = format!("{}:{line}:", dir.join(file).display());
    if let Some(c) = col {
        assert_eq!(loc.column, Some(c), "{msg}");
        at = format!("{at}{c}: ");
    }
    assert!(msg.starts_with(&at), "{msg} does not start with {at}");
    e
}

fn sysctl<'a>(m: &'a MachineSpec, key: &str) -> Option<&'a str> {
    m.sysctls
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn two_machines_on_one_domain() {
    let dir = fixture("kathara-two");
    let root = dir.canonicalize().unwrap();
    let lab = kathara::load_dir(&dir).unwrap();
    assert!(lab.warnings.is_empty(), "{:?}", lab.warnings);
    let spec = &lab.spec;
    assert_eq!(spec.name, "kathara-two");
    assert_eq!(spec.domains.len(), 1);
    assert_eq!(spec.domains[0].name, "A");
    assert_eq!(spec.domains[0].host_address, None);
    assert_eq!(spec.shared_folder, Some(root.join("shared")));
    for (umid, addr) in [("pc1", "10.0.0.1/24"), ("pc2", "10.0.0.2/24")] {
        let m = spec.machine(umid).unwrap();
        assert_eq!(m.hostname, umid);
        assert_eq!(m.mem_mb, 64);
        assert_eq!(m.interfaces.len(), 1);
        assert_eq!(m.interfaces[0].name, "eth0");
        assert_eq!(m.interfaces[0].domain, "A");
        assert_eq!(m.interfaces[0].mac, None);
        assert_eq!(m.interfaces[0].addresses, [a(addr)]);
        assert!(m.addresses_from_startups);
        // The startup runs as a whole file, not as lines of its own.
        assert!(m.startup.is_empty(), "{:?}", m.startup);
        assert_eq!(m.startup_files, [root.join(format!("{umid}.startup"))]);
        assert!(m.shutdown_files.is_empty());
        assert_eq!(m.folder, None);
        assert_eq!(m.sysctls, kathara_sysctls(false, &["eth0"]));
    }
    assert_eq!(
        lab.meta["LAB_DESCRIPTION"],
        "Two machines on one collision domain"
    );
    assert_eq!(lab.meta["LAB_VERSION"], "1.0");
    // LabSpec::load takes the directory or its lab.conf.
    assert_eq!(&LabSpec::load(&dir).unwrap(), spec);
    assert_eq!(&LabSpec::load(&dir.join("lab.conf")).unwrap(), spec);
}

#[test]
fn every_lab_conf_form() {
    let dir = fixture("kathara-full");
    let root = dir.canonicalize().unwrap();
    let lab = kathara::load_dir(&dir).unwrap();
    let spec = &lab.spec;
    assert_eq!(spec.name, "Full-Lab-1", "LAB_NAME sanitised");
    let umids: Vec<&str> = spec.machines.iter().map(|m| m.umid.as_str()).collect();
    assert_eq!(umids, ["pc1", "r1", "pc2", "spare"]);
    let doms: Vec<&str> = spec.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(doms, ["lan1", "lan2"]);

    let pc1 = spec.machine("pc1").unwrap();
    assert_eq!(pc1.mem_mb, 128);
    assert_eq!(pc1.image.as_deref(), Some("kathara/base"));
    assert_eq!(pc1.interfaces[0].addresses, [a("10.1.0.2/24")]);
    assert_eq!(
        pc1.startup_files,
        [root.join("shared.startup"), root.join("pc1.startup")]
    );
    assert_eq!(pc1.shutdown_files, [root.join("pc1.shutdown")]);
    assert_eq!(pc1.folder, Some(root.join("pc1")));

    let r1 = spec.machine("r1").unwrap();
    assert_eq!(r1.mem_mb, 256);
    // The lab's own [sysctl] comes after Kathará's defaults, replacing the same key.
    assert_eq!(
        r1.sysctls.last().unwrap(),
        &("net.ipv4.ip_forward".to_owned(), "1".to_owned())
    );
    assert_eq!(
        r1.sysctls
            .iter()
            .filter(|(k, _)| k == "net.ipv4.ip_forward")
            .count(),
        1
    );
    assert_eq!(r1.interfaces.len(), 2);
    assert_eq!(
        (
            r1.interfaces[1].name.as_str(),
            r1.interfaces[1].domain.as_str()
        ),
        ("eth1", "lan2")
    );
    assert_eq!(r1.interfaces[1].mac, Some(mac("02:42:ac:11:00:02")));
    assert_eq!(r1.interfaces[0].addresses, [a("10.1.0.1/24")]);
    assert_eq!(
        r1.interfaces[1].addresses,
        [a("10.2.0.1/24")],
        "continued line read"
    );

    let pc2 = spec.machine("pc2").unwrap();
    assert_eq!(pc2.interfaces[0].addresses, [a("10.2.0.2/24")]);
    let spare = spec.machine("spare").unwrap();
    assert!(spare.interfaces.is_empty());
    assert_eq!(spare.startup_files, [root.join("shared.startup")]);

    let warnings: Vec<String> = lab.warnings.iter().map(ToString::to_string).collect();
    let expect = [
        ("lab.conf:17:1:", "r1[bridged] ignored"),
        ("pc2.startup:2:", "eth3"),
        ("ghost.startup:1:", "no machine `ghost`"),
    ];
    for (at, says) in expect {
        assert!(
            warnings.iter().any(|w| w.contains(at) && w.contains(says)),
            "no warning at {at} about {says}: {warnings:#?}"
        );
    }
    assert_eq!(warnings.len(), expect.len(), "{warnings:#?}");
}

/// The lab that shows Kathará's device semantics, field by field.
#[test]
fn kathara_semantics_in_the_spec() {
    let dir = fixture("kathara-semantics");
    let root = dir.canonicalize().unwrap();
    let lab = kathara::load_dir(&dir).unwrap();
    let spec = &lab.spec;
    assert_eq!(spec.shared_folder, Some(root.join("shared")));

    // lab.dep orders the boot: r1 first, then ws_random, then pc1 (lab.conf order otherwise).
    let umids: Vec<&str> = spec.machines.iter().map(|m| m.umid.as_str()).collect();
    assert_eq!(umids, ["r1", "ws_random", "pc1"]);
    let pc1 = spec.machine("pc1").unwrap();
    assert_eq!(pc1.depends_on, ["r1", "ws_random"]);
    assert_eq!(spec.machine("ws_random").unwrap().depends_on, ["r1"]);
    assert!(spec.machine("r1").unwrap().depends_on.is_empty());

    // MACs from `m[N]=A/MAC`, written back in lower case.
    assert_eq!(pc1.interfaces[0].mac, Some(mac("02:00:00:00:00:01")));
    let r1 = spec.machine("r1").unwrap();
    assert_eq!(r1.interfaces[0].mac, Some(mac("02:00:00:00:00:fe")));
    assert_eq!(
        r1.interfaces[0].mac.unwrap().to_string(),
        "02:00:00:00:00:fe"
    );
    assert_eq!(r1.interfaces[1].mac, None);

    // Kathará's sysctls on every machine; IPv6 on and forwarding only with [ipv6].
    assert_eq!(sysctl(pc1, "net.ipv4.ip_forward"), Some("1"));
    assert_eq!(sysctl(pc1, "net.ipv4.conf.all.rp_filter"), Some("0"));
    assert_eq!(sysctl(pc1, "net.ipv4.conf.default.rp_filter"), Some("0"));
    assert_eq!(sysctl(pc1, "net.ipv4.conf.eth0.rp_filter"), Some("0"));
    assert_eq!(sysctl(pc1, "net.ipv4.icmp_ratelimit"), Some("0"));
    assert_eq!(sysctl(pc1, "net.ipv6.conf.all.disable_ipv6"), Some("1"));
    assert_eq!(sysctl(pc1, "net.ipv6.conf.all.forwarding"), Some("0"));
    assert_eq!(
        pc1.sysctls.last().unwrap(),
        &("net.ipv4.conf.all.arp_ignore".to_owned(), "1".to_owned()),
        "the lab's [sysctl] after the defaults"
    );
    assert_eq!(sysctl(r1, "net.ipv6.conf.all.forwarding"), Some("1"));
    assert_eq!(sysctl(r1, "net.ipv6.conf.all.disable_ipv6"), Some("0"));
    assert_eq!(sysctl(r1, "net.ipv6.conf.all.accept_ra"), Some("0"));
    assert_eq!(sysctl(r1, "net.ipv6.icmp.ratelimit"), Some("0"));
    assert_eq!(sysctl(r1, "net.ipv6.conf.eth1.forwarding"), Some("1"));
    // r1 turns forwarding off itself: its line wins over the default, written last.
    assert_eq!(sysctl(r1, "net.ipv4.ip_forward"), Some("0"));
    assert_eq!(r1.sysctls.last().unwrap().0, "net.ipv4.ip_forward");
    assert_eq!(
        r1.interfaces[1].addresses,
        [a("10.0.1.254/24"), a("2001:db8:1::1/64")]
    );

    // [env] in order, values as given (spaces kept); [exec] runs after the startup files.
    assert_eq!(
        pc1.env,
        [
            ("ROLE".to_owned(), "client".to_owned()),
            ("GREETING".to_owned(), "hello world".to_owned())
        ]
    );
    assert_eq!(pc1.startup, ["echo exec-ran > /tmp/exec-ran"]);

    // Hostnames as given, underscore included; [mem]; [image] kept.
    let ws = spec.machine("ws_random").unwrap();
    assert_eq!(ws.hostname, "ws_random");
    assert_eq!(ws.mem_mb, 96);
    assert_eq!(ws.image.as_deref(), Some("kathara/frr"));
    assert_eq!(ws.folder, Some(root.join("ws_random")));

    // Scripts as whole files: shared.startup first; the machine's .shutdown before
    // shared.shutdown (Kathará's order).
    assert_eq!(
        pc1.startup_files,
        [root.join("shared.startup"), root.join("pc1.startup")]
    );
    assert_eq!(
        pc1.shutdown_files,
        [root.join("pc1.shutdown"), root.join("shared.shutdown")]
    );
    assert_eq!(r1.shutdown_files, [root.join("shared.shutdown")]);
    assert_eq!(pc1.folder, Some(root.join("pc1")));
    assert_eq!(r1.folder, None);

    // Warnings: each ignored option at its line, one for the image shared by two machines.
    let warnings: Vec<String> = lab.warnings.iter().map(ToString::to_string).collect();
    let conf = dir.join("lab.conf").display().to_string();
    let expect = [
        ("lab.conf:8:1:", "pc1[num_terms] ignored"),
        ("lab.conf:15:1:", "r1[port] ignored"),
        (
            "lab.conf:20:1:",
            "ws_random[cpus] ignored: a UML machine has one CPU",
        ),
        ("lab.conf:21:1:", "`colour` is not a Kathará option"),
    ];
    for (at, says) in expect {
        assert!(
            warnings.iter().any(
                |w| w.starts_with(&format!("{}{}", &conf[..conf.len() - 8], at))
                    && w.contains(says)
            ),
            "no warning at {at} about {says}: {warnings:#?}"
        );
    }
    assert_eq!(warnings.len(), expect.len(), "{warnings:#?}");
}

#[test]
fn spec_survives_a_json_round_trip_and_a_prefix() {
    let spec = kathara::load_dir(&fixture("kathara-semantics"))
        .unwrap()
        .spec;
    let json = serde_json::to_string(&spec).unwrap();
    assert!(json.contains("\"mac\":\"02:00:00:00:00:01\""), "{json}");
    let back: LabSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    // A saved spec from before these fields still reads, with them empty.
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("shared_folder");
    for m in old["machines"].as_array_mut().unwrap() {
        let m = m.as_object_mut().unwrap();
        for k in [
            "env",
            "image",
            "startup_files",
            "shutdown_files",
            "folder",
            "depends_on",
            "addresses_from_startups",
        ] {
            m.remove(k);
        }
        for i in m["interfaces"].as_array_mut().unwrap() {
            i.as_object_mut().unwrap().remove("mac");
        }
    }
    let old: LabSpec = serde_json::from_value(old).unwrap();
    assert!(old.machines.iter().all(|m| m.depends_on.is_empty()));

    // Prefixed copies keep their dependencies pointing at their own machines.
    let p = spec.with_prefix("t1-");
    p.validate().unwrap();
    assert_eq!(
        p.machine("t1-pc1").unwrap().depends_on,
        ["t1-r1", "t1-ws_random"]
    );
    assert_eq!(p.machine("t1-ws_random").unwrap().hostname, "ws_random");
}

#[test]
fn lab_ext_is_refused() {
    let dir = fixture("kathara-ext");
    let e = fails_at(&dir, "lab.ext", 3, Some(1));
    assert!(matches!(e, SpecError::Unsupported { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("`A eth0.10`"), "{msg}");
    assert!(
        msg.contains("never leaves the lab's network namespace"),
        "{msg}"
    );
    // An empty lab.ext is ignored, with a warning.
    let files = LabFiles {
        lab_conf: "pc1[0]=A\n".into(),
        lab_ext: Some("# nothing\n".into()),
        ..LabFiles::default()
    };
    let lab = kathara::parse(Path::new("/labs/x"), &files).unwrap();
    assert_eq!(lab.warnings.len(), 1);
    assert!(
        lab.warnings[0]
            .to_string()
            .starts_with("/labs/x/lab.ext:1: lab.ext is empty")
    );
}

#[test]
fn mac_that_is_not_a_mac() {
    let dir = fixture("kathara-bad-mac");
    let e = fails_at(&dir, "lab.conf", 2, Some(11));
    assert!(matches!(e, SpecError::Syntax { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("pc2[0]: `02:00:00:00:00` is not a MAC address"),
        "{e}"
    );
}

#[test]
fn mac_errors_point_at_the_mac() {
    for (conf, line, col, says) in [
        (
            "pc1[0]=A/zz:00:00:00:00:01\n",
            1,
            10,
            "is not a MAC address",
        ),
        ("pc1[0]=A/\n", 1, 10, "is not a MAC address"),
        (
            "pc1[0]=A/02:00:00:00:00:01/x\n",
            1,
            10,
            "is not a MAC address",
        ),
        (
            "pc1[0]=A/02-00-00-00-00-01\n",
            1,
            10,
            "is not a MAC address",
        ),
        // Multicast and all-zero addresses cannot be an interface's own.
        (
            "pc1[0]=A\npc1[1]=\"B/01:00:5e:00:00:01\"\n",
            2,
            11,
            "multicast or all-zero",
        ),
        (
            "pc1[0]=A/00:00:00:00:00:00\n",
            1,
            10,
            "multicast or all-zero",
        ),
        // Two interfaces with one MAC on one domain.
        (
            "pc1[0]=A/02:00:00:00:00:01\npc2[0]=A/02:00:00:00:00:01\n",
            2,
            10,
            "is held by both machine `pc1` eth0 and machine `pc2` eth0",
        ),
    ] {
        let e = parse_conf(conf).expect_err(conf);
        let at = format!("/labs/x/lab.conf:{line}:{col}: ");
        assert!(e.to_string().starts_with(&at), "{conf:?}: {e}");
        assert!(e.to_string().contains(says), "{conf:?}: {e}");
    }
    // The same MAC on two domains is fine (as on real networks).
    parse_conf("pc1[0]=A/02:00:00:00:00:01\npc2[0]=B/02:00:00:00:00:01\n").unwrap();
}

#[test]
fn symlink_out_of_the_lab_is_refused() {
    let dir = fixture("kathara-symlink");
    let e = kathara::load_dir(&dir).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SpecError::BadEntry { .. }), "{msg}");
    let link = dir.join("pc1/etc/escape");
    assert!(
        msg.starts_with(&format!(
            "{}: symbolic link to ../../../kathara-two/lab.conf leads out of the lab",
            link.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("machine `pc1`"), "{msg}");
    assert!(!msg.contains('\n'));
}

#[test]
fn symlinks_inside_the_lab_are_fine_and_absolute_ones_outside_are_not() {
    // Links within the lab (to the machine's own file, to shared/) pass: the semantics lab has both.
    kathara::load_dir(&fixture("kathara-semantics")).unwrap();

    let dir = std::env::temp_dir().join(format!("umldbg-labspec-links-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pc1/etc")).unwrap();
    std::fs::write(dir.join("lab.conf"), "pc1[0]=A\n").unwrap();
    let cleanup = Cleanup(dir.clone());
    // An absolute link to a host file, a dangling one climbing out, a linked machine folder.
    std::os::unix::fs::symlink("/etc/hostname", dir.join("pc1/etc/hostname")).unwrap();
    let e = kathara::load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("pc1/etc/hostname: symbolic link to /etc/hostname leads out"),
        "{e}"
    );
    std::fs::remove_file(dir.join("pc1/etc/hostname")).unwrap();

    std::os::unix::fs::symlink("../../../../nowhere", dir.join("pc1/etc/gone")).unwrap();
    let e = kathara::load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("pc1/etc/gone: symbolic link to ../../../../nowhere leads out"),
        "{e}"
    );
    std::fs::remove_file(dir.join("pc1/etc/gone")).unwrap();

    // A dangling link that stays inside is accepted.
    std::os::unix::fs::symlink("../later", dir.join("pc1/etc/later")).unwrap();
    kathara::load_dir(&dir).unwrap();

    std::fs::remove_dir_all(dir.join("pc1")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("pc1")).unwrap();
    let e = kathara::load_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("/pc1: symbolic link to /etc leads out"), "{e}");
    std::fs::remove_file(dir.join("pc1")).unwrap();

    // Kathará refuses a linked shared/ folder; so does umldbg.
    std::fs::create_dir_all(dir.join("real-shared")).unwrap();
    std::os::unix::fs::symlink("real-shared", dir.join("shared")).unwrap();
    let e = kathara::load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("/shared: the lab's shared folder is a symbolic link"),
        "{e}"
    );
    drop(cleanup);
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn dependency_cycle_names_the_cycle_and_its_line() {
    let dir = fixture("kathara-dep-cycle");
    let e = fails_at(&dir, "lab.dep", 5, Some(4));
    assert!(
        matches!(e.problem(), Some(Problem::DependencyCycle { cycle }) if cycle == "a -> b -> c -> a"),
        "{e}"
    );
}

#[test]
fn lab_dep_errors() {
    let with_dep = |dep: &str| {
        let files = LabFiles {
            lab_conf: "pc1[0]=A\npc2[0]=A\n".into(),
            lab_dep: Some(dep.into()),
            ..LabFiles::default()
        };
        kathara::parse(Path::new("/labs/x"), &files)
    };
    for (dep, line, col, says) in [
        (
            "pc1: ghost\n",
            1,
            6,
            "depends on `ghost`, which is not a machine of the lab (machines: pc1, pc2)",
        ),
        (
            "\nghost: pc1\n",
            2,
            1,
            "`ghost` is not a machine of lab.conf",
        ),
        (
            "pc1 pc2\n",
            1,
            1,
            "expected `machine: machine1 machine2 ...`",
        ),
        ("pc1:\n", 1, 1, "expected `machine: machine1"),
        (
            "pc1: pc2\npc1: pc2\n",
            2,
            1,
            "has dependencies on line 1 already",
        ),
        ("pc1: pc1\n", 1, 6, "dependency cycle pc1 -> pc1"),
    ] {
        let e = with_dep(dep).expect_err(dep);
        let at = format!("/labs/x/lab.dep:{line}:{col}: ");
        assert!(e.to_string().starts_with(&at), "{dep:?}: {e}");
        assert!(e.to_string().contains(says), "{dep:?}: {e}");
    }
    // `a:b` without a space, comments and blank lines; repeated names count once.
    let lab = with_dep("# order\n\npc1:pc2 pc2\n").unwrap();
    let umids: Vec<&str> = lab.spec.machines.iter().map(|m| m.umid.as_str()).collect();
    assert_eq!(umids, ["pc2", "pc1"]);
    assert_eq!(lab.spec.machine("pc1").unwrap().depends_on, ["pc2"]);
}

#[test]
fn unreadable_line_names_file_and_line() {
    let dir = fixture("kathara-bad-line");
    let e = fails_at(&dir, "lab.conf", 2, Some(1));
    assert!(matches!(e, SpecError::Syntax { .. }));
    assert!(
        e.to_string().contains("expected `machine[N]=domain`"),
        "{e}"
    );
}

#[test]
fn duplicate_address_points_at_the_startup_line() {
    let dir = fixture("kathara-dup-addr");
    let e = fails_at(&dir, "pc2.startup", 2, None);
    assert!(
        matches!(e.problem(), Some(Problem::DuplicateAddress { addr, .. }) if *addr == "10.0.0.1".parse::<IpAddr>().unwrap()),
        "{e}"
    );
}

#[test]
fn interface_index_given_twice() {
    let dir = fixture("kathara-dup-index");
    let e = fails_at(&dir, "lab.conf", 2, Some(1));
    assert!(
        e.to_string()
            .contains("pc1[0] is given twice (first on line 1)"),
        "{e}"
    );
}

#[test]
fn machine_name_that_is_no_umid() {
    let dir = fixture("kathara-bad-umid");
    let e = fails_at(&dir, "lab.conf", 2, Some(1));
    assert!(matches!(e.problem(), Some(Problem::BadUmid { .. })), "{e}");
}

#[test]
fn lab_name_defaults_to_the_directory() {
    let lab = kathara::load_dir(&fixture("kathara-no-name")).unwrap();
    assert_eq!(lab.spec.name, "kathara-no-name");
}

fn parse_conf(conf: &str) -> Result<kathara::KatharaLab, SpecError> {
    let files = LabFiles {
        lab_conf: conf.to_owned(),
        ..LabFiles::default()
    };
    kathara::parse(Path::new("/labs/x"), &files)
}

#[test]
fn lab_conf_value_errors() {
    for (conf, line, col, says) in [
        ("pc1[0]=A\nLAB_NAME=\"open\n", 2, 10, "unterminated quote"),
        ("pc1[0]=A\npc1[mem]=lots\n", 2, 10, "give the memory in MiB"),
        (
            "pc1[0]=A\npc1[sysctl]=nonsense\n",
            2,
            13,
            "pc1[sysctl]=\"net.ipv4.ip_forward=1\"",
        ),
        (
            "pc1[0]=A\npc1[env]=\"NOVALUE\"\n",
            2,
            11,
            "write pc1[env]=\"NAME=value\"",
        ),
        (
            "pc1[0]=A\npc1[ipv6]=maybe\n",
            2,
            11,
            "pc1[ipv6]=maybe: write true or false",
        ),
        (
            "pc1[0]=A\npc1[bridged]=sure\n",
            2,
            14,
            "write true or false",
        ),
        ("pc1[0]=A\npc1[1]=\n", 2, 8, "has no domain"),
        ("pc1[99999]=A\n", 1, 1, "too large"),
        (
            "pc1[0]=A\nLAB_DESCRIPTION=two words\n",
            2,
            17,
            "put the value in double quotes",
        ),
        ("pc1[0]=A\n  pc1[0=A\n", 2, 3, "expected"),
        ("shared[0]=A\n", 1, 1, "`shared` is a name Kathará reserves"),
        ("_test[0]=A\n", 1, 1, "`_test` is a name Kathará reserves"),
    ] {
        let e = parse_conf(conf).expect_err(conf);
        let at = format!("/labs/x/lab.conf:{line}:{col}: ");
        assert!(e.to_string().starts_with(&at), "{conf:?}: {e}");
        assert!(e.to_string().contains(says), "{conf:?}: {e}");
    }
}

#[test]
fn env_and_sysctl_problems_point_at_their_value() {
    for (conf, line, col, says) in [
        (
            "pc1[0]=A\npc1[env]=\"1X=y\"\n",
            2,
            11,
            "environment variable `1X` starts with a digit",
        ),
        (
            "pc1[0]=A\npc1[env]=\"A.B=y\"\n",
            2,
            11,
            "environment variable `A.B` contains '.'",
        ),
        (
            "pc1[0]=A\npc1[sysctl]=\"net..x=1\"\n",
            2,
            14,
            "sysctl `net..x` is not a sysctl name",
        ),
        (
            "pc1[0]=A\npc1[sysctl]=\"../x=1\"\n",
            2,
            14,
            "is not a sysctl name",
        ),
        (
            "pc1[0]=A\npc1[sysctl]=\"net.x=\"\n",
            2,
            14,
            "give a one-line, non-empty value",
        ),
    ] {
        let e = parse_conf(conf).expect_err(conf);
        let at = format!("/labs/x/lab.conf:{line}:{col}: ");
        assert!(e.to_string().starts_with(&at), "{conf:?}: {e}");
        assert!(e.to_string().contains(says), "{conf:?}: {e}");
    }
}

#[test]
fn repeated_options_warn_and_the_later_wins() {
    let lab = parse_conf(
        "pc1[0]=A\npc1[mem]=128\npc1[mem]=256\npc1[sysctl]=\"net.a=1\"\npc1[sysctl]=\"net.a=2\"\n\
         pc1[env]=\"X=1\"\npc1[env]=\"X=2\"\npc1[bridged]=false\npc1[privileged]=true\n",
    )
    .unwrap();
    let m = lab.spec.machine("pc1").unwrap();
    assert_eq!(m.mem_mb, 256);
    assert_eq!(
        m.sysctls.last().unwrap(),
        &("net.a".to_owned(), "2".to_owned())
    );
    assert_eq!(m.sysctls.iter().filter(|(k, _)| k == "net.a").count(), 1);
    assert_eq!(m.env, [("X".to_owned(), "2".to_owned())]);
    let w: Vec<String> = lab.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 3, "{w:#?}");
    assert!(
        w[0].starts_with("/labs/x/lab.conf:3:10: pc1[mem] is given again (first on line 2)"),
        "{w:#?}"
    );
    assert!(
        w[1].starts_with("/labs/x/lab.conf:5:14: pc1[sysctl] sets net.a again (first on line 4)"),
        "{w:#?}"
    );
    assert!(
        w[2].starts_with("/labs/x/lab.conf:7:11: pc1[env] sets X again (first on line 6)"),
        "{w:#?}"
    );
}

#[test]
fn empty_lab_conf_is_an_empty_lab() {
    let e = parse_conf("# nothing\n").unwrap_err();
    assert!(matches!(e.problem(), Some(Problem::EmptyLab)), "{e}");
    assert!(e.to_string().starts_with("/labs/x/lab.conf:1: "), "{e}");
}

#[test]
fn zero_memory_points_at_its_line() {
    let e = parse_conf("pc1[0]=A\n\npc1[mem]=0\n").unwrap_err();
    assert!(
        matches!(e.problem(), Some(Problem::ZeroMemory { .. })),
        "{e}"
    );
    assert!(e.to_string().starts_with("/labs/x/lab.conf:3:10: "), "{e}");
}

#[test]
fn mac_text_forms() {
    assert_eq!(mac("02:AB:cd:00:00:01").to_string(), "02:ab:cd:00:00:01");
    for bad in [
        "",
        "02:00:00:00:00",
        "02:00:00:00:00:00:00",
        "2:00:00:00:00:01",
        "02:00:00:00:00:0g",
        " 02:00:00:00:00:01",
    ] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
    }
    assert!(mac("02:00:00:00:00:01").is_unicast());
    assert!(!mac("01:00:5e:00:00:01").is_unicast());
    assert!(!mac("ff:ff:ff:ff:ff:ff").is_unicast());
    assert!(!mac("00:00:00:00:00:00").is_unicast());
}

/// Every Kathará-format lab written for the integration tests loads, with no error and no
/// warning (they use only what umldbg implements).
#[test]
fn team_kathara_labs_load_cleanly() {
    let labs = Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/kathara");
    let mut names: Vec<String> = std::fs::read_dir(&labs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bad-startup",
            "bash-startup",
            "bgp",
            "dnat-lb",
            "folders",
            "ipv6",
            "mac",
            "netem",
            "nft-masq",
            "ospf",
            "shutdown",
            "two-routers",
            "vlan-bridge"
        ]
    );
    for name in &names {
        let lab = kathara::load_dir(&labs.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(lab.warnings.is_empty(), "{name}: {:#?}", lab.warnings);
        assert!(
            (2..=5).contains(&lab.spec.machines.len()),
            "{name}: {} machines",
            lab.spec.machines.len()
        );
        assert!(lab.spec.machines.iter().all(|m| m.mem_mb == 64), "{name}");
        assert!(
            lab.spec
                .machines
                .iter()
                .all(|m| !m.startup_files.is_empty()),
            "{name}: a machine without a startup"
        );
    }
}
