//! What a lab is made of: machines, their interfaces (with addresses and MACs), routes, sysctls,
//! environment, startup and shutdown scripts, folders and boot dependencies, and the domains
//! (Ethernet segments) that join them. Parsed from a TOML lab file or a Kathará/Netkit directory
//! (see `kathara`), checked before anything is created.
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
//! env = { ROLE = "router" }         # optional: environment of the startup and the console
//! image = "kathara/frr"             # optional: boot from a root image (`umldbg image list`)
//! depends_on = ["client-uml-A"]     # optional: machines that boot before this one
//! startup = ["iptables-legacy -t nat -A POSTROUTING -o eth1 -j MASQUERADE"]
//!
//! [[machine.interface]]             # in guest order: eth0, eth1, ...
//! name = "eth0"                     # optional: defaults to eth<position>
//! domain = "lan-a"                  # must be a [[domain]] of this file
//! addresses = ["192.168.10.1/24"]   # address/prefix, IPv4 or IPv6
//! mac = "02:00:00:00:0a:01"         # optional: unicast MAC, set before the interface is up
//!
//! [[machine.route]]
//! dest = "default"                  # "default" or a network such as "10.1.0.0/16"
//! via = "192.168.30.1"              # must be inside a subnet of one of the machine's interfaces
//! ```
//!
//! A machine boots, configures its interfaces, routes and sysctls, then runs its startup lines
//! in order. Machines are listed in boot order: a machine comes after those it depends on.
//! Unknown keys are errors. Every error names the file, line and column, the item, and what to
//! change. `labs/article.toml` is the built-in lab written in this format.

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

/// The image a machine boots from when its lab names one umldbg has no recipe for.
pub const FALLBACK_IMAGE: &str = "kathara/base";

/// What a warning about an unknown `image` says after naming it; `None` for an image umldbg
/// builds (a built-in recipe or an alias of one, or a recipe file that exists).
pub fn unknown_image(image: &str) -> Option<String> {
    if crate::image::recipe::is_builtin(image) || std::path::Path::new(image).is_file() {
        return None;
    }
    let known: Vec<String> = crate::image::recipe::builtins()
        .into_iter()
        .map(|b| b.name)
        .collect();
    Some(format!(
        "is not an image umldbg knows (known: {}): the machine boots from {FALLBACK_IMAGE}",
        known.join(", ")
    ))
}

/// A whole lab: what `lab up` creates. Deserializing one (a saved lab state) does not validate it.
/// Fields added after the first saved states default when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSpec {
    /// Names the lab's network namespace; prefixed by `with_prefix` for parallel copies.
    pub name: String,
    /// In boot order: every machine comes after the machines in its `depends_on`.
    pub machines: Vec<MachineSpec>,
    pub domains: Vec<DomainSpec>,
    /// A host directory every machine sees read-write at `/shared` (Kathará's `shared/`, an
    /// absolute path). It may not exist yet: Kathará creates it when the lab starts.
    #[serde(default)]
    pub shared_folder: Option<PathBuf>,
}

/// One UML machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    pub umid: String,
    /// The machine's hostname, as given (Kathará: the machine's name, underscores included).
    pub hostname: String,
    pub mem_mb: u32,
    /// In guest order; `name` is what the guest calls the interface (eth0, eth1, ...).
    pub interfaces: Vec<IfaceSpec>,
    pub routes: Vec<RouteSpec>,
    /// `(key, value)` in the order they are set, keys as `sysctl` writes them (`net.ipv4.ip_forward`).
    /// Keys are checked for their characters only; whether the kernel has them is for the runtime.
    pub sysctls: Vec<(String, String)>,
    /// Shell lines run in order after the interfaces, routes, sysctls and `startup_files`
    /// (TOML `startup`; Kathará's `[exec]`, which runs after the startup scripts).
    pub startup: Vec<String>,
    /// Environment variables `(name, value)` of the startup and shutdown scripts and of the
    /// machine's shells (Kathará's `[env]`).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The root filesystem image asked for (Kathará's `[image]`); `None`: the host's own root.
    #[serde(default)]
    pub image: Option<String>,
    /// Whole scripts run by bash in this order once the machine is up, before `startup`
    /// (Kathará: `shared.startup`, then `<machine>.startup`). Absolute host paths.
    #[serde(default)]
    pub startup_files: Vec<PathBuf>,
    /// Whole scripts run by bash in this order when the lab goes down (Kathará:
    /// `<machine>.shutdown`, then `shared.shutdown`). Absolute host paths.
    #[serde(default)]
    pub shutdown_files: Vec<PathBuf>,
    /// A host directory whose tree is laid over the machine's root (Kathará's `<machine>/`:
    /// `pc1/etc/frr/frr.conf` becomes `/etc/frr/frr.conf`). Absolute; checked at load time to
    /// hold no symbolic link that leads out of the lab.
    #[serde(default)]
    pub folder: Option<PathBuf>,
    /// Umids of the machines that must be up before this one boots (Kathará's `lab.dep`).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The interfaces' `addresses` were read from the startup files, which assign them
    /// (Kathará): they describe the lab for checks and status, and the runtime must not assign
    /// them itself (the scripts' own `ip address add` would then fail).
    #[serde(default)]
    pub addresses_from_startups: bool,
}

