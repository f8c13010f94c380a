//! `umldbg image build|list|path|prune`.

use anyhow::Context;
use clap::Subcommand;

use super::global::Global;
use umldbg::image::{self, BuildOptions, Progress, manifest, recipe};

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Build a root filesystem image from a built-in recipe or a recipe file (or find it cached)
    Build {
        /// A built-in name (kathara/frr, kathara/quagga, ...) or a recipe file NAME.toml
        name: String,
        /// A Debian mirror URI (default: the first Debian archive of this machine's apt sources)
        #[arg(long)]
        mirror: Option<String>,
        /// Build again even when a valid image is cached
        #[arg(long)]
        rebuild: bool,
    },
    /// The built-in recipes and the images in the cache
    List,
    /// The image file of a built image (fails, without building, when it is not built)
    Path { name: String },
    /// Remove incomplete builds and images no recipe makes any more (not those machines use)
    Prune {
        /// Remove every image no running machine uses
        #[arg(long)]
        all: bool,
        /// Say what would go, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// Draws a build's progress: a spinner with the current step on a terminal, lines otherwise.
struct Drawer {
    bar: Option<indicatif::ProgressBar>,
    started: std::time::Instant,
}

impl Drawer {
    fn new() -> Drawer {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .expect("valid template"),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        Drawer {
            bar,
            started: std::time::Instant::now(),
        }
    }

    fn show(&mut self, p: Progress) {
        let phase = |s: String| match &self.bar {
            Some(b) => b.set_message(s),
            None => eprintln!(
                "[{:>4.0}s] image: {s}",
                self.started.elapsed().as_secs_f64()
            ),
        };
        match p {
            Progress::Waiting(dir) => phase(format!(
                "another process builds {}; waiting for it",
                dir.display()
            )),
            Progress::Phase(s) => phase(s.to_string()),
            Progress::Output(_) => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The images a lab's machines boot from, built now where the cache has none (progress drawn):
/// `lab up` calls this before it starts the lab.
pub fn ensure_for_lab(cache: &std::path::Path, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        if image::cached(cache, name).is_ok() {
            continue;
        }
        eprintln!("image {name} is not built yet: building it (once; later labs reuse it)");
        let mut d = Drawer::new();
        let res = image::ensure(cache, name, &mut |p| d.show(p));
        d.finish();
        let out = res?;
        eprintln!("image {name} built in {:.1}s", out.seconds);
    }
    Ok(())
}

pub fn run(cmd: ImageCmd, g: &Global) -> anyhow::Result<()> {
    let (cache, json) = (g.cache.clone(), g.json);
    match cmd {
        ImageCmd::Build {
            name,
            mirror,
            rebuild,
        } => {
            let r = recipe::find(&name)?;
            let mut d = Drawer::new();
            let res = image::build(
                &r,
                &BuildOptions {
                    cache,
                    mirror,
                    rebuild,
                },
                &mut |p| d.show(p),
            );
            d.finish();
            let out = res?;
            let m = &out.manifest;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "cached": out.cached, "seconds": out.seconds, "manifest": m
                    }))?
                );
            } else {
                println!(
                    "image {} {} in {:.1}s: {} ({:.0} MB on disk, {:.0} MB file system)",
                    m.name,
                    if out.cached { "cached" } else { "built" },
                    out.seconds,
                    m.image.display(),
                    mb(m.disk_bytes),
                    mb(m.size_bytes)
                );
            }
        }
        ImageCmd::Path { name } => {
            let m = image::cached(&cache, &name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!("{}", m.image.display());
            }
        }
        ImageCmd::List => {
            let entries = manifest::list(&cache);
            let builtins: Vec<(recipe::BuiltinInfo, String)> = recipe::builtins()
                .into_iter()
                .filter_map(|b| {
                    let h = recipe::builtin(&b.name).ok()?.hash();
                    Some((b, h))
                })
                .collect();
            let built = |hash: &str| {
                entries
                    .iter()
                    .find(|e| e.manifest.is_ok() && e.dir.file_name().is_some_and(|n| n == hash))
            };
            if json {
                let recipes: Vec<serde_json::Value> = builtins
                    .iter()
                    .map(|(b, h)| {
                        serde_json::json!({
                            "name": b.name, "aliases": b.aliases, "description": b.description,
                            "hash": h,
                            "image": built(h).and_then(|e| e.manifest.as_ref().ok()).map(|m| &m.image),
                        })
                    })
                    .collect();
                let cached: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| match &e.manifest {
                        Ok(m) => serde_json::json!({"dir": e.dir, "valid": true, "manifest": m}),
                        Err(r) => {
                            serde_json::json!({"dir": e.dir, "valid": false, "reason": r.to_string()})
                        }
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"recipes": recipes, "cached": cached})
                    )
                    .context("json")?
                );
                return Ok(());
            }
            println!("built-in recipes:");
            for (b, h) in &builtins {
                let state = if built(h).is_some() {
                    "built"
                } else {
                    "not built"
                };
                let aliases = if b.aliases.is_empty() {
                    String::new()
                } else {
                    format!(" (also {})", b.aliases.join(", "))
                };
                println!("  {:<16} {:<9} {}{aliases}", b.name, state, b.description);
            }
            if entries.is_empty() {
                println!(
                    "no images cached under {}",
                    image::images_dir(&cache).display()
                );
            } else {
                println!("cached images:");
                for e in entries {
                    match e.manifest {
                        Ok(m) => println!(
                            "  valid    {:<16} {:>5.0} MB  {}",
                            m.name,
                            mb(m.disk_bytes),
                            m.image.display()
                        ),
                        Err(r) => println!("  invalid  {:<16} {} ({r})", "-", e.dir.display()),
                    }
                }
            }
        }
        ImageCmd::Prune { all, dry_run } => {
            let out = image::prune::prune(&cache, all, dry_run).with_context(|| {
                format!(
                    "prune {}: remove what is left by hand, or run as the cache's owner",
                    image::images_dir(&cache).display()
                )
            })?;
            let freed: u64 = out.iter().map(|o| o.bytes).sum();
            for o in &out {
                let name = o.name.as_deref().unwrap_or("-");
                match o.verdict {
                    image::prune::Verdict::Keep(why) => {
                        println!("keep     {name} {} ({why})", o.dir.display())
                    }
                    image::prune::Verdict::Remove(why) => println!(
                        "{} {name} {} ({why}, {:.0} MB)",
                        if dry_run { "would rm" } else { "removed " },
                        o.dir.display(),
                        mb(o.bytes)
                    ),
                }
            }
            println!(
                "{} {:.0} MB",
                if dry_run { "would free" } else { "freed" },
                mb(freed)
            );
        }
    }
    Ok(())
}
