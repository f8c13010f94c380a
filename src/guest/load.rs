//! Loading a module in a running guest: find its file on the host (a path, or a name looked up
//! in the search path and the kernel's installed tree), read its name and dependencies from its
//! modinfo, load it (dependencies first) through the guest shell, and read back where the guest
//! placed it.
//!
//! The file may sit anywhere on the host, also where the guest cannot see it (the guest mounts
//! its own tmpfs over /tmp and /run): such a file is copied to a stage directory under the cache,
//! which the guest sees through its read-only hostfs root.
//!
//! Every name that goes into a guest shell command (the module's and its dependencies') has
//! passed [`is_module_name`] and is quoted with `sh_quote` as well.

use std::path::{Path, PathBuf};

use super::modules::{self, GuestModule};
use super::shell::{GuestConsole, GuestShell, ShellError};
use crate::kmod::{KmodError, ModuleInfo};

/// Why a module could not be found, read or loaded, naming the argument, file or machine.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{arg}: no such file here, in --module-path or among the kernel's modules")]
    NotFoundAnywhere { arg: String },
    #[error("{arg}: no such file")]
    NoSuchFile { arg: String },
    #[error("module {name}: no {name}.ko in --module-path or among the kernel's modules")]
    NoSuchModule { name: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    ModInfo {
        path: PathBuf,
        #[source]
        source: KmodError,
    },
    #[error(
        "{}: module name {name:?} is not one the kernel accepts (letters, digits, _ and -, at most 55)",
        path.display()
    )]
    BadName { path: PathBuf, name: String },
    #[error("copy {} to {}: {source}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Shell(#[from] ShellError),
    #[error("`{command}` on {umid} exited {status}: {output}")]
    Failed {
        command: String,
        umid: String,
        status: i32,
        output: String,
    },
}

/// A module file that `load` will use.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub file: PathBuf,
    pub name: String,
    pub depends: Vec<String>,
    /// The file is the cached kernel's installed module (the guest can `modprobe` it by name).
    pub installed: bool,
}

/// A path to a `.ko`, or a module name looked up in the search path and the installed tree.
pub fn resolve(
    arg: &str,
    search: &[PathBuf],
    modules_dir: Option<&Path>,
) -> Result<Resolved, LoadError> {
    let as_path = Path::new(arg);
    let file =
        if arg.ends_with(".ko") || arg.contains('/') {
            let mut cands = vec![as_path.to_path_buf()];
            if as_path.is_relative() {
                cands.extend(search.iter().map(|d| d.join(as_path)));
            }
            match cands.into_iter().find(|p| p.is_file()) {
                Some(p) => p,
                None => {
                    // A bare `ipt_REJECT.ko` may name an installed module.
                    let stem = as_path.file_stem().and_then(|s| s.to_str()).unwrap_or(arg);
                    match (as_path.components().count() == 1, modules_dir) {
                        (true, Some(md)) => modules::find_module_file(stem, search, md)
                            .ok_or_else(|| LoadError::NotFoundAnywhere {
                                arg: arg.to_owned(),
                            })?,
                        _ => {
                            return Err(LoadError::NoSuchFile {
                                arg: arg.to_owned(),
                            });
                        }
                    }
                }
            }
        } else {
            let md = modules_dir.unwrap_or(Path::new("/nonexistent"));
            modules::find_module_file(arg, search, md).ok_or_else(|| LoadError::NoSuchModule {
                name: arg.to_owned(),
            })?
        };
    let file = std::fs::canonicalize(&file).map_err(|source| LoadError::Io {
        path: file.clone(),
        source,
    })?;
    let bytes =
        crate::util::read_regular_file(&file, crate::util::MAX_ELF_FILE).map_err(|source| {
            LoadError::Io {
                path: file.clone(),
                source,
            }
        })?;
    let info = ModuleInfo::parse(&bytes).map_err(|source| LoadError::ModInfo {
        path: file.clone(),
        source,
    })?;
    // The name becomes a file name in the stage directory and a word of guest shell commands:
    // only what the kernel itself accepts as a module name.
    for n in std::iter::once(&info.name).chain(info.depends().iter()) {
        if !is_module_name(n) {
            return Err(LoadError::BadName {
                path: file.clone(),
                name: n.clone(),
            });
        }
    }
    let installed = modules_dir.is_some_and(|md| file.starts_with(md));
    Ok(Resolved {
        name: info.name.clone(),
        depends: info.depends(),
        file,
        installed,
    })
}

/// A module name as the kernel has them (`MODULE_NAME_LEN` is 56 with the NUL).
pub fn is_module_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 55
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn exec(
    console: &GuestConsole,
    umid: &str,
    script: &str,
    timeout: u64,
) -> Result<String, LoadError> {
    match console.run(script, timeout)? {
        (0, out) => Ok(out),
        (status, out) => Err(LoadError::Failed {
            command: script.lines().next().unwrap_or("").to_owned(),
            umid: umid.to_owned(),
            status,
            output: out.trim().to_owned(),
        }),
    }
}

/// [`load_in_guest_on`] the console of a lab machine.
pub fn load_in_guest(
    umid: &str,
    r: &Resolved,
    cache: &Path,
    installed_dir: Option<&Path>,
) -> Result<Vec<GuestModule>, LoadError> {
    let console = GuestConsole::of_lab_machine(umid);
    load_in_guest_on(&console, umid, r, cache, installed_dir)
}

/// Load the module in the guest unless it is there already, then list its sections.
pub fn load_in_guest_on(
    console: &GuestConsole,
    umid: &str,
    r: &Resolved,
    cache: &Path,
    _installed_dir: Option<&Path>,
) -> Result<Vec<GuestModule>, LoadError> {
    let exec = |script: &str, timeout| exec(console, umid, script, timeout);
    // Names passed is_module_name in resolve(); quoted all the same, as every guest shell word is.
    let q = crate::lab::init::sh_quote;
    let loaded = exec(
        &format!(
            "[ -d /sys/module/{}/sections ] && echo yes || echo no",
            q(&r.name)
        ),
        20,
    )?;
    if loaded.trim() != "yes" {
        if r.installed {
            exec(&format!("modprobe {}", q(&r.name)), 60)?;
        } else {
            if !r.depends.is_empty() {
                let deps: Vec<String> = r.depends.iter().map(|d| q(d)).collect();
                exec(&format!("modprobe -a {}", deps.join(" ")), 60)?;
            }
            let stage = crate::lab::state::machine_stage_dir(cache, umid);
            std::fs::create_dir_all(&stage).map_err(|source| LoadError::Io {
                path: stage.clone(),
                source,
            })?;
            let staged = stage.join(format!("{}.ko", r.name));
            std::fs::copy(&r.file, &staged).map_err(|source| LoadError::Copy {
                from: r.file.clone(),
                to: staged.clone(),
                source,
            })?;
            exec(
                &format!(
                    "insmod {}",
                    crate::lab::init::sh_quote(&staged.display().to_string())
                ),
                60,
            )?;
        }
    }
    let listing = exec(&modules::listing_script_for(&r.name), 30)?;
    Ok(modules::parse_listing(&listing))
}
