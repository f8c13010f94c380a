//! TOML lab files: the committed article lab, defaults, and every parse and validation error,
//! each with the file, line and column it points at.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use umldbg::lab::builtin::article_lab;
use umldbg::lab::spec::{IfAddr, LabSpec, Problem, SpecError};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

const FILE: &str = "test-lab.toml";

/// Line and column (1-based) of the `nth` (0-based) occurrence of `needle` in `text`.
fn pos(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let off = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} #{nth}"))
        .0;
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn parse(text: &str) -> Result<LabSpec, SpecError> {
    LabSpec::from_toml_str(text, Path::new(FILE))
}

/// Parses text that must fail; checks the error is one line and points at `(line, col)`.
fn fails_at(text: &str, at: (usize, usize)) -> SpecError {
    let e = parse(text).expect_err("the lab should be refused");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "error spans lines: {msg}");
    let loc = e
        .location()
        .unwrap_or_else(|| panic!("no location in {msg}"));
    assert_eq!(loc.file, Path::new(FILE));
    assert_eq!((loc.line, loc.column), (at.0, Some(at.1)), "{msg}");
    assert!(
        msg.starts_with(&format!("{FILE}:{}:{}: ", at.0, at.1)),
        "{msg}"
    );
    e
}

/// A valid two-machine lab that the error cases below change in one place each.
const BASE: &str = r#"name = "base"

[[domain]]
name = "lan"

[[domain]]
name = "up"
host_address = "10.9.0.1/24"

[[machine]]
umid = "m1"
hostname = "one"
memory = 96

[[machine.interface]]
name = "eth0"
domain = "lan"
addresses = ["10.0.0.1/24"]

[[machine.interface]]
name = "eth1"
domain = "up"
addresses = ["10.9.0.2/24"]

[[machine.route]]
dest = "default"
via = "10.9.0.1"

[[machine]]
umid = "m2"

[[machine.interface]]
domain = "lan"
addresses = ["10.0.0.2/24"]

[[machine.route]]
dest = "10.9.0.0/24"
via = "10.0.0.1"
"#;

/// BASE with the `nth` occurrence of `from` replaced by `to`.
fn base_with(from: &str, nth: usize, to: &str) -> String {
    let (off, _) = BASE
        .match_indices(from)
        .nth(nth)
        .unwrap_or_else(|| panic!("{from:?}"));
    format!("{}{}{}", &BASE[..off], to, &BASE[off + from.len()..])
}

fn problem(e: &SpecError) -> &Problem {
    e.problem()
        .unwrap_or_else(|| panic!("not a validation error: {e}"))
}

#[test]
fn committed_article_file_is_the_builtin_lab() {
    let spec = LabSpec::load(&repo("labs/article.toml")).unwrap();
    assert_eq!(spec, article_lab());
}

#[test]
fn base_lab_parses_with_defaults() {
    let spec = parse(BASE).unwrap();
    assert_eq!(spec.name, "base");
    let m2 = spec.machine("m2").unwrap();
    assert_eq!(m2.hostname, "m2", "hostname defaults to the umid");
    assert_eq!(m2.mem_mb, 64, "memory defaults to 64 MiB");
    assert_eq!(
        m2.interfaces[0].name, "eth0",
        "interface names default to eth<position>"
    );
    assert_eq!(spec.machine("m1").unwrap().mem_mb, 96);
    let up = spec.domain("up").unwrap();
    assert_eq!(
        up.host_address,
        Some("10.9.0.1/24".parse::<IfAddr>().unwrap())
    );
}

#[test]
fn name_defaults_to_the_file_stem() {
    let text = BASE.replacen("name = \"base\"\n", "", 1);
    let spec = LabSpec::from_toml_str(&text, Path::new("/some/dir/chain-12.toml")).unwrap();
    assert_eq!(spec.name, "chain-12");
}

#[test]
fn sysctls_keep_document_order_and_accept_dotted_keys() {
    let text = base_with(
        "memory = 96",
        0,
        "memory = 96\nsysctls = { \"net.ipv4.ip_forward\" = 1, net.ipv4.conf.all.rp_filter = 0, \
         \"kernel.panic\" = true, \"a.b\" = \"x y\" }",
    );
    let spec = parse(&text).unwrap();
    let got: Vec<(&str, &str)> = spec.machines[0]
        .sysctls
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("kernel.panic", "1"),
            ("a.b", "x y"),
        ]
    );
}

