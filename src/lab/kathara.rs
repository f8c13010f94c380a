//! Kathará/Netkit lab directories: `lab.conf` plus `<machine>.startup` and `shared.startup`.
//!
//! `lab.conf` lines understood:
//! - `pc1[0]=A`: interface eth0 of machine `pc1` is on domain `A` (Kathará's `A/MAC` form is
//!   accepted, the MAC ignored with a warning);
//! - `pc1[mem]=128` (MiB; `128m`, `1g` also taken), `pc1[sysctl]="net.ipv4.ip_forward=1"`;
//! - any other `pc1[option]=value`: accepted and ignored, with a warning;
//! - `LAB_NAME=`, `LAB_DESCRIPTION=`, `LAB_VERSION=`, `LAB_AUTHOR=`, `LAB_EMAIL=`, `LAB_WEB=`
//!   (quoted or not), Netkit's `machines="pc1 pc2"`; `#` comments and blank lines.
//!
//! Every machine runs `shared.startup` and then its own `<machine>.startup`, line by line (lines
//! ending in `\` are joined; blank and comment lines dropped). The umid and hostname are the
//! machine's name. Addresses are set by those scripts in Kathará, so the lines stay as startup
//! lines, and the `ip address add A/P dev ethN` and `ifconfig ethN A netmask M` among them are
//! also read into the interfaces' addresses so that status and validation know them.
//!
//! The parser itself (`parse`) takes the files' text; `load_dir` is the thin layer that reads them.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::spec::{
    DEFAULT_MEM_MB, DomainSpec, IfAddr, IfaceSpec, Item, LabSpec, Location, MachineSpec, SourceMap,
    SpecError, Warning,
};

/// A Kathará lab, converted, with what was accepted but not used.
#[derive(Debug, Clone)]
pub struct KatharaLab {
    pub spec: LabSpec,
    /// The `LAB_*` lines (LAB_DESCRIPTION, LAB_AUTHOR, ...), as given, unquoted.
    pub meta: BTreeMap<String, String>,
    pub warnings: Vec<Warning>,
}

/// The files of a lab directory that matter, as text.
#[derive(Debug, Clone, Default)]
pub struct LabFiles {
    pub lab_conf: String,
    /// `*.startup` files by file name (`pc1.startup`, `shared.startup`).
    pub startups: BTreeMap<String, String>,
    /// Other entries of the directory (`pc1/`, `pc1.shutdown`, ...), only for warnings.
    pub other_entries: Vec<String>,
}

/// Whether `dir` looks like a Kathará/Netkit lab.
pub fn is_lab_dir(dir: &Path) -> bool {
    dir.join("lab.conf").is_file()
}

/// Reads a lab directory and converts it (validated).
pub fn load_dir(dir: &Path) -> Result<KatharaLab, SpecError> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).map_err(|source| SpecError::Read { path, source })
    };
    let mut files = LabFiles {
        lab_conf: read(dir.join("lab.conf"))?,
        ..LabFiles::default()
    };
    let entries = std::fs::read_dir(dir).map_err(|source| SpecError::Read {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SpecError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lab.conf" {
            continue;
        }
        let path = entry.path();
        if name.ends_with(".startup") && path.is_file() {
            files.startups.insert(name, read(path)?);
        } else if path.is_dir() {
            files.other_entries.push(format!("{name}/"));
        } else {
            files.other_entries.push(name);
        }
    }
    files.other_entries.sort();
    parse(dir, &files)
}

/// Converts a lab directory's files into a validated `LabSpec`. `dir` names the files in
/// messages and gives the lab its name when lab.conf has no LAB_NAME.
pub fn parse(dir: &Path, files: &LabFiles) -> Result<KatharaLab, SpecError> {
    let conf_path = dir.join("lab.conf");
    let mut p = Parser {
        dir,
        conf_path: conf_path.clone(),
        machines: Vec::new(),
        index: HashMap::new(),
        domains: Vec::new(),
        meta: BTreeMap::new(),
        lab_name_line: None,
        warnings: Vec::new(),
        map: SourceMap::default(),
    };
    p.map.set(Item::Lab, line_loc(&conf_path, 1));
    for (n, line) in files.lab_conf.lines().enumerate() {
        p.conf_line(n + 1, line)?;
    }
    p.scripts(files);
    for name in &files.other_entries {
        p.other_entry(name);
    }
    let name = match p.meta.get("LAB_NAME") {
        Some(n) if !sanitise(n).is_empty() => sanitise(n),
        _ => {
            let base = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
            let base = base
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let s = sanitise(&base);
            if s.is_empty() { "lab".to_owned() } else { s }
        }
    };
    if let Some(line) = p.lab_name_line {
        p.map.set(Item::LabName, line_loc(&conf_path, line));
    }
    let spec = LabSpec {
        name,
        machines: p.machines.into_iter().map(|m| m.spec).collect(),
        domains: p
            .domains
            .into_iter()
            .map(|name| DomainSpec {
                name,
                host_address: None,
            })
            .collect(),
    };
    spec.validate_with(&p.map)?;
    Ok(KatharaLab {
        spec,
        meta: p.meta,
        warnings: p.warnings,
    })
}

