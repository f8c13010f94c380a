//! What a lab is made of: machines, their interfaces, addresses, routes, sysctls and startup
//! lines, and the domains (Ethernet segments) that join them. Parsed from a TOML lab file or a
//! Kathará/Netkit directory (see `kathara`), checked before anything is created.
//!
//! # The TOML lab format
//!
//! ```toml
//! name = "article"                  # optional: defaults to the file's name without .toml
//!
//! [[domain]]                        # one Ethernet segment (a bridge inside the lab's namespace)
//! name = "uplink"
//! host_address = "192.168.30.1/24"  # optional: the lab host's own address on this segment
//!
//! [[machine]]
//! umid = "router-uml-R"             # UML's umid: letters, digits, - _ . ; at most 63
//! hostname = "MachineR"             # optional: defaults to the umid
//! memory = 64                       # optional, MiB: defaults to 64
//! sysctls = { "net.ipv4.ip_forward" = 1 }   # set in document order
//! startup = ["iptables-legacy -t nat -A POSTROUTING -o eth1 -j MASQUERADE"]
//!
//! [[machine.interface]]             # in guest order: eth0, eth1, ...
//! name = "eth0"                     # optional: defaults to eth<position>
//! domain = "lan-a"                  # must be a [[domain]] of this file
//! addresses = ["192.168.10.1/24"]   # address/prefix, IPv4 or IPv6
//!
//! [[machine.route]]
//! dest = "default"                  # "default" or a network such as "10.1.0.0/16"
//! via = "192.168.30.1"              # must be inside a subnet of one of the machine's interfaces
//! ```
//!
//! A machine boots, configures its interfaces, routes and sysctls, then runs its startup lines
//! in order. Unknown keys are errors. Every error names the file, line and column, the item, and
//! what to change. `labs/article.toml` is the built-in lab written in this format.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::uml::ids::{IdError, check_umid};

/// Memory given to a machine whose lab does not say (UML 7.2 boots the article's machines in it).
pub const DEFAULT_MEM_MB: u32 = 64;

/// A whole lab: what `lab up` creates. Deserializing one (a saved lab state) does not validate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSpec {
    /// Names the lab's network namespace; prefixed by `with_prefix` for parallel copies.
    pub name: String,
    pub machines: Vec<MachineSpec>,
    pub domains: Vec<DomainSpec>,
}

/// One UML machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    pub umid: String,
    pub hostname: String,
    pub mem_mb: u32,
    /// In guest order; `name` is what the guest calls the interface (eth0, eth1, ...).
    pub interfaces: Vec<IfaceSpec>,
    pub routes: Vec<RouteSpec>,
    /// `(key, value)` in the order they are set, keys as `sysctl` writes them (`net.ipv4.ip_forward`).
    pub sysctls: Vec<(String, String)>,
    /// Shell lines run at boot in order, after interfaces, routes and sysctls.
    pub startup: Vec<String>,
}

/// One guest network interface, attached to one domain.
///
/// For a Kathará lab the addresses were read from the machine's startup lines, which still run:
/// a runtime that assigns `addresses` itself will see those lines' `ip address add` fail with
/// "Address already assigned", as they would on a second run in Kathará; they are not fatal there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceSpec {
    pub name: String,
    pub domain: String,
    pub addresses: Vec<IfAddr>,
}

/// An interface address with its prefix length: `192.168.10.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// A static route of one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// `"default"` or a network in CIDR form (`"10.1.0.0/16"`).
    pub dest: String,
    pub via: IpAddr,
}

/// One Ethernet segment: a bridge with one tap per attached interface, inside the lab's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSpec {
    pub name: String,
    /// The lab host's address on this domain (inside the lab's network namespace, never the
    /// host's own network).
    pub host_address: Option<IfAddr>,
}

/// Where in a source file something is. `column` is absent for line-oriented formats (lab.conf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        Ok(())
    }
}

impl Location {
    /// The line and column (1-based, in characters) of byte `offset` of `text`.
    pub fn from_offset(file: &Path, text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location {
            file: file.to_owned(),
            line,
            column: Some(column),
        }
    }
}

/// Something in a lab source that was accepted but not used (an unsupported Kathará option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub at: Location,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Why a lab cannot be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: not a lab: give a .toml lab file or a Kathará/Netkit lab directory holding lab.conf",
        path.display()
    )]
    NotALab { path: PathBuf },
    /// The text does not follow the format (TOML syntax, unknown key, wrong type, bad lab.conf line).
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// The text is well-formed but describes a lab that cannot be built.
    #[error("{}{problem}", where_prefix(at.as_ref(), lab))]
    Invalid {
        at: Option<Location>,
        lab: String,
        /// Boxed: the largest variant would otherwise make every `Result` of this module big.
        problem: Box<Problem>,
    },
}

fn where_prefix(at: Option<&Location>, lab: &str) -> String {
    match at {
        Some(at) => format!("{at}: "),
        None => format!("lab `{lab}`: "),
    }
}

impl SpecError {
    /// The validation problem, when that is what this error is.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            SpecError::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// Where in a file the error is, when it came from one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            SpecError::Syntax { at, .. } => Some(at),
            SpecError::Invalid { at, .. } => at.as_ref(),
            _ => None,
        }
    }
}

