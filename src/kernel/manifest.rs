//! The manifest of a cached kernel build, and how the cache is searched.
//!
//! A build lives in `<cache>/kernels/<key>/`; its `manifest.json` is written last, by rename, so a
//! directory without one is a build that did not finish and is never reported valid.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KernelError;
use crate::manifest_file::{self, ManifestError};

/// Why a cached build is not valid.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("incomplete build (no manifest)")]
    Incomplete,
    #[error("incomplete run (no manifest)")]
    IncompleteRun,
    #[error(transparent)]
    Manifest(KernelError),
    #[error("{} has no modules.dep", .0.display())]
    NoModulesDep(PathBuf),
    #[error("{} has no Module.symvers", .0.display())]
    NoSymvers(PathBuf),
    #[error("{}: {source}", path.display())]
    BuildId {
        path: PathBuf,
        #[source]
        source: KernelError,
    },
    #[error("{} has build-id {found}, the manifest says {expected}", path.display())]
    ChangedBuildId {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// A `--kernel` that names no usable kernel, with what to give instead.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(
        "no kernel in the cache {}: run `umldbg kernel build` (or `--source TREE`)",
        cache.display()
    )]
    NoKernel { cache: PathBuf },
    #[error(
        "--kernel {what}: {source}: give `latest`, a kernel image, or a tree built with `umldbg kernel build --source`"
    )]
    NoSuchPath {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--kernel {what}: {reason}")]
    Invalid {
        what: String,
        #[source]
        reason: Box<Invalid>,
    },
    #[error(
        "--kernel {what}: no build of this directory in the cache: `umldbg kernel build --source {what}` first"
    )]
    NoTreeBuild { what: String },
    #[error(transparent)]
    Manifest(#[from] KernelError),
    #[error(
        "--kernel {what}: not a kernel in the cache {} (`umldbg kernel list` shows them): umldbg boots only kernels it built, whose modules it knows",
        cache.display()
    )]
    NotCached { what: String, cache: PathBuf },
}

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

pub use crate::manifest_file::MANIFEST;

/// The directory holding every cached build.
pub fn kernels_dir(cache: &Path) -> PathBuf {
    cache.join("kernels")
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, KernelError> {
        manifest_file::read(dir).map_err(kernel_error)
    }

    /// Write atomically: a reader sees either no manifest or a whole one.
    pub fn write(&self, dir: &Path) -> Result<(), KernelError> {
        manifest_file::write(dir, self).map_err(kernel_error)
    }

    /// A manifest is valid when the files it names are there and `linux` still has its build-id.
    pub fn check(&self) -> Result<(), Invalid> {
        if !self.modules_dir.join("modules.dep").is_file() {
            return Err(Invalid::NoModulesDep(self.modules_dir.clone()));
        }
        if !self.build_dir.join("Module.symvers").is_file() {
            return Err(Invalid::NoSymvers(self.build_dir.clone()));
        }
        let id = crate::kernel::file_build_id(&self.linux).map_err(|source| Invalid::BuildId {
            path: self.linux.clone(),
            source,
        })?;
        if id != self.build_id {
            return Err(Invalid::ChangedBuildId {
                path: self.linux.clone(),
                found: id,
                expected: self.build_id.clone(),
            });
        }
        Ok(())
    }
}

/// The kernel cache's words for a manifest that cannot be read or written.
fn kernel_error(e: ManifestError) -> KernelError {
    match e {
        ManifestError::Parse { path, source } => KernelError::BadManifest {
            path,
            reason: source.to_string(),
        },
        ManifestError::Read { path, source } => KernelError::Io {
            what: format!("read {}", path.display()),
            source,
        },
        ManifestError::Write { path, source } => KernelError::Io {
            what: format!("write {}", path.display()),
            source,
        },
        ManifestError::Rename { path, source } => KernelError::Io {
            what: format!("rename {}", path.display()),
            source,
        },
    }
}

/// One cached build, valid or not.
pub type CacheEntry = manifest_file::Entry<Manifest, Invalid>;

/// The build in `dir`, checked; `missing` is what a directory without a manifest is.
fn entry(dir: PathBuf, missing: Invalid) -> CacheEntry {
    let manifest = match Manifest::read(&dir) {
        Ok(m) => m.check().map(|()| m),
        Err(KernelError::Io { .. }) => Err(missing),
        Err(e) => Err(Invalid::Manifest(e)),
    };
    CacheEntry { dir, manifest }
}

/// Every build directory under the cache, newest valid first.
pub fn list(cache: &Path) -> Vec<CacheEntry> {
    let mut out: Vec<CacheEntry> = manifest_file::build_dirs(&kernels_dir(cache))
        .into_iter()
        .map(|dir| entry(dir, Invalid::Incomplete))
        .collect();
    manifest_file::newest_first(&mut out, |m| m.built_at);
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
    let mut out: Vec<CacheEntry> = manifest_file::build_dirs(&trees_dir(cache))
        .into_iter()
        .flat_map(|t| manifest_file::build_dirs(&t.join("runs")))
        .map(|dir| entry(dir, Invalid::IncompleteRun))
        .collect();
    manifest_file::newest_first(&mut out, |m| m.built_at);
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
pub fn select(cache: &Path, what: &str) -> Result<Manifest, SelectError> {
    if what == "latest" {
        return latest(cache).ok_or_else(|| SelectError::NoKernel {
            cache: cache.to_path_buf(),
        });
    }
    let invalid = |reason| SelectError::Invalid {
        what: what.to_owned(),
        reason: Box::new(reason),
    };
    let p = Path::new(what);
    let canon = std::fs::canonicalize(p).map_err(|source| SelectError::NoSuchPath {
        what: what.to_owned(),
        source,
    })?;
    if canon.is_dir() {
        if let Ok(m) = Manifest::read(&canon) {
            return m.check().map(|()| m).map_err(invalid);
        }
        // A tree: the newest run built from it.
        let dir = super::tree::tree_dir(cache, &canon);
        let st = std::fs::read_to_string(dir.join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<super::tree::TreeState>(&t).ok())
            .ok_or_else(|| SelectError::NoTreeBuild {
                what: what.to_owned(),
            })?;
        let m = Manifest::read(&dir.join("runs").join(&st.run))?;
        return m.check().map(|()| m).map_err(invalid);
    }
    find_by_image(cache, &canon).ok_or_else(|| SelectError::NotCached {
        what: what.to_owned(),
        cache: cache.to_path_buf(),
    })
}