#[test]
fn ipv6_addresses_and_routes() {
    let text = base_with("\"10.0.0.1/24\"", 0, "\"10.0.0.1/24\", \"2001:db8::1/64\"");
    let text = text.replacen(
        "[[machine]]\numid = \"m2\"",
        "[[machine.route]]\ndest = \"2001:db8:1::/48\"\nvia = \"2001:db8::2\"\n\n[[machine]]\numid = \"m2\"",
        1,
    );
    let text = text.replacen("\"10.0.0.2/24\"", "\"10.0.0.2/24\", \"2001:db8::2/64\"", 1);
    let spec = parse(&text).unwrap();
    assert_eq!(
        spec.machines[0].routes[1].via,
        "2001:db8::2".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn toml_syntax_error() {
    let text = "name = \"x\n";
    // toml points where the closing quote is missing: the end of the line.
    let e = fails_at(text, (1, 10));
    assert!(matches!(e, SpecError::Syntax { .. }), "{e}");
}

#[test]
fn unknown_top_level_key() {
    let text = base_with("name = \"base\"", 0, "nmae = \"base\"");
    let e = fails_at(&text, (1, 1));
    assert!(e.to_string().contains("unknown field `nmae`"), "{e}");
}

#[test]
fn unknown_machine_key() {
    let text = base_with("memory = 96", 0, "memroy = 96");
    let e = fails_at(&text, pos(&text, "memroy", 0));
    assert!(e.to_string().contains("unknown field `memroy`"), "{e}");
}

#[test]
fn unknown_interface_key() {
    let text = base_with(
        "addresses = [\"10.0.0.2/24\"]",
        0,
        "address = \"10.0.0.2/24\"",
    );
    let e = fails_at(&text, pos(&text, "address = \"10.0.0.2", 0));
    assert!(e.to_string().contains("unknown field `address`"), "{e}");
}

#[test]
fn wrong_value_type() {
    let text = base_with("memory = 96", 0, "memory = \"96\"");
    let e = fails_at(&text, pos(&text, "\"96\"", 0));
    assert!(matches!(e, SpecError::Syntax { .. }), "{e}");
}

#[test]
fn missing_umid() {
    let text = base_with("umid = \"m2\"\n", 0, "");
    let e = parse(&text).unwrap_err();
    assert!(e.to_string().contains("missing field `umid`"), "{e}");
    let loc = e.location().unwrap();
    assert!(loc.line > 1 && loc.column.is_some(), "{e}");
}

#[test]
fn float_sysctl_value() {
    let text = base_with(
        "memory = 96",
        0,
        "memory = 96\nsysctls = { \"vm.x\" = 1.5 }",
    );
    let e = fails_at(&text, pos(&text, "1.5", 0));
    assert!(e.to_string().contains("sysctl value"), "{e}");
}

#[test]
fn unknown_domain() {
    let text = base_with("domain = \"lan\"", 1, "domain = \"lan-x\"");
    let e = fails_at(&text, pos(&text, "\"lan-x\"", 0));
    assert!(
        matches!(problem(&e), Problem::UnknownDomain { machine, domain, .. } if machine == "m2" && domain == "lan-x")
    );
    assert!(e.to_string().contains("(domains: lan, up)"), "{e}");
}

#[test]
fn duplicate_umid() {
    let text = base_with("umid = \"m2\"", 0, "umid = \"m1\"");
    let e = fails_at(&text, pos(&text, "\"m1\"", 1));
    assert!(matches!(problem(&e), Problem::DuplicateUmid { umid } if umid == "m1"));
}

#[test]
fn duplicate_domain() {
    let text = base_with("name = \"up\"", 0, "name = \"lan\"");
    let e = fails_at(&text, pos(&text, "\"lan\"", 1));
    assert!(
        matches!(problem(&e), Problem::DuplicateDomain { .. }),
        "{e}"
    );
}

#[test]
fn duplicate_interface() {
    let text = base_with("name = \"eth1\"", 0, "name = \"eth0\"");
    let e = fails_at(&text, pos(&text, "\"eth0\"", 1));
    assert!(matches!(problem(&e), Problem::DuplicateIface { iface, .. } if iface == "eth0"));
}

#[test]
fn bad_interface_name() {
    let text = base_with("name = \"eth1\"", 0, "name = \"a-very-long-name0\"");
    let e = fails_at(&text, pos(&text, "\"a-very-long-name0\"", 0));
    assert!(matches!(problem(&e), Problem::BadIfaceName { .. }), "{e}");
}

#[test]
fn same_address_twice_in_a_domain() {
    let text = base_with("\"10.0.0.2/24\"", 0, "\"10.0.0.1/24\"");
    let e = fails_at(&text, pos(&text, "\"10.0.0.1/24\"", 1));
    assert!(
        matches!(problem(&e), Problem::DuplicateAddress { domain, .. } if domain == "lan"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("machine `m1` eth0 and machine `m2` eth0"),
        "{e}"
    );
}

#[test]
fn machine_takes_the_lab_hosts_address() {
    let text = base_with("\"10.9.0.2/24\"", 0, "\"10.9.0.1/24\"");
    let e = fails_at(&text, pos(&text, "\"10.9.0.1/24\"", 1));
    assert!(e.to_string().contains("the lab host"), "{e}");
}

#[test]
fn overlapping_subnets_on_two_interfaces() {
    let text = base_with("\"10.9.0.2/24\"", 0, "\"10.0.0.9/16\"");
    let e = fails_at(&text, pos(&text, "\"10.0.0.9/16\"", 0));
    assert!(
        matches!(problem(&e), Problem::OverlappingSubnets { .. }),
        "{e}"
    );
}

#[test]
fn gateway_outside_every_connected_subnet() {
    let text = base_with("via = \"10.9.0.1\"", 0, "via = \"10.8.0.1\"");
    let e = fails_at(&text, pos(&text, "\"10.8.0.1\"", 0));
    assert!(
        matches!(problem(&e), Problem::GatewayUnreachable { .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("10.0.0.0/24 on eth0, 10.9.0.0/24 on eth1"),
        "{e}"
    );
}

#[test]
fn gateway_is_own_address() {
    let text = base_with("via = \"10.9.0.1\"", 0, "via = \"10.9.0.2\"");
    let e = fails_at(&text, pos(&text, "\"10.9.0.2\"", 0));
    assert!(matches!(problem(&e), Problem::GatewayIsSelf { .. }), "{e}");
}

#[test]
fn gateway_not_an_address() {
    let text = base_with("via = \"10.9.0.1\"", 0, "via = \"gateway\"");
    let e = fails_at(&text, pos(&text, "\"gateway\"", 0));
    assert!(matches!(problem(&e), Problem::BadRoute { .. }), "{e}");
}

#[test]
fn route_destination_with_host_bits() {
    let text = base_with("dest = \"10.9.0.0/24\"", 0, "dest = \"10.9.0.7/24\"");
    let e = fails_at(&text, pos(&text, "\"10.9.0.7/24\"", 0));
    assert!(e.to_string().contains("write 10.9.0.0/24"), "{e}");
}

#[test]
fn route_destination_garbage_and_duplicates() {
    let text = base_with("dest = \"10.9.0.0/24\"", 0, "dest = \"everywhere\"");
    fails_at(&text, pos(&text, "\"everywhere\"", 0));
    let text = base_with("dest = \"10.9.0.0/24\"", 0, "dest = \"default\"");
    let text = text.replacen(
        "[[machine]]\numid = \"m2\"",
        "[[machine.route]]\ndest = \"default\"\nvia = \"10.0.0.2\"\n\n[[machine]]\numid = \"m2\"",
        1,
    );
    let e = fails_at(&text, pos(&text, "\"default\"", 1));
    assert!(matches!(problem(&e), Problem::DuplicateRoute { .. }), "{e}");
}

#[test]
fn prefix_longer_than_32() {
    let text = base_with("\"10.0.0.2/24\"", 0, "\"10.0.0.2/33\"");
    let e = fails_at(&text, pos(&text, "\"10.0.0.2/33\"", 0));
    assert!(matches!(problem(&e), Problem::BadAddress { .. }), "{e}");
    assert!(e.to_string().contains("/33"), "{e}");
}

#[test]
fn prefix_longer_than_128() {
    let text = base_with("\"10.0.0.2/24\"", 0, "\"10.0.0.2/24\", \"2001:db8::2/129\"");
    let e = fails_at(&text, pos(&text, "\"2001:db8::2/129\"", 0));
    assert!(e.to_string().contains("/129"), "{e}");
}

#[test]
fn malformed_addresses() {
    for (bad, says) in [
        ("10.0.0.300/24", "not an IPv4 or IPv6 address"),
        ("10.0.0.2", "no prefix length"),
        ("10.0.0.2/x", "not a prefix length"),
        ("10.0.0.0/24", "network address"),
        ("10.0.0.255/24", "broadcast address"),
        ("224.0.0.5/24", "multicast"),
        ("127.0.0.2/8", "loopback"),
        ("10.0.0.2/0", "/0"),
    ] {
        let text = base_with("\"10.0.0.2/24\"", 0, &format!("\"{bad}\""));
        let e = fails_at(&text, pos(&text, &format!("\"{bad}\""), 0));
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}

#[test]
fn bad_host_address() {
    let text = base_with("\"10.9.0.1/24\"", 0, "\"10.9.0.1\"");
    let e = fails_at(&text, pos(&text, "\"10.9.0.1\"", 0));
    assert!(e.to_string().contains("domain `up` host_address"), "{e}");
}

#[test]
fn umid_syntax() {
    let long = "u".repeat(64);
    for bad in ["m 2", "../m2", ".m2", long.as_str()] {
        let text = base_with("umid = \"m2\"", 0, &format!("umid = \"{bad}\""));
        let e = fails_at(&text, pos(&text, &format!("\"{bad}\""), 0));
        assert!(matches!(problem(&e), Problem::BadUmid { .. }), "{bad}: {e}");
    }
}

#[test]
fn hostname_syntax() {
    for bad in ["one two", "-one", "a..b", &"h".repeat(65)] {
        let text = base_with("hostname = \"one\"", 0, &format!("hostname = \"{bad}\""));
        let e = fails_at(&text, pos(&text, &format!("\"{bad}\""), 0));
        assert!(
            matches!(problem(&e), Problem::BadHostname { .. }),
            "{bad}: {e}"
        );
    }
}

#[test]
fn lab_name_syntax() {
    let text = base_with("\"base\"", 0, "\"my lab\"");
    let e = fails_at(&text, pos(&text, "\"my lab\"", 0));
    assert!(matches!(problem(&e), Problem::BadLabName { .. }), "{e}");
}

#[test]
fn zero_memory() {
    let text = base_with("memory = 96", 0, "memory = 0");
    let (line, col) = pos(&text, "memory = 0", 0);
    let e = fails_at(&text, (line, col + "memory = ".len()));
    assert!(matches!(problem(&e), Problem::ZeroMemory { .. }), "{e}");
}

#[test]
fn bad_and_duplicate_sysctls() {
    let text = base_with(
        "memory = 96",
        0,
        "memory = 96\nsysctls = { \"net..x\" = 1 }",
    );
    let e = fails_at(&text, pos(&text, "1 }", 0));
    assert!(matches!(problem(&e), Problem::BadSysctl { .. }), "{e}");
    let text = base_with(
        "memory = 96",
        0,
        "memory = 96\nsysctls = { \"net.ipv4.ip_forward\" = 1, \"net/ipv4/ip_forward\" = 0 }",
    );
    let e = fails_at(&text, pos(&text, "0 }", 0));
    assert!(
        matches!(problem(&e), Problem::DuplicateSysctl { .. }),
        "{e}"
    );
}

#[test]
fn startup_line_with_a_line_break() {
    let text = base_with(
        "memory = 96",
        0,
        "memory = 96\nstartup = [\"echo a\", \"\"\"echo b\necho c\"\"\"]",
    );
    let e = fails_at(&text, pos(&text, "\"\"\"echo b", 0));
    assert!(
        matches!(problem(&e), Problem::BadStartupLine { number: 2, .. }),
        "{e}"
    );
}

#[test]
fn empty_lab() {
    let e = fails_at("name = \"nothing\"\n", (1, 1));
    assert!(matches!(problem(&e), Problem::EmptyLab), "{e}");
}

#[test]
fn validate_without_a_file_names_the_lab() {
    let mut spec = article_lab();
    spec.machines[2].interfaces[0].domain = "lan-c".into();
    let e = spec.validate().unwrap_err();
    assert!(e.location().is_none());
    assert_eq!(
        e.to_string(),
        "lab `article`: machine `client-uml-B` interface eth0: unknown domain `lan-c` \
         (domains: lan-a, uplink, lan-b): declare it or use one of those"
    );
}

#[test]
fn load_reports_missing_files_and_non_labs() {
    let e = LabSpec::load(&repo("fixtures/lab/does-not-exist.toml")).unwrap_err();
    assert!(matches!(e, SpecError::Read { .. }), "{e}");
    assert!(e.to_string().contains("does-not-exist.toml"), "{e}");
    let e = LabSpec::load(&repo("fixtures")).unwrap_err();
    assert!(matches!(e, SpecError::NotALab { .. }), "{e}");
}

#[test]
fn ifaddr_display_and_parse() {
    let a: IfAddr = "192.168.10.2/24".parse().unwrap();
    assert_eq!(a.to_string(), "192.168.10.2/24");
    assert_eq!(a.subnet().to_string(), "192.168.10.0/24");
    assert!("192.168.10.2/33".parse::<IfAddr>().is_err());
    assert_eq!(serde_json::to_string(&a).unwrap(), "\"192.168.10.2/24\"");
    assert_eq!(
        serde_json::from_str::<IfAddr>("\"192.168.10.2/24\"").unwrap(),
        a
    );
}

#[test]
fn interface_names_linux_cannot_use() {
    for bad in ["a-very-long-name0", "eth/0", "eth 0", "eth\t0", "", "lo"] {
        let quoted = format!("{bad:?}");
        let text = base_with("\"eth1\"", 0, &quoted);
        let e = fails_at(&text, pos(&text, &quoted, 0));
        assert!(matches!(problem(&e), Problem::BadIfaceName { .. }), "{e}");
    }
    // 15 bytes is the most Linux takes (IFNAMSIZ less the NUL).
    parse(&base_with("\"eth1\"", 0, "\"fifteen-chars-x\"")).unwrap();
}

#[test]
fn mac_image_env_and_dependencies() {
    let text = base_with(
        "addresses = [\"10.0.0.2/24\"]",
        0,
        "addresses = [\"10.0.0.2/24\"]\nmac = \"02:00:00:00:00:AA\"",
    );
    let text = text.replacen(
        "umid = \"m1\"\n",
        "umid = \"m1\"\nimage = \"frr\"\nenv = { ROLE = \"router\", A_1 = 7 }\ndepends_on = [\"m2\", \"m2\"]\n",
        1,
    );
    let (spec, warnings) = LabSpec::from_toml_str_with_warnings(&text, Path::new(FILE)).unwrap();
    // m1 depends on m2: m2 boots first.
    let umids: Vec<&str> = spec.machines.iter().map(|m| m.umid.as_str()).collect();
    assert_eq!(umids, ["m2", "m1"]);
    let m1 = spec.machine("m1").unwrap();
    assert_eq!(m1.depends_on, ["m2"]);
    assert_eq!(m1.image.as_deref(), Some("frr"));
    assert_eq!(
        m1.env,
        [
            ("ROLE".to_owned(), "router".to_owned()),
            ("A_1".to_owned(), "7".to_owned())
        ]
    );
    let m2 = spec.machine("m2").unwrap();
    assert_eq!(
        m2.interfaces[0].mac,
        Some("02:00:00:00:00:aa".parse().unwrap())
    );
    assert!(!m2.addresses_from_startups && m2.startup_files.is_empty());
    assert_eq!(spec.shared_folder, None);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let (l, c) = pos(&text, "\"frr\"", 0);
    assert!(
        warnings[0].to_string().starts_with(&format!(
            "{FILE}:{l}:{c}: machine `m1`: image `frr` is not an image umldbg knows"
        )),
        "{}",
        warnings[0]
    );
    // Errors after reordering still point at the right machine's line.
    let bad = text.replacen("umid = \"m2\"", "umid = \"m2\"\nmemory = 0", 1);
    let e = fails_at(&bad, pos(&bad, "0\n", 0));
    assert!(
        matches!(problem(&e), Problem::ZeroMemory { machine, .. } if machine == "m2"),
        "{e}"
    );
}

#[test]
fn bad_macs_envs_images_and_dependencies() {
    let with_m2 =
        |extra: &str| BASE.replacen("umid = \"m2\"\n", &format!("umid = \"m2\"\n{extra}\n"), 1);
    let iface_mac = |mac: &str| {
        base_with(
            "addresses = [\"10.0.0.2/24\"]",
            0,
            &format!("addresses = [\"10.0.0.2/24\"]\nmac = {mac:?}"),
        )
    };
    for (text, needle, check) in [
        (
            iface_mac("02:00:00:00:00"),
            "\"02:00:00:00:00\"",
            "is not a MAC address",
        ),
        (
            iface_mac("ff:ff:ff:ff:ff:ff"),
            "\"ff:ff",
            "multicast or all-zero",
        ),
        (
            with_m2("env = { \"1X\" = \"y\" }"),
            "\"y\"",
            "starts with a digit",
        ),
        (
            with_m2("env = { X = \"a\\nb\" }"),
            "\"a\\nb\"",
            "line break",
        ),
        (
            with_m2("image = \"two words\""),
            "\"two words\"",
            "contains a space",
        ),
        (
            with_m2("depends_on = [\"ghost\"]"),
            "\"ghost\"",
            "depends on `ghost`, which is not a machine",
        ),
        (
            with_m2("depends_on = [\"m2\"]"),
            "\"m2\"]",
            "dependency cycle m2 -> m2",
        ),
    ] {
        let e = fails_at(&text, pos(&text, needle, 0));
        assert!(e.to_string().contains(check), "{e}");
    }
    // A cycle over two machines names both, at the first machine's dependency.
    let text = BASE
        .replacen(
            "umid = \"m1\"\n",
            "umid = \"m1\"\ndepends_on = [\"m2\"]\n",
            1,
        )
        .replacen(
            "umid = \"m2\"\n",
            "umid = \"m2\"\ndepends_on = [\"m1\"]\n",
            1,
        );
    let e = fails_at(&text, pos(&text, "\"m2\"]", 0));
    assert!(
        matches!(problem(&e), Problem::DependencyCycle { cycle } if cycle == "m1 -> m2 -> m1"),
        "{e}"
    );
}

#[test]
fn dependencies_in_code_built_specs() {
    let mut spec = article_lab();
    spec.machines[0].depends_on = vec!["router-uml-R".into()];
    // Out of order: validate says so; sort_by_dependencies fixes it.
    let e = spec.validate().unwrap_err();
    assert!(
        matches!(problem(&e), Problem::DependencyOrder { .. }),
        "{e}"
    );
    assert!(spec.sort_by_dependencies());
    spec.validate().unwrap();
    let umids: Vec<&str> = spec.machines.iter().map(|m| m.umid.as_str()).collect();
    assert_eq!(umids, ["router-uml-R", "client-uml-A", "client-uml-B"]);
    spec.machines[0].depends_on = vec!["client-uml-A".into()];
    assert!(!spec.sort_by_dependencies(), "a cycle cannot be sorted");
    spec.machines[0].startup_files = vec!["relative.startup".into()];
    let e = spec.validate().unwrap_err();
    assert!(e.to_string().contains("dependency cycle"), "{e}");
    spec.machines[0].depends_on.clear();
    let e = spec.validate().unwrap_err();
    assert!(
        e.to_string()
            .contains("startup file `relative.startup` is not an absolute path"),
        "{e}"
    );
}