/// What is wrong with a well-formed lab. Each message names the item and says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the lab has no machines: add at least one")]
    EmptyLab,
    #[error("lab name `{name}` {reason}")]
    BadLabName { name: String, reason: String },
    #[error("{error}")]
    BadUmid { error: IdError },
    #[error("umid `{umid}` is used by two machines: give each machine its own umid")]
    DuplicateUmid { umid: String },
    #[error(
        "machine `{machine}`: hostname `{hostname}` {reason}: use letters, digits, `-` and `_` \
         in dot-separated labels of 1 to 63 characters, 64 in all"
    )]
    BadHostname {
        machine: String,
        hostname: String,
        reason: String,
    },
    #[error(
        "machine `{machine}`: memory = {mem_mb} MiB is more than this host has ({host_mb} MiB): give it less, e.g. {DEFAULT_MEM_MB}"
    )]
    TooMuchMemory {
        machine: String,
        mem_mb: u32,
        host_mb: u64,
    },
    #[error(
        "machine `{machine}`: memory = {mem_mb} MiB is too little: a UML machine needs at least {MIN_MEM_MB}, e.g. {DEFAULT_MEM_MB}"
    )]
    ZeroMemory { machine: String, mem_mb: u32 },
    #[error("domain name `{domain}` {reason}")]
    BadDomainName { domain: String, reason: String },
    #[error("domain `{domain}` is declared twice: remove one or rename it")]
    DuplicateDomain { domain: String },
    #[error(
        "machine `{machine}` interface {iface}: unknown domain `{domain}` (domains: {known}): \
         declare it or use one of those"
    )]
    UnknownDomain {
        machine: String,
        iface: String,
        domain: String,
        known: String,
    },
    #[error("machine `{machine}`: interface name `{iface}` {reason}")]
    BadIfaceName {
        machine: String,
        iface: String,
        reason: String,
    },
    #[error("machine `{machine}` has two interfaces named {iface}: rename one")]
    DuplicateIface { machine: String, iface: String },
    #[error("{owner}: `{text}` is not a usable address: {reason}")]
    BadAddress {
        owner: String,
        text: String,
        reason: String,
    },
    #[error(
        "domain `{domain}`: address {addr} is held by both {first} and {second}: \
         give each its own address"
    )]
    DuplicateAddress {
        domain: String,
        addr: IpAddr,
        first: String,
        second: String,
    },
    #[error(
        "{owner}: {a} and {b} are in overlapping subnets on two interfaces ({a_iface}, {b_iface}): \
         put each interface in a subnet of its own"
    )]
    OverlappingSubnets {
        owner: String,
        a: IfAddr,
        a_iface: String,
        b: IfAddr,
        b_iface: String,
    },
    #[error("machine `{machine}` route `{dest}`: {reason}")]
    BadRoute {
        machine: String,
        dest: String,
        reason: String,
    },
    #[error("machine `{machine}` has two routes to {dest}: keep one")]
    DuplicateRoute { machine: String, dest: String },
    #[error(
        "machine `{machine}` route {dest} via {via}: the gateway is in none of the machine's \
         subnets ({subnets}): give an interface an address in the gateway's subnet or fix `via`"
    )]
    GatewayUnreachable {
        machine: String,
        dest: String,
        via: IpAddr,
        subnets: String,
    },
    #[error(
        "machine `{machine}` route {dest} via {via}: the gateway is the machine's own address: \
         use a neighbour's address"
    )]
    GatewayIsSelf {
        machine: String,
        dest: String,
        via: IpAddr,
    },
    #[error("machine `{machine}`: sysctl `{key}` {reason}")]
    BadSysctl {
        machine: String,
        key: String,
        reason: String,
    },
    #[error("machine `{machine}` sets sysctl `{key}` twice: keep one")]
    DuplicateSysctl { machine: String, key: String },
    #[error("machine `{machine}` startup line {number}: {reason}")]
    BadStartupLine {
        machine: String,
        number: usize,
        reason: String,
    },
}

/// Why a text is not an [`IfAddr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("no prefix length: write it as address/prefix, e.g. 192.168.10.2/24")]
    MissingPrefix,
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    BadIp(String),
    #[error("`{0}` is not a prefix length")]
    BadPrefix(String),
    #[error("prefix /{prefix} is longer than {max}, the most an {family} address has")]
    PrefixTooLong {
        prefix: u8,
        max: u8,
        family: &'static str,
    },
}

