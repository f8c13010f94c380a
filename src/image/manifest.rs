//! The manifest of a built image: what went in, where the ext4 file is, and the facts that tell
//! a valid image from a damaged or changed one without reading it.
//!
//! `manifest.json` is written last, by rename: a directory without one is a build that did not
//! finish. Validity is checked from metadata only (size and modification time of the image as the
//! build left them), so a lookup costs a few system calls, not a read of hundreds of megabytes.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::ImageError;
use crate::manifest_file::{self, ManifestError};

pub use crate::manifest_file::MANIFEST;

/// Why a cached image is not valid.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("incomplete build (no manifest)")]
    Incomplete,
    #[error("not in the cache")]
    NotCached,
    #[error(transparent)]
    Manifest(ImageError),
    #[error(
        "built by format {found}, this umldbg makes format {}",
        super::recipe::FORMAT
    )]
    Format { found: u32 },
    #[error("{}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has {found} bytes, the manifest says {expected}", path.display())]
    Size {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{} changed after the build (its modification time moved)", path.display())]
    Changed { path: PathBuf },
}
pub const IMAGE: &str = "rootfs.img";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// [`super::recipe::FORMAT`] of the build.
    pub format: u32,
    /// The recipe's name (an image made by several names is listed under the first that built it).
    pub name: String,
    /// `built-in` or the recipe file's path.
    pub origin: String,
    /// The cache key, also the directory's name.
    pub hash: String,
    pub suite: String,
    /// Every package asked for (the recipe's, its parents' and umldbg's layer), sorted.
    pub packages: Vec<String>,
    /// The ext4 file: the backing file of each machine's copy-on-write file.
    pub image: PathBuf,
    /// The kernel's `init=` for this image.
    pub boot_stub: String,
    /// The image's apparent size (the file system's size) in bytes.
    pub size_bytes: u64,
    /// What the image uses on the host's disk (it is sparse).
    pub disk_bytes: u64,
    /// Modification time of the image when the build ended (seconds, nanoseconds).
    pub mtime: (u64, u32),
    /// The mirror the packages came from.
    pub mirror: String,
    pub built_at: u64,
    pub build_seconds: f64,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, ImageError> {
        manifest_file::read(dir).map_err(image_error)
    }

    /// The manifest of `dir` if the image it names is there as the build left it; else why not.
    pub fn read_valid(dir: &Path) -> Result<Manifest, Invalid> {
        let m = match manifest_file::read::<Manifest>(dir) {
            Ok(m) => m,
            Err(e) if e.is_missing() => {
                return Err(if dir.exists() {
                    Invalid::Incomplete
                } else {
                    Invalid::NotCached
                });
            }
            Err(e) => return Err(Invalid::Manifest(image_error(e))),
        };
        m.check()?;
        Ok(m)
    }

    /// Valid when the image file is there with the size and modification time the build left.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.format != super::recipe::FORMAT {
            return Err(Invalid::Format { found: self.format });
        }
        let md = std::fs::metadata(&self.image).map_err(|source| Invalid::Image {
            path: self.image.clone(),
            source,
        })?;
        if md.len() != self.size_bytes {
            return Err(Invalid::Size {
                path: self.image.clone(),
                found: md.len(),
                expected: self.size_bytes,
            });
        }
        if mtime_of(&md) != Some(self.mtime) {
            return Err(Invalid::Changed {
                path: self.image.clone(),
            });
        }
        Ok(())
    }

    /// Write atomically: a reader sees either no manifest or a whole one; the image's blocks
    /// and the manifest reach the disk before the name makes them valid.
    pub fn write(&self, dir: &Path) -> Result<(), ImageError> {
        manifest_file::write(dir, self).map_err(image_error)
    }
}

/// The image cache's words for a manifest that cannot be read or written.
fn image_error(e: ManifestError) -> ImageError {
    let what = match &e {
        ManifestError::Read { path, .. } => format!("read {}", path.display()),
        ManifestError::Parse { path, .. } => format!("parse {}", path.display()),
        ManifestError::Write { path, .. } => format!("write {}", path.display()),
        ManifestError::Rename { path, .. } => format!("rename {}", path.display()),
    };
    let source = match e {
        ManifestError::Read { source, .. }
        | ManifestError::Write { source, .. }
        | ManifestError::Rename { source, .. } => source,
        ManifestError::Parse { source, .. } => source.into(),
    };
    ImageError::Io { what, source }
}

/// Modification time as (seconds, nanoseconds) since the epoch.
pub fn mtime_of(md: &std::fs::Metadata) -> Option<(u64, u32)> {
    let d = md.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((d.as_secs(), d.subsec_nanos()))
}

/// One image directory, valid or not.
pub type CacheEntry = manifest_file::Entry<Manifest, Invalid>;

/// Every image directory under the cache, newest first.
pub fn list(cache: &Path) -> Vec<CacheEntry> {
    let mut out: Vec<CacheEntry> = manifest_file::build_dirs(&super::images_dir(cache))
        .into_iter()
        .map(|dir| {
            let manifest = Manifest::read_valid(&dir);
            CacheEntry { dir, manifest }
        })
        .collect();
    manifest_file::newest_first(&mut out, |m| m.built_at);
    out
}
