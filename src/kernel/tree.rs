//! `umldbg kernel build --source TREE` for a developer's own tree: built with `make O=` in a
//! build directory of its own under the cache, incrementally, and never answered from a stale
//! cache.
//!
//! - The tree is not copied and not written to. A tree that was built in place cannot be used
//!   with `O=` (kbuild refuses it): the error says how to clean it.
//! - The build directory keeps its `.config` from build to build, so `make menuconfig` in it
//!   sticks; the options umldbg needs (`scripts/kernel.config`) are set on top, each one that
//!   had to change is named.
//! - Whether the tree changed is decided by a fingerprint of every file's path, size and
//!   modification time (the same facts make trusts) plus the configuration: equal fingerprints
//!   answer from the cache in about a second; any difference runs make, which rebuilds what the
//!   change touches.
//! - Each successful build is published as a run (`runs/run-<build-id>/`: a copy of the image
//!   and the installed modules), so machines keep the kernel they booted while the next build
//!   overwrites the build directory. Runs nothing executes any more are removed after a build.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::build::{self, BuildEvent, BuildOptions, BuildOutcome, Progress};
use super::manifest::{self, Manifest};
use super::{FRAGMENT, KernelError, PATCHES, source};
use crate::util;

/// What a tree's directory remembers of its last successful build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeState {
    pub tree: PathBuf,
    /// Fingerprint of the tree's files when that build started.
    pub fingerprint: String,
    /// sha256 of the build directory's `.config` after that build.
    pub config_hash: String,
    /// sha256 of umldbg's fragment the configuration was checked against.
    pub fragment_hash: String,
    /// The run that build published (`runs/<name>`).
    pub run: String,
}

const STATE: &str = "state.json";

/// The directory of one tree's builds: `<cache>/trees/tree-<sha256 of the path>`.
pub fn tree_dir(cache: &Path, tree: &Path) -> PathBuf {
    let h = hex(&Sha256::digest(tree.as_os_str().as_bytes()));
    manifest::trees_dir(cache).join(format!("tree-{}", &h[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> KernelError {
    move |source| KernelError::Io { what, source }
}

/// Files that say a tree was configured or built in place (`make O=` refuses such a tree).
pub fn in_place_products(tree: &Path) -> Vec<&'static str> {
    [".config", "include/config", "include/generated", "vmlinux"]
        .into_iter()
        .filter(|p| tree.join(p).exists())
        .collect()
}

/// Fingerprint of a tree: every file's relative path, size and modification time (ns), in
/// sorted order, hashed. `.git` is skipped (make does not read it). About 80,000 stats for a
/// kernel tree: a fraction of a second with a warm cache.
pub fn fingerprint(tree: &Path) -> Result<String, KernelError> {
    let mut h = Sha256::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = tree.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(format!("read {}", dir.display())))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            if name == ".git" {
                continue;
            }
            let r = rel.join(&name);
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(r);
                continue;
            }
            h.update(r.as_os_str().as_bytes());
            h.update(format!("\0{}\0{}.{}\n", md.len(), md.mtime(), md.mtime_nsec()).as_bytes());
        }
    }
    Ok(hex(&h.finalize()))
}

/// Is patch `text` in the tree? (dry runs only: the tree is not written to)
fn patch_state(tree: &Path, text: &str) -> PatchState {
    let run = |extra: &[&str]| -> bool {
        let mut child = match Command::new("patch")
            .current_dir(tree)
            .args(["-p1", "--batch", "--silent", "--fuzz=0", "--dry-run"])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => return false,
        };
        let _ = child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes());
        child.wait().is_ok_and(|s| s.success())
    };
    if run(&["--forward"]) {
        PatchState::Missing
    } else if run(&["--reverse", "--force"]) {
        PatchState::Applied
    } else {
        PatchState::DoesNotFit
    }
}

enum PatchState {
    Applied,
    Missing,
    DoesNotFit,
}

/// The options of the fragment that `config` does not have as wanted, as `(name, wanted, had)`.
pub fn needed_changes(fragment: &[(String, char)], config: &str) -> Vec<(String, char, char)> {
    fragment
        .iter()
        .filter_map(|(name, want)| {
            let key = format!("CONFIG_{name}=");
            let got = config
                .lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.chars().next())
                .unwrap_or('n');
            (got != *want).then(|| (name.clone(), *want, got))
        })
        .collect()
}

/// Holds the tree's build directory for one build; a second `kernel build` of the same tree
/// waits for the first.
struct BuildLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

fn lock(dir: &Path, progress: Progress) -> Result<BuildLock, KernelError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("open {}", path.display())))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(BuildLock(l)),
        Err((f, _)) => {
            progress.0(BuildEvent::Waiting(&path));
            Flock::lock(f, FlockArg::LockExclusive)
                .map(BuildLock)
                .map_err(|(_, e)| KernelError::Io {
                    what: format!("lock {}", path.display()),
                    source: e.into(),
                })
        }
    }
}

