//! Removing cached images nothing needs: incomplete builds, and images that no recipe makes any
//! more (a built-in recipe changed, or the recipe file that made it changed or went away).
//!
//! Kept always: images a running process has open (a machine's COW file is backed by it, and
//! UML keeps the backing file open), and directories whose build lock is held (a build running).
//! `all` removes every other image too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::manifest::{self, CacheEntry};
use super::recipe;
pub use crate::kernel::prune::Verdict;

/// One line of the report.
#[derive(Debug)]
pub struct Outcome {
    pub dir: PathBuf,
    pub name: Option<String>,
    pub verdict: Verdict,
    /// Disk used by what was (or would be) removed.
    pub bytes: u64,
}

/// Image directories under `images` that a running process holds a file of open.
pub fn dirs_in_use(images: &Path) -> BTreeSet<PathBuf> {
    let Ok(images) = std::fs::canonicalize(images) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        for fd in std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Ok(rest) = target.strip_prefix(&images)
                && let Some(first) = rest.components().next()
            {
                out.insert(images.join(first));
            }
        }
    }
    out
}

/// Hashes the current recipes make: every built-in, and each recipe file an image was built from.
fn current_hashes(entries: &[CacheEntry]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = recipe::builtins()
        .iter()
        .filter_map(|b| recipe::builtin(&b.name).ok())
        .map(|r| r.hash())
        .collect();
    for e in entries {
        if let Ok(m) = &e.manifest
            && m.origin != "built-in"
            && let Ok(r) = recipe::load_file(Path::new(&m.origin))
        {
            out.insert(r.hash());
        }
    }
    out
}

/// The build lock of `dir`, if no build holds it: Ok(None) when there is no lock file, Err when
/// a build holds it. Held for as long as the value lives, so no build starts while prune removes.
fn try_lock(dir: &Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>, ()> {
    let Ok(f) = std::fs::File::open(dir.with_extension("lock")) else {
        return Ok(None);
    };
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map(Some)
        .map_err(|_| ())
}

fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if let Ok(md) = e.path().symlink_metadata() {
                total += md.blocks() * 512;
                if md.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    total
}

/// Plans and (unless `dry_run`) removes.
pub fn prune(cache: &Path, all: bool, dry_run: bool) -> std::io::Result<Vec<Outcome>> {
    let images = super::images_dir(cache);
    let entries = manifest::list(cache);
    let current = current_hashes(&entries);
    let in_use = dirs_in_use(&images);
    let mut out = Vec::new();
    for e in &entries {
        let canon = std::fs::canonicalize(&e.dir).unwrap_or_else(|_| e.dir.clone());
        let hash = e.dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let lock = try_lock(&e.dir);
        let verdict = if in_use.contains(&canon) {
            Verdict::Keep("a running machine uses it")
        } else if lock.is_err() {
            Verdict::Keep("a build of it is running")
        } else if e.manifest.is_err() {
            Verdict::Remove("an incomplete or damaged build")
        } else if all {
            Verdict::Remove("--all")
        } else if hash.is_some_and(|h| current.contains(&h)) {
            Verdict::Keep("its recipe makes it")
        } else {
            Verdict::Remove("no recipe makes it any more")
        };
        let bytes = match verdict {
            Verdict::Remove(_) => disk_bytes(&e.dir),
            Verdict::Keep(_) => 0,
        };
        if matches!(verdict, Verdict::Remove(_)) && !dry_run {
            std::fs::remove_dir_all(&e.dir)?;
            let _ = std::fs::remove_file(e.dir.with_extension("failed.log"));
        }
        out.push(Outcome {
            dir: e.dir.clone(),
            name: e.manifest.as_ref().ok().map(|m| m.name.clone()),
            verdict,
            bytes,
        });
    }
    Ok(out)
}
