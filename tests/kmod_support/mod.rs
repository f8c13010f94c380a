//! Shared helpers of the kmod, ptype and symfile tests: the cached kernel (from its manifest),
//! real tools (readelf, gdb, nm) and a parser of gdb's `ptype /o` output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel built by `umldbg kernel build`, as its manifest describes it.
pub struct Kernel {
    pub linux: PathBuf,
    pub modules_dir: PathBuf,
    pub build_dir: PathBuf,
    pub build_id: String,
}

/// The newest kernel in the cache. Panics (fails the test) when there is none: these tests
/// compare against a real kernel and must not pass vacuously.
pub fn kernel() -> Kernel {
    let cache = std::env::var_os("UMLDBG_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/umldbg")
        });
    let dir = cache.join("kernels");
    let mut best: Option<(u64, serde_json::Value)> = None;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("manifest.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let built = v["built_at"].as_u64().unwrap_or(0);
        if best.as_ref().is_none_or(|(b, _)| built > *b) {
            best = Some((built, v));
        }
    }
    let Some((_, m)) = best else {
        panic!(
            "no kernel manifest under {}: run `umldbg kernel build` first (these tests compare \
             against the real UML kernel and its modules)",
            dir.display()
        );
    };
    let path = |k: &str| {
        PathBuf::from(
            m[k].as_str()
                .unwrap_or_else(|| panic!("manifest has no {k}")),
        )
    };
    let k = Kernel {
        linux: path("linux"),
        modules_dir: path("modules_dir"),
        build_dir: path("build_dir"),
        build_id: m["build_id"].as_str().unwrap_or_default().to_owned(),
    };
    assert!(
        k.linux.is_file(),
        "{} is missing: run `umldbg kernel build`",
        k.linux.display()
    );
    k
}

impl Kernel {
    /// A module of this kernel by file name (`ipt_REJECT.ko`), searched under modules_dir.
    pub fn module(&self, file: &str) -> PathBuf {
        fn find(dir: &Path, file: &str) -> Option<PathBuf> {
            for e in std::fs::read_dir(dir).ok()?.flatten() {
                let p = e.path();
                if p.is_dir() {
                    if let Some(f) = find(&p, file) {
                        return Some(f);
                    }
                } else if p.file_name().is_some_and(|n| n == file) {
                    return Some(p);
                }
            }
            None
        }
        find(&self.modules_dir, file)
            .unwrap_or_else(|| panic!("{file} not found under {}", self.modules_dir.display()))
    }
}

