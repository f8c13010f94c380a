//! Struct and union layouts from a kernel image's DWARF, cached per kernel build-id.
//!
//! The DWARF reading is the codec crate's (`umldbg_codec::dwarf`, re-exported here).
//! [`LayoutStore`] adds the file and the cache: `<cache>/layouts/<build-id>.json`, so a second
//! run reads a small JSON file instead of the DWARF. [`load_net_layouts`] gives packet decoding
//! the structs it needs. Only `kmod::loader` touches the image file.

mod cache;

use std::path::{Path, PathBuf};

use crate::kmod::loader::MappedFile;

pub use umldbg_codec::dwarf::*;

/// A layout and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub layout: StructLayout,
    pub build_id: String,
    pub from_cache: bool,
}

/// Layouts of kernel images, cached under a directory.
#[derive(Debug, Clone)]
pub struct LayoutStore {
    cache_dir: PathBuf,
}

impl Default for LayoutStore {
    /// The cache under `$UMLDBG_CACHE` or `~/.cache/umldbg`.
    fn default() -> Self {
        LayoutStore {
            cache_dir: crate::util::cache_dir(),
        }
    }
}

impl LayoutStore {
    /// A store whose cache files live under `cache_dir/layouts/`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        LayoutStore {
            cache_dir: cache_dir.into(),
        }
    }

    /// The cache file used for an image with this build-id.
    pub fn cache_file(&self, build_id: &str) -> PathBuf {
        cache::path_for(&self.cache_dir, build_id)
    }

    /// The layouts packet decoding needs, from the cache or else from DWARF (then cached).
    pub fn net_layouts(&self, kernel: &Path) -> Result<NetLayouts, DwarfError> {
        let file = MappedFile::open(kernel)?;
        let key = build_key(&file, file.modified());
        let path = self.cache_file(&key);
        let mut cached = cache::read(&path, &key).unwrap_or_else(|| cache::CacheFile {
            format: cache::FORMAT,
            build_id: key.clone(),
            kernel: Some(kernel.to_owned()),
            ..Default::default()
        });
        let todo: Vec<&str> = NET_STRUCTS
            .iter()
            .copied()
            .filter(|n| !cached.layouts.contains_key(*n) && !cached.absent.iter().any(|a| a == n))
            .collect();
        if todo.is_empty() {
            let layouts = cached.layouts.clone();
            return net_from(layouts, &[], key, true).map_err(|e| e.in_file(kernel));
        }
        let (found, known) = scan_image(&file, &todo).map_err(|e| e.in_file(kernel))?;
        for name in &todo {
            if !found.contains_key(*name) {
                cached.absent.push(name.to_string());
            }
        }
        cached.layouts.extend(found);
        let net =
            net_from(cached.layouts.clone(), &known, key, false).map_err(|e| e.in_file(kernel))?;
        self.save(&path, &cached);
        Ok(net)
    }

    /// One struct, union or typedef, from the cache or else from DWARF (then cached).
    pub fn layout(&self, kernel: &Path, name: &str) -> Result<Loaded, DwarfError> {
        let file = MappedFile::open(kernel)?;
        let key = build_key(&file, file.modified());
        let path = self.cache_file(&key);
        let mut cached = cache::read(&path, &key).unwrap_or_else(|| cache::CacheFile {
            format: cache::FORMAT,
            build_id: key.clone(),
            kernel: Some(kernel.to_owned()),
            ..Default::default()
        });
        if let Some(layout) = cached.layouts.get(name) {
            return Ok(Loaded {
                layout: layout.clone(),
                build_id: key,
                from_cache: true,
            });
        }
        let (mut found, known) = scan_image(&file, &[name]).map_err(|e| e.in_file(kernel))?;
        let Some(layout) = found.remove(name) else {
            return Err(not_found(name, &known).in_file(kernel));
        };
        cached.layouts.insert(name.to_owned(), layout.clone());
        self.save(&path, &cached);
        Ok(Loaded {
            layout,
            build_id: key,
            from_cache: false,
        })
    }

    fn save(&self, path: &Path, file: &cache::CacheFile) {
        // A cache that cannot be written costs time on the next run, not correctness.
        if let Err(e) = cache::write(path, file) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the layout cache");
        }
    }
}

/// [`LayoutStore::net_layouts`] with the default cache directory.
pub fn load_net_layouts(kernel_path: &Path) -> Result<NetLayouts, DwarfError> {
    LayoutStore::default().net_layouts(kernel_path)
}
