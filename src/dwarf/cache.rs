//! Layouts cached as JSON per kernel build-id: `<cache>/layouts/<build-id>.json`.
//!
//! The file maps struct names to layouts. It grows: `ptype` of a struct not yet in it adds
//! that struct. Writes go to a temporary file renamed into place, so a reader sees a whole file
//! or none; an unreadable or old-format file is ignored and rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::StructLayout;

/// Bumped whenever `StructLayout` or the way it is computed changes.
pub(crate) const FORMAT: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CacheFile {
    pub format: u32,
    pub build_id: String,
    /// The image the layouts were read from (informational).
    pub kernel: Option<PathBuf>,
    pub layouts: BTreeMap<String, StructLayout>,
    /// Names looked for and known not to be defined in this image.
    #[serde(default)]
    pub absent: Vec<String>,
}

/// `<cache>/layouts/<key>.json`.
pub(crate) fn path_for(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join("layouts").join(format!("{key}.json"))
}

/// Read a cache file; `None` if it is missing, unreadable, of another format or another build.
pub(crate) fn read(path: &Path, key: &str) -> Option<CacheFile> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice::<CacheFile>(&text) {
        Ok(c) if c.format == FORMAT && c.build_id == key => Some(c),
        Ok(_) => {
            tracing::info!(path = %path.display(), "layout cache of another format or build; rebuilding");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable layout cache; rebuilding");
            None
        }
    }
}

/// Write a cache file atomically.
pub(crate) fn write(path: &Path, file: &CacheFile) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("layouts"),
        std::process::id()
    ));
    let text = serde_json::to_vec(file).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