/// Run a tool and return its stdout; panics with its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gdb -nx -batch -ex C1 -ex C2 ... FILE`, stdout and stderr together (gdb prints some answers
/// on stderr).
pub fn gdb(file: &Path, commands: &[String]) -> String {
    let mut args: Vec<String> = vec!["-nx".into(), "-batch".into()];
    for c in commands {
        args.push("-ex".into());
        args.push(c.clone());
    }
    args.push(file.display().to_string());
    let out = Command::new("gdb")
        .args(&args)
        .output()
        .expect("gdb is installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One member line of gdb's `ptype /o`, with the C path built from the enclosing names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GdbMember {
    pub path: String,
    pub offset: u64,
    pub size: u64,
    pub bit_offset: Option<u32>,
    pub bit_size: Option<u32>,
}

struct Frame {
    offset: u64,
    size: u64,
    union: bool,
    members: Vec<GdbMember>,
}

/// Parse the output of one or more `ptype /o struct X` into one member list per struct, in
/// order. Anonymous aggregates produce no entry (they have no path); named nested ones do.
pub fn parse_ptype_o(text: &str) -> Vec<(String, u64, Vec<GdbMember>)> {
    let mut out = Vec::new();
    let mut name = String::new();
    let mut stack: Vec<Frame> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("/* offset      |    size */  type = ") {
            let rest = rest.trim_end_matches('{').trim();
            name = rest
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned();
            stack = vec![Frame {
                offset: 0,
                size: 0,
                union: rest.starts_with("union"),
                members: Vec::new(),
            }];
            continue;
        }
        if stack.is_empty() {
            continue;
        }
        if t.starts_with("/* XXX") || t.is_empty() || t == "<no data fields>" {
            continue;
        }
        if let Some(total) = t.strip_prefix("/* total size (bytes):") {
            let size: u64 = total.trim_end_matches("*/").trim().parse().unwrap();
            stack.last_mut().unwrap().size = size;
            continue;
        }
        if t == "}" {
            let top = stack.pop().unwrap();
            out.push((name.clone(), top.size, top.members));
            stack.clear();
            continue;
        }
        if t.starts_with('}') {
            // `} name;` or `};`: close a nested aggregate.
            let inner = stack.pop().unwrap();
            let label = t
                .trim_start_matches('}')
                .trim_end_matches(';')
                .trim()
                .to_owned();
            let parent = stack.last_mut().unwrap();
            if label.is_empty() {
                parent.members.extend(inner.members);
            } else {
                parent.members.push(GdbMember {
                    path: label.clone(),
                    offset: inner.offset,
                    size: inner.size,
                    bit_offset: None,
                    bit_size: None,
                });
                for mut m in inner.members {
                    m.path = format!("{label}.{}", m.path);
                    parent.members.push(m);
                }
            }
            continue;
        }
        let Some(rest) = t.strip_prefix("/*") else {
            continue;
        };
        let Some((column, decl)) = rest.split_once("*/") else {
            continue;
        };
        let decl = decl.trim();
        let parent = stack.last().unwrap();
        let (offset, bit, size) = match column.split_once('|') {
            Some((off, size)) => {
                let size: u64 = size.trim().parse().unwrap();
                match off.trim().split_once(':') {
                    Some((o, b)) => (
                        o.trim().parse().unwrap(),
                        Some(b.trim().parse::<u32>().unwrap()),
                        size,
                    ),
                    None => (off.trim().parse().unwrap(), None, size),
                }
            }
            // Inside a union gdb prints only the size: the member starts where the union does.
            None => (parent.offset, None, column.trim().parse().unwrap()),
        };
        if decl.ends_with('{') {
            stack.push(Frame {
                offset,
                size,
                union: decl.starts_with("union"),
                members: Vec::new(),
            });
            continue;
        }
        let (name_part, bit_size) = match decl.trim_end_matches(';').rsplit_once(" : ") {
            Some((d, w)) if w.trim().parse::<u32>().is_ok() => {
                (d.to_owned(), Some(w.trim().parse().unwrap()))
            }
            _ => (decl.trim_end_matches(';').to_owned(), None),
        };
        let member = GdbMember {
            path: decl_name(&name_part),
            offset,
            size,
            bit_offset: bit,
            bit_size,
        };
        stack.last_mut().unwrap().members.push(member);
    }
    out
}

/// The declared name in a C declaration: `void (*destructor)(struct sk_buff *)` gives
/// `destructor`, `char cb[48]` gives `cb`.
pub fn decl_name(decl: &str) -> String {
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    if let Some(i) = decl.find("(*") {
        return ident(
            decl[i + 2..]
                .trim_start_matches('*')
                .trim_start_matches(" const ")
                .trim(),
        );
    }
    let mut d = decl.trim();
    while d.ends_with(']') {
        d = &d[..d.rfind('[').unwrap()];
    }
    let rev: String = d
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    rev.chars().rev().collect()
}

/// Compare umldbg's layout with gdb's member by member; returns the number compared.
pub fn assert_layout_matches(
    ours: &umldbg::dwarf::StructLayout,
    gdb_size: u64,
    gdb_members: &[GdbMember],
) -> usize {
    assert_eq!(ours.size, gdb_size, "sizeof(struct {})", ours.name);
    for g in gdb_members {
        let m = ours.member(&g.path).unwrap_or_else(|| {
            panic!(
                "struct {}: gdb has member {} that umldbg lacks",
                ours.name, g.path
            )
        });
        assert_eq!(
            (m.offset, m.size),
            (g.offset, g.size),
            "struct {} member {}: (offset, size)",
            ours.name,
            g.path
        );
        assert_eq!(
            m.bit_offset, g.bit_offset,
            "struct {} member {}: bit offset",
            ours.name, g.path
        );
        assert_eq!(
            m.bit_size, g.bit_size,
            "struct {} member {}: bit width",
            ours.name, g.path
        );
    }
    let named = ours.members.iter().filter(|m| !m.anonymous).count();
    assert_eq!(
        named,
        gdb_members.len(),
        "struct {}: number of named members",
        ours.name
    );
    gdb_members.len()
}

/// A fresh temporary directory, removed when the value drops.
pub fn tempdir() -> TempDir {
    TempDir::new()
}

/// A directory removed when the test ends.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "umldbg-kmod-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