impl IfAddr {
    /// Builds an address, refusing a prefix longer than the family allows.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IfAddr, AddrError> {
        let a = IfAddr { addr, prefix };
        if prefix > a.max_prefix() {
            return Err(AddrError::PrefixTooLong {
                prefix,
                max: a.max_prefix(),
                family: a.family(),
            });
        }
        Ok(a)
    }

    /// 32 for IPv4, 128 for IPv6.
    pub fn max_prefix(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    fn family(&self) -> &'static str {
        if self.addr.is_ipv4() { "IPv4" } else { "IPv6" }
    }

    /// The address as bits in a u128, and the prefix counted from bit 127 (one code path for
    /// both families: IPv4 is placed in the top 32 bits).
    fn bits(&self) -> (u128, u32, u32) {
        match self.addr {
            IpAddr::V4(a) => (
                (u32::from(a) as u128) << 96,
                32,
                u32::from(self.prefix.min(32)),
            ),
            IpAddr::V6(a) => (u128::from(a), 128, u32::from(self.prefix.min(128))),
        }
    }

    fn mask(prefix: u32) -> u128 {
        if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        }
    }

    fn with_bits(&self, bits: u128) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((bits >> 96) as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
        }
    }

    /// The first address of the subnet (host bits cleared).
    pub fn network(&self) -> IpAddr {
        let (b, _, p) = self.bits();
        self.with_bits(b & Self::mask(p))
    }

    /// The last address of the subnet (host bits set): the IPv4 broadcast address.
    pub fn last(&self) -> IpAddr {
        let (b, width, p) = self.bits();
        let host = !Self::mask(p) & Self::mask(width);
        self.with_bits(b | host)
    }

    /// The subnet as an `IfAddr` (`192.168.10.0/24`).
    pub fn subnet(&self) -> IfAddr {
        IfAddr {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// Whether `ip` is inside this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let other = IfAddr {
            addr: ip,
            prefix: self.prefix,
        };
        other.network() == self.network()
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &IfAddr) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() {
            return false;
        }
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if self.prefix <= other.prefix {
            other
        } else {
            self
        };
        shorter.contains(longer.addr)
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IfAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<IfAddr, AddrError> {
        let (ip, prefix) = s.trim().split_once('/').ok_or(AddrError::MissingPrefix)?;
        let ip: IpAddr = ip.parse().map_err(|_| AddrError::BadIp(ip.to_owned()))?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AddrError::BadPrefix(prefix.to_owned()));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| AddrError::BadPrefix(prefix.to_owned()))?;
        IfAddr::new(ip, prefix)
    }
}

impl Serialize for IfAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IfAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IfAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A route's destination, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDest {
    Default,
    Net(IfAddr),
}

impl RouteSpec {
    /// Parses `dest`; a network must have no host bits set (`ip route` refuses those).
    pub fn parsed_dest(&self) -> Result<RouteDest, String> {
        if self.dest == "default" {
            return Ok(RouteDest::Default);
        }
        let net: IfAddr = self
            .dest
            .parse()
            .map_err(|e: AddrError| format!("not `default` nor a network: {e}"))?;
        if net.network() != net.addr {
            return Err(format!("has host bits set: write {}", net.subnet()));
        }
        Ok(RouteDest::Net(net))
    }
}

impl LabSpec {
    /// The machine with this umid.
    pub fn machine(&self, umid: &str) -> Option<&MachineSpec> {
        self.machines.iter().find(|m| m.umid == umid)
    }

