//! Kernel module (`.ko`) files and kernel symbol files: the parsers are in the codec crate
//! (`umldbg_codec::kmod`, re-exported here); [`loader`] is the one place that maps files.

pub mod loader;

pub use loader::MappedFile;
pub use umldbg_codec::kmod::*;
