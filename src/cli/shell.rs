//! `umldbg shell [UMID]`: an interactive prompt on a session, with history, completion of
//! commands and kernel symbol names, and stop events printed while the user types.

use std::sync::Mutex;

use anyhow::Context as _;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{ExternalPrinter, Helper};

use umldbg::daemon::client::{self, Connection};
use umldbg::daemon::protocol::{Event, Request};

/// Commands of the shell, with a one-line help each.
pub const COMMANDS: &[(&str, &str)] = &[
    ("break", "break LOC [if COND]: set a breakpoint"),
    ("delete", "delete ID: delete a breakpoint"),
    ("breaks", "list breakpoints"),
    ("continue", "resume the machine (also: c)"),
    ("interrupt", "stop the machine where it is"),
    ("wait", "wait [SECONDS]: block until the next stop"),
    ("step", "step into the next line (also: s)"),
    ("next", "step over the next line (also: n)"),
    ("finish", "run until the current function returns"),
    ("bt", "backtrace"),
    ("print", "print EXPR: evaluate a C expression (also: p)"),
    ("list", "list [LOC]: source around the stop (also: l)"),
    ("skb", "skb [EXPR]: decode the sk_buff at the stop"),
    (
        "load",
        "load FILE.ko|NAME: load a module in the guest, symbols in gdb",
    ),
    ("gdb", "gdb CMD: any gdb command"),
    ("status", "the session's state"),
    ("detach", "detach and leave the shell"),
    ("help", "this list"),
    ("quit", "leave the shell; the session stays attached"),
];

/// Turn a shell line into a request; `Ok(None)` for lines handled by the shell itself.
pub fn parse_line(line: &str) -> Result<Option<Request>, String> {
    let line = line.trim();
    let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let need = |what: &str| -> Result<String, String> {
        if rest.is_empty() {
            Err(format!("{cmd} needs {what}"))
        } else {
            Ok(rest.to_string())
        }
    };
    Ok(Some(match cmd {
        "" | "help" | "quit" | "exit" => return Ok(None),
        "break" | "b" => {
            let arg = need("a location, e.g. break reject_tg")?;
            match arg.split_once(" if ") {
                Some((loc, cond)) => Request::Break {
                    location: loc.trim().into(),
                    cond: Some(cond.trim().into()),
                },
                None => Request::Break {
                    location: arg,
                    cond: None,
                },
            }
        }
        "delete" | "d" => Request::Delete {
            id: need("a breakpoint number")?
                .parse()
                .map_err(|_| format!("not a breakpoint number: {rest}"))?,
        },
        "breaks" | "info" => Request::Breaks,
        "continue" | "c" => Request::Continue,
        "interrupt" => Request::Interrupt,
        "wait" => Request::Wait {
            timeout: if rest.is_empty() {
                None
            } else {
                Some(
                    rest.parse()
                        .map_err(|_| format!("not a number of seconds: {rest}"))?,
                )
            },
        },
        "step" | "s" => Request::Step,
        "next" | "n" => Request::Next,
        "finish" => Request::Finish,
        "bt" | "backtrace" | "where" => Request::Bt,
        "print" | "p" => Request::Print {
            expr: need("an expression, e.g. print skb->len")?,
        },
        "list" | "l" => Request::List {
            location: (!rest.is_empty()).then(|| rest.to_string()),
        },
        "skb" => Request::Skb {
            expr: (!rest.is_empty()).then(|| rest.to_string()),
            raw: false,
            hex: true,
        },
        "load" => Request::Load {
            file: need("a module file or name")?,
            module_path: Vec::new(),
            replace: false,
            build: None,
        },
        "gdb" => Request::Gdb {
            command: need("a gdb command")?,
        },
        "status" => Request::Status,
        "detach" => Request::Detach { reason: None },
        other => {
            return Err(format!(
                "unknown command {other:?}: `help` lists the commands"
            ));
        }
    }))
}

