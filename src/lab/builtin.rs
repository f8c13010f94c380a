//! The article's network, what `umldbg lab up` starts when given no lab: two clients in two
//! subnets and a router between them that forwards and masquerades towards the lab host.
//!
//! ```text
//!  MachineA ---- lan-a ---- MachineR ---- lan-b ---- MachineB
//!  .10.2/24           .10.1 |  .20.1            .20.2/24
//!                        .30.2 (eth1)
//!                           |
//!                        uplink ---- lab host 192.168.30.1/24
//! ```
//!
//! `labs/article.toml` is the same lab as a file; a test keeps the two equal.

use std::net::{IpAddr, Ipv4Addr};

use super::spec::{DEFAULT_MEM_MB, DomainSpec, IfAddr, IfaceSpec, LabSpec, MachineSpec, RouteSpec};

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn addr24(c: u8, d: u8) -> IfAddr {
    IfAddr {
        addr: v4(192, 168, c, d),
        prefix: 24,
    }
}

fn iface(name: &str, domain: &str, third: u8, last: u8) -> IfaceSpec {
    IfaceSpec {
        name: name.into(),
        domain: domain.into(),
        addresses: vec![addr24(third, last)],
        mac: None,
    }
}

fn default_via(third: u8, last: u8) -> Vec<RouteSpec> {
    vec![RouteSpec {
        dest: "default".into(),
        via: v4(192, 168, third, last),
    }]
}

/// The article's lab, as in issue 3's table.
pub fn article_lab() -> LabSpec {
    let client = |umid: &str, hostname: &str, domain: &str, third: u8| MachineSpec {
        umid: umid.into(),
        hostname: hostname.into(),
        mem_mb: DEFAULT_MEM_MB,
        interfaces: vec![iface("eth0", domain, third, 2)],
        routes: default_via(third, 1),
        sysctls: Vec::new(),
        startup: Vec::new(),
        ..MachineSpec::default()
    };
    let router = MachineSpec {
        umid: "router-uml-R".into(),
        hostname: "MachineR".into(),
        mem_mb: DEFAULT_MEM_MB,
        interfaces: vec![
            iface("eth0", "lan-a", 10, 1),
            iface("eth1", "uplink", 30, 2),
            iface("eth2", "lan-b", 20, 1),
        ],
        routes: default_via(30, 1),
        sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
        // The guest uses the host's iptables binaries; `-legacy` because the kernel config has
        // xtables-legacy and no nf_tables IPv4 family by default (see UML-NOTES).
        startup: vec!["iptables-legacy -t nat -A POSTROUTING -o eth1 -j MASQUERADE".into()],
        ..MachineSpec::default()
    };
    LabSpec {
        name: "article".into(),
        machines: vec![
            client("client-uml-A", "MachineA", "lan-a", 10),
            router,
            client("client-uml-B", "MachineB", "lan-b", 20),
        ],
        domains: vec![
            DomainSpec {
                name: "lan-a".into(),
                host_address: None,
            },
            DomainSpec {
                name: "uplink".into(),
                host_address: Some(addr24(30, 1)),
            },
            DomainSpec {
                name: "lan-b".into(),
                host_address: None,
            },
        ],
        shared_folder: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn article_lab_is_valid() {
        article_lab().validate().unwrap();
    }
}
