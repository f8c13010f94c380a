//! `umldbg kernel build|path|list|prune`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::global::Global;
use umldbg::kernel::{self, BuildEvent, BuildOptions, manifest};

#[derive(Subcommand, Debug)]
pub enum KernelCmd {
    /// Build the debug-ready UML kernel (or find it in the cache)
    Build(BuildArgs),
    /// Print the cached kernel
    Path,
    /// List the cached kernels, valid or not
    List,
    /// Remove cached builds nothing uses: all but the newest valid one and those running machines use
    Prune {
        /// Say what would go, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Your own kernel tree (built incrementally with make O= in a build directory of its own;
    /// the tree is not written to) or tarball, instead of Debian's newest linux-source package
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// The configuration a tree's build directory starts from (then umldbg's options on top);
    /// later builds keep the build directory's own .config (`make menuconfig` there sticks)
    #[arg(long, value_name = "FILE", requires = "source")]
    pub config: Option<PathBuf>,
    /// Parallel make jobs (default: the number of cores)
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Ask the mirror for a newer source even when a valid build is cached
    #[arg(long)]
    pub refresh: bool,
}

/// Draws a kernel build's progress on stderr: a bar on a terminal, a line per phase and every
/// 500 steps otherwise.
struct Drawer {
    bar: Option<indicatif::ProgressBar>,
    started: std::time::Instant,
}

impl Drawer {
    fn new() -> Drawer {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed:>4} {msg:<12} [{bar:30}] {pos}/{len}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        Drawer {
            bar,
            started: std::time::Instant::now(),
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("[{:>4.0}s] {text}", self.started.elapsed().as_secs_f64()),
        }
    }

    fn draw(&self, e: BuildEvent) {
        match e {
            BuildEvent::Phase(name) => match &self.bar {
                Some(b) => b.set_message(name.to_string()),
                None => self.line(&format!("kernel: {name}")),
            },
            BuildEvent::Steps { done, total } => match &self.bar {
                Some(b) => {
                    b.set_length(total.max(done));
                    b.set_position(done);
                }
                None if done > 0 && done.is_multiple_of(500) => {
                    self.line(&format!("kernel: build {done}/~{total} steps"))
                }
                None => {}
            },
            BuildEvent::ConfigMismatch(bad) => self.line(&format!(
                "kernel: warning: options not as the fragment asked: {}",
                bad.join(", ")
            )),
            BuildEvent::Waiting(lock) => self.line(&format!(
                "kernel: another build of this tree is running ({}); waiting for it",
                lock.display()
            )),
            BuildEvent::Done => self.clear(),
        }
    }

    fn clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn run(cmd: KernelCmd, g: &Global) -> anyhow::Result<()> {
    let (cache, json) = (g.cache.clone(), g.json);
    match cmd {
        KernelCmd::Build(a) => {
            let jobs = a.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
            if let Some(c) = &a.config
                && !c.is_file()
            {
                anyhow::bail!(
                    "--config {}: no such file: give a kernel configuration (a .config)",
                    c.display()
                );
            }
            let drawer = Drawer::new();
            let out = kernel::build(
                &BuildOptions {
                    source: a.source,
                    jobs,
                    cache,
                    refresh: a.refresh,
                    config: a.config,
                },
                &|e| drawer.draw(e),
            );
            drawer.clear();
            let out = out?;
            for n in &out.notes {
                eprintln!("kernel: {n}");
            }
            let m = &out.manifest;
            let what = match (out.cache_hit, out.compiled) {
                (true, _) => "cached (the tree has not changed since)".to_string(),
                (false, Some(n)) => format!(
                    "built ({n} object{} compiled)",
                    if n == 1 { "" } else { "s" }
                ),
                (false, None) => "built".to_string(),
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "manifest": m, "cache_hit": out.cache_hit, "seconds": out.seconds,
                        "compiled": out.compiled, "notes": out.notes,
                    }))?
                );
            } else {
                println!(
                    "kernel {} {} in {:.1}s: {} (build-id {})",
                    m.version,
                    what,
                    out.seconds,
                    m.linux.display(),
                    &m.build_id[..12.min(m.build_id.len())]
                );
                if m.source.starts_with("tree:") {
                    println!(
                        "build directory {} (`make -C {} O={} ARCH=um menuconfig` changes its configuration); boot it with `umldbg lab up --kernel latest` or `umldbg lab restart --kernel latest`",
                        m.build_dir.display(),
                        m.source.trim_start_matches("tree:"),
                        m.build_dir.display()
                    );
                }
            }
        }
        KernelCmd::Path => {
            let m = kernel::cached(&cache)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!("{}", m.linux.display());
            }
        }
        KernelCmd::List => {
            let mut entries = manifest::list(&cache);
            entries.extend(manifest::tree_runs(&cache));
            if json {
                let v: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| match &e.manifest {
                        Ok(m) => serde_json::json!({"dir": e.dir, "valid": true, "manifest": m}),
                        Err(r) => {
                            serde_json::json!({"dir": e.dir, "valid": false, "reason": r.to_string()})
                        }
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).context("json")?);
            } else if entries.is_empty() {
                println!("no kernels cached under {}", cache.display());
            } else {
                for e in entries {
                    match e.manifest {
                        Ok(m) => println!(
                            "valid    {:<10} {}{}",
                            m.version,
                            m.linux.display(),
                            m.source
                                .strip_prefix("tree:")
                                .map(|t| format!(" (from {t})"))
                                .unwrap_or_default()
                        ),
                        Err(r) => println!("invalid  {:<10} {} ({r})", "-", e.dir.display()),
                    }
                }
            }
        }
        KernelCmd::Prune { dry_run } => {
            let out = kernel::prune::prune(&cache, dry_run).with_context(|| {
                format!(
                    "prune {}: remove what is left by hand, or run as the cache's owner",
                    manifest::kernels_dir(&cache).display()
                )
            })?;
            let freed: u64 = out.iter().map(|o| o.bytes).sum();
            for o in &out {
                match o.verdict {
                    kernel::prune::Verdict::Keep(why) => {
                        println!("keep     {} ({why})", o.dir.display())
                    }
                    kernel::prune::Verdict::Remove(why) => println!(
                        "{} {} ({why}, {:.1} GB)",
                        if dry_run { "would rm" } else { "removed " },
                        o.dir.display(),
                        o.bytes as f64 / 1e9
                    ),
                }
            }
            println!(
                "{} {:.1} GB",
                if dry_run { "would free" } else { "freed" },
                freed as f64 / 1e9
            );
        }
    }
    Ok(())
}
