//! Golden tests of the GDB/MI parser on transcripts recorded from real gdb 13
//! (scripts/record-mi-fixture.sh, program fixtures/gdbmi/prog.c).
//!
//! For each `fixtures/gdbmi/<name>.mi` (gdb's output) and `<name>.in` (the commands sent), the
//! test parses every line, checks that writing the record back gives gdb's exact line, extracts
//! the typed views a client would (stop events, breakpoints, backtraces, values, symbols, console
//! text) and compares the whole as JSON text with `<name>.json`.
//! `UMLDBG_BLESS=1 cargo test -p umldbg-codec --test gdbmi_golden` rewrites the expected files.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};
use umldbg_codec::gdbmi::types::evaluated_value;
use umldbg_codec::gdbmi::{
    AsyncKind, Backtrace, Breakpoint, FunctionSymbol, LineFramer, Record, ResultClass, Results,
    StopEvent, StreamKind, parse_line,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gdbmi")
}

fn transcripts() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .expect("fixtures/gdbmi exists")
        .map(|e| e.expect("readable fixture dir").path())
        .filter(|p| p.extension().is_some_and(|e| e == "mi"))
        .collect();
    found.sort();
    found
}

/// Token -> command line, from `<name>.in`.
fn commands(mi_path: &Path) -> HashMap<u64, String> {
    let text =
        fs::read_to_string(mi_path.with_extension("in")).expect("<name>.in beside <name>.mi");
    text.lines()
        .filter_map(|line| {
            let digits = line.bytes().take_while(u8::is_ascii_digit).count();
            let token = line[..digits].parse().ok()?;
            Some((token, line[digits..].to_owned()))
        })
        .collect()
}

/// Lines of a transcript cut by the framer from odd-sized chunks, as a pipe would deliver them.
fn frame(bytes: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut framer = LineFramer::new();
    let mut lines = Vec::new();
    for piece in bytes.chunks(chunk) {
        framer.push(piece);
        while let Some(line) = framer.next_line() {
            lines.push(line.expect("no over-long line").to_vec());
        }
    }
    assert_eq!(
        framer.take_partial(),
        None,
        "transcript ends with a newline"
    );
    lines
}

fn typed_views(name: &str, lines: &[Vec<u8>], commands: &HashMap<u64, String>) -> Vec<Json> {
    let mut typed = Vec::new();
    let mut console = String::new();
    let mut last_frames: Option<Results> = None;
    for (index, line) in lines.iter().enumerate() {
        let n = index + 1;
        let record = parse_line(line).unwrap_or_else(|e| panic!("{name}.mi:{n}: {e}"));
        match record {
            Record::Stream(s) if s.kind == StreamKind::Console => console.push_str(&s.text),
            Record::Async(a) if a.kind == AsyncKind::Exec && a.class == "stopped" => {
                let stop = StopEvent::from_results(&a.results)
                    .unwrap_or_else(|e| panic!("{name}.mi:{n}: {e}"));
                typed.push(json!({ "line": n, "stop": stop }));
            }
            Record::Async(a) if a.class == "breakpoint-modified" => {
                let bp = Breakpoint::from_results(&a.results)
                    .unwrap_or_else(|e| panic!("{name}.mi:{n}: {e}"));
                typed.push(json!({ "line": n, "breakpoint-modified": bp }));
            }
            Record::Result(r) => {
                let token = r
                    .token
                    .unwrap_or_else(|| panic!("{name}.mi:{n}: result without token"));
                let command = commands
                    .get(&token.0)
                    .unwrap_or_else(|| panic!("{name}.mi:{n}: token {token} not in {name}.in"))
                    .clone();
                let op = command.split_whitespace().next().unwrap_or("").to_owned();
                let mut view = json!({ "line": n, "command": command });
                let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{name}.mi:{n}: {e}") };
                if r.class == ResultClass::Error {
                    view["error"] = json!({
                        "msg": r.results.get_str("msg"),
                        "code": r.results.get_str("code"),
                    });
                } else {
                    match op.as_str() {
                        "-break-insert" => {
                            let bp =
                                Breakpoint::from_results(&r.results).unwrap_or_else(|e| fail(&e));
                            view["breakpoint"] = json!(bp);
                        }
                        "-break-list" => {
                            let bps = Breakpoint::list_from_results(&r.results)
                                .unwrap_or_else(|e| fail(&e));
                            view["breakpoints"] = json!(bps);
                        }
                        "-stack-list-frames" => {
                            let bt = Backtrace::from_results(&r.results, None)
                                .unwrap_or_else(|e| fail(&e));
                            view["frames"] = json!(bt);
                            last_frames = Some(r.results.clone());
                        }
                        "-stack-list-arguments" => {
                            let frames = last_frames.as_ref().unwrap_or_else(|| {
                                fail(&"-stack-list-arguments before -stack-list-frames")
                            });
                            let bt = Backtrace::from_results(frames, Some(&r.results))
                                .unwrap_or_else(|e| fail(&e));
                            view["backtrace"] = json!(bt);
                        }
                        "-data-evaluate-expression" => {
                            let value = evaluated_value(&r.results).unwrap_or_else(|e| fail(&e));
                            view["value"] = json!(value);
                        }
                        "-symbol-info-functions" => {
                            let syms = FunctionSymbol::list_from_results(&r.results)
                                .unwrap_or_else(|e| fail(&e));
                            view["functions"] = json!(syms);
                        }
                        _ => {}
                    }
                }
                if !console.is_empty() {
                    view["console"] = json!(console);
                }
                console.clear();
                typed.push(view);
            }
            _ => {}
        }
    }
    typed
}

