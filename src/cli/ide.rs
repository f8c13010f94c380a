//! `umldbg ide vscode|clion|gdbinit`: debugger configurations for a machine.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use umldbg::ide::{self, Setup};
use umldbg::stub::target::MachineInfo;

#[derive(Args, Debug)]
pub struct IdeArgs {
    #[command(subcommand)]
    pub kind: IdeKind,
}

#[derive(Subcommand, Debug)]
pub enum IdeKind {
    /// Write or merge .vscode/launch.json (cppdbg) and .vscode/tasks.json (starts umldbg serve)
    Vscode {
        /// The server's TCP port on 127.0.0.1
        #[arg(long, default_value_t = 1234)]
        port: u16,
        /// The workspace folder
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The gdb the IDE runs
        #[arg(long, default_value = "gdb")]
        gdb: String,
        /// Directories the server searches for module files
        #[arg(long = "module-path", value_name = "DIR")]
        module_path: Vec<PathBuf>,
    },
    /// Print CLion's Remote Debug settings
    Clion {
        #[arg(long, default_value_t = 1234)]
        port: u16,
        #[arg(long, default_value = "gdb")]
        gdb: String,
    },
    /// Write a gdb script that attaches gdb natively with every module's symbols
    Gdbinit {
        /// Where to write it ("-" for standard output)
        #[arg(short, long, default_value = "-")]
        output: PathBuf,
        /// Directories searched for module files
        #[arg(long = "module-path", value_name = "DIR")]
        module_path: Vec<PathBuf>,
    },
}

/// The given umid, or the only running machine.
fn pick_umid(given: Option<String>, uml_dir: &Path) -> anyhow::Result<String> {
    if let Some(u) = given {
        return Ok(u);
    }
    let running: Vec<String> = umldbg::uml::instance::list_umids(uml_dir)
        .into_iter()
        .filter(|u| umldbg::uml::instance::is_running(uml_dir, u))
        .map(|u| u.to_string())
        .collect();
    match running.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no UML machine is running in {}: start one (umldbg lab up) or pass --umid",
            uml_dir.display()
        ),
        many => bail!(
            "several machines are running ({}): pass --umid",
            many.join(", ")
        ),
    }
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let tmp = path.with_extension("json.umldbg-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

/// Merge into one VS Code file, keeping a backup when the old text had comments.
fn merge_into(
    path: &Path,
    merge: impl Fn(Option<&str>) -> Result<ide::vscode::Merged, ide::vscode::MergeError>,
) -> anyhow::Result<()> {
    let old = match umldbg::util::read_regular_to_string(path, umldbg::util::MAX_LAB_FILE) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let m = merge(old.as_deref())?;
    if m.lost_comments {
        let bak = path.with_extension("json.bak");
        std::fs::write(&bak, old.as_deref().unwrap_or(""))
            .with_context(|| format!("write {}", bak.display()))?;
        eprintln!(
            "note: {} had comments or trailing commas, which the rewrite drops; the old file is {}",
            path.display(),
            bak.display()
        );
    }
    write_file(path, &m.text)?;
    println!("wrote {}", path.display());
    Ok(())
}

pub fn run(a: IdeArgs, g: &super::global::Global) -> anyhow::Result<i32> {
    let cache = g.cache.clone();
    let uml_dir = g.uml_dir.clone();
    let umid = pick_umid(g.umid.clone(), &uml_dir)?;
    let module_paths = match &a.kind {
        IdeKind::Vscode { module_path, .. } | IdeKind::Gdbinit { module_path, .. } => {
            module_path.clone()
        }
        IdeKind::Clion { .. } => Vec::new(),
    };
    let (inst, info, warnings) = MachineInfo::discover(&umid, &uml_dir, &cache, &module_paths)
        .with_context(|| format!("ide: machine {umid}"))?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let umldbg_exe = std::env::current_exe().context("the umldbg executable's path")?;
    let setup = |port: u16, gdb: &str| Setup {
        umid: umid.clone(),
        // Under the name the kernel's GDB scripts look for (lx-symbols).
        image: info.vmlinux(),
        address: format!("127.0.0.1:{port}"),
        port,
        gdb: gdb.to_owned(),
        umldbg: umldbg_exe.clone(),
        module_paths: info.module_paths.clone(),
    };
    match a.kind {
        IdeKind::Vscode { port, dir, gdb, .. } => {
            let s = setup(port, &gdb);
            let vs = dir.join(".vscode");
            merge_into(&vs.join("launch.json"), |old| {
                ide::vscode::merge_launch(old, &s)
            })?;
            merge_into(&vs.join("tasks.json"), |old| {
                ide::vscode::merge_tasks(old, &s)
            })?;
            println!(
                "Run and Debug: \"{}\" starts `umldbg serve` and connects gdb.",
                ide::vscode::config_name(&s)
            );
        }
        IdeKind::Clion { port, gdb } => {
            print!("{}", ide::clion::remote_debug_text(&setup(port, &gdb)))
        }
        IdeKind::Gdbinit { output, .. } => {
            let pid = inst.pid.get();
            let mods = info
                .modules_from_process(pid)
                .context("reading the module list")?;
            let with_files: Vec<ide::gdbinit::ModuleSymbols> = mods
                .into_iter()
                .map(|m| {
                    let file = info.module_file(&m.name).and_then(|f| {
                        let bytes = std::fs::read(&f).ok()?;
                        // The sections the kernel places: the ones add-symbol-file names.
                        let secs = umldbg::kmod::sections(&bytes).ok()?;
                        let names: Vec<String> = secs
                            .into_iter()
                            .filter(|s| s.alloc)
                            .map(|s| s.name)
                            .collect();
                        (!names.is_empty()).then_some((f, names))
                    });
                    ide::gdbinit::ModuleSymbols { module: m, file }
                })
                .collect();
            let text = ide::gdbinit::script(&umid, pid, &info.image, &with_files);
            if output.as_os_str() == "-" {
                print!("{text}");
            } else {
                std::fs::write(&output, text)
                    .with_context(|| format!("write {}", output.display()))?;
                println!("wrote {}: gdb -x {}", output.display(), output.display());
            }
        }
    }
    Ok(0)
}