/// A name made fit for a lab: letters, digits, `-`, `_`, `.`; others become `-`.
pub fn sanitise(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        let c = if c.is_ascii_alphanumeric() || "_.".contains(c) {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let out = out.trim_start_matches(['-', '.']).trim_end_matches('-');
    out.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

fn line_loc(file: &Path, line: usize) -> Location {
    Location {
        file: file.to_owned(),
        line,
        column: None,
    }
}

struct Machine {
    spec: MachineSpec,
    /// Interface index (the N of `pc1[N]`) to position in `spec.interfaces`, kept sorted.
    ifaces: BTreeMap<usize, (usize, String, usize)>,
}

struct Parser<'a> {
    dir: &'a Path,
    conf_path: PathBuf,
    machines: Vec<Machine>,
    index: HashMap<String, usize>,
    domains: Vec<String>,
    meta: BTreeMap<String, String>,
    lab_name_line: Option<usize>,
    warnings: Vec<Warning>,
    map: SourceMap,
}

const META_KEYS: [&str; 6] = [
    "LAB_NAME",
    "LAB_DESCRIPTION",
    "LAB_VERSION",
    "LAB_AUTHOR",
    "LAB_EMAIL",
    "LAB_WEB",
];

impl Parser<'_> {
    fn syntax(&self, line: usize, message: impl Into<String>) -> SpecError {
        SpecError::Syntax {
            at: line_loc(&self.conf_path, line),
            message: message.into(),
        }
    }

    fn warn(&mut self, file: &Path, line: usize, message: impl Into<String>) {
        self.warnings.push(Warning {
            at: line_loc(file, line),
            message: message.into(),
        });
    }

    fn machine(&mut self, name: &str, line: usize) -> usize {
        if let Some(&mi) = self.index.get(name) {
            return mi;
        }
        let mi = self.machines.len();
        self.machines.push(Machine {
            spec: MachineSpec {
                umid: name.to_owned(),
                hostname: name.to_owned(),
                mem_mb: DEFAULT_MEM_MB,
                interfaces: Vec::new(),
                routes: Vec::new(),
                sysctls: Vec::new(),
                startup: Vec::new(),
            },
            ifaces: BTreeMap::new(),
        });
        self.index.insert(name.to_owned(), mi);
        self.map
            .set(Item::Machine(mi), line_loc(&self.conf_path, line));
        mi
    }

    fn conf_line(&mut self, n: usize, raw: &str) -> Result<(), SpecError> {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let Some((lhs, rhs)) = line.split_once('=') else {
            return Err(self.syntax(n, expected_line(line)));
        };
        let lhs = lhs.trim();
        let value = unquote(rhs).map_err(|m| self.syntax(n, m))?;
        if let Some((name, rest)) = lhs.split_once('[') {
            let Some(key) = rest.strip_suffix(']') else {
                return Err(self.syntax(n, expected_line(line)));
            };
            let (name, key) = (name.trim(), key.trim());
            if name.is_empty() || key.is_empty() {
                return Err(self.syntax(n, expected_line(line)));
            }
            return self.machine_line(n, name, key, &value);
        }
        if META_KEYS.contains(&lhs) {
            if lhs == "LAB_NAME" {
                self.lab_name_line = Some(n);
            }
            self.meta.insert(lhs.to_owned(), value);
        } else if lhs == "machines" {
            // Netkit's list of machines, for those with no interface line.
            for name in value.split_whitespace() {
                self.machine(name, n);
            }
        } else if lhs.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !lhs.is_empty() {
            let path = self.conf_path.clone();
            self.warn(
                &path,
                n,
                format!("`{lhs}` is not a lab.conf setting umldbg knows: ignored"),
            );
        } else {
            return Err(self.syntax(n, expected_line(line)));
        }
        Ok(())
    }

    fn machine_line(
        &mut self,
        n: usize,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), SpecError> {
        let mi = self.machine(name, n);
        let conf = self.conf_path.clone();
        if key.bytes().all(|b| b.is_ascii_digit()) {
            let idx: usize =
                key.parse().ok().filter(|i| *i < 1000).ok_or_else(|| {
                    self.syntax(n, format!("interface index `{key}` is too large"))
                })?;
            let (domain, mac) = match value.split_once('/') {
                Some((d, mac)) => (d.trim(), Some(mac.trim())),
                None => (value.trim(), None),
            };
            if domain.is_empty() {
                return Err(self.syntax(
                    n,
                    format!("{name}[{idx}] has no domain: write {name}[{idx}]=A"),
                ));
            }
            if let Some(mac) = mac {
                self.warn(
                    &conf,
                    n,
                    format!("MAC address {mac} of {name}[{idx}] is not supported: ignored"),
                );
            }
            if let Some((_, _, first)) = self.machines[mi].ifaces.get(&idx) {
                let first = *first;
                return Err(self.syntax(
                    n,
                    format!("{name}[{idx}] is given twice (first on line {first}): keep one"),
                ));
            }
            if !self.domains.iter().any(|d| d == domain) {
                let di = self.domains.len();
                self.domains.push(domain.to_owned());
                self.map.set(Item::Domain(di), line_loc(&conf, n));
            }
            self.machines[mi]
                .ifaces
                .insert(idx, (0, domain.to_owned(), n));
            self.rebuild_ifaces(mi);
            return Ok(());
        }
        match key {
            "mem" | "memory" => {
                let mb = parse_mem(value).ok_or_else(|| {
                    self.syntax(n, format!("{name}[{key}]={value}: give the memory in MiB, e.g. {name}[mem]=128"))
                })?;
                self.machines[mi].spec.mem_mb = mb;
                self.map.set(Item::Memory(mi), line_loc(&conf, n));
            }
            "sysctl" => {
                let Some((k, v)) = value.split_once('=') else {
                    return Err(self.syntax(n, format!("{name}[sysctl]={value}: write {name}[sysctl]=\"net.ipv4.ip_forward=1\"")));
                };
                let si = self.machines[mi].spec.sysctls.len();
                self.machines[mi].spec.sysctls.push((k.trim().to_owned(), v.trim().to_owned()));
                self.map.set(Item::Sysctl(mi, si), line_loc(&conf, n));
            }
            "bridged" => self.warn(
                &conf,
                n,
                format!("{name}[bridged] would join the host's network; labs stay in their own namespace: ignored"),
            ),
            _ => self.warn(&conf, n, format!("option {name}[{key}] is not supported: ignored")),
        }
        Ok(())
    }

    /// Interfaces in index order; the source map follows the new positions.
    fn rebuild_ifaces(&mut self, mi: usize) {
        let conf = self.conf_path.clone();
        let m = &mut self.machines[mi];
        m.spec.interfaces.clear();
        for (pos, (idx, (slot, domain, line))) in m.ifaces.iter_mut().enumerate() {
            *slot = pos;
            m.spec.interfaces.push(IfaceSpec {
                name: format!("eth{idx}"),
                domain: domain.clone(),
                addresses: Vec::new(),
            });
            self.map.set(Item::Iface(mi, pos), line_loc(&conf, *line));
        }
    }

    /// Startup lines: shared.startup first, then the machine's own; addresses read on the way.
    fn scripts(&mut self, files: &LabFiles) {
        let shared = files
            .startups
            .get("shared.startup")
            .map(|t| script_lines(t))
            .unwrap_or_default();
        let shared_path = self.dir.join("shared.startup");
        for mi in 0..self.machines.len() {
            let name = self.machines[mi].spec.umid.clone();
            let file = format!("{name}.startup");
            let own = files
                .startups
                .get(&file)
                .map(|t| script_lines(t))
                .unwrap_or_default();
            let own_path = self.dir.join(&file);
            let lines = shared
                .iter()
                .map(|(n, l)| (&shared_path, *n, l))
                .chain(own.iter().map(|(n, l)| (&own_path, *n, l)));
            for (path, n, line) in lines {
                let li = self.machines[mi].spec.startup.len();
                self.machines[mi].spec.startup.push(line.clone());
                self.map.set(Item::Startup(mi, li), line_loc(path, n));
                for (iface, addr) in addresses_in(line) {
                    self.add_address(mi, path, n, &iface, addr);
                }
            }
        }
        for file in files.startups.keys() {
            let stem = file.trim_end_matches(".startup");
            if stem != "shared" && !self.index.contains_key(stem) {
                let path = self.dir.join(file);
                self.warn(
                    &path,
                    1,
                    format!("lab.conf has no machine `{stem}`: {file} is not used"),
                );
            }
        }
    }

    fn add_address(&mut self, mi: usize, path: &Path, line: usize, iface: &str, addr: IfAddr) {
        if iface == "lo" {
            return;
        }
        let m = &mut self.machines[mi].spec;
        let Some(ii) = m.interfaces.iter().position(|i| i.name == iface) else {
            let msg = format!(
                "address {addr} is for {iface}, but lab.conf gives {} no {iface}: not checked",
                m.umid
            );
            self.warn(path, line, msg);
            return;
        };
        let addrs = &mut m.interfaces[ii].addresses;
        if addrs.contains(&addr) {
            return;
        }
        let ai = addrs.len();
        addrs.push(addr);
        self.map
            .set(Item::IfaceAddr(mi, ii, ai), line_loc(path, line));
    }

    fn other_entry(&mut self, name: &str) {
        let dir_machine = name
            .strip_suffix('/')
            .filter(|m| self.index.contains_key(*m));
        let msg = if let Some(m) = dir_machine {
            format!(
                "{m}/ (files copied into the machine) is not supported: the guest sees the host's files"
            )
        } else if name.ends_with(".shutdown") {
            format!("{name} is not run: umldbg halts machines without shutdown scripts")
        } else {
            return;
        };
        let path = self.dir.join(name.trim_end_matches('/'));
        self.warn(&path, 1, msg);
    }
}

