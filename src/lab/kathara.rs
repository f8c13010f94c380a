//! Kathará/Netkit lab directories, with Kathará's device semantics.
//!
//! A lab directory holds `lab.conf`, `<machine>.startup` and `shared.startup`,
//! `<machine>.shutdown` and `shared.shutdown`, a folder per machine whose tree is laid over the
//! machine's root, a `shared/` folder every machine sees at `/shared`, and optionally `lab.dep`
//! (boot order) and `lab.ext` (refused: it would bridge the lab to the host's network).
//!
//! `lab.conf` lines understood:
//! - `pc1[0]=A` or `pc1[0]=A/02:42:ac:11:00:02`: interface eth0 of `pc1` is on domain `A`, with
//!   that MAC address when one is given;
//! - `pc1[mem]=128` (MiB; `128m`, `1g` also taken), `pc1[sysctl]="net.ipv4.ip_forward=1"`,
//!   `pc1[env]="NAME=value"`, `pc1[ipv6]=true`, `pc1[exec]="command"` (run after the startup
//!   scripts), `pc1[image]=kathara/frr` (the machine boots from that image; an unknown one is warned);
//! - `[bridged]`, `[port]`, `[num_terms]`, `[cpus]`, `[shell]`, `[ulimit]`, `[volume]`,
//!   `[entrypoint]`, `[args]` and unknown options: accepted and ignored, each with a warning
//!   naming file, line and option; `[privileged]` is accepted (a machine is root in its own
//!   kernel);
//! - `LAB_NAME=`, `LAB_DESCRIPTION=`, `LAB_VERSION=`, `LAB_AUTHOR=`, `LAB_EMAIL=`, `LAB_WEB=`
//!   (quoted or not), Netkit's `machines="pc1 pc2"`; `#` comments and blank lines.
//!
//! As Kathará does, every machine gets [`kathara_sysctls`] (forwarding on, reverse-path filter
//! off, no ICMP rate limit, IPv6 on with forwarding only with `[ipv6]`) before its own
//! `[sysctl]` lines, and its name as umid and hostname. Startup and shutdown scripts are whole
//! files, run by bash by the runtime; their `ip address add A/P dev ethN` and
//! `ifconfig ethN A netmask M` lines are also read into the interfaces' addresses, so that
//! status, graphs and checks know them (the scripts still assign them).
//!
//! The parser itself (`parse`) takes the files' text; `load_dir` is the thin layer that reads
//! them and walks the machine folders.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path, PathBuf};

use super::spec::{
    DEFAULT_MEM_MB, DomainSpec, IfAddr, IfaceSpec, Item, LabSpec, Location, MacAddr, MachineSpec,
    SourceMap, SpecError, Warning,
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
    /// `lab.dep`, when the lab has one.
    pub lab_dep: Option<String>,
    /// `lab.ext`, when the lab has one.
    pub lab_ext: Option<String>,
    /// `*.startup` files by file name (`pc1.startup`, `shared.startup`).
    pub startups: BTreeMap<String, String>,
    /// The other entries of the directory: folders as `name/` (`pc1/`, `shared/`), files by
    /// name (`pc1.shutdown`, `shared.shutdown`, `kathara.conf`, ...).
    pub other_entries: Vec<String>,
}

/// Whether `dir` looks like a Kathará/Netkit lab.
pub fn is_lab_dir(dir: &Path) -> bool {
    dir.join("lab.conf").is_file()
}

/// The sysctls Kathará gives every device before the device's own `[sysctl]` lines, for a
/// machine with these interfaces, with or without `[ipv6]` (Kathará's default is without).
///
/// From Kathará's Docker manager (`src/Kathara/manager/docker/DockerMachine.py`: the container
/// sysctls of `create`, and the per-interface ones of `_create_driver_opt`); its Kubernetes
/// manager sets the same container-wide list.
pub fn kathara_sysctls(ipv6: bool, ifaces: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, &str)> = vec![
        ("net.ipv4.conf.all.rp_filter".into(), "0"),
        ("net.ipv4.conf.default.rp_filter".into(), "0"),
        ("net.ipv4.conf.lo.rp_filter".into(), "0"),
        ("net.ipv4.ip_forward".into(), "1"),
        ("net.ipv4.icmp_ratelimit".into(), "0"),
    ];
    if ipv6 {
        out.extend([
            ("net.ipv6.conf.all.forwarding".into(), "1"),
            ("net.ipv6.conf.all.accept_ra".into(), "0"),
            ("net.ipv6.icmp.ratelimit".into(), "0"),
            ("net.ipv6.conf.default.disable_ipv6".into(), "0"),
            ("net.ipv6.conf.all.disable_ipv6".into(), "0"),
        ]);
    } else {
        out.extend([
            ("net.ipv6.conf.default.disable_ipv6".into(), "1"),
            ("net.ipv6.conf.all.disable_ipv6".into(), "1"),
            ("net.ipv6.conf.default.forwarding".into(), "0"),
            ("net.ipv6.conf.all.forwarding".into(), "0"),
        ]);
    }
    for i in ifaces {
        out.push((format!("net.ipv4.conf.{i}.rp_filter"), "0"));
        if ipv6 {
            out.push((format!("net.ipv6.conf.{i}.disable_ipv6"), "0"));
            out.push((format!("net.ipv6.conf.{i}.forwarding"), "1"));
        } else {
            out.push((format!("net.ipv6.conf.{i}.disable_ipv6"), "1"));
        }
    }
    out.into_iter().map(|(k, v)| (k, v.to_owned())).collect()
}

