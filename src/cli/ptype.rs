//! `umldbg ptype <struct> [--kernel PATH] [--json]`: a struct's layout from the kernel's DWARF.

use std::path::PathBuf;

use anyhow::Context;

use umldbg::dwarf::LayoutStore;

#[derive(clap::Args, Debug)]
pub struct PtypeArgs {
    /// Struct, union or typedef name: `sk_buff`, or `struct sk_buff` (quoted or not).
    #[arg(required = true, num_args = 1..=2)]
    pub name: Vec<String>,
    /// Kernel image with DWARF; default: the newest kernel built by `umldbg kernel build`.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
}

pub fn run(args: PtypeArgs, g: &super::global::Global) -> anyhow::Result<()> {
    let kernel = match &args.kernel {
        Some(k) => k.clone(),
        None => default_kernel(g.cache.clone())?,
    };
    let joined = args.name.join(" ");
    let name = joined.trim();
    let name = name
        .strip_prefix("struct ")
        .or_else(|| name.strip_prefix("union "))
        .unwrap_or(name)
        .trim();
    let store = LayoutStore::new(&g.cache);
    let loaded = store.layout(&kernel, name)?;
    let text = if g.json {
        serde_json::to_string_pretty(&loaded.layout)? + "\n"
    } else {
        loaded.layout.to_string()
    };
    write_stdout(&text)
}

/// Print to stdout; a closed pipe (`umldbg ptype sk_buff | head`) is not an error.
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The image of the newest cached kernel build. Reads the manifests only: validating a build
/// means hashing the 90 MB image, which would cost more than the cached layout lookup itself;
/// the layout cache is keyed by the image's build-id anyway.
pub fn default_kernel(cache: PathBuf) -> anyhow::Result<PathBuf> {
    let dir = umldbg::kernel::manifest::kernels_dir(&cache);
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| umldbg::kernel::manifest::Manifest::read(&e.path()).ok())
        .filter(|m| m.linux.is_file())
        .max_by_key(|m| m.built_at);
    newest.map(|m| m.linux).with_context(|| {
        format!(
            "no kernel given and none cached under {}: run `umldbg kernel build`, or pass --kernel PATH",
            dir.display()
        )
    })
}
