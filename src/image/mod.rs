//! Root filesystem images for lab machines: recipes, mmdebstrap, ext4 without mounting, the cache.
//!
//! An image is made from a recipe (a TOML file: suite, packages, files, commands; built-ins in
//! `images/`) by `mmdebstrap --variant=minbase` from the machine's own Debian mirror into a
//! directory, then `mke2fs -t ext4 -d` into `<cache>/images/<hash>/rootfs.img`. The hash covers
//! what goes in (suite, packages, files, commands), so a changed recipe is a new image and an
//! unchanged one is found again without asking the network. The manifest is written last, by
//! rename, under an exclusive lock per hash: an interrupted or failed build never looks valid, and
//! two builds of one image wait for each other instead of writing the same files.
//!
//! Every image boots with `init=/usr/local/sbin/umldbg-boot`; see [`recipe::BOOT_STUB`] and
//! `images/files/umldbg-boot.sh` for the kernel command line it reads.

pub mod build;
pub mod manifest;
pub mod prune;
pub mod recipe;

use std::path::{Path, PathBuf};

pub use build::{BuildOptions, Built, Progress, build};
pub use manifest::Manifest;
pub use recipe::{BOOT_STUB, Recipe};

use crate::lab::spec::Location;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    #[error("no image recipe named `{name}`; known: {known}; or give a recipe file (NAME.toml)")]
    UnknownImage { name: String, known: String },
    #[error(
        "recipe {recipe}: package `{package}` is not in Debian {suite} at {mirror}: check its name (apt-cache search) or remove it from the recipe"
    )]
    UnknownPackage {
        recipe: String,
        package: String,
        suite: String,
        mirror: String,
    },
    #[error(
        "the Debian mirror {mirror} did not answer ({detail}): check the network or give another mirror with --mirror URL"
    )]
    Mirror { mirror: String, detail: String },
    #[error(
        "no Debian archive found in /etc/apt/sources.list{{,.d/}}: give a Debian mirror with --mirror URL"
    )]
    NoMirror,
    #[error("`{tool}` is not installed: apt-get install {package} (or run scripts/setup.sh)")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("building an image needs root (mmdebstrap installs the packages as root): run as root")]
    NotRoot,
    #[error("recipe {recipe}: {step} failed, see {log} (last lines: {tail})")]
    Step {
        recipe: String,
        step: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "only {free_mb} MB free under {dir}: an image build needs about {need_mb} MB; free some space or set UMLDBG_CACHE"
    )]
    DiskFull {
        dir: PathBuf,
        free_mb: u64,
        need_mb: u64,
    },
    #[error(
        "recipe {recipe}: no space left under {dir} during {step}; nothing of the image was kept: free some space or set UMLDBG_CACHE"
    )]
    NoSpace {
        recipe: String,
        dir: PathBuf,
        step: String,
    },
    #[error("recipe {recipe}: size_mb = {size_mb} is too small, the root alone needs {need_mb} MB")]
    TooSmall {
        recipe: String,
        size_mb: u64,
        need_mb: u64,
    },
    #[error("image {name} is not built ({reason}): run `umldbg image build {name}`")]
    NotBuilt { name: String, reason: String },
}

/// `<cache>/images`.
pub fn images_dir(cache: &Path) -> PathBuf {
    cache.join("images")
}

/// The directory of the image built from `recipe`.
pub fn image_dir(cache: &Path, recipe: &Recipe) -> PathBuf {
    images_dir(cache).join(recipe.hash())
}

/// The valid cached image for `name_or_file` (a built-in name, an alias, or a recipe file),
/// without building anything and without touching the network: the lookup `lab up` makes.
pub fn cached(cache: &Path, name_or_file: &str) -> Result<Manifest, ImageError> {
    let recipe = recipe::find(name_or_file)?;
    let dir = image_dir(cache, &recipe);
    Manifest::read_valid(&dir).map_err(|reason| ImageError::NotBuilt {
        name: name_or_file.to_string(),
        reason,
    })
}

/// The ext4 image for `name_or_file`, built first if the cache has no valid one. `progress`
/// hears what the build does (nothing when the image is cached).
pub fn ensure(
    cache: &Path,
    name_or_file: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<Built, ImageError> {
    let recipe = recipe::find(name_or_file)?;
    build(
        &recipe,
        &BuildOptions {
            cache: cache.to_path_buf(),
            mirror: None,
            rebuild: false,
        },
        progress,
    )
}