struct ShellHelper {
    conn: Mutex<Connection>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head
            .rfind(|c: char| c.is_whitespace() || "(*&!-<>".contains(c))
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &head[start..];
        if start == 0 {
            let v = COMMANDS
                .iter()
                .filter(|(c, _)| c.starts_with(word))
                .map(|(c, _)| Pair {
                    display: c.to_string(),
                    replacement: format!("{c} "),
                })
                .collect();
            return Ok((0, v));
        }
        if word.len() < 2 {
            return Ok((start, Vec::new()));
        }
        let mut conn = self.conn.lock().expect("lock");
        let v = match conn.request(&Request::Complete {
            prefix: word.to_string(),
        }) {
            Ok(r) => r
                .data
                .and_then(|d| serde_json::from_value::<Vec<String>>(d).ok())
                .unwrap_or_default()
                .into_iter()
                .map(|s| Pair {
                    display: s.clone(),
                    replacement: s,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Ok((start, v))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

pub fn run(umid: Option<String>, g: &super::global::Global) -> anyhow::Result<i32> {
    let uml_dir = g.uml_dir.clone();
    let umid = client::pick(&uml_dir, umid.or(g.umid.clone()).as_deref())?;
    let mut conn = Connection::open(&uml_dir, &umid)?;
    let completion = Connection::open(&uml_dir, &umid)?;
    let mut events = Connection::open(&uml_dir, &umid)?;
    let mut rl: rustyline::Editor<ShellHelper, rustyline::history::DefaultHistory> =
        rustyline::Editor::new().context("terminal")?;
    rl.set_helper(Some(ShellHelper {
        conn: Mutex::new(completion),
    }));
    let history = uml_dir.join(&umid).join("umldbg.history");
    let _ = rl.load_history(&history);
    // Stops (from `continue` or from anyone else's commands) appear while the user types.
    let r = events.request(&Request::Events)?;
    if r.ok
        && let Ok(mut printer) = rl.create_external_printer()
    {
        std::thread::spawn(move || {
            while let Some(line) = events.next_line() {
                let Ok(ev) = serde_json::from_str::<Event>(&line) else {
                    continue;
                };
                let text = match ev {
                    Event::Stopped(s) => s.render(),
                    Event::ModuleLoaded { name, text, source } => {
                        format!("module {name} loaded at {text} (from {source}): symbols added")
                    }
                    Event::ModuleUnloaded { name } => {
                        format!("module {name} unloaded: symbols dropped")
                    }
                    Event::Exited { reason } => format!("session over: {reason}"),
                    Event::Lagged { missed } => {
                        format!("{missed} event(s) missed; the session's state follows")
                    }
                    Event::Running => continue,
                };
                if printer.print(format!("{text}\n")).is_err() {
                    break;
                }
            }
        });
    }
    println!(
        "umldbg shell on {umid}: `help` lists the commands, Ctrl-D leaves (the session stays)"
    );
    let prompt = format!("({umid}) ");
    loop {
        let line = match rl.readline(&prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if !line.trim().is_empty() {
            let _ = rl.add_history_entry(line.as_str());
        }
        let word = line.split_whitespace().next().unwrap_or("");
        match parse_line(&line) {
            Ok(None) if word == "quit" || word == "exit" => break,
            Ok(None) if word == "help" => {
                for (c, h) in COMMANDS {
                    println!("  {c:<10} {h}");
                }
            }
            Ok(None) => {}
            Ok(Some(req)) => {
                let detach = matches!(req, Request::Detach { .. });
                match conn.request(&req) {
                    Ok(r) if r.ok => {
                        if let Some(t) = r.text.filter(|t| !t.is_empty()) {
                            println!("{t}");
                        }
                        if detach {
                            break;
                        }
                    }
                    Ok(r) => eprintln!("error: {}", r.error.unwrap_or_default()),
                    Err(e) => {
                        eprintln!("error: {e}");
                        break;
                    }
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    let _ = rl.save_history(&history);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_requests() {
        assert!(matches!(
            parse_line("break reject_tg if skb->len > 80"),
            Ok(Some(Request::Break { cond: Some(_), .. }))
        ));
        assert!(matches!(
            parse_line("p skb->len"),
            Ok(Some(Request::Print { .. }))
        ));
        assert!(matches!(parse_line("s"), Ok(Some(Request::Step))));
        assert!(
            matches!(parse_line("wait 5"), Ok(Some(Request::Wait { timeout: Some(t) })) if t == 5.0)
        );
        assert!(parse_line("delete x").is_err());
        assert!(parse_line("frobnicate").is_err());
        assert!(matches!(parse_line("help"), Ok(None)));
    }
}
