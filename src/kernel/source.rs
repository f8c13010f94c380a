//! Where the kernel source comes from: Debian's `linux-source-X.Y` package through a private apt
//! configuration, or the user's own tree or tarball.
//!
//! The private configuration reuses the mirror the machine's apt already uses and keeps its lists
//! and downloads under the cache, so the system's apt sources are never touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::KernelError;
use crate::util;

/// Oldest kernel that runs on hosts with AMX state: older UML kernels size the FPU area wrongly.
pub const MIN_VERSION: (u32, u32) = (6, 13);

/// Suites searched for a new enough `linux-source-X.Y`.
const SUITES: &[&str] = &["unstable", "testing"];

/// The first Debian archive URI of the machine's apt configuration (deb822 or one-line format).
pub fn system_mirror() -> Result<String, KernelError> {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.to_string_lossy().into_owned();
            if (name.ends_with(".list") || name.ends_with(".sources"))
                && let Ok(t) = std::fs::read_to_string(&p)
            {
                texts.push(t);
            }
        }
    }
    texts
        .iter()
        .find_map(|t| mirror_from_sources(t))
        .ok_or(KernelError::NoMirror)
}

/// Find a Debian archive URI (not the security archive) in one sources file.
pub fn mirror_from_sources(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
            rest.split_whitespace().collect()
        } else if let Some(rest) = line.strip_prefix("deb ") {
            // `deb [options] URI suite components`
            let rest = rest.trim();
            let rest = if rest.starts_with('[') {
                rest.split_once(']').map(|(_, r)| r.trim()).unwrap_or("")
            } else {
                rest
            };
            rest.split_whitespace().take(1).collect()
        } else {
            continue;
        };
        if let Some(u) = uris.into_iter().find(|u| {
            let u = u.trim_end_matches('/');
            u.ends_with("/debian") && (u.starts_with("http://") || u.starts_with("https://"))
        }) {
            return Some(u.trim_end_matches('/').to_string());
        }
    }
    None
}

/// apt with its own sources, lists and archives under `<cache>/apt`.
pub struct PrivateApt {
    root: PathBuf,
}

impl PrivateApt {
    pub fn new(cache: &Path, mirror: &str) -> Result<PrivateApt, KernelError> {
        let root = cache.join("apt");
        for d in ["lists/partial", "archives/partial", "parts", "cache"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| KernelError::Io {
                what: format!("create {}", p.display()),
                source: e,
            })?;
        }
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let mut list = String::new();
        for suite in SUITES {
            list.push_str(&format!(
                "deb [signed-by={keyring}] {mirror} {suite} main\n"
            ));
        }
        let sl = root.join("sources.list");
        std::fs::write(&sl, list).map_err(|e| KernelError::Io {
            what: format!("write {}", sl.display()),
            source: e,
        })?;
        Ok(PrivateApt { root })
    }

    fn options(&self) -> Vec<String> {
        let r = |p: &str| self.root.join(p).display().to_string();
        vec![
            "-o".into(),
            format!("Dir::Etc::SourceList={}", r("sources.list")),
            "-o".into(),
            format!("Dir::Etc::SourceParts={}", r("parts")),
            "-o".into(),
            format!("Dir::State::Lists={}", r("lists")),
            "-o".into(),
            format!("Dir::Cache={}", r("cache")),
            "-o".into(),
            format!("Dir::Cache::Archives={}", r("archives")),
            "-o".into(),
            "APT::Sandbox::User=root".into(),
        ]
    }

    pub fn update(&self) -> Result<(), KernelError> {
        let mut c = Command::new("apt-get");
        c.args(self.options()).args(["-q", "update"]);
        util::run(&mut c).map_err(|e| KernelError::Step {
            step: "apt-get update (private)",
            source: e,
        })?;
        Ok(())
    }

    /// The newest `linux-source-X.Y` with X.Y at least [`MIN_VERSION`], as (package, X.Y).
    pub fn newest_source_package(&self) -> Result<(String, (u32, u32)), KernelError> {
        let mut c = Command::new("apt-cache");
        c.args(self.options())
            .args(["search", "--names-only", "^linux-source-[0-9]+\\.[0-9]+$"]);
        let out = util::run(&mut c).map_err(|e| KernelError::Step {
            step: "apt-cache search linux-source",
            source: e,
        })?;
        let text = String::from_utf8_lossy(&out.stdout);
        pick_source_package(&text).ok_or(KernelError::NoSourcePackage)
    }

    /// Download a package into `dir` (reusing a file already there) and return its path.
    pub fn download(&self, package: &str, dir: &Path) -> Result<PathBuf, KernelError> {
        std::fs::create_dir_all(dir).map_err(|e| KernelError::Io {
            what: format!("create {}", dir.display()),
            source: e,
        })?;
        let mut c = Command::new("apt-cache");
        c.args(self.options())
            .args(["show", "--no-all-versions", package]);
        let out = util::run(&mut c).map_err(|e| KernelError::Step {
            step: "apt-cache show",
            source: e,
        })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let file = text
            .lines()
            .find_map(|l| l.strip_prefix("Filename: "))
            .and_then(|f| f.rsplit('/').next())
            .map(str::to_string);
        let size: Option<u64> = text
            .lines()
            .find_map(|l| l.strip_prefix("Size: "))
            .and_then(|s| s.trim().parse().ok());
        if let (Some(file), Some(size)) = (&file, size) {
            let p = dir.join(file);
            if std::fs::metadata(&p)
                .map(|m| m.len() == size)
                .unwrap_or(false)
            {
                return Ok(p);
            }
        }
        let mut c = Command::new("apt-get");
        c.current_dir(dir)
            .args(self.options())
            .args(["-q", "download", package]);
        util::run(&mut c).map_err(|e| KernelError::Step {
            step: "apt-get download",
            source: e,
        })?;
        let file = file.ok_or(KernelError::NoSourcePackage)?;
        Ok(dir.join(file))
    }
}

