//! `umldbg symfile --kallsyms FILE -o OUT`: an ELF symbol file for gdb from `/proc/kallsyms`.

use std::path::PathBuf;

use anyhow::Context;

use umldbg::kmod::{kallsyms, symfile};

#[derive(clap::Args, Debug)]
pub struct SymfileArgs {
    /// A copy of the guest's `/proc/kallsyms` (read as root, or the addresses are all 0).
    #[arg(long)]
    pub kallsyms: PathBuf,
    /// The ELF file to write.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

pub fn run(args: SymfileArgs) -> anyhow::Result<()> {
    let text = umldbg::util::read_regular_to_string(&args.kallsyms, umldbg::util::MAX_ELF_FILE)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.kallsyms.display()))?;
    let entries = kallsyms::parse(&text).with_context(|| format!("{}", args.kallsyms.display()))?;
    let (bytes, summary) = symfile::write_symfile(&entries)?;
    std::fs::write(&args.output, &bytes)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "{}: {} functions, {} objects, {} absolute symbols in {} sections ({} module symbols skipped)",
        args.output.display(),
        summary.functions,
        summary.objects,
        summary.absolute,
        summary.sections.len(),
        summary.skipped_module_symbols
    );
    println!(
        "load it in gdb with: symbol-file {0}   (or: add-symbol-file {0})",
        args.output.display()
    );
    Ok(())
}
