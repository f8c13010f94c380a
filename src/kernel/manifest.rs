//! The manifest of a cached kernel build, and how the cache is searched.
//!
//! A build lives in `<cache>/kernels/<key>/`; its `manifest.json` is written last, by rename, so a
//! directory without one is a build that did not finish and is never reported valid.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KernelError;

/// What a finished build produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// `make kernelrelease`, e.g. `7.2.13`.
    pub version: String,
    /// The UML kernel executable, with DWARF.
    pub linux: PathBuf,
    /// `lib/modules/<version>` as installed by `modules_install`.
    pub modules_dir: PathBuf,
    /// The configured and built tree, usable for `make -C build_dir M=DIR ARCH=um modules`.
    pub build_dir: PathBuf,
    /// GNU build-id of `linux`, lowercase hex.
    pub build_id: String,
    /// sha256 of the final `.config`.
    pub config_hash: String,
    /// Where the source came from (a Debian package file name, or the user's path).
    pub source: String,
    /// Seconds since the epoch when the build finished.
    pub built_at: u64,
}

pub const MANIFEST: &str = "manifest.json";

/// The directory holding every cached build.
pub fn kernels_dir(cache: &Path) -> PathBuf {
    cache.join("kernels")
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, KernelError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| KernelError::Io {
            what: format!("read {}", path.display()),
            source: e,
        })?;
        serde_json::from_str(&text).map_err(|e| KernelError::BadManifest {
            path,
            reason: e.to_string(),
        })
    }

    /// Write atomically: a reader sees either no manifest or a whole one.
    pub fn write(&self, dir: &Path) -> Result<(), KernelError> {
        let tmp = dir.join(".manifest.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        std::fs::write(&tmp, text).map_err(|e| KernelError::Io {
            what: format!("write {}", tmp.display()),
            source: e,
        })?;
        std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(|e| KernelError::Io {
            what: format!("rename {}", tmp.display()),
            source: e,
        })
    }

    /// A manifest is valid when the files it names are there and `linux` still has its build-id.
    pub fn check(&self) -> Result<(), String> {
        if !self.modules_dir.join("modules.dep").is_file() {
            return Err(format!("{} has no modules.dep", self.modules_dir.display()));
        }
        if !self.build_dir.join("Module.symvers").is_file() {
            return Err(format!(
                "{} has no Module.symvers",
                self.build_dir.display()
            ));
        }
        let id = crate::kernel::file_build_id(&self.linux)
            .map_err(|e| format!("{}: {e}", self.linux.display()))?;
        if id != self.build_id {
            return Err(format!(
                "{} has build-id {id}, the manifest says {}",
                self.linux.display(),
                self.build_id
            ));
        }
        Ok(())
    }
}

/// One cached build, valid or not.
#[derive(Debug)]
pub struct CacheEntry {
    pub dir: PathBuf,
    pub manifest: Result<Manifest, String>,
}

/// Every build directory under the cache, newest valid first.
pub fn list(cache: &Path) -> Vec<CacheEntry> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(kernels_dir(cache)) else {
        return out;
    };
    for ent in rd.flatten() {
        let dir = ent.path();
        if !dir.is_dir() {
            continue;
        }
        let manifest = match Manifest::read(&dir) {
            Ok(m) => m.check().map(|()| m),
            Err(KernelError::Io { .. }) => Err("incomplete build (no manifest)".to_string()),
            Err(e) => Err(e.to_string()),
        };
        out.push(CacheEntry { dir, manifest });
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.manifest.as_ref().map(|m| m.built_at).unwrap_or(0)));
    out
}

/// The newest valid build, if any.
pub fn newest(cache: &Path) -> Option<Manifest> {
    list(cache).into_iter().find_map(|e| e.manifest.ok())
}

/// The directory holding the builds of developers' own trees (`kernel build --source TREE`):
/// `trees/tree-<key>/{build,runs/run-<id>/,state.json}` (see `tree.rs`). They are kept apart
/// from `kernels/` so that the kernel every lab boots by default (`kernel path`) stays the one
/// built from the recipe, whatever trees are built.
pub fn trees_dir(cache: &Path) -> PathBuf {
    cache.join("trees")
}

/// Every published run of every tree, valid or not, newest valid first.
pub fn tree_runs(cache: &Path) -> Vec<CacheEntry> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(trees_dir(cache))
        .into_iter()
        .flatten()
        .flatten()
    {
        for r in std::fs::read_dir(t.path().join("runs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = r.path();
            let manifest = match Manifest::read(&dir) {
                Ok(m) => m.check().map(|()| m),
                Err(KernelError::Io { .. }) => Err("incomplete run (no manifest)".to_string()),
                Err(e) => Err(e.to_string()),
            };
            out.push(CacheEntry { dir, manifest });
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.manifest.as_ref().map(|m| m.built_at).unwrap_or(0)));
    out
}

/// The cached kernel (recipe build or tree run) whose image is `image`.
pub fn find_by_image(cache: &Path, image: &Path) -> Option<Manifest> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let image = canon(image);
    list(cache)
        .into_iter()
        .chain(tree_runs(cache))
        .filter_map(|e| e.manifest.ok())
        .find(|m| canon(&m.linux) == image)
}

/// The most recently built valid kernel of any kind: what `--kernel latest` means.
pub fn latest(cache: &Path) -> Option<Manifest> {
    list(cache)
        .into_iter()
        .chain(tree_runs(cache))
        .filter_map(|e| e.manifest.ok())
        .max_by_key(|m| m.built_at)
}

/// A kernel named on the command line (`--kernel`): `latest`; a kernel image; a directory
/// holding a manifest (a cached build or run); a kernel tree built with `--source` (its newest
/// run).
pub fn select(cache: &Path, what: &str) -> Result<Manifest, String> {
    if what == "latest" {
        return latest(cache).ok_or_else(|| {
            format!(
                "no kernel in the cache {}: run `umldbg kernel build` (or `--source TREE`)",
                cache.display()
            )
        });
    }
    let p = Path::new(what);
    let canon = std::fs::canonicalize(p)
        .map_err(|e| format!("--kernel {what}: {e}: give `latest`, a kernel image, or a tree built with `umldbg kernel build --source`"))?;
    if canon.is_dir() {
        if let Ok(m) = Manifest::read(&canon) {
            return m
                .check()
                .map(|()| m)
                .map_err(|e| format!("--kernel {what}: {e}"));
        }
        // A tree: the newest run built from it.
        let dir = super::tree::tree_dir(cache, &canon);
        let st = std::fs::read_to_string(dir.join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<super::tree::TreeState>(&t).ok())
            .ok_or_else(|| {
                format!(
                    "--kernel {what}: no build of this directory in the cache: `umldbg kernel build --source {what}` first"
                )
            })?;
        let m = Manifest::read(&dir.join("runs").join(&st.run)).map_err(|e| e.to_string())?;
        return m
            .check()
            .map(|()| m)
            .map_err(|e| format!("--kernel {what}: {e}"));
    }
    find_by_image(cache, &canon).ok_or_else(|| {
        format!(
            "--kernel {what}: not a kernel in the cache {} (`umldbg kernel list` shows them): umldbg boots only kernels it built, whose modules it knows",
            cache.display()
        )
    })
}
