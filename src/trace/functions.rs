//! From function names to addresses in a running machine: the kernel image's symbols, and the
//! symbols of loaded modules placed at the section addresses the guest reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::guest::modules::{GuestModule, find_module_file};

/// One function to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub addr: u64,
    /// Size in bytes (0 when the symbol does not say).
    pub size: u64,
    /// `None` for the kernel image, else the module.
    pub module: Option<String>,
    /// The module file or kernel image the symbol came from.
    pub file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no function `{name}` in the kernel or its loaded modules{}", suggest(.near))]
    Unknown { name: String, near: Vec<String> },
    #[error("`{name}` is {what}, not a function")]
    NotAFunction { name: String, what: String },
    #[error("cannot read {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
}

fn suggest(near: &[String]) -> String {
    if near.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", near.join(", "))
    }
}

/// Function symbols of one ELF file: name to (value, size, section name).
fn function_symbols(bytes: &[u8]) -> Vec<(String, u64, u64, String)> {
    text_symbols(bytes, false)
}

/// Every function symbol of an ELF file as (name, value, size), compiler clones
/// (`name.constprop.0`, `name.isra.0`) included: for naming addresses, not for probing.
pub fn all_text_symbols(bytes: &[u8]) -> Vec<(String, u64, u64)> {
    text_symbols(bytes, true)
        .into_iter()
        .map(|(n, a, s, _)| (n, a, s))
        .collect()
}

fn text_symbols(bytes: &[u8], clones: bool) -> Vec<(String, u64, u64, String)> {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind, SymbolSection};
    let Ok(obj) = object::File::parse(bytes) else {
        return Vec::new();
    };
    obj.symbols()
        .filter(|s| s.kind() == SymbolKind::Text)
        .filter_map(|s| {
            let name = s.name().ok()?;
            if name.is_empty() || name.starts_with("__pfx_") || (!clones && name.contains('.')) {
                return None;
            }
            let sec = match s.section() {
                SymbolSection::Section(i) => obj.section_by_index(i).ok()?.name().ok()?.to_string(),
                _ => return None,
            };
            Some((name.to_string(), s.address(), s.size(), sec))
        })
        .collect()
}

/// Every function the machine has: its kernel image and the loaded modules' files.
#[derive(Debug, Default)]
pub struct SymbolTable {
    funcs: BTreeMap<String, Vec<Function>>,
}

impl SymbolTable {
    /// Reads the kernel image and, for each loaded module, its `.ko` under `modules_dir`.
    pub fn load(
        image: &Path,
        modules: &[GuestModule],
        modules_dir: Option<&Path>,
    ) -> Result<SymbolTable, ResolveError> {
        let mut t = SymbolTable::default();
        let file =
            crate::kmod::loader::MappedFile::open(image).map_err(|e| ResolveError::File {
                path: image.to_path_buf(),
                reason: e.to_string(),
            })?;
        for (name, addr, size, sec) in function_symbols(file.bytes()) {
            if sec.starts_with(".init") || sec.starts_with(".exit") {
                continue;
            }
            t.add(Function {
                name,
                addr,
                size,
                module: None,
                file: image.to_path_buf(),
            });
        }
        let Some(dir) = modules_dir else { return Ok(t) };
        for m in modules {
            let Some(ko) = find_module_file(&m.name, &[], dir) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&ko) else {
                continue;
            };
            for (name, value, size, sec) in function_symbols(&bytes) {
                if sec.starts_with(".init") || sec.starts_with(".exit") {
                    continue;
                }
                let Some(&base) = m.sections.get(&sec) else {
                    continue;
                };
                t.add(Function {
                    name,
                    addr: base + value,
                    size,
                    module: Some(m.name.clone()),
                    file: ko.clone(),
                });
            }
        }
        Ok(t)
    }

    pub fn add(&mut self, f: Function) {
        self.funcs.entry(f.name.clone()).or_default().push(f);
    }

    /// Every copy of the function called `name` (static functions may have namesakes).
    pub fn resolve(&self, name: &str) -> Result<Vec<Function>, ResolveError> {
        if let Some(v) = self.funcs.get(name) {
            return Ok(v.clone());
        }
        if let Some(hex) = name.strip_prefix("0x")
            && let Ok(addr) = u64::from_str_radix(hex, 16)
        {
            let owner = self.funcs.values().flatten().find(|f| f.addr == addr);
            return Ok(vec![Function {
                name: owner
                    .map(|f| f.name.clone())
                    .unwrap_or_else(|| name.to_string()),
                addr,
                size: owner.map_or(0, |f| f.size),
                module: owner.and_then(|f| f.module.clone()),
                file: owner.map(|f| f.file.clone()).unwrap_or_default(),
            }]);
        }
        let near =
            umldbg_codec::suggest::near_names(name, self.funcs.keys().map(String::as_str), 5);
        Err(ResolveError::Unknown {
            name: name.to_string(),
            near,
        })
    }

    /// Every function, by name.
    pub fn all(&self) -> impl Iterator<Item = &Function> {
        self.funcs.values().flatten()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.funcs.contains_key(name)
    }

    /// The function that holds `addr`, for naming a hit.
    pub fn function_at(&self, addr: u64) -> Option<&Function> {
        self.funcs
            .values()
            .flatten()
            .find(|f| addr >= f.addr && addr < f.addr + f.size.max(1))
    }
}