    /// The domain with this name.
    pub fn domain(&self, name: &str) -> Option<&DomainSpec> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// Parses and validates a TOML lab; `origin` is the file name used in error messages and,
    /// when the text has no `name`, the source of the lab's name.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<LabSpec, SpecError> {
        let raw: RawLab = toml::from_str(text).map_err(|e| SpecError::Syntax {
            at: Location::from_offset(origin, text, e.span().map_or(0, |s| s.start)),
            message: one_line(e.message()),
        })?;
        let mut map = SourceMap::default();
        let mut convert = Converter {
            origin,
            text,
            map: &mut map,
            problems: Vec::new(),
        };
        let spec = convert.lab(raw);
        let problems = std::mem::take(&mut convert.problems);
        if let Some((item, problem)) = problems.into_iter().next() {
            return Err(map.error(item, &spec.name, problem));
        }
        spec.validate_with(&map)?;
        Ok(spec)
    }

    /// Loads a lab from a `.toml` file or a Kathará/Netkit directory (one holding `lab.conf`,
    /// or that `lab.conf` itself). Warnings about unused Kathará options go to the log.
    pub fn load(path: &Path) -> Result<LabSpec, SpecError> {
        let (spec, warnings) = LabSpec::load_with_warnings(path)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(spec)
    }

    /// As [`LabSpec::load`], returning the warnings for the caller to show.
    pub fn load_with_warnings(path: &Path) -> Result<(LabSpec, Vec<Warning>), SpecError> {
        let dir = if path.is_dir() {
            Some(path.to_owned())
        } else if path.file_name().is_some_and(|n| n == "lab.conf") {
            Some(
                path.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_owned),
            )
        } else {
            None
        };
        if let Some(dir) = dir {
            if !dir.join("lab.conf").is_file() {
                return Err(SpecError::NotALab {
                    path: path.to_owned(),
                });
            }
            let lab = crate::lab::kathara::load_dir(&dir)?;
            return Ok((lab.spec, lab.warnings));
        }
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok((LabSpec::from_toml_str(&text, path)?, Vec::new()))
    }

    /// Checks that the lab can be built. Specs from [`LabSpec::load`] are already checked (with
    /// file positions in errors); call this on specs built in code or changed after loading.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_with(&SourceMap::default())
    }

    pub(crate) fn validate_with(&self, map: &SourceMap) -> Result<(), SpecError> {
        match self.problems().into_iter().next() {
            Some((item, problem)) => Err(map.error(item, &self.name, problem)),
            None => Ok(()),
        }
    }

    /// A copy whose lab name and umids start with `prefix` (used as given: include a separator
    /// such as `t1-` yourself). Domains and hostnames are unchanged: they live inside the lab's
    /// own namespace and guests, so copies cannot collide on them. Validate the result: a long
    /// prefix can push a umid past UML's 63 characters.
    pub fn with_prefix(&self, prefix: &str) -> LabSpec {
        let mut spec = self.clone();
        spec.name = format!("{prefix}{}", spec.name);
        for m in &mut spec.machines {
            m.umid = format!("{prefix}{}", m.umid);
        }
        spec
    }

    /// Every problem of the lab, in the order of the source, tagged with the item it is about.
    fn problems(&self) -> Vec<(Item, Problem)> {
        let mut out = Vec::new();
        if let Err(reason) = check_word(&self.name) {
            out.push((
                Item::LabName,
                Problem::BadLabName {
                    name: self.name.clone(),
                    reason,
                },
            ));
        }
        if self.machines.is_empty() {
            out.push((Item::Lab, Problem::EmptyLab));
        }
        self.domain_problems(&mut out);
        let mut umids = HashSet::new();
        for (mi, m) in self.machines.iter().enumerate() {
            if let Err(error) = check_umid(&m.umid) {
                out.push((Item::Umid(mi), Problem::BadUmid { error }));
            } else if !umids.insert(m.umid.as_str()) {
                out.push((
                    Item::Umid(mi),
                    Problem::DuplicateUmid {
                        umid: m.umid.clone(),
                    },
                ));
            }
            self.machine_problems(mi, m, &mut out);
        }
        self.address_conflicts(&mut out);
        // Problems are found in several passes; report them in source order so the first one a
        // user sees is the first one in the file.
        out.sort_by_key(|(item, _)| item.order());
        out
    }

    fn domain_problems(&self, out: &mut Vec<(Item, Problem)>) {
        let mut seen = HashSet::new();
        for (di, d) in self.domains.iter().enumerate() {
            if let Err(reason) = check_word(&d.name) {
                let p = Problem::BadDomainName {
                    domain: d.name.clone(),
                    reason,
                };
                out.push((Item::DomainName(di), p));
            } else if !seen.insert(d.name.as_str()) {
                out.push((
                    Item::DomainName(di),
                    Problem::DuplicateDomain {
                        domain: d.name.clone(),
                    },
                ));
            }
            if let Some(a) = &d.host_address
                && let Err(reason) = check_host_addr(a)
            {
                let owner = format!("domain `{}` host_address", d.name);
                let p = Problem::BadAddress {
                    owner,
                    text: a.to_string(),
                    reason,
                };
                out.push((Item::DomainHost(di), p));
            }
        }
    }

    fn machine_problems(&self, mi: usize, m: &MachineSpec, out: &mut Vec<(Item, Problem)>) {
        let machine = || m.umid.clone();
        if let Err(reason) = check_hostname(&m.hostname) {
            let p = Problem::BadHostname {
                machine: machine(),
                hostname: m.hostname.clone(),
                reason,
            };
            out.push((Item::Hostname(mi), p));
        }
        if m.mem_mb < MIN_MEM_MB {
            out.push((
                Item::Memory(mi),
                Problem::ZeroMemory {
                    machine: machine(),
                    mem_mb: m.mem_mb,
                },
            ));
        }
        if let Some(host) = host_memory_mb()
            && u64::from(m.mem_mb) > host
        {
            let p = Problem::TooMuchMemory {
                machine: machine(),
                mem_mb: m.mem_mb,
                host_mb: host,
            };
            out.push((Item::Memory(mi), p));
        }
        let mut names = HashSet::new();
        for (ii, iface) in m.interfaces.iter().enumerate() {
            if let Err(reason) = check_iface_name(&iface.name) {
                let p = Problem::BadIfaceName {
                    machine: machine(),
                    iface: iface.name.clone(),
                    reason,
                };
                out.push((Item::IfaceName(mi, ii), p));
            } else if !names.insert(iface.name.as_str()) {
                let p = Problem::DuplicateIface {
                    machine: machine(),
                    iface: iface.name.clone(),
                };
                out.push((Item::IfaceName(mi, ii), p));
            }
            if self.domain(&iface.domain).is_none() {
                let known: Vec<&str> = self.domains.iter().map(|d| d.name.as_str()).collect();
                let known = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                let p = Problem::UnknownDomain {
                    machine: machine(),
                    iface: iface.name.clone(),
                    domain: iface.domain.clone(),
                    known,
                };
                out.push((Item::IfaceDomain(mi, ii), p));
            }
            for (ai, a) in iface.addresses.iter().enumerate() {
                if let Err(reason) = check_host_addr(a) {
                    let owner = format!("machine `{}` interface {}", m.umid, iface.name);
                    let p = Problem::BadAddress {
                        owner,
                        text: a.to_string(),
                        reason,
                    };
                    out.push((Item::IfaceAddr(mi, ii, ai), p));
                }
            }
        }
        self.route_problems(mi, m, out);
        let mut keys = HashSet::new();
        for (si, (key, value)) in m.sysctls.iter().enumerate() {
            let reason = check_sysctl_key(key).err().or_else(|| {
                let bad = value.is_empty() || value.contains(['\n', '\r', '\0']);
                bad.then(|| format!("has value {value:?}: give a one-line, non-empty value"))
            });
            if let Some(reason) = reason {
                let p = Problem::BadSysctl {
                    machine: machine(),
                    key: key.clone(),
                    reason,
                };
                out.push((Item::Sysctl(mi, si), p));
            } else if !keys.insert(key.replace('/', ".")) {
                let p = Problem::DuplicateSysctl {
                    machine: machine(),
                    key: key.clone(),
                };
                out.push((Item::Sysctl(mi, si), p));
            }
        }
        for (li, line) in m.startup.iter().enumerate() {
            let reason = if line.contains(['\n', '\r']) {
                Some("holds a line break: split it into one entry per line")
            } else if line.contains('\0') {
                Some("holds a NUL character: remove it")
            } else {
                None
            };
            if let Some(reason) = reason {
                let p = Problem::BadStartupLine {
                    machine: machine(),
                    number: li + 1,
                    reason: reason.to_owned(),
                };
                out.push((Item::Startup(mi, li), p));
            }
        }
    }

    fn route_problems(&self, mi: usize, m: &MachineSpec, out: &mut Vec<(Item, Problem)>) {
        let own: Vec<(&str, IfAddr)> = m
            .interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().map(move |a| (i.name.as_str(), *a)))
            .filter(|(_, a)| a.prefix <= a.max_prefix())
            .collect();
        let mut dests = HashSet::new();
        for (ri, r) in m.routes.iter().enumerate() {
            let bad = |reason: String| Problem::BadRoute {
                machine: m.umid.clone(),
                dest: r.dest.clone(),
                reason,
            };
            let dest = match r.parsed_dest() {
                Ok(d) => d,
                Err(reason) => {
                    out.push((Item::RouteDest(mi, ri), bad(reason)));
                    continue;
                }
            };
            if let RouteDest::Net(net) = dest
                && net.addr.is_ipv4() != r.via.is_ipv4()
            {
                let reason = format!(
                    "the network and the gateway {} are of different IP versions",
                    r.via
                );
                out.push((Item::RouteVia(mi, ri), bad(reason)));
                continue;
            }
            let key = match dest {
                RouteDest::Default => format!("default/{}", r.via.is_ipv4()),
                RouteDest::Net(n) => n.to_string(),
            };
            if !dests.insert(key) {
                let p = Problem::DuplicateRoute {
                    machine: m.umid.clone(),
                    dest: r.dest.clone(),
                };
                out.push((Item::RouteDest(mi, ri), p));
                continue;
            }
            if own.iter().any(|(_, a)| a.addr == r.via) {
                let p = Problem::GatewayIsSelf {
                    machine: m.umid.clone(),
                    dest: r.dest.clone(),
                    via: r.via,
                };
                out.push((Item::RouteVia(mi, ri), p));
            } else if !own.iter().any(|(_, a)| a.contains(r.via)) {
                let subnets: Vec<String> = own
                    .iter()
                    .map(|(i, a)| format!("{} on {i}", a.subnet()))
                    .collect();
                let subnets = if subnets.is_empty() {
                    "it has no addresses".to_owned()
                } else {
                    subnets.join(", ")
                };
                let p = Problem::GatewayUnreachable {
                    machine: m.umid.clone(),
                    dest: r.dest.clone(),
                    via: r.via,
                    subnets,
                };
                out.push((Item::RouteVia(mi, ri), p));
            }
        }
    }

    /// Same address twice on one domain, and overlapping subnets on two interfaces of one
    /// machine (or of the lab host, whose domains all end in one network stack).
    fn address_conflicts(&self, out: &mut Vec<(Item, Problem)>) {
        struct Holder {
            item: Item,
            owner: String,
            iface: String,
            domain: String,
            addr: IfAddr,
        }
        let mut holders: Vec<Holder> = Vec::new();
        for (di, d) in self.domains.iter().enumerate() {
            if let Some(a) = d.host_address {
                holders.push(Holder {
                    item: Item::DomainHost(di),
                    owner: "the lab host".to_owned(),
                    iface: format!("domain {}", d.name),
                    domain: d.name.clone(),
                    addr: a,
                });
            }
        }
        for (mi, m) in self.machines.iter().enumerate() {
            for (ii, i) in m.interfaces.iter().enumerate() {
                for (ai, a) in i.addresses.iter().enumerate() {
                    holders.push(Holder {
                        item: Item::IfaceAddr(mi, ii, ai),
                        owner: format!("machine `{}`", m.umid),
                        iface: i.name.clone(),
                        domain: i.domain.clone(),
                        addr: *a,
                    });
                }
            }
        }
        holders.retain(|h| h.addr.prefix <= h.addr.max_prefix());
        holders.sort_by_key(|h| h.item.order());
        for (n, h) in holders.iter().enumerate() {
            for earlier in &holders[..n] {
                if earlier.domain == h.domain && earlier.addr.addr == h.addr.addr {
                    let p = Problem::DuplicateAddress {
                        domain: h.domain.clone(),
                        addr: h.addr.addr,
                        first: format!("{} {}", earlier.owner, earlier.iface),
                        second: format!("{} {}", h.owner, h.iface),
                    };
                    out.push((h.item, p));
                    break;
                }
                if earlier.owner == h.owner
                    && earlier.iface != h.iface
                    && earlier.addr.overlaps(&h.addr)
                {
                    let p = Problem::OverlappingSubnets {
                        owner: h.owner.clone(),
                        a: earlier.addr,
                        a_iface: earlier.iface.clone(),
                        b: h.addr,
                        b_iface: h.iface.clone(),
                    };
                    out.push((h.item, p));
                    break;
                }
            }
        }
    }
}

