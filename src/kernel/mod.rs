//! Obtaining, configuring, building and caching the UML kernel that every lab boots.
//!
//! The kernel is built from Debian's `linux-source-X.Y` (or the user's tree) with the committed
//! fragment `scripts/kernel.config` on top of `defconfig`: full DWARF, frame pointers, netfilter
//! with iptables-legacy, ipt_REJECT as a module, vector networking and hostfs.

pub mod build;
pub mod manifest;
pub mod prune;
pub mod source;
pub mod tree;

use std::path::{Path, PathBuf};

pub use build::{BuildEvent, BuildOptions, build};
pub use manifest::Manifest;

/// The configuration fragment, compiled in so that the binary alone can build its kernel.
pub const FRAGMENT: &str = include_str!("../../scripts/kernel.config");

/// Patches applied to the source before it is configured, in order (name, unified diff).
pub const PATCHES: &[(&str, &str)] = &[
    (
        "0001-um-resume-after-a-dead-debugger-s-breakpoint.patch",
        include_str!(
            "../../scripts/kernel-patches/0001-um-resume-after-a-dead-debugger-s-breakpoint.patch"
        ),
    ),
    (
        "0002-um-vector-allow-a-live-MAC-address-change.patch",
        include_str!(
            "../../scripts/kernel-patches/0002-um-vector-allow-a-live-MAC-address-change.patch"
        ),
    ),
];

/// What a build is made from besides the source: the fragment and the patches.
pub fn recipe() -> String {
    let mut r = String::from(FRAGMENT);
    for (name, text) in PATCHES {
        r.push_str(&format!("\n--- patch {name}\n{text}"));
    }
    r
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("step `{step}` failed: {source}")]
    Step {
        step: &'static str,
        source: crate::util::CmdError,
    },
    #[error("step `{step}` failed, see {log} (last lines: {tail})")]
    Make {
        step: &'static str,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "no Debian archive found in /etc/apt/sources.list{{,.d/}}: pass --source with a kernel tree or tarball"
    )]
    NoMirror,
    #[error(
        "the mirror serves no linux-source-X.Y of version 6.13 or newer: pass --source with a kernel tree or tarball"
    )]
    NoSourcePackage,
    #[error(
        "{0} is not a Linux kernel tree (no top Makefile with VERSION/PATCHLEVEL, or no arch/um): pass the top of a kernel source tree or a kernel tarball"
    )]
    NotATree(PathBuf),
    #[error(
        "{what} is Linux {version}: UML kernels older than 6.13 crash at the first user process on hosts with AMX state (`ptrace set fp regs failed`); use 6.13 or newer"
    )]
    TooOld { what: String, version: String },
    #[error("{path}: invalid manifest ({reason}); run `umldbg kernel build` to rebuild")]
    BadManifest { path: PathBuf, reason: String },
    #[error("no kernel in the cache {0}: run `umldbg kernel build` (or scripts/setup.sh)")]
    NotCached(PathBuf),
    #[error(
        "only {free_mb} MB free under {dir}: a kernel build needs about {need_mb} MB; free some space or set UMLDBG_CACHE"
    )]
    DiskFull {
        dir: PathBuf,
        free_mb: u64,
        need_mb: u64,
    },
    #[error(
        "patch {name} does not apply to this kernel source ({reason}): umldbg supports the kernels its patches fit, see scripts/kernel-patches"
    )]
    Patch { name: String, reason: String },
    #[error(
        "{tree} was configured or built in place ({found}): a build directory of its own (make O=) cannot use it; save your configuration (cp {tree}/.config my.config), clean the tree (make -C {tree} ARCH=um mrproper), then `umldbg kernel build --source {tree} --config my.config`"
    )]
    BuiltInPlace { tree: PathBuf, found: String },
    #[error(
        "the configuration in {build_dir} turns off what umldbg needs: {options}; kconfig would not keep them on (a dependency is off): turn them on with `make -C {tree} O={build_dir} ARCH=um menuconfig`"
    )]
    ConfigRefused {
        options: String,
        build_dir: PathBuf,
        tree: PathBuf,
    },
    #[error("{path}: no GNU build-id note")]
    NoBuildId { path: PathBuf },
}

/// GNU build-id of an ELF file, lowercase hex.
pub fn file_build_id(path: &Path) -> Result<String, KernelError> {
    let io = |e| KernelError::Io {
        what: format!("read {}", path.display()),
        source: e,
    };
    // Mapped, not read: the image is about 100 MB and only its headers and the note are needed
    // (reading it whole made every `kernel path` and `attach` pay 0.1-0.2 s per cached kernel).
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: a cached kernel image is written once, by rename, and not modified afterwards.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    crate::kmod::elf_build_id(&bytes).ok_or_else(|| KernelError::NoBuildId {
        path: path.to_path_buf(),
    })
}

/// The newest valid cached kernel, or an error saying how to build one.
pub fn cached(cache: &Path) -> Result<Manifest, KernelError> {
    manifest::newest(cache).ok_or_else(|| KernelError::NotCached(cache.to_path_buf()))
}