#[derive(serde::Serialize)]
struct Golden<'a> {
    records: &'a [Record],
    typed: Vec<Json>,
}

fn check_transcript(mi_path: &Path) -> Result<(), String> {
    let name = mi_path.file_stem().unwrap().to_string_lossy().into_owned();
    let bytes = fs::read(mi_path).map_err(|e| format!("{}: {e}", mi_path.display()))?;
    let lines = frame(&bytes, 7);
    assert_eq!(
        lines,
        frame(&bytes, bytes.len().max(1)),
        "{name}: framing must not depend on chunk size"
    );

    let mut records = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let n = index + 1;
        let record = parse_line(line).map_err(|e| format!("{name}.mi:{n}: {e}"))?;
        let written = record.to_string();
        if written.as_bytes() != line.as_slice() {
            return Err(format!(
                "{name}.mi:{n}: record does not write back as gdb's line\n gdb: {}\n ours: {written}",
                String::from_utf8_lossy(line)
            ));
        }
        records.push(record);
    }

    // Serialized straight from the records, not through serde_json::Value, so that gdb's field
    // order and repeated names (`frame`, `name`) survive into the expected file.
    let expected = Golden {
        records: &records,
        typed: typed_views(&name, &lines, &commands(mi_path)),
    };
    let text = serde_json::to_string_pretty(&expected).unwrap() + "\n";
    let json_path = mi_path.with_extension("json");
    if std::env::var_os("UMLDBG_BLESS").is_some_and(|v| v == "1") {
        fs::write(&json_path, &text).map_err(|e| format!("{}: {e}", json_path.display()))?;
        return Ok(());
    }
    let want = fs::read_to_string(&json_path).map_err(|e| {
        format!(
            "{}: {e} (run UMLDBG_BLESS=1 cargo test -p umldbg-codec --test gdbmi_golden)",
            json_path.display()
        )
    })?;
    if want != text {
        let (n, (w, g)) = want
            .lines()
            .zip(text.lines())
            .enumerate()
            .find(|(_, (w, g))| w != g)
            .unwrap_or((
                want.lines().count().min(text.lines().count()),
                ("<end>", "<end>"),
            ));
        return Err(format!(
            "{}: differs at line {}\n expected: {w}\n got:      {g}\n(UMLDBG_BLESS=1 re-blesses)",
            json_path.display(),
            n + 1
        ));
    }
    Ok(())
}

#[test]
fn recorded_transcripts_match_expected_json() {
    let paths = transcripts();
    assert!(
        paths.len() >= 2,
        "expected the run and attach transcripts, found {paths:?}"
    );
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|p| check_transcript(p).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Spot checks on the recorded sessions, so that a wrong bless cannot go unnoticed.
#[test]
fn recorded_run_has_the_expected_shape() {
    let path = fixture_dir().join("run.mi");
    let bytes = fs::read(&path).unwrap();
    let lines = frame(&bytes, 4096);
    let typed = typed_views("run", &lines, &commands(&path));

    let stops: Vec<&Json> = typed.iter().filter_map(|t| t.get("stop")).collect();
    let first = stops.first().expect("a stop");
    assert_eq!(first["reason"], "breakpoint-hit");
    assert_eq!(first["function"], "walk");
    assert_eq!(first["file"], "prog.c");
    assert_eq!(first["args"]["n"], "3");
    let last = stops.last().unwrap();
    assert_eq!(last["reason"], "exited");
    // gdb prints the exit status in octal; prog exits with total % 7 + 2.
    assert!(last["exit_code"].as_u64().is_some());

    let backtrace = typed
        .iter()
        .find_map(|t| t.get("backtrace"))
        .expect("a backtrace");
    assert_eq!(backtrace[0]["function"], "walk");
    assert_eq!(backtrace[1]["function"], "main");
    assert_eq!(
        backtrace[0]["args"]["p"].as_str().unwrap().get(..2),
        Some("0x")
    );

    let value = typed
        .iter()
        .find_map(|t| t.get("value"))
        .and_then(Json::as_str)
        .unwrap();
    assert!(value.starts_with("{x = "), "{value}");
    assert!(
        value.contains('é'),
        "octal escapes decode as UTF-8: {value}"
    );

    let errors: Vec<&Json> = typed.iter().filter_map(|t| t.get("error")).collect();
    assert!(errors.iter().any(|e| e["code"] == "undefined-command"));
    assert!(
        errors
            .iter()
            .any(|e| e["msg"].as_str().unwrap().contains("nosuchvar"))
    );

    let listing = typed
        .iter()
        .filter(|t| {
            t["command"]
                .as_str()
                .is_some_and(|c| c.contains("list scale"))
        })
        .find_map(|t| t.get("console"))
        .and_then(Json::as_str)
        .unwrap();
    assert!(listing.contains("static int scale(struct point *p, int factor)"));
}