/// Lab and domain names: they name a network namespace and appear in bridge and file names.
fn check_word(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty: give it a name".to_owned());
    }
    if s.len() > 63 {
        return Err(format!("is {} characters long: use at most 63", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(format!(
            "contains {c:?}: use only letters, digits, `-`, `_` and `.`"
        ));
    }
    if s.starts_with(['.', '-']) {
        return Err("starts with `.` or `-`: start it with a letter, digit or `_`".to_owned());
    }
    Ok(())
}

/// Hostnames as `hostname(1)` and resolvers take them; `_` is allowed because Kathará machine
/// names (which become hostnames) often have one, and the guest's kernel does not mind.
fn check_hostname(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".to_owned());
    }
    if s.len() > 64 {
        return Err(format!("is {} characters long", s.len()));
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty or over-long label".to_owned());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_".contains(*c)))
        {
            return Err(format!("contains {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label that starts or ends with `-`".to_owned());
        }
    }
    Ok(())
}

/// Linux interface names: at most 15 bytes (IFNAMSIZ less the NUL), no `/`, `:` or spaces.
fn check_iface_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!(
            "must be 1 to 15 characters, not {}: e.g. eth0",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(format!(
            "contains {c:?}: use letters, digits, `-`, `_` and `.`, e.g. eth0"
        ));
    }
    if s == "." || s == ".." || s == "lo" {
        return Err("is reserved: use another name, e.g. eth0".to_owned());
    }
    Ok(())
}

