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
/// Process creation is slow in a UML guest (a few milliseconds each), so the listing runs two
/// processes whatever the number of modules: one `grep` prints every section file as
/// `path:address` (the shell's `read` cannot be used: these sysfs files answer a one-byte read
/// with one byte and then end-of-file), and one `od` dumps every module's build-id note (each
/// file holds one ELF note; the notes are split again by their own sizes).
pub const LISTING_SCRIPT: &str = r#"grep -rsH . /sys/module/*/sections/
set -- /sys/module/*/notes/.note.gnu.build-id
if [ -f "$1" ]; then
  for n in "$@"; do m=${n%/notes/*}; printf 'N %s\n' "${m##*/}"; done
  printf 'H\n'; od -An -v -tx1 "$@"
fi
"#;

/// The same listing for one module.
pub fn listing_script_for(name: &str) -> String {
    LISTING_SCRIPT
        .replace(
            "/sys/module/*/sections",
            &format!("/sys/module/{name}/sections"),
        )
        .replace(
            "/sys/module/*/notes/",
            &format!("/sys/module/{name}/notes/"),
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
///
/// `/sys/module/NAME/sections/SECTION:ADDRESS` gives a section (`grep -H`); `M name` starts a
/// module, `S section address` gives one of its sections, `B hex` its build-id note (the form of
/// recorded listings); `N name` lines name, in order, the modules whose notes follow as one hex
/// dump after `H`.
pub fn parse_listing(text: &str) -> Vec<GuestModule> {
    let mut out: Vec<GuestModule> = Vec::new();
    let mut noted: Vec<String> = Vec::new();
    let mut dump: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(d) = dump.as_mut() {
            d.push_str(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("/sys/module/") {
            let Some((path, addr)) = rest.rsplit_once(':') else {
                continue;
            };
            let Some((name, sec)) = path.split_once("/sections/") else {
                continue;
            };
            let Ok(a) = u64::from_str_radix(addr.trim().trim_start_matches("0x"), 16) else {
                continue;
            };
            let i = match out.iter().position(|m| m.name == name) {
                Some(i) => i,
                None => {
                    out.push(GuestModule {
                        name: name.to_string(),
                        sections: BTreeMap::new(),
                        build_id: None,
                    });
                    out.len() - 1
                }
            };
            out[i].sections.insert(sec.to_string(), a);
        } else if let Some(name) = line.strip_prefix("M ") {
            out.push(GuestModule {
                name: name.trim().to_string(),
                sections: BTreeMap::new(),
                build_id: None,
            });
        } else if let Some(rest) = line.strip_prefix("S ") {
            let Some(m) = out.last_mut() else { continue };
            let mut it = rest.split_whitespace();
            if let (Some(sec), Some(addr)) = (it.next(), it.next())
                && let Ok(a) = u64::from_str_radix(addr.trim_start_matches("0x"), 16)
            {
                m.sections.insert(sec.to_string(), a);
            }
        } else if let Some(hex) = line.strip_prefix("B ") {
            let Some(m) = out.last_mut() else { continue };
            m.build_id = build_id_from_note_hex(hex.trim());
        } else if let Some(name) = line.strip_prefix("N ") {
            noted.push(name.trim().to_string());
        } else if line == "H" {
            dump = Some(String::new());
        }
    }
    if let Some(d) = dump {
        let hex: String = d.split_whitespace().collect();
        let mut at = 0;
        for name in noted {
            let Some((id, len)) = note_at(&hex, at) else {
                break;
            };
            at += len;
            if let Some(m) = out.iter_mut().find(|m| m.name == name) {
                m.build_id = Some(id);
            }
        }
    }
    out.retain(|m| !m.sections.is_empty());
    out
}

/// The descriptor and the length in hex digits of the ELF note that starts `at` in `hex`.
fn note_at(hex: &str, at: usize) -> Option<(String, usize)> {
    let word = |i: usize| -> Option<usize> {
        let h = hex.get(at + 8 * i..at + 8 * i + 8)?;
        let b = u32::from_str_radix(h, 16).ok()?.to_be_bytes();
        Some(u32::from_le_bytes(b) as usize)
    };
    let (namesz, descsz) = (word(0)?, word(1)?);
    let len = 2 * (12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4);
    let note = hex.get(at..at + len)?;
    Some((build_id_from_note_hex(note)?, len))
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

    /// Two notes in one dump, split by their own sizes; a module with no note keeps `None`.
    #[test]
    fn build_ids_from_one_dump_of_every_note() {
        let text = "/sys/module/a/sections/.text:0x0000000000001000\n\
                    /sys/module/b/sections/.text:0x0000000000002000\n\
                    /sys/module/a/sections/.data:0x0000000000001800\n\
                    /sys/module/c/sections/.text:0x0000000000003000\nN a\nN c\nH\n \
                    04 00 00 00 14 00 00 00 03 00 00 00 47 4e 55 00 00 01 02 03\n \
                    04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 04 00 00 00\n \
                    08 00 00 00 03 00 00 00 47 4e 55 00 aa bb cc dd ee ff 00 11\n";
        let v = parse_listing(text);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].sections[".data"], 0x1800);
        assert_eq!(v[1].text(), Some(0x2000));
        assert_eq!(
            v[0].build_id.as_deref(),
            Some("000102030405060708090a0b0c0d0e0f10111213")
        );
        assert_eq!(v[1].build_id, None);
        assert_eq!(v[2].build_id.as_deref(), Some("aabbccddeeff0011"));
        // A truncated dump gives what it can and no panic.
        let v = parse_listing(&text[..text.len() - 30]);
        assert_eq!(v[2].build_id, None);
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
