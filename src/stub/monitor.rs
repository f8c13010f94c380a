//! gdb's `monitor` commands on `umldbg serve`: parsing and the text they print. Running them
//! (reading memory, loading a module on the guest) is the target's job (`target.rs`).

use std::fmt::Write as _;

use super::libraries::Library;

pub const HELP: &str = "\
umldbg serve monitor commands:
  monitor help            this text
  monitor lsmod           the guest's modules, their .text and the host file gdb reads
  monitor skb [ADDR]      decode the struct sk_buff at ADDR (default: the first argument
                          register of the stopped thread, then the second and third)
  monitor load FILE.ko    load a module in the guest (dependencies first; NAME works for the
                          kernel's own modules); the machine runs while the guest loads it
";

/// A parsed monitor command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Lsmod,
    Skb(Option<u64>),
    Load(String),
}

/// A monitor command that cannot be parsed; the text is what gdb's console shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("monitor load: which module? (monitor load FILE.ko)")]
    LoadWhich,
    #[error("monitor {verb}: too many arguments (see monitor help)")]
    TooManyArguments { verb: String },
    #[error("unknown monitor command {verb:?}; try monitor help")]
    Unknown { verb: String },
    #[error("{input:?} is not a hex address (e.g. 0x6a1c2e00)")]
    NotAnAddress { input: String },
}

/// Parse what gdb sends for `monitor ...` (hex-decoded by gdbstub, not necessarily UTF-8).
pub fn parse(cmd: &[u8]) -> Result<Command, ParseError> {
    let text = String::from_utf8_lossy(cmd);
    let mut words = text.split_whitespace();
    let Some(verb) = words.next() else {
        return Ok(Command::Help);
    };
    let rest: Vec<&str> = words.collect();
    match (verb, rest.as_slice()) {
        ("help", []) => Ok(Command::Help),
        ("lsmod", []) => Ok(Command::Lsmod),
        ("skb", []) => Ok(Command::Skb(None)),
        ("skb", [a]) => parse_addr(a).map(|a| Command::Skb(Some(a))),
        ("load", [f]) => Ok(Command::Load((*f).to_owned())),
        ("load", []) => Err(ParseError::LoadWhich),
        ("help" | "lsmod" | "skb" | "load", _) => Err(ParseError::TooManyArguments {
            verb: verb.to_owned(),
        }),
        _ => Err(ParseError::Unknown {
            verb: verb.to_owned(),
        }),
    }
}

/// `0x...` or bare hex, as kernel and gdb output give addresses; decimal with a `#` prefix is
/// not worth the ambiguity.
pub fn parse_addr(s: &str) -> Result<u64, ParseError> {
    let t = s.trim();
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(hex, 16).map_err(|_| ParseError::NotAnAddress {
        input: t.to_owned(),
    })
}

/// `monitor lsmod`: one line per module, the host shared libraries last.
pub fn render_lsmod(libs: &[Library], missing: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<18} {:>8}  file",
        "module", ".text", "sections"
    );
    for l in libs {
        if let Library::Module {
            name,
            file,
            sections,
            text,
            ..
        } = l
        {
            let text = text.map_or_else(|| "-".to_owned(), |t| format!("{t:#x}"));
            let _ = writeln!(out, "{name:<20} {text:<18} {:>8}  {file}", sections.len());
        }
    }
    for name in missing {
        let _ = writeln!(
            out,
            "{name:<20} {:<18} {:>8}  (no .ko found on the host: no symbols)",
            "", ""
        );
    }
    let shared: Vec<&str> = libs
        .iter()
        .filter(|l| matches!(l, Library::Shared { .. }))
        .map(Library::file)
        .collect();
    if !shared.is_empty() {
        let _ = writeln!(out, "host libraries: {}", shared.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_arguments() {
        assert_eq!(parse(b"help"), Ok(Command::Help));
        assert_eq!(parse(b""), Ok(Command::Help));
        assert_eq!(parse(b"lsmod"), Ok(Command::Lsmod));
        assert_eq!(parse(b"skb"), Ok(Command::Skb(None)));
        assert_eq!(parse(b"skb 0x6a1c2e00"), Ok(Command::Skb(Some(0x6a1c2e00))));
        assert_eq!(
            parse(b"  skb   6a1c2e00 "),
            Ok(Command::Skb(Some(0x6a1c2e00)))
        );
        assert_eq!(
            parse(b"load /tmp/x.ko"),
            Ok(Command::Load("/tmp/x.ko".into()))
        );
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        assert_eq!(
            parse(b"frob").unwrap_err().to_string(),
            "unknown monitor command \"frob\"; try monitor help"
        );
        assert!(
            parse(b"skb zz")
                .unwrap_err()
                .to_string()
                .contains("not a hex address")
        );
        assert!(
            parse(b"load")
                .unwrap_err()
                .to_string()
                .contains("which module")
        );
        assert!(
            parse(b"lsmod x")
                .unwrap_err()
                .to_string()
                .contains("too many arguments")
        );
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn lsmod_lists_modules_missing_files_and_host_libraries() {
        let libs = [
            Library::Module {
                name: "ipt_REJECT".into(),
                file: "/m/ipt_REJECT.ko".into(),
                sections: vec![1, 2, 3],
                text: Some(0x60b5e000),
                bias: None,
            },
            Library::Shared {
                file: "/lib/libc.so.6".into(),
                base: 0x7f00,
            },
        ];
        let t = render_lsmod(&libs, &["mystery".into()]);
        assert!(
            t.contains("ipt_REJECT           0x60b5e000                3  /m/ipt_REJECT.ko"),
            "{t}"
        );
        assert!(t.contains("mystery") && t.contains("no .ko found"), "{t}");
        assert!(t.ends_with("host libraries: /lib/libc.so.6\n"), "{t}");
    }
}
