//! The text format of `/proc/kallsyms`: `ADDRESS TYPE NAME [MODULE]` per line.

use serde::{Deserialize, Serialize};

/// One line of `/proc/kallsyms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KallsymsEntry {
    pub address: u64,
    /// The `nm`-style type letter: `T`/`t` text, `D`/`d` data, `B`/`b` bss, `R`/`r` read-only,
    /// `W`/`w` weak, `V`/`v` weak object, `A`/`a` absolute. Upper case is global.
    pub kind: char,
    pub name: String,
    /// The module the symbol belongs to (`[ipt_REJECT]` suffix), `None` for the kernel image.
    pub module: Option<String>,
}

/// Why a kallsyms text could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("line {line}: expected `ADDRESS TYPE NAME [MODULE]`, got {text:?}")]
    BadLine { line: usize, text: String },
    #[error("no symbols in the kallsyms text")]
    Empty,
    #[error(
        "every address in the kallsyms text is 0: it was read without the rights to see \
         addresses (read /proc/kallsyms as root, or set kernel.kptr_restrict=0)"
    )]
    AddressesHidden,
}

/// Parse kallsyms text. Blank lines are ignored; any other line that does not fit the format
/// is an error naming it, since a half-read symbol table would give wrong names silently.
pub fn parse(text: &str) -> Result<Vec<KallsymsEntry>, KallsymsError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || KallsymsError::BadLine {
            line: i + 1,
            text: raw.to_owned(),
        };
        // Kernel symbol names are printable; a control byte (a NUL above all, which would end
        // the name early in an ELF string table) means the text is not kallsyms.
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad());
        }
        let mut fields = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad());
        };
        let address = u64::from_str_radix(addr, 16).map_err(|_| bad())?;
        let mut kind_chars = kind.chars();
        let (Some(kind), None) = (kind_chars.next(), kind_chars.next()) else {
            return Err(bad());
        };
        if !kind.is_ascii_alphabetic() && kind != '?' {
            return Err(bad());
        }
        let module = match fields.next() {
            None => None,
            Some(m) => match m.strip_prefix('[').and_then(|m| m.strip_suffix(']')) {
                Some(m) => Some(m.to_owned()),
                None => return Err(bad()),
            },
        };
        if fields.next().is_some() {
            return Err(bad());
        }
        out.push(KallsymsEntry {
            address,
            kind,
            name: name.to_owned(),
            module,
        });
    }
    if out.is_empty() {
        return Err(KallsymsError::Empty);
    }
    if out.iter().all(|e| e.address == 0) {
        return Err(KallsymsError::AddressesHidden);
    }
    Ok(out)
}