/// Reads a lab directory and converts it (validated), then checks that no machine folder holds
/// a symbolic link leading out of the lab.
pub fn load_dir(dir: &Path) -> Result<KatharaLab, SpecError> {
    let read = |path: PathBuf| {
        crate::util::read_regular_to_string(&path, crate::util::MAX_LAB_FILE)
            .map_err(|source| SpecError::Read { path, source })
    };
    let optional = |name: &str| {
        let path = dir.join(name);
        if path.is_file() {
            read(path).map(Some)
        } else {
            Ok(None)
        }
    };
    let mut files = LabFiles {
        lab_conf: read(dir.join("lab.conf"))?,
        lab_dep: optional("lab.dep")?,
        lab_ext: optional("lab.ext")?,
        ..LabFiles::default()
    };
    let io_err = |source| SpecError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut linked_dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "lab.conf" | "lab.dep" | "lab.ext") {
            continue;
        }
        let path = entry.path();
        if name.ends_with(".startup") && path.is_file() {
            files.startups.insert(name, read(path)?);
        } else if path.is_dir() {
            if entry.file_type().map_err(io_err)?.is_symlink() {
                linked_dirs.push(name.clone());
            }
            files.other_entries.push(format!("{name}/"));
        } else {
            files.other_entries.push(name);
        }
    }
    files.other_entries.sort();
    linked_dirs.sort();
    let root = dir.canonicalize().map_err(io_err)?;
    let lab = convert(dir, &root, &files)?;
    for name in &linked_dirs {
        let path = dir.join(name);
        if name == "shared" {
            return Err(SpecError::BadEntry {
                path,
                message: "the lab's shared folder is a symbolic link: make it a directory \
                          (Kathará refuses a linked `shared` too)"
                    .to_owned(),
            });
        }
        if lab.spec.machine(name).is_some() {
            check_link(&root, &path, name)?;
        }
    }
    for m in &lab.spec.machines {
        if let Some(folder) = &m.folder {
            check_folder(&root, folder, &m.umid)?;
        }
    }
    Ok(lab)
}

/// Converts a lab directory's files into a validated `LabSpec`. `dir` names the files in
/// messages and gives the lab its name when lab.conf has no LAB_NAME; the spec's paths are
/// `dir` made absolute.
pub fn parse(dir: &Path, files: &LabFiles) -> Result<KatharaLab, SpecError> {
    let root = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    convert(dir, &root, files)
}