/// An address that a machine or the lab host can hold on a segment.
fn check_host_addr(a: &IfAddr) -> Result<(), String> {
    if a.prefix > a.max_prefix() {
        return Err(format!(
            "prefix /{} is longer than {}",
            a.prefix,
            a.max_prefix()
        ));
    }
    if a.prefix == 0 {
        return Err(
            "prefix /0 covers every address: give the subnet's length, e.g. /24".to_owned(),
        );
    }
    let ip = a.addr;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(
            "it is an unspecified, loopback or multicast address: use a unicast one".to_owned(),
        );
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err("it is the broadcast address: use a unicast one".to_owned());
        }
        // /31 and /32 have no network or broadcast address (RFC 3021).
        if a.prefix <= 30 {
            if ip == a.network() {
                return Err(format!(
                    "it is the network address of {}: use a host address inside it",
                    a.subnet()
                ));
            }
            if ip == a.last() {
                return Err(format!(
                    "it is the broadcast address of {}: use a host address inside it",
                    a.subnet()
                ));
            }
        }
    }
    Ok(())
}

/// Sysctl keys as `sysctl -w` takes them; `..` and empty parts would walk out of /proc/sys.
fn check_sysctl_key(key: &str) -> Result<(), String> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-:@+".contains(c))
    };
    if key.is_empty() || !key.split(['.', '/']).all(ok_part) {
        return Err("is not a sysctl name: write it like net.ipv4.ip_forward".to_owned());
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One part of a lab, named by position, so that a problem found in a `LabSpec` can be traced
/// back to the line of the file it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Item {
    Lab,
    LabName,
    Domain(usize),
    DomainName(usize),
    DomainHost(usize),
    Machine(usize),
    Umid(usize),
    Hostname(usize),
    Memory(usize),
    Iface(usize, usize),
    IfaceName(usize, usize),
    IfaceDomain(usize, usize),
    IfaceAddr(usize, usize, usize),
    Route(usize, usize),
    RouteDest(usize, usize),
    RouteVia(usize, usize),
    Sysctl(usize, usize),
    Startup(usize, usize),
}

impl Item {
    /// The enclosing item, used when a part has no position of its own (a defaulted field).
    fn parent(self) -> Option<Item> {
        use Item::*;
        Some(match self {
            Lab => return None,
            LabName => Lab,
            Domain(_) => Lab,
            DomainName(d) | DomainHost(d) => Domain(d),
            Machine(_) => Lab,
            Umid(m) | Hostname(m) | Memory(m) => Machine(m),
            Iface(m, _) | Route(m, _) | Sysctl(m, _) | Startup(m, _) => Machine(m),
            IfaceName(m, i) | IfaceDomain(m, i) | IfaceAddr(m, i, _) => Iface(m, i),
            RouteDest(m, r) | RouteVia(m, r) => Route(m, r),
        })
    }

    /// A sort key following the order of a lab file: lab, domains, then each machine's parts.
    fn order(self) -> (usize, usize, usize, usize, usize) {
        use Item::*;
        match self {
            Lab => (0, 0, 0, 0, 0),
            LabName => (0, 1, 0, 0, 0),
            Domain(d) => (1, d, 0, 0, 0),
            DomainName(d) => (1, d, 1, 0, 0),
            DomainHost(d) => (1, d, 2, 0, 0),
            Machine(m) => (2, m, 0, 0, 0),
            Umid(m) => (2, m, 1, 0, 0),
            Hostname(m) => (2, m, 2, 0, 0),
            Memory(m) => (2, m, 3, 0, 0),
            Iface(m, i) => (2, m, 4, i, 0),
            IfaceName(m, i) => (2, m, 4, i, 1),
            IfaceDomain(m, i) => (2, m, 4, i, 2),
            IfaceAddr(m, i, a) => (2, m, 4, i, 3 + a),
            Route(m, r) => (2, m, 5, r, 0),
            RouteDest(m, r) => (2, m, 5, r, 1),
            RouteVia(m, r) => (2, m, 5, r, 2),
            Sysctl(m, s) => (2, m, 6, s, 0),
            Startup(m, s) => (2, m, 7, s, 0),
        }
    }
}

/// Positions of a lab's items in its source files.
#[derive(Debug, Default)]
pub(crate) struct SourceMap {
    map: HashMap<Item, Location>,
}