fn expected_line(line: &str) -> String {
    format!(
        "cannot read `{line}`: expected `machine[N]=domain`, `machine[option]=value` or `LAB_NAME=\"...\"`"
    )
}

/// A lab.conf value: `"quoted"`, `'quoted'` or a bare word, optionally followed by a comment.
fn unquote(raw: &str) -> Result<String, String> {
    let v = raw.trim();
    let (value, rest) = match v.chars().next() {
        Some(q @ ('"' | '\'')) => match v[1..].find(q) {
            Some(end) => (&v[1..1 + end], &v[2 + end..]),
            None => return Err(format!("unterminated quote in `{v}`: close it with {q}")),
        },
        _ => match v.find(char::is_whitespace) {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, ""),
        },
    };
    let rest = rest.trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err(format!("`{v}` has spaces: put the value in double quotes"));
    }
    Ok(value.to_owned())
}

/// Memory in MiB from Netkit's bare number or Docker-style `128m`, `1g`, `524288k`.
fn parse_mem(v: &str) -> Option<u32> {
    let v = v.trim();
    let v = v
        .strip_suffix(['b', 'B'])
        .filter(|s| s.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(v);
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, "m"),
    };
    let n: u64 = digits.parse().ok()?;
    let mb = match unit.to_ascii_lowercase().as_str() {
        "k" => n.div_ceil(1024),
        "m" => n,
        "g" => n.checked_mul(1024)?,
        _ => return None,
    };
    u32::try_from(mb).ok()
}