fn convert(dir: &Path, root: &Path, files: &LabFiles) -> Result<KatharaLab, SpecError> {
    let conf_path = dir.join("lab.conf");
    let mut p = Parser {
        dir,
        root,
        conf_path: conf_path.clone(),
        machines: Vec::new(),
        index: HashMap::new(),
        domains: Vec::new(),
        meta: BTreeMap::new(),
        lab_name_line: None,
        warnings: Vec::new(),
        map: SourceMap::default(),
    };
    p.map.set(Item::Lab, loc(&conf_path, 1, None));
    for (n, line) in files.lab_conf.lines().enumerate() {
        p.conf_line(n + 1, line)?;
    }
    if let Some(text) = &files.lab_ext {
        p.lab_ext(text)?;
    }
    p.scripts(files);
    for name in &files.other_entries {
        p.other_entry(name);
    }
    if let Some(text) = &files.lab_dep {
        p.lab_dep(text)?;
    }
    p.image_warnings();
    let name = match p.meta.get("LAB_NAME") {
        Some(n) if !sanitise(n).is_empty() => sanitise(n),
        _ => {
            let base = dir.canonicalize().unwrap_or_else(|_| root.to_owned());
            let base = base
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let s = sanitise(&base);
            if s.is_empty() { "lab".to_owned() } else { s }
        }
    };
    if let Some(line) = p.lab_name_line {
        p.map.set(Item::LabName, loc(&conf_path, line, Some(1)));
    }
    let machines = std::mem::take(&mut p.machines);
    let machines = machines
        .into_iter()
        .enumerate()
        .map(|(mi, m)| p.finish(mi, m))
        .collect();
    let mut spec = LabSpec {
        name,
        machines,
        domains: p
            .domains
            .iter()
            .map(|name| DomainSpec {
                name: name.clone(),
                host_address: None,
            })
            .collect(),
        shared_folder: Some(root.join("shared")),
    };
    spec.sort_with(&mut p.map);
    spec.validate_with(&p.map)?;
    // lab.conf's warnings first, in line order, then the other files'.
    p.warnings.sort_by(|a, b| {
        let key = |w: &Warning| {
            (
                w.at.file != conf_path,
                w.at.file.clone(),
                w.at.line,
                w.at.column,
            )
        };
        key(a).cmp(&key(b))
    });
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

fn loc(file: &Path, line: usize, column: Option<usize>) -> Location {
    Location {
        file: file.to_owned(),
        line,
        column,
    }
}

/// The 1-based column (in characters) of byte `offset` of `line`.
fn col(line: &str, offset: usize) -> usize {
    line.get(..offset).map_or(1, |s| s.chars().count() + 1)
}

/// One `pc1[N]=...` line.
struct IfaceLine {
    domain: String,
    mac: Option<MacAddr>,
    at: Location,
    mac_at: Option<Location>,
}

struct Machine {
    name: String,
    mem_mb: u32,
    /// Interface index (the N of `pc1[N]`) to its line, kept sorted.
    ifaces: BTreeMap<usize, IfaceLine>,
    ipv6: bool,
    sysctls: Vec<(String, String, Location)>,
    env: Vec<(String, String, Location)>,
    exec: Vec<(String, Location)>,
    image: Option<(String, Location)>,
    /// Single-valued options already given, with their line, for the "given again" warning.
    seen: HashMap<String, usize>,
    startup_files: Vec<PathBuf>,
    shutdown_files: Vec<PathBuf>,
    folder: Option<PathBuf>,
    depends_on: Vec<(String, Location)>,
    dep_line: Option<usize>,
    /// Addresses read from the startup scripts: (interface, address, where).
    addresses: Vec<(String, IfAddr, Location)>,
}

struct Parser<'a> {
    dir: &'a Path,
    root: &'a Path,
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

/// Names Kathará keeps for itself: the shared folder and scripts, and `kathara check`'s tests.
const RESERVED: [&str; 2] = ["shared", "_test"];

/// Options accepted and ignored, with why (the text after "ignored: ").
const IGNORED: [(&str, &str); 8] = [
    (
        "port",
        "it would publish a port of the machine on the host, and lab traffic never leaves \
         the lab's namespace",
    ),
    (
        "num_terms",
        "no terminal windows are opened: use `umldbg console <umid>`",
    ),
    ("cpus", "a UML machine has one CPU"),
    (
        "shell",
        "startup and shutdown scripts run with bash (Kathará's default shell)",
    ),
    ("ulimit", "resource limits are not applied"),
    (
        "volume",
        "host directories are not mounted (only the lab's shared/ and machine folders)",
    ),
    ("entrypoint", "machines boot umldbg's own init"),
    ("args", "machines boot umldbg's own init"),
];

impl Parser<'_> {
    fn syntax(&self, line: usize, column: usize, message: impl Into<String>) -> SpecError {
        SpecError::Syntax {
            at: loc(&self.conf_path, line, Some(column)),
            message: message.into(),
        }
    }

    fn warn(&mut self, at: Location, message: impl Into<String>) {
        self.warnings.push(Warning {
            at,
            message: message.into(),
        });
    }

    fn machine(&mut self, name: &str, line: usize, column: usize) -> usize {
        if let Some(&mi) = self.index.get(name) {
            return mi;
        }
        let mi = self.machines.len();
        self.machines.push(Machine {
            name: name.to_owned(),
            mem_mb: DEFAULT_MEM_MB,
            ifaces: BTreeMap::new(),
            ipv6: false,
            sysctls: Vec::new(),
            env: Vec::new(),
            exec: Vec::new(),
            image: None,
            seen: HashMap::new(),
            startup_files: Vec::new(),
            shutdown_files: Vec::new(),
            folder: None,
            depends_on: Vec::new(),
            dep_line: None,
            addresses: Vec::new(),
        });
        self.index.insert(name.to_owned(), mi);
        self.map
            .set(Item::Machine(mi), loc(&self.conf_path, line, Some(column)));
        mi
    }

    fn conf_line(&mut self, n: usize, raw: &str) -> Result<(), SpecError> {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let first = raw.len() - raw.trim_start().len();
        let Some(eq) = raw.find('=') else {
            return Err(self.syntax(n, col(raw, first), expected_line(line)));
        };
        let lhs = raw[..eq].trim();
        let (value, voff) = unquote(&raw[eq + 1..])
            .map_err(|(off, m)| self.syntax(n, col(raw, eq + 1 + off), m))?;
        let vcol = col(raw, eq + 1 + voff);
        if let Some((name, rest)) = lhs.split_once('[') {
            let Some(key) = rest.strip_suffix(']') else {
                return Err(self.syntax(n, col(raw, first), expected_line(line)));
            };
            let (name, key) = (name.trim(), key.trim());
            if name.is_empty() || key.is_empty() {
                return Err(self.syntax(n, col(raw, first), expected_line(line)));
            }
            if RESERVED.contains(&name) {
                return Err(self.syntax(
                    n,
                    col(raw, first),
                    format!("`{name}` is a name Kathará reserves (shared folder and scripts, tests): rename the machine"),
                ));
            }
            let ncol = col(raw, first);
            return self.machine_line(n, ncol, name, key, &value, vcol);
        }
        if META_KEYS.contains(&lhs) {
            if lhs == "LAB_NAME" {
                self.lab_name_line = Some(n);
            }
            self.meta.insert(lhs.to_owned(), value);
        } else if lhs == "machines" {
            // Netkit's list of machines, for those with no interface line.
            for name in value.split_whitespace() {
                self.machine(name, n, vcol);
            }
        } else if lhs.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !lhs.is_empty() {
            let at = loc(&self.conf_path, n, Some(col(raw, first)));
            self.warn(
                at,
                format!("`{lhs}` is not a lab.conf setting umldbg knows: ignored"),
            );
        } else {
            return Err(self.syntax(n, col(raw, first), expected_line(line)));
        }
        Ok(())
    }

    fn machine_line(
        &mut self,
        n: usize,
        ncol: usize,
        name: &str,
        key: &str,
        value: &str,
        vcol: usize,
    ) -> Result<(), SpecError> {
        let mi = self.machine(name, n, ncol);
        let conf = self.conf_path.clone();
        let at = loc(&conf, n, Some(vcol));
        if key.bytes().all(|b| b.is_ascii_digit()) {
            return self.iface_line(n, ncol, mi, name, key, value, vcol);
        }
        let single = !matches!(
            key,
            "sysctl" | "env" | "exec" | "port" | "ulimit" | "volume"
        );
        if single && let Some(first) = self.machines[mi].seen.insert(key.to_owned(), n) {
            self.warn(
                at.clone(),
                format!(
                    "{name}[{key}] is given again (first on line {first}): the later value is used"
                ),
            );
        }
        match key {
            "mem" | "memory" => {
                let mb = parse_mem(value).ok_or_else(|| {
                    self.syntax(
                        n,
                        vcol,
                        format!(
                            "{name}[{key}]={value}: give the memory in MiB, e.g. {name}[mem]=128"
                        ),
                    )
                })?;
                self.machines[mi].mem_mb = mb;
                self.map.set(Item::Memory(mi), at);
            }
            "sysctl" | "env" => {
                let Some((k, v)) = value.split_once('=') else {
                    let example = if key == "sysctl" {
                        "net.ipv4.ip_forward=1"
                    } else {
                        "NAME=value"
                    };
                    return Err(self.syntax(
                        n,
                        vcol,
                        format!("{name}[{key}]={value}: write {name}[{key}]=\"{example}\""),
                    ));
                };
                let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
                let m = &mut self.machines[mi];
                let list = if key == "sysctl" {
                    &mut m.sysctls
                } else {
                    &mut m.env
                };
                let again = list
                    .iter()
                    .position(|(x, _, _)| *x == k)
                    .map(|i| list.remove(i).2);
                list.push((k.clone(), v, at.clone()));
                if let Some(was) = again {
                    let msg = format!(
                        "{name}[{key}] sets {k} again (first on line {}): the later value is used",
                        was.line
                    );
                    self.warn(at, msg);
                }
            }
            "ipv6" => {
                let on = str_to_bool(value).ok_or_else(|| {
                    self.syntax(
                        n,
                        vcol,
                        format!("{name}[ipv6]={value}: write true or false"),
                    )
                })?;
                self.machines[mi].ipv6 = on;
            }
            "exec" => self.machines[mi].exec.push((value.to_owned(), at)),
            "image" => self.machines[mi].image = Some((value.to_owned(), at)),
            "privileged" => {}
            "bridged" => {
                let on = str_to_bool(value).ok_or_else(|| {
                    self.syntax(
                        n,
                        vcol,
                        format!("{name}[bridged]={value}: write true or false"),
                    )
                })?;
                if on {
                    self.warn(
                        loc(&conf, n, Some(ncol)),
                        format!(
                            "{name}[bridged] ignored: it would connect the machine to the host's \
                             network, and lab traffic never leaves the lab's namespace"
                        ),
                    );
                }
            }
            _ => {
                let msg = match IGNORED.iter().find(|(k, _)| *k == key) {
                    Some((_, why)) => format!("{name}[{key}] ignored: {why}"),
                    None => format!(
                        "{name}[{key}] ignored: `{key}` is not a Kathará option umldbg knows"
                    ),
                };
                self.warn(loc(&conf, n, Some(ncol)), msg);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn iface_line(
        &mut self,
        n: usize,
        ncol: usize,
        mi: usize,
        name: &str,
        key: &str,
        value: &str,
        vcol: usize,
    ) -> Result<(), SpecError> {
        let idx: usize =
            key.parse().ok().filter(|i| *i < 1000).ok_or_else(|| {
                self.syntax(n, ncol, format!("interface index `{key}` is too large"))
            })?;
        let (domain, mac) = match value.split_once('/') {
            Some((d, mac)) => (d.trim(), Some(mac)),
            None => (value.trim(), None),
        };
        if domain.is_empty() {
            return Err(self.syntax(
                n,
                vcol,
                format!("{name}[{idx}] has no domain: write {name}[{idx}]=A"),
            ));
        }
        let conf = self.conf_path.clone();
        let (mac, mac_at) = match mac {
            None => (None, None),
            Some(text) => {
                // The MAC's column: after the domain and the `/` (values hold no tabs).
                let mcol = vcol + value.find('/').map_or(0, |i| value[..=i].chars().count());
                let text = text.trim();
                let mac = text
                    .parse::<MacAddr>()
                    .map_err(|e| self.syntax(n, mcol, format!("{name}[{idx}]: {e}")))?;
                (Some(mac), Some(loc(&conf, n, Some(mcol))))
            }
        };
        if let Some(first) = self.machines[mi].ifaces.get(&idx) {
            let first = first.at.line;
            return Err(self.syntax(
                n,
                ncol,
                format!("{name}[{idx}] is given twice (first on line {first}): keep one"),
            ));
        }
        if !self.domains.iter().any(|d| d == domain) {
            let di = self.domains.len();
            self.domains.push(domain.to_owned());
            self.map.set(Item::Domain(di), loc(&conf, n, Some(vcol)));
        }
        self.machines[mi].ifaces.insert(
            idx,
            IfaceLine {
                domain: domain.to_owned(),
                mac,
                at: loc(&conf, n, Some(vcol)),
                mac_at,
            },
        );
        Ok(())
    }

    /// lab.ext would take collision domains out to the host's physical interfaces: refused.
    fn lab_ext(&mut self, text: &str) -> Result<(), SpecError> {
        let path = self.dir.join("lab.ext");
        for (n, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let first = line.len() - line.trim_start().len();
            return Err(SpecError::Unsupported {
                at: loc(&path, n + 1, Some(col(line, first))),
                message: format!(
                    "lab.ext (`{t}`) would connect a collision domain to the host's physical \
                     network; umldbg refuses it: lab traffic never leaves the lab's network \
                     namespace. Remove lab.ext to run the lab without external links"
                ),
            });
        }
        self.warn(loc(&path, 1, None), "lab.ext is empty: ignored");
        Ok(())
    }

    /// lab.dep: `machine: machine1 machine2` means machine boots after machine1 and machine2.
    fn lab_dep(&mut self, text: &str) -> Result<(), SpecError> {
        let path = self.dir.join("lab.dep");
        let syntax = |line: usize, column: usize, message: String| SpecError::Syntax {
            at: loc(&path, line, Some(column)),
            message,
        };
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let first = raw.len() - raw.trim_start().len();
            let expected = || {
                syntax(
                    n,
                    col(raw, first),
                    format!("cannot read `{t}`: expected `machine: machine1 machine2 ...`"),
                )
            };
            let Some(colon) = raw.find(':') else {
                return Err(expected());
            };
            let name = raw[..colon].trim();
            let deps = &raw[colon + 1..];
            if name.is_empty() || name.contains(char::is_whitespace) || deps.trim().is_empty() {
                return Err(expected());
            }
            let Some(&mi) = self.index.get(name) else {
                let known: Vec<&str> = self.machines.iter().map(|m| m.name.as_str()).collect();
                return Err(syntax(
                    n,
                    col(raw, first),
                    format!(
                        "`{name}` is not a machine of lab.conf (machines: {}): fix the name or remove the line",
                        known.join(", ")
                    ),
                ));
            };
            if let Some(earlier) = self.machines[mi].dep_line {
                return Err(syntax(
                    n,
                    col(raw, first),
                    format!(
                        "`{name}` has dependencies on line {earlier} already: put them all on one line"
                    ),
                ));
            }
            self.machines[mi].dep_line = Some(n);
            let mut offset = colon + 1;
            for word in deps.split_whitespace() {
                let at = offset + raw[offset..].find(word).unwrap_or(0);
                offset = at + word.len();
                let m = &mut self.machines[mi];
                if !m.depends_on.iter().any(|(d, _)| d == word) {
                    m.depends_on
                        .push((word.to_owned(), loc(&path, n, Some(col(raw, at)))));
                }
            }
        }
        Ok(())
    }

    /// Startup scripts of each machine (shared.startup first), and the addresses they assign.
    fn scripts(&mut self, files: &LabFiles) {
        let shared = files.startups.get("shared.startup");
        let shared_path = self.dir.join("shared.startup");
        let shared_lines = shared.map(|t| script_lines(t)).unwrap_or_default();
        for mi in 0..self.machines.len() {
            let file = format!("{}.startup", self.machines[mi].name);
            let own = files.startups.get(&file);
            let own_path = self.dir.join(&file);
            let own_lines = own.map(|t| script_lines(t)).unwrap_or_default();
            let m = &mut self.machines[mi];
            if shared.is_some() {
                m.startup_files.push(self.root.join("shared.startup"));
            }
            if own.is_some() {
                m.startup_files.push(self.root.join(&file));
            }
            let lines = (shared_lines.iter().map(|(n, l)| (&shared_path, *n, l)))
                .chain(own_lines.iter().map(|(n, l)| (&own_path, *n, l)));
            for (path, n, line) in lines {
                for (iface, addr) in addresses_in(line) {
                    if iface != "lo" {
                        m.addresses.push((iface, addr, loc(path, n, None)));
                    }
                }
            }
        }
        for file in files.startups.keys() {
            let stem = file.trim_end_matches(".startup");
            if stem != "shared" && !self.index.contains_key(stem) {
                let at = loc(&self.dir.join(file), 1, None);
                self.warn(
                    at,
                    format!("lab.conf has no machine `{stem}`: {file} is not used"),
                );
            }
        }
    }

    /// Machine folders, shutdown scripts, and files of Kathará's that umldbg does not read.
    fn other_entry(&mut self, name: &str) {
        let path = self.dir.join(name.trim_end_matches('/'));
        if let Some(dir) = name.strip_suffix('/') {
            // Other folders (images, docs, Kathará's shared/ and _test/) are not machines'.
            if let Some(&mi) = self.index.get(dir) {
                self.machines[mi].folder = Some(self.root.join(dir));
            }
        } else if let Some(stem) = name.strip_suffix(".shutdown") {
            if stem == "shared" {
                // Kathará runs shared.shutdown after the machine's own.
                for m in &mut self.machines {
                    m.shutdown_files.push(self.root.join(name));
                }
            } else if let Some(&mi) = self.index.get(stem) {
                self.machines[mi]
                    .shutdown_files
                    .insert(0, self.root.join(name));
            } else {
                self.warn(
                    loc(&path, 1, None),
                    format!("lab.conf has no machine `{stem}`: {name} is not used"),
                );
            }
        } else if name == "kathara.conf" {
            self.warn(
                loc(&path, 1, None),
                "Kathará's settings file is not read: umldbg runs scripts with bash and leaves \
                 IPv6 off unless a machine has [ipv6]=true, as Kathará's defaults do",
            );
        }
    }

    /// One warning per unknown image asked for, at its first line, naming the machines.
    fn image_warnings(&mut self) {
        let mut by_image: BTreeMap<&str, Vec<(&str, &Location)>> = BTreeMap::new();
        for m in &self.machines {
            if let Some((image, at)) = &m.image {
                by_image.entry(image).or_default().push((&m.name, at));
            }
        }
        let mut out = Vec::new();
        for (image, users) in by_image {
            let Some(why) = super::spec::unknown_image(image) else {
                continue;
            };
            let at = users.iter().map(|(_, at)| *at).min_by_key(|at| at.line);
            let Some(at) = at.cloned() else { continue };
            let names: Vec<&str> = users.iter().map(|(n, _)| *n).collect();
            let message = format!("[image] `{image}` of {}: {why}", names.join(", "));
            out.push(Warning { at, message });
        }
        self.warnings.extend(out);
    }

    /// The machine's spec, with its positions recorded in the source map.
    fn finish(&mut self, mi: usize, m: Machine) -> MachineSpec {
        let mut interfaces = Vec::new();
        for (pos, (idx, line)) in m.ifaces.into_iter().enumerate() {
            self.map.set(Item::Iface(mi, pos), line.at.clone());
            self.map.set(Item::IfaceDomain(mi, pos), line.at);
            if let Some(at) = line.mac_at {
                self.map.set(Item::IfaceMac(mi, pos), at);
            }
            interfaces.push(IfaceSpec {
                name: format!("eth{idx}"),
                domain: line.domain,
                addresses: Vec::new(),
                mac: line.mac,
            });
        }
        for (iface, addr, at) in m.addresses {
            let Some(ii) = interfaces.iter().position(|i| i.name == iface) else {
                // Interfaces a script creates (eth0.10, br0, vxlan1, tunnels) are its own
                // business; an ethN that lab.conf does not give is likely a mistake.
                let eth_n = iface
                    .strip_prefix("eth")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if eth_n {
                    let msg = format!(
                        "address {addr} is for {iface}, but lab.conf gives {} no {iface}: not checked",
                        m.name
                    );
                    self.warn(at, msg);
                }
                continue;
            };
            let addrs = &mut interfaces[ii].addresses;
            if !addrs.contains(&addr) {
                self.map.set(Item::IfaceAddr(mi, ii, addrs.len()), at);
                addrs.push(addr);
            }
        }
        let names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
        let mut sysctls = kathara_sysctls(m.ipv6, &names);
        // A [sysctl] line replaces Kathará's default for the same key, and comes after all
        // defaults: the value given is the one written last.
        let norm = |k: &str| k.replace('/', ".");
        sysctls.retain(|(k, _)| !m.sysctls.iter().any(|(u, _, _)| norm(u) == *k));
        for (k, v, at) in m.sysctls {
            self.map.set(Item::Sysctl(mi, sysctls.len()), at);
            sysctls.push((k, v));
        }
        let env = (m.env.into_iter().enumerate())
            .map(|(ei, (k, v, at))| {
                self.map.set(Item::Env(mi, ei), at);
                (k, v)
            })
            .collect();
        let startup = (m.exec.into_iter().enumerate())
            .map(|(li, (cmd, at))| {
                self.map.set(Item::Startup(mi, li), at);
                cmd
            })
            .collect();
        let depends_on = (m.depends_on.into_iter().enumerate())
            .map(|(di, (dep, at))| {
                self.map.set(Item::Depends(mi, di), at);
                dep
            })
            .collect();
        let image = m.image.map(|(image, at)| {
            self.map.set(Item::Image(mi), at);
            image
        });
        MachineSpec {
            umid: m.name.clone(),
            hostname: m.name,
            mem_mb: m.mem_mb,
            interfaces,
            routes: Vec::new(),
            sysctls,
            startup,
            env,
            image,
            startup_files: m.startup_files,
            shutdown_files: m.shutdown_files,
            folder: m.folder,
            depends_on,
            addresses_from_startups: true,
        }
    }
}

/// Checks every symbolic link under a machine's folder (not following linked directories).
fn check_folder(root: &Path, folder: &Path, machine: &str) -> Result<(), SpecError> {
    let mut stack = vec![folder.to_owned()];
    while let Some(dir) = stack.pop() {
        let io_err = |source| SpecError::Read {
            path: dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let kind = entry.file_type().map_err(io_err)?;
            if kind.is_symlink() {
                check_link(root, &entry.path(), machine)?;
            } else if kind.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Refuses a symbolic link that leads out of the lab directory `root` (canonical).
fn check_link(root: &Path, link: &Path, machine: &str) -> Result<(), SpecError> {
    let target = std::fs::read_link(link).map_err(|source| SpecError::Read {
        path: link.to_owned(),
        source,
    })?;
    // Where it leads: resolved through every link when it resolves, else (a dangling link)
    // read as a path relative to the link's directory.
    let resolved = link.canonicalize().unwrap_or_else(|_| {
        let base = link.parent().unwrap_or(Path::new("/"));
        let base = base.canonicalize().unwrap_or_else(|_| base.to_owned());
        lexical(&base.join(&target))
    });
    if resolved.starts_with(root) {
        return Ok(());
    }
    Err(SpecError::BadEntry {
        path: link.to_owned(),
        message: format!(
            "symbolic link to {} leads out of the lab (to {}): machine `{machine}`'s folder is \
             laid over its root and may not bring in files from elsewhere on the host; put a \
             copy of the file in the folder instead",
            target.display(),
            resolved.display()
        ),
    })
}

/// `path` with `.` and `..` resolved without looking at the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn expected_line(line: &str) -> String {
    format!(
        "cannot read `{line}`: expected `machine[N]=domain`, `machine[option]=value` or `LAB_NAME=\"...\"`"
    )
}

/// A lab.conf value: `"quoted"`, `'quoted'` or a bare word, optionally followed by a comment.
/// Returns the value and its byte offset in `raw`; an error carries the offset it is about.
fn unquote(raw: &str) -> Result<(String, usize), (usize, String)> {
    let lead = raw.len() - raw.trim_start().len();
    let v = raw.trim();
    let (value, start, rest) = match v.chars().next() {
        Some(q @ ('"' | '\'')) => match v[1..].find(q) {
            Some(end) => (&v[1..1 + end], lead + 1, &v[2 + end..]),
            None => {
                return Err((
                    lead,
                    format!("unterminated quote in `{v}`: close it with {q}"),
                ));
            }
        },
        _ => match v.find(char::is_whitespace) {
            Some(i) => (&v[..i], lead, &v[i..]),
            None => (v, lead, ""),
        },
    };
    let rest = rest.trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err((
            lead,
            format!("`{v}` has spaces: put the value in double quotes"),
        ));
    }
    Ok((value.to_owned(), start))
}

/// Kathará's booleans (Python's strtobool): y, yes, t, true, on, 1 and n, no, f, false, off, 0.
fn str_to_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Some(true),
        "n" | "no" | "f" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
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
        assert_eq!(
            unquote(" \"My lab\" # c").unwrap(),
            ("My lab".to_owned(), 2)
        );
        assert_eq!(unquote("A").unwrap(), ("A".to_owned(), 0));
        assert_eq!(unquote("'x y'").unwrap(), ("x y".to_owned(), 1));
        assert_eq!(unquote("\"open").unwrap_err().0, 0);
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
    fn booleans_as_kathara_reads_them() {
        for t in ["true", "True", "yes", "1", "on", "t", "Y"] {
            assert_eq!(str_to_bool(t), Some(true), "{t}");
        }
        for f in ["false", "False", "no", "0", "off", "f", "N"] {
            assert_eq!(str_to_bool(f), Some(false), "{f}");
        }
        assert_eq!(str_to_bool("maybe"), None);
    }

    #[test]
    fn kathara_default_sysctls() {
        let v4 = kathara_sysctls(false, &["eth0"]);
        let has = |list: &[(String, String)], k: &str, v: &str| {
            list.iter().any(|(a, b)| a == k && b == v)
        };
        assert!(has(&v4, "net.ipv4.ip_forward", "1"));
        assert!(has(&v4, "net.ipv4.conf.all.rp_filter", "0"));
        assert!(has(&v4, "net.ipv4.conf.default.rp_filter", "0"));
        assert!(has(&v4, "net.ipv4.icmp_ratelimit", "0"));
        assert!(has(&v4, "net.ipv6.conf.all.disable_ipv6", "1"));
        assert!(has(&v4, "net.ipv4.conf.eth0.rp_filter", "0"));
        let v6 = kathara_sysctls(true, &["eth0", "eth1"]);
        assert!(has(&v6, "net.ipv6.conf.all.forwarding", "1"));
        assert!(has(&v6, "net.ipv6.conf.all.accept_ra", "0"));
        assert!(has(&v6, "net.ipv6.icmp.ratelimit", "0"));
        assert!(has(&v6, "net.ipv6.conf.all.disable_ipv6", "0"));
        assert!(has(&v6, "net.ipv6.conf.eth1.forwarding", "1"));
        assert!(!has(&v6, "net.ipv6.conf.all.disable_ipv6", "1"));
    }

    #[test]
    fn lexical_paths() {
        assert_eq!(lexical(Path::new("/a/b/../../../c/./d")), Path::new("/c/d"));
    }

    #[test]
    fn sanitises_names() {
        assert_eq!(sanitise("My Lab #1"), "My-Lab-1");
        assert_eq!(sanitise("..hidden"), "hidden");
        assert_eq!(sanitise("ok_name.v2"), "ok_name.v2");
        assert_eq!(sanitise("***"), "");
    }
}