impl SourceMap {
    pub(crate) fn set(&mut self, item: Item, at: Location) {
        self.map.insert(item, at);
    }

    /// The position of `item`, else of the nearest enclosing item that has one.
    fn locate(&self, mut item: Item) -> Option<Location> {
        loop {
            if let Some(at) = self.map.get(&item) {
                return Some(at.clone());
            }
            item = item.parent()?;
        }
    }

    pub(crate) fn error(&self, item: Item, lab: &str, problem: Problem) -> SpecError {
        SpecError::Invalid {
            at: self.locate(item),
            lab: lab.to_owned(),
            problem: Box::new(problem),
        }
    }
}

// ---- TOML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    name: Option<Spanned<String>>,
    #[serde(default)]
    domain: Vec<Spanned<RawDomain>>,
    #[serde(default)]
    machine: Vec<Spanned<RawMachine>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Spanned<String>,
    host_address: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    umid: Spanned<String>,
    hostname: Option<Spanned<String>>,
    memory: Option<Spanned<u32>>,
    #[serde(default)]
    sysctls: Sysctls,
    #[serde(default)]
    startup: Vec<Spanned<String>>,
    #[serde(default)]
    interface: Vec<Spanned<RawIface>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIface {
    name: Option<Spanned<String>>,
    domain: Spanned<String>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    dest: Spanned<String>,
    via: Spanned<String>,
}

/// The `sysctls` table flattened to `(dotted key, value)` in document order. The toml crate
/// hands table entries over sorted by key, so the order is rebuilt from the values' positions;
/// nested tables (from unquoted dotted keys) are joined back with dots.
#[derive(Default)]
struct Sysctls(Vec<(String, Spanned<String>)>);

enum SysctlValue {
    Scalar(String),
    Table(Vec<(String, Spanned<SysctlValue>)>),
}