/// A function and the argument register that holds its `struct sk_buff *`.
#[derive(Debug, Clone)]
pub struct SkbFunction {
    pub func: Function,
    pub arg: u8,
}

/// Every function of the kernel and of the loaded modules in `table` that takes a `struct
/// sk_buff *` in a register, from DWARF (`kernel`: the image's; module files are read through
/// the cache under `cache`). Sorted by name.
pub fn skb_functions(
    table: &SymbolTable,
    kernel: &crate::trace::args::SkbDwarf,
    cache: &Path,
) -> Vec<SkbFunction> {
    let mut modules: BTreeMap<PathBuf, Option<crate::trace::args::SkbDwarf>> = BTreeMap::new();
    let mut out = Vec::new();
    for f in table.all() {
        let arg = match &f.module {
            None => kernel.by_addr.get(&f.addr).copied(),
            Some(_) => modules
                .entry(f.file.clone())
                .or_insert_with(|| crate::trace::args::SkbDwarf::load(&f.file, cache).ok())
                .as_ref()
                .and_then(|d| d.by_name.get(&f.name).copied()),
        };
        if let Some(arg) = arg {
            out.push(SkbFunction {
                func: f.clone(),
                arg,
            });
        }
    }
    out.sort_by(|a, b| {
        a.func
            .name
            .cmp(&b.func.name)
            .then(a.func.addr.cmp(&b.func.addr))
    });
    out
}

/// The modules directory of the kernel a machine runs: its image is `<build>/linux` in a cache
/// entry whose manifest names the modules. `None` when the image is not a cached build.
pub fn modules_dir_of(image: &Path) -> Option<PathBuf> {
    let entry = image.parent()?.parent()?;
    let m = crate::kernel::manifest::Manifest::read(entry).ok()?;
    Some(m.modules_dir)
}

/// The section listing of every module (the format of `guest::modules::parse_listing`) with
/// bash's `$(<file)`, which reads without a fork: 0.1 s where a `cat` per file takes seconds.
/// (dash's `read` cannot be used: it reads a byte at a time, and the section files, binary
/// attributes, answer such reads with one byte.)
const FAST_LISTING: &str = r#"for d in /sys/module/*/sections; do m=${d%/sections}; m=${m##*/}; printf "M %s\n" "$m"; for f in "$d"/.* "$d"/*; do [ -f "$f" ] && printf "S %s %s\n" "${f##*/}" "$(< "$f")"; done; done"#;

/// The loaded modules of a lab machine, read over its console.
pub fn guest_modules(umid: &str) -> Result<Vec<GuestModule>, String> {
    let script = format!(
        "if command -v bash >/dev/null 2>&1; then bash -c '{FAST_LISTING}'; else\n{}\nfi",
        crate::guest::modules::LISTING_SCRIPT
    );
    let r = crate::lab::client::exec(umid, &script, 30).map_err(|e| e.to_string())?;
    if !r.ok {
        return Err(r.error.unwrap_or_else(|| "module listing failed".into()));
    }
    Ok(crate::guest::modules::parse_listing(&r.text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_get_near_names() {
        let mut t = SymbolTable::default();
        for (i, n) in ["reject_tg", "ip_forward", "ip_rcv"]
            .into_iter()
            .enumerate()
        {
            t.add(Function {
                name: n.into(),
                addr: 0x1000 + 0x100 * i as u64,
                size: 16,
                module: None,
                file: PathBuf::new(),
            });
        }
        let e = t.resolve("rejct_tg").unwrap_err().to_string();
        assert!(e.contains("did you mean reject_tg"), "{e}");
        assert_eq!(t.resolve("0x1100").unwrap()[0].name, "ip_forward");
        assert_eq!(
            t.function_at(0x100f).map(|f| f.name.as_str()),
            Some("reject_tg")
        );
        assert!(t.function_at(0x1010).is_none());
    }
}
