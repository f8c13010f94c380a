//! `umldbg ko info <file.ko> [--json]`: what a kernel module file contains.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use umldbg::kmod::{MappedFile, ModuleInfo, SymbolKind};

#[derive(clap::Args, Debug)]
pub struct KoInfoArgs {
    /// The module file (`.ko`).
    pub file: PathBuf,
    /// Also list section, file and untyped symbols.
    #[arg(long)]
    pub all_symbols: bool,
}

pub fn run(args: KoInfoArgs, g: &super::global::Global) -> anyhow::Result<()> {
    let file = MappedFile::open(&args.file)?;
    let info = ModuleInfo::parse(&file).with_context(|| format!("{}", args.file.display()))?;
    let text = if g.json {
        serde_json::to_string_pretty(&info)? + "\n"
    } else {
        render(&info, &args)
    };
    super::ptype::write_stdout(&text)?;
    if !info.warnings.is_empty() {
        eprintln!(
            "umldbg: warning: partial result for {}: {}",
            args.file.display(),
            info.warnings.join("; ")
        );
    }
    Ok(())
}

/// The human-readable report.
pub fn render(info: &ModuleInfo, args: &KoInfoArgs) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: module {}", args.file.display(), info.name);
    if let Some(n) = &info.this_module_name
        && n != &info.name
    {
        let _ = writeln!(s, "  struct module name  {n}");
    }
    let _ = writeln!(
        s,
        "  build-id    {}",
        info.build_id.as_deref().unwrap_or("(none)")
    );
    let depends = info.depends();
    let _ = writeln!(
        s,
        "  depends     {}",
        if depends.is_empty() {
            "(none)".into()
        } else {
            depends.join(", ")
        }
    );
    for (k, v) in &info.modinfo {
        if k != "depends" && k != "name" {
            let _ = writeln!(s, "  {k:<11} {v}");
        }
    }

    let _ = writeln!(
        s,
        "\nSections (A: the kernel allocates it in module memory):"
    );
    let _ = writeln!(
        s,
        "  [Nr]   Name                         Type            Size  Flg   Align"
    );
    for sec in info.sections.iter().skip(1) {
        let _ = writeln!(
            s,
            "  [{:>2}] {} {:<28} {:<12} {:>#9x}  {:<5} {:>4}",
            sec.index,
            if sec.alloc { 'A' } else { ' ' },
            sec.name,
            sec.kind,
            sec.size,
            sec.flags_str,
            sec.align
        );
    }

    let lines = info.debug.as_ref();
    let mut funcs: Vec<_> = info
        .symbols
        .iter()
        .filter(|s| s.kind == SymbolKind::Func && !s.is_undefined())
        .collect();
    funcs.sort_by(|a, b| (&a.section, a.offset).cmp(&(&b.section, b.offset)));
    let _ = writeln!(s, "\nFunctions ({}):", funcs.len());
    for f in funcs {
        // Aliases such as init_module have no DWARF of their own: use the function at the
        // same place.
        let func = lines.and_then(|d| {
            d.function(&f.name).or_else(|| {
                d.functions.iter().find(|l| {
                    l.section.as_deref() == Some(f.section.as_str()) && l.offset == Some(f.offset)
                })
            })
        });
        let mut line = func
            .and_then(|l| Some(format!("{}:{}", l.file.as_deref()?, l.line?)))
            .unwrap_or_default();
        // The entry's line can come from an inlined helper; then say where the function is.
        if let Some(l) = func
            && let (Some(df), Some(dl)) = (&l.decl_file, l.decl_line)
            && l.file.as_ref() != Some(df)
        {
            let _ = write!(line, " (declared at {df}:{dl})");
        }
        let _ = writeln!(
            s,
            "  {:<32} {}+{:#x}  size {:#x}  {line}",
            f.name, f.section, f.offset, f.size
        );
    }
    let objects: Vec<_> = info
        .symbols
        .iter()
        .filter(|s| s.kind == SymbolKind::Object && !s.is_undefined())
        .collect();
    let _ = writeln!(s, "\nObjects ({}):", objects.len());
    for o in objects {
        let _ = writeln!(
            s,
            "  {:<32} {}+{:#x}  size {:#x}",
            o.name, o.section, o.offset, o.size
        );
    }
    let imports: Vec<&str> = info
        .symbols
        .iter()
        .filter(|s| s.is_undefined() && !s.name.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    let _ = writeln!(s, "\nImports ({}): {}", imports.len(), imports.join(" "));
    if args.all_symbols {
        let _ = writeln!(s, "\nOther symbols:");
        for o in info.symbols.iter().filter(|s| {
            !matches!(s.kind, SymbolKind::Func | SymbolKind::Object) && !s.is_undefined()
        }) {
            let _ = writeln!(
                s,
                "  {:<32} {:?} {}+{:#x}",
                o.name, o.kind, o.section, o.offset
            );
        }
    }

    match lines {
        Some(d) => {
            let _ = writeln!(
                s,
                "\nDWARF {}: sources {}",
                d.dwarf_version,
                d.sources.join(", ")
            );
            if let Some(dir) = &d.comp_dir {
                let _ = writeln!(s, "  compiled in {dir}");
            }
        }
        None if info.section(".debug_info").is_some() => {
            let _ = writeln!(
                s,
                "\nDWARF: present but unreadable (see the warning); no source lines"
            );
        }
        None => {
            let _ = writeln!(
                s,
                "\nDWARF: none (no source lines; build the kernel with CONFIG_DEBUG_INFO)"
            );
        }
    }
    s
}
