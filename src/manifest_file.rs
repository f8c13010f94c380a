//! What the kernel cache and the image cache share about a build's manifest: `manifest.json`
//! is written last, by rename, so a directory without one is a build that did not finish; it is
//! read back as JSON; a cache is listed as its build directories, each with its manifest or why
//! it is not valid, newest first. What makes a build valid is each cache's own business.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub const MANIFEST: &str = "manifest.json";

/// Reading or writing a build's `manifest.json`, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rename {}: {source}", path.display())]
    Rename {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ManifestError {
    /// The directory has no manifest (a build that did not finish, or no build at all).
    pub fn is_missing(&self) -> bool {
        matches!(self, ManifestError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The manifest of the build in `dir`.
pub fn read<M: DeserializeOwned>(dir: &Path) -> Result<M, ManifestError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(source) => return Err(ManifestError::Read { path, source }),
    };
    serde_json::from_str(&text).map_err(|source| ManifestError::Parse { path, source })
}

/// Write atomically: a reader sees either no manifest or a whole one. The file reaches the disk
/// before its name makes the build valid.
pub fn write<M: Serialize>(dir: &Path, manifest: &M) -> Result<(), ManifestError> {
    let tmp = dir.join(".manifest.json.tmp");
    let text = serde_json::to_string_pretty(manifest).map_err(|source| ManifestError::Parse {
        path: tmp.clone(),
        source,
    })?;
    if let Err(source) = std::fs::write(&tmp, text) {
        return Err(ManifestError::Write { path: tmp, source });
    }
    if let Ok(f) = std::fs::File::open(&tmp) {
        let _ = f.sync_all();
    }
    std::fs::rename(&tmp, dir.join(MANIFEST))
        .map_err(|source| ManifestError::Rename { path: tmp, source })
}

/// One build directory of a cache, valid or not.
#[derive(Debug)]
pub struct Entry<M, E> {
    pub dir: PathBuf,
    pub manifest: Result<M, E>,
}

/// The subdirectories of `parent` (none when it cannot be read).
pub fn build_dirs(parent: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Newest valid build first (by `built_at`), invalid ones last.
pub fn newest_first<M, E>(entries: &mut [Entry<M, E>], built_at: impl Fn(&M) -> u64) {
    entries.sort_by_key(|e| std::cmp::Reverse(e.manifest.as_ref().map(&built_at).unwrap_or(0)));
}
