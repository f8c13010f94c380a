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

pub const MANIFEST: &str = "manifest.json";
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
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| ImageError::Io {
            what: format!("read {}", path.display()),
            source: e,
        })?;
        serde_json::from_str(&text).map_err(|e| ImageError::Io {
            what: format!("parse {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// The manifest of `dir` if the image it names is there as the build left it; else why not.
    pub fn read_valid(dir: &Path) -> Result<Manifest, String> {
        let m = match Manifest::read(dir) {
            Ok(m) => m,
            Err(ImageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(if dir.exists() {
                    "incomplete build (no manifest)".into()
                } else {
                    "not in the cache".into()
                });
            }
            Err(e) => return Err(e.to_string()),
        };
        m.check()?;
        Ok(m)
    }

    /// Valid when the image file is there with the size and modification time the build left.
    pub fn check(&self) -> Result<(), String> {
        if self.format != super::recipe::FORMAT {
            return Err(format!(
                "built by format {}, this umldbg makes format {}",
                self.format,
                super::recipe::FORMAT
            ));
        }
        let md =
            std::fs::metadata(&self.image).map_err(|e| format!("{}: {e}", self.image.display()))?;
        if md.len() != self.size_bytes {
            return Err(format!(
                "{} has {} bytes, the manifest says {}",
                self.image.display(),
                md.len(),
                self.size_bytes
            ));
        }
        if mtime_of(&md) != Some(self.mtime) {
            return Err(format!(
                "{} changed after the build (its modification time moved)",
                self.image.display()
            ));
        }
        Ok(())
    }

    /// Write atomically: a reader sees either no manifest or a whole one.
    pub fn write(&self, dir: &Path) -> Result<(), ImageError> {
        let tmp = dir.join(".manifest.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        let io = |what: String| move |source| ImageError::Io { what, source };
        std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
        // The image's blocks and the manifest reach the disk before the name makes them valid.
        if let Ok(f) = std::fs::File::open(&tmp) {
            let _ = f.sync_all();
        }
        std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(io(format!("rename {}", tmp.display())))
    }
}

/// Modification time as (seconds, nanoseconds) since the epoch.
pub fn mtime_of(md: &std::fs::Metadata) -> Option<(u64, u32)> {
    let d = md.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((d.as_secs(), d.subsec_nanos()))
}

/// One image directory, valid or not.
#[derive(Debug)]
pub struct CacheEntry {
    pub dir: PathBuf,
    pub manifest: Result<Manifest, String>,
}

/// Every image directory under the cache, newest first.
pub fn list(cache: &Path) -> Vec<CacheEntry> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(super::images_dir(cache)) else {
        return out;
    };
    for ent in rd.flatten() {
        let dir = ent.path();
        if !dir.is_dir() {
            continue;
        }
        let manifest = Manifest::read_valid(&dir);
        out.push(CacheEntry { dir, manifest });
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.manifest.as_ref().map(|m| m.built_at).unwrap_or(0)));
    out
}
