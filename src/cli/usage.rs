//! Command-line errors on one line, like every other error of umldbg: clap's message (with its
//! tip, if any) on the first line, the usage on a second.

use std::process::ExitCode;

use clap::error::ErrorKind;

/// Print a parse error (or the help or version clap was asked for) and give the exit code.
pub fn report(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
    }
    // The rendered text without colours.
    eprintln!("{}", one_line(&e.render().to_string()));
    ExitCode::from(2)
}

/// clap's "error: MSG\n\n  tip: ...\n\nUsage: ...\n\nFor more information, try '--help'."
/// as "umldbg: MSG (tip: ...)\nusage: ... (more with --help)".
pub fn one_line(text: &str) -> String {
    let mut msg: Option<&str> = None;
    let mut notes: Vec<&str> = Vec::new();
    let mut usage: Option<&str> = None;
    let mut in_usage = false;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if msg.is_none() {
            msg = Some(line.strip_prefix("error: ").unwrap_or(line));
        } else if let Some(u) = line.strip_prefix("Usage: ") {
            usage.get_or_insert(u);
            in_usage = true;
        } else if line.starts_with("For more information") {
            in_usage = false;
        } else if !in_usage {
            notes.push(line);
        }
    }
    let mut out = format!("umldbg: {}", msg.unwrap_or("bad command line"));
    if out.ends_with(':') {
        // "required arguments were not provided:" lists them on the following lines.
        out.push_str(&format!(" {}", notes.join(", ")));
    } else if !notes.is_empty() {
        out.push_str(&format!(" ({})", notes.join("; ")));
    }
    if let Some(u) = usage {
        out.push_str(&format!("\nusage: {u} (more with --help)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line_plus_usage() {
        let text = "error: unexpected argument '--foo' found\n\n  tip: to pass '--foo' as a value, use '-- --foo'\n\nUsage: umldbg exec [OPTIONS] <UMID> [-- <COMMAND>...]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text),
            "umldbg: unexpected argument '--foo' found (tip: to pass '--foo' as a value, use '-- --foo')\nusage: umldbg exec [OPTIONS] <UMID> [-- <COMMAND>...] (more with --help)"
        );
        let text = "error: invalid value '' for '--umid <UMID>': umid is empty: give the machine a name\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text),
            "umldbg: invalid value '' for '--umid <UMID>': umid is empty: give the machine a name"
        );
        let text =
            "error: a\n\nUsage: umldbg x\n       umldbg y\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text),
            "umldbg: a\nusage: umldbg x (more with --help)"
        );
        let text = "error: the following required arguments were not provided:\n  <UMID>\n  <X>\n\nUsage: umldbg exec <UMID>\n";
        assert_eq!(
            one_line(text),
            "umldbg: the following required arguments were not provided: <UMID>, <X>\nusage: umldbg exec <UMID> (more with --help)"
        );
    }
}