impl Default for MachineSpec {
    /// A machine with no interfaces and the default memory; set at least `umid` and `hostname`.
    fn default() -> MachineSpec {
        MachineSpec {
            umid: String::new(),
            hostname: String::new(),
            mem_mb: DEFAULT_MEM_MB,
            interfaces: Vec::new(),
            routes: Vec::new(),
            sysctls: Vec::new(),
            startup: Vec::new(),
            env: Vec::new(),
            image: None,
            startup_files: Vec::new(),
            shutdown_files: Vec::new(),
            folder: None,
            depends_on: Vec::new(),
            addresses_from_startups: false,
        }
    }
}

/// One guest network interface, attached to one domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceSpec {
    pub name: String,
    pub domain: String,
    pub addresses: Vec<IfAddr>,
    /// The interface's MAC address, set before the interface comes up; `None`: the kernel's.
    #[serde(default)]
    pub mac: Option<MacAddr>,
}

/// An Ethernet address, written `02:42:ac:11:00:02` (six pairs of hex digits and colons, as
/// Kathará and `ip link` take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether a network interface can hold it: not all zeros, not a multicast (or broadcast)
    /// address, which Linux refuses as an interface's own address.
    pub fn is_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 1 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a text is not a [`MacAddr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a MAC address: write six pairs of hex digits separated by `:`, e.g. 02:00:00:00:00:01"
)]
pub struct MacError(pub String);

impl FromStr for MacAddr {
    type Err = MacError;
    fn from_str(s: &str) -> Result<MacAddr, MacError> {
        let bad = || MacError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
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

pub use crate::util::Location;

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
    /// A feature the lab asks for that umldbg refuses (Kathará's `lab.ext`).
    #[error("{at}: {message}")]
    Unsupported { at: Location, message: String },
    /// A file or directory of the lab that cannot be used as it is (a symbolic link out of the
    /// lab in a machine's folder).
    #[error("{}: {message}", path.display())]
    BadEntry { path: PathBuf, message: String },
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
            SpecError::Syntax { at, .. } | SpecError::Unsupported { at, .. } => Some(at),
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
    #[error("machine `{machine}` interface {iface}: {reason}")]
    BadMac {
        machine: String,
        iface: String,
        reason: String,
    },
    #[error(
        "domain `{domain}`: MAC address {mac} is held by both {first} and {second}: \
         give each interface its own"
    )]
    DuplicateMac {
        domain: String,
        mac: MacAddr,
        first: String,
        second: String,
    },
    #[error("machine `{machine}`: environment variable `{name}` {reason}")]
    BadEnv {
        machine: String,
        name: String,
        reason: String,
    },
    #[error("machine `{machine}` sets environment variable `{name}` twice: keep one")]
    DuplicateEnv { machine: String, name: String },
    #[error("machine `{machine}`: image `{image}` {reason}")]
    BadImage {
        machine: String,
        image: String,
        reason: String,
    },
    #[error(
        "machine `{machine}` depends on `{dep}`, which is not a machine of the lab \
         (machines: {known}): fix the name or remove it"
    )]
    UnknownDependency {
        machine: String,
        dep: String,
        known: String,
    },
    #[error("dependency cycle {cycle}: no machine of it could boot first: remove one of them")]
    DependencyCycle { cycle: String },
    #[error(
        "machine `{machine}` depends on `{dep}`, listed after it: machines are in boot order, \
         move `{dep}` before `{machine}`"
    )]
    DependencyOrder { machine: String, dep: String },
    #[error("{owner}: {what} `{}` is not an absolute path: give the whole path", path.display())]
    RelativePath {
        owner: String,
        what: &'static str,
        path: PathBuf,
    },
}

/// Why a name, key, address or route destination is refused. The text follows the item it is
/// about, as in ``domain name `x y` contains ' ': ...``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("is empty: give it a name")]
    EmptyName,
    #[error("is {0} characters long: use at most 63")]
    NameTooLong(usize),
    #[error("contains {0:?}: use only letters, digits, `-`, `_` and `.`")]
    NameChar(char),
    #[error("starts with `.` or `-`: start it with a letter, digit or `_`")]
    NameStart,
    #[error("is empty")]
    EmptyHostname,
    #[error("is {0} characters long")]
    HostnameTooLong(usize),
    #[error("has an empty or over-long label")]
    HostnameLabel,
    #[error("contains {0:?}")]
    HostnameChar(char),
    #[error("has a label that starts or ends with `-`")]
    HostnameDash,
    #[error("must be 1 to 15 characters, not {0}: e.g. eth0")]
    IfaceLength(usize),
    #[error("contains {0:?}: use letters, digits, `-`, `_` and `.`, e.g. eth0")]
    IfaceChar(char),
    #[error("is reserved: use another name, e.g. eth0")]
    IfaceReserved,
    #[error("prefix /{prefix} is longer than {max}")]
    PrefixTooLong { prefix: u8, max: u8 },
    #[error("prefix /0 covers every address: give the subnet's length, e.g. /24")]
    PrefixZero,
    #[error("it is an unspecified, loopback or multicast address: use a unicast one")]
    NotUnicast,
    #[error("it is the broadcast address: use a unicast one")]
    Broadcast,
    #[error("it is the network address of {subnet}: use a host address inside it")]
    NetworkAddress { subnet: IfAddr },
    #[error("it is the broadcast address of {subnet}: use a host address inside it")]
    SubnetBroadcast { subnet: IfAddr },
    #[error("has an empty name: write NAME=value")]
    EmptyEnvName,
    #[error("contains {0:?}: use letters, digits and `_`, e.g. MY_VAR")]
    EnvChar(char),
    #[error("starts with a digit: start it with a letter or `_`")]
    EnvDigit,
    #[error("is not a sysctl name: write it like net.ipv4.ip_forward")]
    SysctlKey,
    #[error("not `default` nor a network: {0}")]
    RouteNotNetwork(AddrError),
    #[error("has host bits set: write {subnet}")]
    RouteHostBits { subnet: IfAddr },
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
    pub fn parsed_dest(&self) -> Result<RouteDest, Refusal> {
        if self.dest == "default" {
            return Ok(RouteDest::Default);
        }
        let net: IfAddr = self.dest.parse().map_err(Refusal::RouteNotNetwork)?;
        if net.network() != net.addr {
            return Err(Refusal::RouteHostBits {
                subnet: net.subnet(),
            });
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
        LabSpec::from_toml_str_with_warnings(text, origin).map(|(spec, _)| spec)
    }

    /// As [`LabSpec::from_toml_str`], with the warnings about what the lab asks for and will not
    /// get (an `image`).
    pub fn from_toml_str_with_warnings(
        text: &str,
        origin: &Path,
    ) -> Result<(LabSpec, Vec<Warning>), SpecError> {
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
            warnings: Vec::new(),
        };
        let mut spec = convert.lab(raw);
        let problems = std::mem::take(&mut convert.problems);
        let warnings = std::mem::take(&mut convert.warnings);
        if let Some((item, problem)) = problems.into_iter().next() {
            return Err(map.error(item, &spec.name, problem));
        }
        spec.sort_with(&mut map);
        spec.validate_with(&map)?;
        Ok((spec, warnings))
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

    /// A copy whose lab name and umids (those in `depends_on` too) start with `prefix` (used as
    /// given: include a separator such as `t1-` yourself). Domains and hostnames are unchanged:
    /// they live inside the lab's own namespace and guests, so copies cannot collide on them. Validate the result: a long
    /// prefix can push a umid past UML's 63 characters.
    pub fn with_prefix(&self, prefix: &str) -> LabSpec {
        let mut spec = self.clone();
        spec.name = format!("{prefix}{}", spec.name);
        for m in &mut spec.machines {
            m.umid = format!("{prefix}{}", m.umid);
            for d in &mut m.depends_on {
                *d = format!("{prefix}{d}");
            }
        }
        spec
    }

    /// Every problem of the lab, in the order of the source, tagged with the item it is about.
    fn problems(&self) -> Vec<(Item, Problem)> {
        let mut out = Vec::new();
        if let Some(reason) = crate::uml::ids::lab_name_problem(&self.name) {
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
        if let Some(p) = &self.shared_folder
            && !p.is_absolute()
        {
            let p = Problem::RelativePath {
                owner: format!("lab `{}`", self.name),
                what: "shared folder",
                path: p.clone(),
            };
            out.push((Item::SharedFolder, p));
        }
        self.address_conflicts(&mut out);
        self.mac_conflicts(&mut out);
        self.dependency_problems(&mut out);
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
                    reason: reason.to_string(),
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
                    reason: reason.to_string(),
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
                reason: reason.to_string(),
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
                    reason: reason.to_string(),
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
                        reason: reason.to_string(),
                    };
                    out.push((Item::IfaceAddr(mi, ii, ai), p));
                }
            }
        }
        for (ii, iface) in m.interfaces.iter().enumerate() {
            if let Some(mac) = iface.mac
                && !mac.is_unicast()
            {
                let p = Problem::BadMac {
                    machine: machine(),
                    iface: iface.name.clone(),
                    reason: format!(
                        "{mac} is a multicast or all-zero address, which an interface cannot \
                         hold: use a unicast one (first byte even), e.g. 02:00:00:00:00:01"
                    ),
                };
                out.push((Item::IfaceMac(mi, ii), p));
            }
        }
        self.route_problems(mi, m, out);
        let mut names = HashSet::new();
        for (ei, (name, value)) in m.env.iter().enumerate() {
            let reason = check_env_name(name)
                .err()
                .map(|r| r.to_string())
                .or_else(|| {
                    value.contains(['\n', '\r', '\0']).then(|| {
                        "has a line break or NUL in its value: give a one-line value".into()
                    })
                });
            if let Some(reason) = reason {
                let p = Problem::BadEnv {
                    machine: machine(),
                    name: name.clone(),
                    reason,
                };
                out.push((Item::Env(mi, ei), p));
            } else if !names.insert(name.as_str()) {
                let p = Problem::DuplicateEnv {
                    machine: machine(),
                    name: name.clone(),
                };
                out.push((Item::Env(mi, ei), p));
            }
        }
        if let Some(image) = &m.image {
            let reason = if image.is_empty() {
                Some("is empty: give an image name or leave it out")
            } else if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Some("contains a space or control character: give one image name")
            } else {
                None
            };
            if let Some(reason) = reason {
                let p = Problem::BadImage {
                    machine: machine(),
                    image: image.clone(),
                    reason: reason.to_owned(),
                };
                out.push((Item::Image(mi), p));
            }
        }
        let paths = (m.startup_files.iter().enumerate())
            .map(|(i, p)| (Item::StartupFile(mi, i), "startup file", p))
            .chain(
                (m.shutdown_files.iter().enumerate())
                    .map(|(i, p)| (Item::ShutdownFile(mi, i), "shutdown file", p)),
            )
            .chain(m.folder.iter().map(|p| (Item::Folder(mi), "folder", p)));
        for (item, what, path) in paths {
            if !path.is_absolute() {
                let p = Problem::RelativePath {
                    owner: format!("machine `{}`", m.umid),
                    what,
                    path: path.clone(),
                };
                out.push((item, p));
            }
        }
        let mut keys = HashSet::new();
        for (si, (key, value)) in m.sysctls.iter().enumerate() {
            let reason = check_sysctl_key(key)
                .err()
                .map(|r| r.to_string())
                .or_else(|| {
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
                    out.push((Item::RouteDest(mi, ri), bad(reason.to_string())));
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

    /// The same MAC address on two interfaces of one domain (ARP could not tell them apart).
    fn mac_conflicts(&self, out: &mut Vec<(Item, Problem)>) {
        let mut seen: HashMap<(&str, MacAddr), String> = HashMap::new();
        for (mi, m) in self.machines.iter().enumerate() {
            for (ii, i) in m.interfaces.iter().enumerate() {
                let Some(mac) = i.mac else { continue };
                let holder = format!("machine `{}` {}", m.umid, i.name);
                if let Some(first) = seen.get(&(i.domain.as_str(), mac)) {
                    let p = Problem::DuplicateMac {
                        domain: i.domain.clone(),
                        mac,
                        first: first.clone(),
                        second: holder,
                    };
                    out.push((Item::IfaceMac(mi, ii), p));
                } else {
                    seen.insert((i.domain.as_str(), mac), holder);
                }
            }
        }
    }

    /// Dependencies on machines that do not exist, cycles, and machines listed before a
    /// machine they depend on.
    fn dependency_problems(&self, out: &mut Vec<(Item, Problem)>) {
        let index: HashMap<&str, usize> = (self.machines.iter().enumerate())
            .map(|(i, m)| (m.umid.as_str(), i))
            .collect();
        let mut unknown = false;
        for (mi, m) in self.machines.iter().enumerate() {
            for (di, dep) in m.depends_on.iter().enumerate() {
                if !index.contains_key(dep.as_str()) {
                    unknown = true;
                    let known: Vec<&str> = self.machines.iter().map(|m| m.umid.as_str()).collect();
                    let p = Problem::UnknownDependency {
                        machine: m.umid.clone(),
                        dep: dep.clone(),
                        known: known.join(", "),
                    };
                    out.push((Item::Depends(mi, di), p));
                }
            }
        }
        if unknown {
            return;
        }
        if let Some((item, cycle)) = self.dependency_cycle(&index) {
            out.push((item, Problem::DependencyCycle { cycle }));
            return;
        }
        for (mi, m) in self.machines.iter().enumerate() {
            for (di, dep) in m.depends_on.iter().enumerate() {
                if index[dep.as_str()] > mi {
                    let p = Problem::DependencyOrder {
                        machine: m.umid.clone(),
                        dep: dep.clone(),
                    };
                    out.push((Item::Depends(mi, di), p));
                }
            }
        }
    }

    /// A cycle of dependencies, as `a -> b -> a`, and the dependency that starts it (that of
    /// the first machine of the cycle in lab order). Every dependency must name a machine.
    fn dependency_cycle(&self, index: &HashMap<&str, usize>) -> Option<(Item, String)> {
        // Depth-first search with colours: 0 unvisited, 1 on the current path, 2 done.
        fn visit(
            lab: &LabSpec,
            index: &HashMap<&str, usize>,
            colour: &mut [u8],
            path: &mut Vec<(usize, usize)>,
            mi: usize,
        ) -> Option<Vec<(usize, usize)>> {
            colour[mi] = 1;
            for (di, dep) in lab.machines[mi].depends_on.iter().enumerate() {
                let next = index[dep.as_str()];
                path.push((mi, di));
                if colour[next] == 1 {
                    let start = path.iter().position(|(m, _)| *m == next).unwrap_or(0);
                    return Some(path[start..].to_vec());
                }
                if colour[next] == 0
                    && let Some(c) = visit(lab, index, colour, path, next)
                {
                    return Some(c);
                }
                path.pop();
            }
            colour[mi] = 2;
            None
        }
        let mut colour = vec![0u8; self.machines.len()];
        for mi in 0..self.machines.len() {
            if colour[mi] != 0 {
                continue;
            }
            let Some(mut cycle) = visit(self, index, &mut colour, &mut Vec::new(), mi) else {
                continue;
            };
            let first = (0..cycle.len()).min_by_key(|&i| cycle[i].0).unwrap_or(0);
            cycle.rotate_left(first);
            let mut names: Vec<&str> = cycle
                .iter()
                .map(|(m, _)| self.machines[*m].umid.as_str())
                .collect();
            names.push(names[0]);
            let (m, d) = cycle[0];
            return Some((Item::Depends(m, d), names.join(" -> ")));
        }
        None
    }

    /// Puts the machines in boot order: each after the machines it depends on, otherwise in
    /// their present order. Returns false, changing nothing, when a dependency names no machine
    /// or dependencies form a cycle (`validate` reports which).
    pub fn sort_by_dependencies(&mut self) -> bool {
        self.sort_with(&mut SourceMap::default())
    }

    pub(crate) fn sort_with(&mut self, map: &mut SourceMap) -> bool {
        let n = self.machines.len();
        let index: HashMap<&str, usize> = (self.machines.iter().enumerate())
            .map(|(i, m)| (m.umid.as_str(), i))
            .collect();
        let mut waiting = vec![0usize; n];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (mi, m) in self.machines.iter().enumerate() {
            let deps: HashSet<&str> = m.depends_on.iter().map(String::as_str).collect();
            for dep in deps {
                let Some(&d) = index.get(dep) else {
                    return false;
                };
                waiting[mi] += 1;
                dependents[d].push(mi);
            }
        }
        // Kahn's algorithm, always taking the earliest ready machine: a lab without
        // dependencies keeps its order.
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(mi) = ready.pop_first() {
            order.push(mi);
            for &d in &dependents[mi] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        if order.len() != n {
            return false;
        }
        if order.iter().enumerate().all(|(new, &old)| new == old) {
            return true;
        }
        let mut old: Vec<Option<MachineSpec>> = self.machines.drain(..).map(Some).collect();
        self.machines = order
            .iter()
            .map(|&i| old[i].take().expect("each once"))
            .collect();
        map.reorder_machines(&order);
        true
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
fn check_word(s: &str) -> Result<(), Refusal> {
    if s.is_empty() {
        return Err(Refusal::EmptyName);
    }
    if s.len() > 63 {
        return Err(Refusal::NameTooLong(s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(Refusal::NameChar(c));
    }
    if s.starts_with(['.', '-']) {
        return Err(Refusal::NameStart);
    }
    Ok(())
}

/// Hostnames as `hostname(1)` and resolvers take them; `_` is allowed because Kathará machine
/// names (which become hostnames) often have one, and the guest's kernel does not mind.
fn check_hostname(s: &str) -> Result<(), Refusal> {
    if s.is_empty() {
        return Err(Refusal::EmptyHostname);
    }
    if s.len() > 64 {
        return Err(Refusal::HostnameTooLong(s.len()));
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(Refusal::HostnameLabel);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_".contains(*c)))
        {
            return Err(Refusal::HostnameChar(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(Refusal::HostnameDash);
        }
    }
    Ok(())
}

/// Linux interface names: at most 15 bytes (IFNAMSIZ less the NUL), no `/`, `:` or spaces.
fn check_iface_name(s: &str) -> Result<(), Refusal> {
    if s.is_empty() || s.len() > 15 {
        return Err(Refusal::IfaceLength(s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(Refusal::IfaceChar(c));
    }
    if s == "." || s == ".." || s == "lo" {
        return Err(Refusal::IfaceReserved);
    }
    Ok(())
}

/// An address that a machine or the lab host can hold on a segment.
fn check_host_addr(a: &IfAddr) -> Result<(), Refusal> {
    if a.prefix > a.max_prefix() {
        return Err(Refusal::PrefixTooLong {
            prefix: a.prefix,
            max: a.max_prefix(),
        });
    }
    if a.prefix == 0 {
        return Err(Refusal::PrefixZero);
    }
    let ip = a.addr;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(Refusal::NotUnicast);
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err(Refusal::Broadcast);
        }
        // /31 and /32 have no network or broadcast address (RFC 3021).
        if a.prefix <= 30 {
            if ip == a.network() {
                return Err(Refusal::NetworkAddress { subnet: a.subnet() });
            }
            if ip == a.last() {
                return Err(Refusal::SubnetBroadcast { subnet: a.subnet() });
            }
        }
    }
    Ok(())
}

/// Environment variable names a shell can export: letters, digits and `_`, not starting with a
/// digit.
fn check_env_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() {
        return Err(Refusal::EmptyEnvName);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(Refusal::EnvChar(c));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Refusal::EnvDigit);
    }
    Ok(())
}

/// Sysctl keys as `sysctl -w` takes them; `..` and empty parts would walk out of /proc/sys.
fn check_sysctl_key(key: &str) -> Result<(), Refusal> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-:@+".contains(c))
    };
    if key.is_empty() || !key.split(['.', '/']).all(ok_part) {
        return Err(Refusal::SysctlKey);
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
    IfaceMac(usize, usize),
    Env(usize, usize),
    Image(usize),
    Depends(usize, usize),
    StartupFile(usize, usize),
    ShutdownFile(usize, usize),
    Folder(usize),
    SharedFolder,
}

impl Item {
    /// The enclosing item, used when a part has no position of its own (a defaulted field).
    fn parent(self) -> Option<Item> {
        use Item::*;
        Some(match self {
            Lab => return None,
            LabName | SharedFolder => Lab,
            Domain(_) => Lab,
            DomainName(d) | DomainHost(d) => Domain(d),
            Machine(_) => Lab,
            Umid(m) | Hostname(m) | Memory(m) | Image(m) | Folder(m) => Machine(m),
            Iface(m, _) | Route(m, _) | Sysctl(m, _) | Startup(m, _) => Machine(m),
            Env(m, _) | Depends(m, _) | StartupFile(m, _) | ShutdownFile(m, _) => Machine(m),
            IfaceName(m, i) | IfaceDomain(m, i) | IfaceAddr(m, i, _) | IfaceMac(m, i) => {
                Iface(m, i)
            }
            RouteDest(m, r) | RouteVia(m, r) => Route(m, r),
        })
    }

    /// The same part of machine `to` instead of its own machine (after machines are reordered).
    fn with_machine(self, to: usize) -> Item {
        use Item::*;
        match self {
            Lab | LabName | SharedFolder | Domain(_) | DomainName(_) | DomainHost(_) => self,
            Machine(_) => Machine(to),
            Umid(_) => Umid(to),
            Hostname(_) => Hostname(to),
            Memory(_) => Memory(to),
            Image(_) => Image(to),
            Folder(_) => Folder(to),
            Iface(_, i) => Iface(to, i),
            IfaceName(_, i) => IfaceName(to, i),
            IfaceDomain(_, i) => IfaceDomain(to, i),
            IfaceAddr(_, i, a) => IfaceAddr(to, i, a),
            IfaceMac(_, i) => IfaceMac(to, i),
            Route(_, r) => Route(to, r),
            RouteDest(_, r) => RouteDest(to, r),
            RouteVia(_, r) => RouteVia(to, r),
            Sysctl(_, x) => Sysctl(to, x),
            Startup(_, x) => Startup(to, x),
            Env(_, x) => Env(to, x),
            Depends(_, x) => Depends(to, x),
            StartupFile(_, x) => StartupFile(to, x),
            ShutdownFile(_, x) => ShutdownFile(to, x),
        }
    }

    /// The machine this part belongs to, if any.
    fn machine(self) -> Option<usize> {
        use Item::*;
        match self {
            Lab | LabName | SharedFolder | Domain(_) | DomainName(_) | DomainHost(_) => None,
            Machine(m) | Umid(m) | Hostname(m) | Memory(m) | Image(m) | Folder(m) => Some(m),
            Iface(m, _) | IfaceName(m, _) | IfaceDomain(m, _) | IfaceAddr(m, _, _) => Some(m),
            IfaceMac(m, _) | Route(m, _) | RouteDest(m, _) | RouteVia(m, _) => Some(m),
            Sysctl(m, _) | Startup(m, _) | Env(m, _) | Depends(m, _) => Some(m),
            StartupFile(m, _) | ShutdownFile(m, _) => Some(m),
        }
    }

    /// A sort key following the order of a lab file: lab, domains, then each machine's parts.
    fn order(self) -> (usize, usize, usize, usize, usize) {
        use Item::*;
        match self {
            Lab => (0, 0, 0, 0, 0),
            LabName => (0, 1, 0, 0, 0),
            SharedFolder => (0, 2, 0, 0, 0),
            Domain(d) => (1, d, 0, 0, 0),
            DomainName(d) => (1, d, 1, 0, 0),
            DomainHost(d) => (1, d, 2, 0, 0),
            Machine(m) => (2, m, 0, 0, 0),
            Umid(m) => (2, m, 1, 0, 0),
            Hostname(m) => (2, m, 2, 0, 0),
            Memory(m) => (2, m, 3, 0, 0),
            Image(m) => (2, m, 3, 1, 0),
            Folder(m) => (2, m, 3, 2, 0),
            Iface(m, i) => (2, m, 4, i, 0),
            IfaceName(m, i) => (2, m, 4, i, 1),
            IfaceDomain(m, i) => (2, m, 4, i, 2),
            IfaceMac(m, i) => (2, m, 4, i, 3),
            IfaceAddr(m, i, a) => (2, m, 4, i, 4 + a),
            Route(m, r) => (2, m, 5, r, 0),
            RouteDest(m, r) => (2, m, 5, r, 1),
            RouteVia(m, r) => (2, m, 5, r, 2),
            Sysctl(m, s) => (2, m, 6, s, 0),
            Env(m, e) => (2, m, 7, e, 0),
            Depends(m, d) => (2, m, 8, d, 0),
            StartupFile(m, f) => (2, m, 9, f, 0),
            Startup(m, s) => (2, m, 10, s, 0),
            ShutdownFile(m, f) => (2, m, 11, f, 0),
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

    /// Follows a reordering of the machines: `order[new] = old`.
    fn reorder_machines(&mut self, order: &[usize]) {
        let mut new_of = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_of[old] = new;
        }
        self.map = std::mem::take(&mut self.map)
            .into_iter()
            .map(|(item, at)| match item.machine() {
                Some(m) if m < new_of.len() => (item.with_machine(new_of[m]), at),
                _ => (item, at),
            })
            .collect();
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
    env: Sysctls,
    image: Option<Spanned<String>>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
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
    mac: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    dest: Spanned<String>,
    via: Spanned<String>,
}

/// The `sysctls` (or `env`) table flattened to `(dotted key, value)` in document order. The toml crate
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
                "expected a table, e.g. sysctls = { \"net.ipv4.ip_forward\" = 1 } or env = { ROLE = \"router\" }",
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
    warnings: Vec<Warning>,
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
            shared_folder: None,
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
            let mac = i.mac.and_then(|mac| {
                self.at(Item::IfaceMac(mi, ii), &mac);
                match mac.get_ref().parse::<MacAddr>() {
                    Ok(m) => Some(m),
                    Err(e) => {
                        let p = Problem::BadMac {
                            machine: umid.clone(),
                            iface: name.clone(),
                            reason: e.to_string(),
                        };
                        self.problems.push((Item::IfaceMac(mi, ii), p));
                        None
                    }
                }
            });
            interfaces.push(IfaceSpec {
                name,
                domain: i.domain.into_inner(),
                addresses,
                mac,
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
        let mut env = Vec::new();
        for (ei, (k, v)) in m.env.0.into_iter().enumerate() {
            self.at(Item::Env(mi, ei), &v);
            env.push((k, v.into_inner()));
        }
        let image = m.image.map(|i| {
            self.at(Item::Image(mi), &i);
            if let Some(why) = unknown_image(i.get_ref()) {
                self.warnings.push(Warning {
                    at: Location::from_offset(self.origin, self.text, i.span().start),
                    message: format!("machine `{umid}`: image `{}` {why}", i.get_ref()),
                });
            }
            i.into_inner()
        });
        let mut depends_on: Vec<String> = Vec::new();
        for d in m.depends_on {
            if !depends_on.contains(d.get_ref()) {
                self.at(Item::Depends(mi, depends_on.len()), &d);
                depends_on.push(d.into_inner());
            }
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
            env,
            image,
            depends_on,
            ..MachineSpec::default()
        }
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