/// Choose the highest `linux-source-X.Y` (at least [`MIN_VERSION`]) from `apt-cache search` output.
pub fn pick_source_package(search_output: &str) -> Option<(String, (u32, u32))> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let v = name.strip_prefix("linux-source-")?;
            let (a, b) = v.split_once('.')?;
            Some((name.to_string(), (a.parse().ok()?, b.parse().ok()?)))
        })
        .filter(|(_, v)| *v >= MIN_VERSION)
        .max_by_key(|(_, v)| *v)
}

/// VERSION.PATCHLEVEL.SUBLEVEL from a kernel tree's top Makefile.
pub fn tree_version(tree: &Path) -> Result<(u32, u32, u32), KernelError> {
    let mk = tree.join("Makefile");
    let text =
        std::fs::read_to_string(&mk).map_err(|_| KernelError::NotATree(tree.to_path_buf()))?;
    if !tree.join("arch/um").is_dir() {
        return Err(KernelError::NotATree(tree.to_path_buf()));
    }
    let field = |name: &str| -> Option<u32> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().parse().ok()).flatten()
        })
    };
    match (field("VERSION"), field("PATCHLEVEL"), field("SUBLEVEL")) {
        (Some(a), Some(b), Some(c)) => Ok((a, b, c)),
        _ => Err(KernelError::NotATree(tree.to_path_buf())),
    }
}

/// Refuse kernels that crash on this kind of host.
pub fn check_version(v: (u32, u32, u32), what: &str) -> Result<(), KernelError> {
    if (v.0, v.1) < MIN_VERSION {
        return Err(KernelError::TooOld {
            what: what.to_string(),
            version: format!("{}.{}.{}", v.0, v.1, v.2),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_skips_security() {
        let t = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: x\n\nTypes: deb\nURIs: http://mirror.example/debian\n";
        assert_eq!(
            mirror_from_sources(t).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn mirror_from_one_line_format() {
        let t = "# c\ndeb [arch=amd64] http://m.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_sources(t).as_deref(),
            Some("http://m.example/debian")
        );
    }

    #[test]
    fn picks_newest_recent_enough() {
        let out = "linux-source-6.1 - x\nlinux-source-7.2 - y\nlinux-source-6.12 - z\nlinux-source-7.10 - w\n";
        assert_eq!(
            pick_source_package(out),
            Some(("linux-source-7.10".into(), (7, 10)))
        );
        assert_eq!(pick_source_package("linux-source-6.12 - old\n"), None);
    }

    #[test]
    fn refuses_old_kernels() {
        assert!(check_version((6, 12, 3), "t").is_err());
        assert!(check_version((6, 13, 0), "t").is_ok());
        assert!(check_version((7, 2, 13), "t").is_ok());
    }
}
