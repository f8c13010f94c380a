//! Where a guest's modules sit and which host files hold their symbols.
//!
//! The guest reports its modules' section addresses in `/sys/module/<m>/sections/*` and their
//! build-ids in `/sys/module/<m>/notes/.note.gnu.build-id`; one shell script on the console
//! lists them all in a line format parsed here. The same facts can come from kernel memory
//! through gdb when there is no console (see `session.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Lists every module's sections and build-id, one line each: `M name`, `S section addr`, `B hex`.
pub const LISTING_SCRIPT: &str = r#"for d in /sys/module/*/sections; do
  m=${d%/sections}; m=${m##*/}
  printf 'M %s\n' "$m"
  for f in "$d"/.* "$d"/*; do [ -f "$f" ] && printf 'S %s %s\n' "${f##*/}" "$(cat "$f")"; done
  n=/sys/module/$m/notes/.note.gnu.build-id
  [ -f "$n" ] && printf 'B %s\n' "$(od -An -v -tx1 "$n" | tr -d ' \n')"
done
"#;

/// The same listing for one module.
pub fn listing_script_for(name: &str) -> String {
    LISTING_SCRIPT.replace(
        "/sys/module/*/sections",
        &format!("/sys/module/{name}/sections"),
    )
}

/// Where a module's facts came from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `/sys/module/*/sections` read on the machine's console.
    Console,
    /// The kernel's module list read from memory through gdb.
    Memory,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Console => "/sys/module on the console",
            Source::Memory => "kernel memory",
        })
    }
}

/// One module as the guest has it loaded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GuestModule {
    pub name: String,
    /// Section name to guest address.
    pub sections: BTreeMap<String, u64>,
    pub build_id: Option<String>,
}

impl GuestModule {
    pub fn text(&self) -> Option<u64> {
        self.sections.get(".text").copied()
    }
}

/// Parse the output of [`LISTING_SCRIPT`]. Modules without sections (built-in ones) are dropped.
pub fn parse_listing(text: &str) -> Vec<GuestModule> {
    let mut out: Vec<GuestModule> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("M ") {
            out.push(GuestModule {
                name: name.trim().to_string(),
                sections: BTreeMap::new(),
                build_id: None,
            });
        } else if let Some(rest) = line.strip_prefix("S ") {
            let Some(m) = out.last_mut() else { continue };
            let mut it = rest.split_whitespace();
            if let (Some(sec), Some(addr)) = (it.next(), it.next()) {
                if let Ok(a) = u64::from_str_radix(addr.trim_start_matches("0x"), 16) {
                    m.sections.insert(sec.to_string(), a);
                }
            }
        } else if let Some(hex) = line.strip_prefix("B ") {
            let Some(m) = out.last_mut() else { continue };
            m.build_id = build_id_from_note_hex(hex.trim());
        }
    }
    out.retain(|m| !m.sections.is_empty());
    out
}

/// The descriptor of a GNU build-id note given as hex of the whole note.
pub fn build_id_from_note_hex(hex: &str) -> Option<String> {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    if bytes.len() < 16 {
        return None;
    }
    let namesz = u32::from_le_bytes(bytes[0..4].try_into().ok()?) as usize;
    let descsz = u32::from_le_bytes(bytes[4..8].try_into().ok()?) as usize;
    let desc_at = 12 + namesz.div_ceil(4) * 4;
    let desc = bytes.get(desc_at..desc_at + descsz)?;
    Some(desc.iter().map(|b| format!("{b:02x}")).collect())
}

/// Module names compare with `-` and `_` as the same character, as the kernel does.
pub fn same_module_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'-' || x == b'_') && (y == b'-' || y == b'_'))
}

/// Find a module's file: the given search directories first, then the installed modules tree.
pub fn find_module_file(name: &str, search: &[PathBuf], modules_dir: &Path) -> Option<PathBuf> {
    for d in search {
        for cand in [
            d.join(format!("{name}.ko")),
            d.join(format!("{}.ko", name.replace('_', "-"))),
        ] {
            if cand.is_file() {
                return Some(cand);
            }
        }
    }
    let dep = std::fs::read_to_string(modules_dir.join("modules.dep")).ok()?;
    dep.lines().find_map(|l| {
        let rel = l.split(':').next()?;
        let base = Path::new(rel).file_name()?.to_str()?.strip_suffix(".ko")?;
        same_module_name(base, name).then(|| modules_dir.join(rel))
    })
}

/// gdb's `add-symbol-file` for a module: every guest section that the file allocates.
pub fn add_symbol_file_command(
    file: &Path,
    m: &GuestModule,
    file_sections: &[String],
) -> Option<String> {
    let text = m.text()?;
    let mut cmd = format!("add-symbol-file {} -s .text {text:#x}", file.display());
    for (sec, addr) in &m.sections {
        if sec == ".text" || !file_sections.iter().any(|s| s == sec) {
            continue;
        }
        cmd.push_str(&format!(" -s {sec} {addr:#x}"));
    }
    Some(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "M ipt_REJECT\nS .text 0x60b5e000\nS .data 0x60b62000\nS .rodata 0x60b60000\nS .gnu.linkonce.this_module 0x60b62040\nB 040000001400000003000000474e5500aabbccddeeff00112233445566778899aabbccdd\nM kernel\nM x_tables\nS .text 0x60a00000\n";

    #[test]
    fn parses_listing_and_drops_builtins() {
        let v = parse_listing(LISTING);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "ipt_REJECT");
        assert_eq!(v[0].text(), Some(0x60b5e000));
        assert_eq!(v[0].sections[".data"], 0x60b62000);
        assert_eq!(
            v[0].build_id.as_deref(),
            Some("aabbccddeeff00112233445566778899aabbccdd")
        );
        assert_eq!(v[1].name, "x_tables");
        assert_eq!(v[1].build_id, None);
    }

    #[test]
    fn names_compare_dash_and_underscore() {
        assert!(same_module_name("nf_reject_ipv4", "nf-reject-ipv4"));
        assert!(!same_module_name("nf_reject_ipv4", "nf_reject_ipv6"));
    }

    #[test]
    fn add_symbol_file_keeps_sections_the_file_has() {
        let v = parse_listing(LISTING);
        let secs = vec![
            ".text".to_string(),
            ".data".to_string(),
            ".rodata".to_string(),
        ];
        let c = add_symbol_file_command(Path::new("/m/ipt_REJECT.ko"), &v[0], &secs).unwrap();
        assert_eq!(
            c,
            "add-symbol-file /m/ipt_REJECT.ko -s .text 0x60b5e000 -s .data 0x60b62000 -s .rodata 0x60b60000"
        );
    }
}
