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
//! Every image boots with `init=/usr/local/sbin/umldbg-boot` ([`kernel_args`] writes the command
//! line; `images/files/umldbg-boot.sh` is the stub that reads it).

pub mod build;
pub mod manifest;
pub mod prune;
pub mod recipe;

use std::path::{Path, PathBuf};

pub use build::{BuildOptions, Built, Progress, build};
pub use manifest::Manifest;
pub use recipe::{BOOT_STUB, Recipe};

use crate::util::Location;

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
    NotBuilt {
        name: String,
        reason: Box<manifest::Invalid>,
    },
    #[error(
        "{path} cannot go on a UML kernel command line ({why}): use an absolute path without spaces or commas"
    )]
    BootPath { path: PathBuf, why: &'static str },
}

/// The kernel arguments that boot `image` with `cow` as the machine's own copy-on-write file (UML
/// creates it on first boot and writes only there) and the boot stub as init: it mounts each of
/// `host_dirs` over hostfs at the same path (read-only unless `host_rw`), then execs `init`.
/// Add the rest (mem=, umid=, con0=, network) as for a hostfs machine.
pub fn kernel_args(
    image: &Path,
    cow: &Path,
    host_dirs: &[&Path],
    init: &Path,
    host_rw: bool,
) -> Result<Vec<String>, ImageError> {
    let check = |p: &Path| -> Result<String, ImageError> {
        let s = p.to_string_lossy();
        let why = if !p.is_absolute() {
            "not absolute"
        } else if s.contains(char::is_whitespace) {
            "holds a space"
        } else if s.contains(',') {
            "holds a comma"
        } else {
            return Ok(s.into_owned());
        };
        Err(ImageError::BootPath {
            path: p.to_path_buf(),
            why,
        })
    };
    let mut args = vec![
        format!("ubda={},{}", check(cow)?, check(image)?),
        "root=/dev/ubda".to_string(),
        "rw".to_string(),
        format!("init={BOOT_STUB}"),
    ];
    for d in host_dirs {
        args.push(format!("umldbg.host={}", check(d)?));
    }
    if host_rw {
        args.push("umldbg.hostrw=1".to_string());
    }
    args.push(format!("umldbg.init={}", check(init)?));
    Ok(args)
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
        reason: Box::new(reason),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args_name_the_cow_the_stub_and_the_host_dirs() {
        let a = kernel_args(
            Path::new("/c/base.img"),
            Path::new("/l/m1.cow"),
            &[Path::new("/l"), Path::new("/k/mods")],
            Path::new("/l/init.sh"),
            false,
        )
        .unwrap();
        assert_eq!(
            a,
            [
                "ubda=/l/m1.cow,/c/base.img",
                "root=/dev/ubda",
                "rw",
                "init=/usr/local/sbin/umldbg-boot",
                "umldbg.host=/l",
                "umldbg.host=/k/mods",
                "umldbg.init=/l/init.sh"
            ]
        );
        let e = kernel_args(
            Path::new("/c/a,b.img"),
            Path::new("/l/m1.cow"),
            &[],
            Path::new("/l/init.sh"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/c/a,b.img") && e.contains("comma"), "{e}");
    }
}