impl<'de> Deserialize<'de> for SysctlValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SysctlValue, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SysctlValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sysctl value: a string, an integer or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SysctlValue, E> {
                Ok(SysctlValue::Scalar(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SysctlValue, E> {
                Ok(SysctlValue::Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SysctlValue, E> {
                Ok(SysctlValue::Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SysctlValue, E> {
                Ok(SysctlValue::Scalar(if v { "1" } else { "0" }.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SysctlValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    entries.push((k, map.next_value::<Spanned<SysctlValue>>()?));
                }
                Ok(SysctlValue::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Sysctls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sysctls, D::Error> {
        fn flatten(
            prefix: &str,
            v: Spanned<SysctlValue>,
            out: &mut Vec<(String, Spanned<String>)>,
        ) {
            let span = v.span();
            match v.into_inner() {
                SysctlValue::Scalar(s) => out.push((prefix.to_owned(), Spanned::new(span, s))),
                SysctlValue::Table(entries) => {
                    for (k, v) in entries {
                        flatten(&format!("{prefix}.{k}"), v, out);
                    }
                }
            }
        }
        let top = Spanned::<SysctlValue>::deserialize(d)?;
        let SysctlValue::Table(entries) = top.into_inner() else {
            return Err(de::Error::custom(
                "sysctls must be a table, e.g. sysctls = { \"net.ipv4.ip_forward\" = 1 }",
            ));
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            flatten(&k, v, &mut out);
        }
        out.sort_by_key(|(_, v)| v.span().start);
        Ok(Sysctls(out))
    }
}

/// Turns the raw TOML into a `LabSpec`, recording where each item was and collecting the
/// problems (unparsable addresses) that a `LabSpec` cannot represent.
struct Converter<'a> {
    origin: &'a Path,
    text: &'a str,
    map: &'a mut SourceMap,
    problems: Vec<(Item, Problem)>,
}

impl Converter<'_> {
    fn at<T>(&mut self, item: Item, s: &Spanned<T>) {
        let loc = Location::from_offset(self.origin, self.text, s.span().start);
        self.map.set(item, loc);
    }

    fn lab(&mut self, raw: RawLab) -> LabSpec {
        let name = match &raw.name {
            Some(n) => {
                self.at(Item::LabName, n);
                n.get_ref().clone()
            }
            None => self
                .origin
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into()),
        };
        self.map
            .set(Item::Lab, Location::from_offset(self.origin, self.text, 0));
        let domains = raw
            .domain
            .into_iter()
            .enumerate()
            .map(|(di, d)| self.domain(di, d))
            .collect();
        let machines = raw
            .machine
            .into_iter()
            .enumerate()
            .map(|(mi, m)| self.machine(mi, m))
            .collect();
        LabSpec {
            name,
            machines,
            domains,
        }
    }

    fn domain(&mut self, di: usize, d: Spanned<RawDomain>) -> DomainSpec {
        self.at(Item::Domain(di), &d);
        let d = d.into_inner();
        self.at(Item::DomainName(di), &d.name);
        let host_address = d.host_address.and_then(|a| {
            self.at(Item::DomainHost(di), &a);
            let owner = format!("domain `{}` host_address", d.name.get_ref());
            self.addr(Item::DomainHost(di), owner, a.get_ref())
        });
        DomainSpec {
            name: d.name.into_inner(),
            host_address,
        }
    }

    fn addr(&mut self, item: Item, owner: String, text: &str) -> Option<IfAddr> {
        match text.parse::<IfAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                let p = Problem::BadAddress {
                    owner,
                    text: text.to_owned(),
                    reason: e.to_string(),
                };
                self.problems.push((item, p));
                None
            }
        }
    }

    fn machine(&mut self, mi: usize, m: Spanned<RawMachine>) -> MachineSpec {
        self.at(Item::Machine(mi), &m);
        let m = m.into_inner();
        self.at(Item::Umid(mi), &m.umid);
        let umid = m.umid.into_inner();
        let hostname = match m.hostname {
            Some(h) => {
                self.at(Item::Hostname(mi), &h);
                h.into_inner()
            }
            None => umid.clone(),
        };
        let mem_mb = match m.memory {
            Some(mem) => {
                self.at(Item::Memory(mi), &mem);
                mem.into_inner()
            }
            None => DEFAULT_MEM_MB,
        };
        let mut interfaces = Vec::new();
        for (ii, i) in m.interface.into_iter().enumerate() {
            self.at(Item::Iface(mi, ii), &i);
            let i = i.into_inner();
            let name = match i.name {
                Some(n) => {
                    self.at(Item::IfaceName(mi, ii), &n);
                    n.into_inner()
                }
                None => format!("eth{ii}"),
            };
            self.at(Item::IfaceDomain(mi, ii), &i.domain);
            let mut addresses = Vec::new();
            for (ai, a) in i.addresses.iter().enumerate() {
                let item = Item::IfaceAddr(mi, ii, ai);
                self.at(item, a);
                let owner = format!("machine `{umid}` interface {name}");
                addresses.extend(self.addr(item, owner, a.get_ref()));
            }
            interfaces.push(IfaceSpec {
                name,
                domain: i.domain.into_inner(),
                addresses,
            });
        }
        let mut routes = Vec::new();
        for (ri, r) in m.route.into_iter().enumerate() {
            self.at(Item::Route(mi, ri), &r);
            let r = r.into_inner();
            self.at(Item::RouteDest(mi, ri), &r.dest);
            self.at(Item::RouteVia(mi, ri), &r.via);
            match r.via.get_ref().parse::<IpAddr>() {
                Ok(via) => routes.push(RouteSpec {
                    dest: r.dest.into_inner(),
                    via,
                }),
                Err(_) => {
                    let p = Problem::BadRoute {
                        machine: umid.clone(),
                        dest: r.dest.into_inner(),
                        reason: format!(
                            "via `{}` is not an IP address: give the gateway's address, e.g. 192.168.10.1",
                            r.via.get_ref()
                        ),
                    };
                    self.problems.push((Item::RouteVia(mi, ri), p));
                }
            }
        }
        let mut sysctls = Vec::new();
        for (si, (k, v)) in m.sysctls.0.into_iter().enumerate() {
            self.at(Item::Sysctl(mi, si), &v);
            sysctls.push((k, v.into_inner()));
        }
        let mut startup = Vec::new();
        for (li, line) in m.startup.into_iter().enumerate() {
            self.at(Item::Startup(mi, li), &line);
            startup.push(line.into_inner());
        }
        MachineSpec {
            umid,
            hostname,
            mem_mb,
            interfaces,
            routes,
            sysctls,
            startup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IfAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ifaddr_round_trips_and_computes_subnets() {
        assert_eq!(a("192.168.10.2/24").to_string(), "192.168.10.2/24");
        assert_eq!(a("192.168.10.2/24").network().to_string(), "192.168.10.0");
        assert_eq!(a("192.168.10.2/24").last().to_string(), "192.168.10.255");
        assert_eq!(a("2001:db8::1/64").network().to_string(), "2001:db8::");
        assert!(a("10.0.0.1/8").contains("10.255.0.1".parse().unwrap()));
        assert!(!a("10.0.0.1/8").contains("11.0.0.1".parse().unwrap()));
        assert!(!a("10.0.0.1/8").contains("::1".parse().unwrap()));
        assert!(a("10.0.0.1/8").overlaps(&a("10.1.0.1/16")));
        assert!(!a("10.0.0.1/24").overlaps(&a("10.0.1.1/24")));
        assert!(a("1.2.3.4/0").contains("200.0.0.1".parse().unwrap()));
    }

    #[test]
    fn ifaddr_rejects_bad_text() {
        assert_eq!("10.0.0.1".parse::<IfAddr>(), Err(AddrError::MissingPrefix));
        assert!(matches!(
            "10.0.0.300/24".parse::<IfAddr>(),
            Err(AddrError::BadIp(_))
        ));
        assert!(matches!(
            "10.0.0.1/x".parse::<IfAddr>(),
            Err(AddrError::BadPrefix(_))
        ));
        assert!(matches!(
            "10.0.0.1/33".parse::<IfAddr>(),
            Err(AddrError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            "::1/129".parse::<IfAddr>(),
            Err(AddrError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            "10.0.0.1/999".parse::<IfAddr>(),
            Err(AddrError::BadPrefix(_))
        ));
    }

    #[test]
    fn location_counts_lines_and_characters() {
        let l = Location::from_offset(Path::new("f"), "ab\nçd\nx", 5);
        assert_eq!((l.line, l.column), (2, Some(2)));
        assert_eq!(l.to_string(), "f:2:2");
    }
}

/// The least memory a UML kernel boots with ("Too few physical memory! Needed=12582912").
pub const MIN_MEM_MB: u32 = 16;

/// The host's memory in MiB (`MemTotal`), if it can be read.
fn host_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}