/// Script lines with `\` continuations joined, blank and comment lines dropped, numbered by the
/// line they start on.
fn script_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim_end_matches('\r');
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = raw.strip_suffix('\\') {
            acc.push_str(body);
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(raw);
        let t = acc.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push((start, t.to_owned()));
        }
    }
    if let Some((start, acc)) = pending {
        let t = acc.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push((start, t.to_owned()));
        }
    }
    out
}

/// The addresses a shell line assigns, as `(interface, address)`: `ip address add` (and `ip a
/// add`, `ip -4 addr add ... dev ethN`, `ip addr replace`) and `ifconfig ethN A [netmask M]`.
/// Only a reading aid for status and checks: the line itself is what configures the guest.
pub fn addresses_in(line: &str) -> Vec<(String, IfAddr)> {
    let mut out = Vec::new();
    for cmd in line.split(['&', '|', ';']) {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let Some(pos) = words
            .iter()
            .position(|w| matches!(basename(w), "ip" | "ifconfig"))
        else {
            continue;
        };
        let args = &words[pos + 1..];
        let found = if basename(words[pos]) == "ip" {
            ip_addr_add(args)
        } else {
            ifconfig(args)
        };
        out.extend(found);
    }
    out
}

fn basename(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

/// Whether `w` is an abbreviation of `full` that `ip` accepts (at least `min` characters).
fn abbrev(w: &str, full: &str, min: usize) -> bool {
    w.len() >= min && full.starts_with(w)
}

fn ip_addr_add(args: &[&str]) -> Option<(String, IfAddr)> {
    let mut i = 0;
    while let Some(w) = args.get(i).filter(|w| w.starts_with('-')) {
        match *w {
            // Another namespace or a batch file: the addresses are not this machine's.
            "-n" | "-netns" | "-b" | "-batch" => return None,
            "-f" | "-family" | "-rc" | "-rcvbuf" => i += 2,
            _ => i += 1,
        }
    }
    let object = args.get(i)?;
    let command = args.get(i + 1)?;
    if !abbrev(object, "address", 1)
        || !(abbrev(command, "add", 1) || abbrev(command, "replace", 3))
    {
        return None;
    }
    let (mut dev, mut local) = (None, None);
    let mut rest = args[i + 2..].iter();
    while let Some(w) = rest.next() {
        match *w {
            "dev" => dev = rest.next().copied(),
            "local" => local = rest.next().copied(),
            "peer" | "broadcast" | "brd" | "anycast" | "label" | "scope" | "valid_lft"
            | "preferred_lft" | "metric" | "proto" => {
                rest.next();
            }
            w if local.is_none()
                && (w.parse::<IpAddr>().is_ok() || w.parse::<IfAddr>().is_ok()) =>
            {
                local = Some(w);
            }
            _ => {}
        }
    }
    let (dev, local) = (dev?, local?);
    let addr = match local.parse::<IfAddr>() {
        Ok(a) => a,
        // `ip` takes an address without a length as a single host (/32, /128).
        Err(_) => {
            let ip: IpAddr = local.parse().ok()?;
            IfAddr {
                addr: ip,
                prefix: if ip.is_ipv4() { 32 } else { 128 },
            }
        }
    };
    Some((iface_of(dev), addr))
}

fn ifconfig(args: &[&str]) -> Option<(String, IfAddr)> {
    let dev = *args.first()?;
    let mut rest = args[1..].iter().copied().peekable();
    if let Some(&fam) = rest.peek()
        && (fam == "inet" || fam == "inet6")
    {
        rest.next();
    }
    if rest.peek() == Some(&"add") {
        rest.next();
    }
    let addr_word = rest.next()?;
    let mut netmask = None;
    while let Some(w) = rest.next() {
        if w == "netmask" {
            netmask = rest.next();
        }
    }
    let addr = if let Ok(a) = addr_word.parse::<IfAddr>() {
        a
    } else {
        let ip: IpAddr = addr_word.parse().ok()?;
        let prefix = match (ip, netmask) {
            (IpAddr::V4(_), Some(m)) => mask_len(m)?,
            (IpAddr::V4(v4), None) => classful(v4),
            (IpAddr::V6(_), _) => 128,
        };
        IfAddr { addr: ip, prefix }
    };
    Some((iface_of(dev), addr))
}

/// `eth0:1` (an alias label) is an address on eth0.
fn iface_of(dev: &str) -> String {
    dev.split(':').next().unwrap_or(dev).to_owned()
}

/// The prefix length of a dotted (`255.255.255.0`) or hex (`0xffffff00`) netmask.
fn mask_len(m: &str) -> Option<u8> {
    let bits = match m.strip_prefix("0x").or_else(|| m.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => u32::from(m.parse::<Ipv4Addr>().ok()?),
    };
    let len = bits.leading_ones();
    // A mask with holes (255.0.255.0) has no prefix length.
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// What `ifconfig` assumes without a netmask: the address's old class.
fn classful(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Option<(String, String)> {
        let v = addresses_in(line);
        assert!(v.len() <= 1, "{v:?}");
        v.into_iter().next().map(|(i, a)| (i, a.to_string()))
    }

    fn pair(i: &str, a: &str) -> Option<(String, String)> {
        Some((i.to_owned(), a.to_owned()))
    }

    #[test]
    fn reads_ip_address_add_forms() {
        assert_eq!(
            one("ip address add 10.0.0.1/24 dev eth0"),
            pair("eth0", "10.0.0.1/24")
        );
        assert_eq!(
            one("ip addr add 10.0.0.1/24 dev eth0"),
            pair("eth0", "10.0.0.1/24")
        );
        assert_eq!(
            one("ip a add dev eth1 10.0.0.1/24 brd +"),
            pair("eth1", "10.0.0.1/24")
        );
        assert_eq!(
            one("/sbin/ip -4 addr add 10.0.0.1/24 dev eth0"),
            pair("eth0", "10.0.0.1/24")
        );
        assert_eq!(
            one("ip -6 addr add 2001:db8::1/64 dev eth0"),
            pair("eth0", "2001:db8::1/64")
        );
        assert_eq!(
            one("ip addr add 10.0.0.1 dev eth0"),
            pair("eth0", "10.0.0.1/32")
        );
        assert_eq!(
            one("ip addr add local 10.0.0.1/8 dev eth0"),
            pair("eth0", "10.0.0.1/8")
        );
        assert_eq!(
            one("ip address replace 10.0.0.1/24 dev eth0"),
            pair("eth0", "10.0.0.1/24")
        );
        assert_eq!(one("ip link set eth0 up"), None);
        assert_eq!(one("ip addr show"), None);
        assert_eq!(one("ip route add default via 10.0.0.254"), None);
        assert_eq!(one("ip -n other addr add 10.0.0.1/24 dev eth0"), None);
        assert_eq!(one("ip addr add 10.0.0.1/24"), None);
    }

    #[test]
    fn reads_ifconfig_forms() {
        assert_eq!(
            one("ifconfig eth0 10.0.0.1 netmask 255.255.255.0 up"),
            pair("eth0", "10.0.0.1/24")
        );
        assert_eq!(
            one("ifconfig eth0 10.0.0.1/16 up"),
            pair("eth0", "10.0.0.1/16")
        );
        assert_eq!(
            one("ifconfig eth0 192.168.1.1 up"),
            pair("eth0", "192.168.1.1/24")
        );
        assert_eq!(one("ifconfig eth0 10.1.1.1"), pair("eth0", "10.1.1.1/8"));
        assert_eq!(
            one("ifconfig eth0:1 10.0.0.5 netmask 0xffffff00"),
            pair("eth0", "10.0.0.5/24")
        );
        assert_eq!(
            one("ifconfig eth0 inet6 add 2001:db8::2/64"),
            pair("eth0", "2001:db8::2/64")
        );
        assert_eq!(one("ifconfig eth0 up"), None);
        assert_eq!(one("ifconfig eth0 10.0.0.1 netmask 255.0.255.0"), None);
    }

    #[test]
    fn reads_every_command_of_a_compound_line() {
        let v = addresses_in(
            "ip addr add 10.0.0.1/24 dev eth0 && ip addr add 10.0.1.1/24 dev eth1; ip link set eth0 up",
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].0, "eth1");
    }

    #[test]
    fn script_lines_join_continuations_and_drop_comments() {
        let t = "#!/bin/sh\n\n# set up\nip addr add \\\n 10.0.0.1/24 dev eth0\r\n  echo hi  \n";
        assert_eq!(
            script_lines(t),
            vec![
                (4, "ip addr add  10.0.0.1/24 dev eth0".to_owned()),
                (6, "echo hi".to_owned())
            ]
        );
    }

    #[test]
    fn values_and_memory() {
        assert_eq!(unquote(" \"My lab\" # c").unwrap(), "My lab");
        assert_eq!(unquote("A").unwrap(), "A");
        assert_eq!(unquote("'x y'").unwrap(), "x y");
        assert!(unquote("a b").is_err());
        assert!(unquote("\"open").is_err());
        assert_eq!(parse_mem("128"), Some(128));
        assert_eq!(parse_mem("128m"), Some(128));
        assert_eq!(parse_mem("1G"), Some(1024));
        assert_eq!(parse_mem("256MB"), Some(256));
        assert_eq!(parse_mem("1025k"), Some(2));
        assert_eq!(parse_mem("lots"), None);
        assert_eq!(parse_mem("99999999999"), None);
    }

    #[test]
    fn sanitises_names() {
        assert_eq!(sanitise("My Lab #1"), "My-Lab-1");
        assert_eq!(sanitise("..hidden"), "hidden");
        assert_eq!(sanitise("ok_name.v2"), "ok_name.v2");
        assert_eq!(sanitise("***"), "");
    }
}
