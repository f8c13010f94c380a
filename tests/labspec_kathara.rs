//! Kathará/Netkit lab directories: conversion, warnings, and errors that name file:line.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use umldbg::lab::kathara::{self, LabFiles};
use umldbg::lab::spec::{IfAddr, LabSpec, Problem, SpecError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lab")
        .join(name)
}

fn a(s: &str) -> IfAddr {
    s.parse().unwrap()
}

/// Checks the error points at `file:line` of the fixture and is one line.
fn fails_at(dir: &Path, file: &str, line: usize) -> SpecError {
    let e = kathara::load_dir(dir).expect_err("the lab should be refused");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    let loc = e.location().unwrap_or_else(|| panic!("no location: {msg}"));
    assert_eq!(
        (loc.file.as_path(), loc.line),
        (dir.join(file).as_path(), line),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!("{}:{line}: ", dir.join(file).display())),
        "{msg}"
    );
    e
}

#[test]
fn two_machines_on_one_domain() {
    let dir = fixture("kathara-two");
    let lab = kathara::load_dir(&dir).unwrap();
    assert!(lab.warnings.is_empty(), "{:?}", lab.warnings);
    let spec = &lab.spec;
    assert_eq!(spec.name, "kathara-two");
    assert_eq!(spec.domains.len(), 1);
    assert_eq!(spec.domains[0].name, "A");
    assert_eq!(spec.domains[0].host_address, None);
    for (umid, addr) in [("pc1", "10.0.0.1/24"), ("pc2", "10.0.0.2/24")] {
        let m = spec.machine(umid).unwrap();
        assert_eq!(m.hostname, umid);
        assert_eq!(m.mem_mb, 64);
        assert_eq!(m.interfaces.len(), 1);
        assert_eq!(m.interfaces[0].name, "eth0");
        assert_eq!(m.interfaces[0].domain, "A");
        assert_eq!(m.interfaces[0].addresses, [a(addr)]);
        assert_eq!(
            m.startup,
            [
                format!("ip address add {addr} dev eth0"),
                "ip link set eth0 up".to_owned()
            ]
        );
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
    let lab = kathara::load_dir(&dir).unwrap();
    let spec = &lab.spec;
    assert_eq!(spec.name, "Full-Lab-1", "LAB_NAME sanitised");
    let umids: Vec<&str> = spec.machines.iter().map(|m| m.umid.as_str()).collect();
    assert_eq!(umids, ["pc1", "r1", "pc2", "spare"]);
    let doms: Vec<&str> = spec.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(doms, ["lan1", "lan2"]);

    let pc1 = spec.machine("pc1").unwrap();
    assert_eq!(pc1.mem_mb, 128);
    assert_eq!(pc1.interfaces[0].addresses, [a("10.1.0.2/24")]);
    assert_eq!(
        pc1.startup,
        [
            "echo shared-start",
            "ifconfig eth0 10.1.0.2 netmask 255.255.255.0 up",
            "ip route add default via 10.1.0.1",
        ]
    );

    let r1 = spec.machine("r1").unwrap();
    assert_eq!(r1.mem_mb, 256);
    assert_eq!(
        r1.sysctls,
        [("net.ipv4.ip_forward".to_owned(), "1".to_owned())]
    );
    assert_eq!(r1.interfaces.len(), 2);
    assert_eq!(
        (
            r1.interfaces[1].name.as_str(),
            r1.interfaces[1].domain.as_str()
        ),
        ("eth1", "lan2")
    );
    assert_eq!(r1.interfaces[0].addresses, [a("10.1.0.1/24")]);
    assert_eq!(
        r1.interfaces[1].addresses,
        [a("10.2.0.1/24")],
        "continued line read"
    );
    assert_eq!(r1.startup.len(), 4, "{:?}", r1.startup);

    let pc2 = spec.machine("pc2").unwrap();
    assert_eq!(pc2.interfaces[0].addresses, [a("10.2.0.2/24")]);
    let spare = spec.machine("spare").unwrap();
    assert!(spare.interfaces.is_empty());
    assert_eq!(spare.startup, ["echo shared-start"]);

    let warnings: Vec<String> = lab.warnings.iter().map(ToString::to_string).collect();
    let expect = [
        ("lab.conf:11:", "pc1[image]"),
        ("lab.conf:14:", "MAC address 02:42:ac:11:00:02"),
        ("lab.conf:17:", "r1[bridged]"),
        ("pc2.startup:2:", "eth3"),
        ("ghost.startup:1:", "no machine `ghost`"),
        ("pc1:1:", "pc1/"),
        ("pc1.shutdown:1:", "not run"),
    ];
    for (at, says) in expect {
        assert!(
            warnings.iter().any(|w| w.contains(at) && w.contains(says)),
            "no warning at {at} about {says}: {warnings:#?}"
        );
    }
    assert_eq!(warnings.len(), 7, "{warnings:#?}");
}

#[test]
fn unreadable_line_names_file_and_line() {
    let dir = fixture("kathara-bad-line");
    let e = fails_at(&dir, "lab.conf", 2);
    assert!(matches!(e, SpecError::Syntax { .. }));
    assert!(
        e.to_string().contains("expected `machine[N]=domain`"),
        "{e}"
    );
}

#[test]
fn duplicate_address_points_at_the_startup_line() {
    let dir = fixture("kathara-dup-addr");
    let e = fails_at(&dir, "pc2.startup", 2);
    assert!(
        matches!(e.problem(), Some(Problem::DuplicateAddress { addr, .. }) if *addr == "10.0.0.1".parse::<IpAddr>().unwrap()),
        "{e}"
    );
}

#[test]
fn interface_index_given_twice() {
    let dir = fixture("kathara-dup-index");
    let e = fails_at(&dir, "lab.conf", 2);
    assert!(
        e.to_string()
            .contains("pc1[0] is given twice (first on line 1)"),
        "{e}"
    );
}

#[test]
fn machine_name_that_is_no_umid() {
    let dir = fixture("kathara-bad-umid");
    let e = fails_at(&dir, "lab.conf", 2);
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
    for (conf, line, says) in [
        ("pc1[0]=A\nLAB_NAME=\"open\n", 2, "unterminated quote"),
        ("pc1[0]=A\npc1[mem]=lots\n", 2, "give the memory in MiB"),
        (
            "pc1[0]=A\npc1[sysctl]=nonsense\n",
            2,
            "pc1[sysctl]=\"net.ipv4.ip_forward=1\"",
        ),
        ("pc1[0]=A\npc1[1]=\n", 2, "has no domain"),
        ("pc1[99999]=A\n", 1, "too large"),
        (
            "pc1[0]=A\nLAB_DESCRIPTION=two words\n",
            2,
            "put the value in double quotes",
        ),
        ("pc1[0]=A\npc1[0=A\n", 2, "expected"),
    ] {
        let e = parse_conf(conf).expect_err(conf);
        let at = format!("/labs/x/lab.conf:{line}: ");
        assert!(e.to_string().starts_with(&at), "{conf:?}: {e}");
        assert!(e.to_string().contains(says), "{conf:?}: {e}");
    }
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
    assert!(e.to_string().starts_with("/labs/x/lab.conf:3: "), "{e}");
}