/// Build the developer's tree (see the module's documentation).
pub fn build_tree(
    opts: &BuildOptions,
    tree: &Path,
    report: &dyn Fn(BuildEvent),
) -> Result<BuildOutcome, KernelError> {
    let t0 = Instant::now();
    let tree = std::fs::canonicalize(tree).map_err(|_| KernelError::NotATree(tree.into()))?;
    let v = source::tree_version(&tree)?;
    source::check_version(v, &tree.display().to_string())?;
    let products = in_place_products(&tree);
    if !products.is_empty() {
        return Err(KernelError::BuiltInPlace {
            tree: tree.clone(),
            found: products.join(", "),
        });
    }
    let dir = tree_dir(&opts.cache, &tree);
    let bdir = dir.join("build");
    std::fs::create_dir_all(&bdir).map_err(io(format!("create {}", bdir.display())))?;
    let progress = Progress(report);
    let _lock = lock(&dir, progress)?;
    let _ = std::fs::write(dir.join("source"), tree.as_os_str().as_bytes());
    let mut notes = Vec::new();

    for (name, text) in PATCHES {
        match patch_state(&tree, text) {
            PatchState::Applied => {}
            PatchState::Missing => notes.push(format!(
                "{} lacks umldbg's patch {name} (a debugger killed at a breakpoint can then panic the machine): `patch -p1 -d {} < scripts/kernel-patches/{name}` adds it",
                tree.display(),
                tree.display()
            )),
            PatchState::DoesNotFit => notes.push(format!(
                "umldbg's patch {name} does not fit {} (a debugger killed at a breakpoint can panic the machine)",
                tree.display()
            )),
        }
    }

    // The configuration: the developer's, with umldbg's options on top.
    progress.phase("configure");
    let log_path = dir.join("build.log");
    let _ = std::fs::write(&log_path, "");
    let mk = |targets: &[&str], step: &'static str| -> Result<u64, KernelError> {
        let o = format!("O={}", bdir.display());
        let mut args = vec![o.as_str()];
        args.extend_from_slice(targets);
        build::make(&tree, &args, 1, &log_path, step, None)
    };
    let config_path = bdir.join(".config");
    let mut changed_config = false;
    if let Some(seed) = &opts.config {
        std::fs::copy(seed, &config_path).map_err(io(format!(
            "copy {} to {}",
            seed.display(),
            config_path.display()
        )))?;
        notes.push(format!("configuration from {}", seed.display()));
        changed_config = true;
    } else if !config_path.exists() {
        mk(&["defconfig"], "make defconfig")?;
        notes.push("a new build directory: configured from defconfig".into());
        changed_config = true;
    }
    let wanted = build::fragment_options(FRAGMENT);
    let config = std::fs::read_to_string(&config_path)
        .map_err(io(format!("read {}", config_path.display())))?;
    let changes = needed_changes(&wanted, &config);
    if !changes.is_empty() {
        let mut c = Command::new(tree.join("scripts/config"));
        c.arg("--file").arg(&config_path);
        for (name, val, _) in &changes {
            match val {
                'y' => c.args(["--enable", name]),
                'm' => c.args(["--module", name]),
                _ => c.args(["--disable", name]),
            };
        }
        util::run(&mut c).map_err(|e| KernelError::Step {
            step: "scripts/config",
            source: e,
        })?;
        if !changed_config {
            notes.push(format!(
                "umldbg needs these options and set them on top of your configuration: {}",
                changes
                    .iter()
                    .map(|(n, w, g)| format!("{n}={w} (was {g})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        changed_config = true;
    }
    if changed_config {
        mk(&["olddefconfig"], "make olddefconfig")?;
        let config = std::fs::read_to_string(&config_path)
            .map_err(io(format!("read {}", config_path.display())))?;
        let refused = needed_changes(&wanted, &config);
        if !refused.is_empty() {
            return Err(KernelError::ConfigRefused {
                options: refused
                    .iter()
                    .map(|(n, w, g)| format!("{n}={g} (umldbg needs {w})"))
                    .collect::<Vec<_>>()
                    .join(", "),
                build_dir: bdir.clone(),
                tree: tree.clone(),
            });
        }
    }

    // Nothing changed since the last build: answer from the cache.
    let frag_hash = hex(&Sha256::digest(FRAGMENT.as_bytes()));
    let fp = fingerprint(&tree)?;
    let config_hash = file_hash(&config_path)?;
    let state: Option<TreeState> = std::fs::read_to_string(dir.join(STATE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if let Some(st) = &state
        && st.fingerprint == fp
        && st.config_hash == config_hash
        && st.fragment_hash == frag_hash
        && let Ok(m) = Manifest::read(&dir.join("runs").join(&st.run))
        && m.check().is_ok()
    {
        progress.finish();
        return Ok(BuildOutcome {
            manifest: m,
            cache_hit: true,
            seconds: t0.elapsed().as_secs_f64(),
            compiled: None,
            notes,
        });
    }

    progress.phase("build");
    let jobs = opts.jobs.max(1);
    let o = format!("O={}", bdir.display());
    let estimate = if state.is_some() { 100 } else { 3200 };
    build::make(
        &tree,
        &[o.as_str(), "all"],
        jobs,
        &log_path,
        "make (linux and modules)",
        Some((&progress, estimate)),
    )?;
    let compiled = std::fs::read_to_string(&log_path)
        .map(|t| {
            t.lines()
                .filter(|l| l.starts_with("  CC ") || l.starts_with("  CC [M]"))
                .count() as u64
        })
        .unwrap_or(0);

    // Publish the run: the image and the modules.
    progress.phase("modules");
    let vmlinux = bdir.join("vmlinux");
    let build_id = super::file_build_id(&vmlinux)?;
    let run_name = format!("run-{}", &build_id[..16.min(build_id.len())]);
    let runs = dir.join("runs");
    let run = runs.join(&run_name);
    let reuse = Manifest::read(&run).is_ok_and(|m| m.build_id == build_id && m.check().is_ok());
    let m = if reuse {
        Manifest::read(&run)?
    } else {
        if run.exists() {
            std::fs::remove_dir_all(&run).map_err(io(format!("remove {}", run.display())))?;
        }
        std::fs::create_dir_all(&run).map_err(io(format!("create {}", run.display())))?;
        // A copy, not a link: the image a machine runs must not change under it, whatever
        // the next build's tools do to `vmlinux`.
        let linux = run.join("linux");
        std::fs::copy(&vmlinux, &linux).map_err(io(format!(
            "copy {} to {}",
            vmlinux.display(),
            linux.display()
        )))?;
        let modroot = run.join("modroot");
        let arg = format!("INSTALL_MOD_PATH={}", modroot.display());
        build::make(
            &tree,
            &[o.as_str(), "modules_install", &arg],
            1,
            &log_path,
            "make modules_install",
            None,
        )?;
        let out = Command::new("make")
            .current_dir(&tree)
            .args(["-s", "ARCH=um", &o, "kernelrelease"])
            .output()
            .map_err(io("make kernelrelease".into()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let m = Manifest {
            modules_dir: modroot.join("lib/modules").join(&version),
            version,
            linux,
            build_dir: bdir.clone(),
            build_id,
            config_hash: config_hash.clone(),
            source: format!("tree:{}", tree.display()),
            built_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        m.write(&run)?;
        m
    };
    let config_hash = file_hash(&config_path)?;
    let st = TreeState {
        tree: tree.clone(),
        fingerprint: fp,
        config_hash,
        fragment_hash: frag_hash,
        run: run_name.clone(),
    };
    let tmp = dir.join(".state.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(&st).expect("state serialises"),
    )
    .map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, dir.join(STATE)).map_err(io(format!("rename {}", tmp.display())))?;

    // Older runs that no machine executes go.
    let in_use = super::prune::dirs_in_use(&runs);
    for e in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
        let p = e.path();
        let canon = std::fs::canonicalize(&p).unwrap_or(p.clone());
        if e.file_name() != run_name.as_str() && !in_use.contains(&canon) {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    progress.finish();
    Ok(BuildOutcome {
        manifest: m,
        cache_hit: false,
        seconds: t0.elapsed().as_secs_f64(),
        compiled: Some(compiled),
        notes,
    })
}

fn file_hash(p: &Path) -> Result<String, KernelError> {
    let b = std::fs::read(p).map_err(io(format!("read {}", p.display())))?;
    Ok(hex(&Sha256::digest(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_changes_name_what_differs() {
        let want = vec![
            ("NETFILTER".to_string(), 'y'),
            ("IP_NF_TARGET_REJECT".to_string(), 'm'),
            ("DEBUG_INFO_REDUCED".to_string(), 'n'),
        ];
        let cfg = "# CONFIG_NETFILTER is not set\nCONFIG_IP_NF_TARGET_REJECT=m\nCONFIG_DEBUG_INFO_REDUCED=y\n";
        assert_eq!(
            needed_changes(&want, cfg),
            vec![
                ("NETFILTER".to_string(), 'y', 'n'),
                ("DEBUG_INFO_REDUCED".to_string(), 'n', 'y')
            ]
        );
    }

    #[test]
    fn fingerprint_follows_content_and_mtime() {
        let d = std::env::temp_dir().join(format!("umldbg-fp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("net/ipv4")).unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join("net/ipv4/icmp.c"), "int x;\n").unwrap();
        let a = fingerprint(&d).unwrap();
        assert_eq!(a, fingerprint(&d).unwrap());
        // .git is not the tree's content.
        std::fs::write(d.join(".git/HEAD"), "x").unwrap();
        assert_eq!(a, fingerprint(&d).unwrap());
        // Same size, new content: the mtime tells.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(d.join("net/ipv4/icmp.c"), "int y;\n").unwrap();
        assert_ne!(a, fingerprint(&d).unwrap());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn in_place_builds_are_named() {
        let d = std::env::temp_dir().join(format!("umldbg-inplace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("include/config")).unwrap();
        std::fs::write(d.join(".config"), "").unwrap();
        assert_eq!(in_place_products(&d), vec![".config", "include/config"]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
