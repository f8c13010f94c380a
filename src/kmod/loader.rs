//! The one place where ELF and DWARF work touches the file system.
//!
//! Every parser in `kmod` and `dwarf` takes `&[u8]`; this loader turns a path into those bytes.
//! Files are memory-mapped rather than read: the kernel image is about 90 MB, and the cached
//! layout path only needs its ELF header and build-id note, a few pages. Mapping lets the
//! operating system read just the pages a parser touches.

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use memmap2::Mmap;

pub use umldbg_codec::kmod::LoadError;

/// A file's bytes, mapped read-only for as long as this value lives.
pub struct MappedFile {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    // `None` for an empty file: mapping zero bytes is an error on Linux.
    map: Option<Mmap>,
}

impl MappedFile {
    /// Open and map `path`.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let file = File::open(path).map_err(|source| LoadError::Open {
            path: path.to_owned(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| LoadError::Open {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(LoadError::NotAFile {
                path: path.to_owned(),
            });
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the map is read-only and private to this process. Another process that
            // truncates the file while we read it would make a page fault raise SIGBUS; the
            // files read here (kernel images, modules) are build products that are replaced by
            // rename, not rewritten in place, so that risk is accepted for the speed.
            let map = unsafe { Mmap::map(&file) }.map_err(|source| LoadError::Map {
                path: path.to_owned(),
                source,
            })?;
            Some(map)
        };
        Ok(MappedFile {
            path: path.to_owned(),
            len: meta.len(),
            modified: meta.modified().ok(),
            map,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File size in bytes when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Modification time when it was opened, if the file system reports one.
    pub fn modified(&self) -> Option<SystemTime> {
        self.modified
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}
