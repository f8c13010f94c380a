//! The library's layers, checked from the source text: no module cycle, and no lower layer that
//! imports a frontend.
//!
//! Every `.rs` file under `src/` (and under `crates/*/src` when the workspace has members) is
//! read; comments, string and character literals are blanked out; what is left is searched for
//! `crate::X`, `crate::{X, Y::..}` and `super::..` paths. A path names a node: the top-level
//! module (`daemon`, `lab`, ...) and, inside `lab/`, the file (`lab/spec`, `lab/kathara`). An
//! edge is a file of one node naming another node. The test fails with the cycle printed when
//! the graph of top-level modules, or the graph of `lab/`'s files, has one, and with the offending
//! file and path when a lower layer names a frontend or when two frontends that must stay apart
//! name each other. Pure logic: no machine, no build.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The frontends: each may use every lower layer, none may be used by one.
const FRONTENDS: &[&str] = &["cli", "daemon", "stub", "trace", "ide"];
/// Pairs of frontends that must not name each other (either way).
const APART: &[(&str, &str)] = &[
    ("daemon", "stub"),
    ("trace", "daemon"),
    ("trace", "stub"),
    ("ide", "daemon"),
    ("ide", "stub"),
];
/// Top-level modules whose files are nodes of their own.
const BY_FILE: &[&str] = &["lab"];

/// One reference found in a file: the file's node, the referenced node, the line, the text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    from: String,
    to: String,
    file: PathBuf,
    line: usize,
    path: String,
}

/// Blanks out comments, string literals and character literals, keeping newlines so that line
/// numbers stay right.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if (c == b'r' || (c == b'b' && b.get(i + 1) == Some(&b'r')))
            && !prev_is_ident(b, i)
            && raw_string_start(b, if c == b'b' { i + 1 } else { i }).is_some()
        {
            let at = if c == b'b' { i + 1 } else { i };
            let hashes = raw_string_start(b, at).unwrap_or(0);
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let body = at + 2 + hashes;
            while i < body {
                out.push(b' ');
                i += 1;
            }
            while i < b.len() && !b[i..].starts_with(&close) {
                blank(&mut out, b[i]);
                i += 1;
            }
            let n = close.len().min(b.len() - i);
            out.resize(out.len() + n, b' ');
            i += n;
        } else if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                blank(&mut out, b[i]);
                i += 1;
            }
            if i < b.len() {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'\'' && char_literal_len(b, i).is_some() {
            let n = char_literal_len(b, i).unwrap_or(1);
            out.extend(std::iter::repeat_n(b' ', n));
            i += n;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// At `r`: the number of `#` of a raw string that starts here.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'r') {
        return None;
    }
    let mut n = 0;
    while b.get(i + 1 + n) == Some(&b'#') {
        n += 1;
    }
    (b.get(i + 1 + n) == Some(&b'"')).then_some(n)
}

/// At `'`: the length of a character literal that starts here (`'x'`, `'\n'`, `'\u{..}'`), or
/// None for a lifetime.
fn char_literal_len(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i + 1) == Some(&b'\\') {
        let end = b[i + 2..].iter().position(|&c| c == b'\'')?;
        return Some(end + 3);
    }
    // One UTF-8 character, then the closing quote.
    let s = std::str::from_utf8(&b[i + 1..(i + 5).min(b.len())])
        .ok()
        .or_else(|| {
            (1..4)
                .rev()
                .find_map(|k| std::str::from_utf8(&b[i + 1..(i + 1 + k).min(b.len())]).ok())
        })?;
    let ch = s.chars().next()?;
    let n = ch.len_utf8();
    (b.get(i + 1 + n) == Some(&b'\'')).then_some(n + 2)
}

/// The module path of a file relative to its crate's `src/`: `a/b.rs` -> [a, b], `a/mod.rs` ->
/// [a], `lib.rs` -> [].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if !matches!(stem.as_str(), "mod" | "lib" | "main") {
            parts.push(stem);
        }
    }
    parts
}

/// The node a module path belongs to. `files` lists the file modules of the `BY_FILE` modules.
fn node(path: &[String], files: &BTreeSet<String>) -> Option<String> {
    let top = path.first()?;
    if BY_FILE.contains(&top.as_str())
        && let Some(second) = path.get(1)
    {
        let n = format!("{top}/{second}");
        if files.contains(&n) {
            return Some(n);
        }
    }
    Some(top.clone())
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads the identifiers of a `{A, B::c, D as E, F::{..}}` group starting after `{`: the first
/// segment of every item.
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_item = true;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '{' => {
                depth += 1;
                at_item = false;
            }
            '}' => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            ',' if depth == 0 => at_item = true,
            c if at_item && is_ident(c) => cur.push(c),
            _ => {
                if at_item && !cur.is_empty() {
                    heads.push(std::mem::take(&mut cur));
                    at_item = false;
                } else if at_item && !c.is_whitespace() {
                    at_item = false;
                }
            }
        }
        if !at_item && !cur.is_empty() {
            heads.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        heads.push(cur);
    }
    heads
}

/// The module paths a stripped source text names, with their line numbers. `here` is the file's
/// own module path (a `mod.rs` of `a` is `[a]`, a file `a/b.rs` is `[a, b]`).
fn references(text: &str, here: &[String]) -> Vec<(usize, Vec<String>, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        loop {
            let c = rest.find("crate::");
            let s = rest.find("super::");
            let (at, is_crate) = match (c, s) {
                (Some(c), Some(s)) if c < s => (c, true),
                (Some(c), None) => (c, true),
                (_, Some(s)) => (s, false),
                (None, None) => break,
            };
            let abs = offset + at;
            let before = line[..abs].chars().next_back();
            let next = at + 7;
            if before.is_some_and(|c| is_ident(c) || c == '$') || (before == Some(':') && is_crate)
            {
                // `$crate::`, `foo_crate::`, `x::crate` (not ours).
                rest = &rest[next..];
                offset += next;
                continue;
            }
            if is_crate {
                let tail = &rest[next..];
                if let Some(group) = tail.strip_prefix('{') {
                    for h in group_heads(group) {
                        found.push((n + 1, vec![h.clone()], format!("crate::{{{h}..}}")));
                    }
                } else {
                    let segs = path_segments(tail);
                    if !segs.is_empty() {
                        found.push((n + 1, segs.clone(), format!("crate::{}", segs.join("::"))));
                    }
                }
            } else {
                // Count the `super::` in a row.
                let mut ups = 0;
                let mut tail = &rest[at..];
                while let Some(t) = tail.strip_prefix("super::") {
                    ups += 1;
                    tail = t;
                }
                let mut base: Vec<String> = here.to_vec();
                // A file `a/b.rs` is module [a, b]: `super` is [a]. A `mod.rs` of [a] is module
                // [a]: `super` is []. Both drop one segment per `super`.
                for _ in 0..ups {
                    base.pop();
                }
                let heads = if let Some(group) = tail.strip_prefix('{') {
                    group_heads(group)
                } else {
                    path_segments(tail).into_iter().take(1).collect()
                };
                for h in heads {
                    let mut p = base.clone();
                    p.push(h.clone());
                    found.push((n + 1, p, format!("{}{h}", "super::".repeat(ups))));
                }
                let used = rest[at..].len() - tail.len();
                rest = &rest[at + used..];
                offset += at + used;
                continue;
            }
            rest = &rest[next..];
            offset += next;
        }
    }
    found
}

/// `a::b::C` at the start of `s`: ["a", "b", "C"] (up to the first non-path character).
fn path_segments(s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        segs.push(rest[..len].to_string());
        rest = &rest[len..];
        match rest.strip_prefix("::") {
            Some(r) if r.starts_with(|c: char| is_ident(c)) => rest = r,
            _ => break,
        }
    }
    segs
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The edges of one crate whose sources are under `src`; node names get `prefix`.
fn crate_edges(src: &Path, prefix: &str) -> Vec<Edge> {
    let files = rust_files(src);
    let mut by_file = BTreeSet::new();
    for f in &files {
        let p = module_path(f.strip_prefix(src).unwrap_or(f));
        if p.len() >= 2 && BY_FILE.contains(&p[0].as_str()) {
            by_file.insert(format!("{}/{}", p[0], p[1]));
        }
    }
    let mut edges = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(src).unwrap_or(f);
        let here = module_path(rel);
        // The binary's own files (main.rs and cli/) are one frontend: `cli`.
        let from = if rel == Path::new("main.rs") {
            "cli".to_string()
        } else if here.is_empty() {
            continue;
        } else {
            match node(&here, &by_file) {
                Some(n) => n,
                None => continue,
            }
        };
        let text = match std::fs::read_to_string(f) {
            Ok(t) => strip(&t),
            Err(e) => panic!("{}: {e}", f.display()),
        };
        for (line, target, path) in references(&text, &here) {
            let Some(to) = node(&target, &by_file) else {
                continue;
            };
            if to != from {
                edges.push(Edge {
                    from: format!("{prefix}{from}"),
                    to: format!("{prefix}{to}"),
                    file: f.clone(),
                    line,
                    path,
                });
            }
        }
    }
    edges
}

/// A cycle of the graph, if it has one, as the list of its nodes (first one repeated at the end).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = BTreeMap::new();
    for (k, vs) in graph {
        mark.insert(k, Mark::New);
        for v in vs {
            mark.entry(v).or_insert(Mark::New);
        }
    }
    fn visit<'a>(
        n: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        mark: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        mark.insert(n, Mark::Open);
        stack.push(n);
        for m in graph.get(n).into_iter().flatten() {
            match mark.get(m.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = stack.iter().position(|s| *s == m)?;
                    let mut cyc: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cyc.push(m.clone());
                    return Some(cyc);
                }
                Mark::New => {
                    if let Some(c) = visit(m, graph, mark, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark.insert(n, Mark::Done);
        None
    }
    let nodes: Vec<&str> = mark.keys().copied().collect();
    for n in nodes {
        if mark.get(n) == Some(&Mark::New) {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut mark, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn graph_of<'a>(edges: impl Iterator<Item = &'a Edge>) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in edges {
        g.entry(e.from.clone()).or_default().insert(e.to.clone());
    }
    g
}

/// The top-level module of a node (`lab/spec` -> `lab`).
fn top(n: &str) -> &str {
    n.split('/').next().unwrap_or(n)
}

/// A cycle printed with, for each step, one place that makes it.
fn explain(cycle: &[String], edges: &[Edge], level: impl Fn(&str) -> String) -> String {
    let mut s = format!("cycle: {}\n", cycle.join(" -> "));
    for w in cycle.windows(2) {
        if let Some(e) = edges
            .iter()
            .find(|e| level(&e.from) == w[0] && level(&e.to) == w[1])
        {
            s.push_str(&format!(
                "  {} -> {}: {}:{} `{}`\n",
                w[0],
                w[1],
                e.file.display(),
                e.line,
                e.path
            ));
        }
    }
    s
}

fn all_edges() -> Vec<Edge> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut edges = crate_edges(&root.join("src"), "");
    if let Ok(rd) = std::fs::read_dir(root.join("crates")) {
        let mut members: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        members.sort();
        for m in members {
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            edges.extend(crate_edges(&m.join("src"), &format!("{name}::")));
        }
    }
    edges
}

fn top_graph(edges: &[Edge]) -> (Vec<Edge>, BTreeMap<String, BTreeSet<String>>) {
    let tops: Vec<Edge> = edges
        .iter()
        .filter(|e| top(&e.from) != top(&e.to))
        .map(|e| Edge {
            from: top(&e.from).to_string(),
            to: top(&e.to).to_string(),
            ..e.clone()
        })
        .collect();
    let g = graph_of(tops.iter());
    (tops, g)
}

#[test]
fn top_level_modules_have_no_cycle() {
    let edges = all_edges();
    let (tops, g) = top_graph(&edges);
    let mut listing = String::new();
    for (k, vs) in &g {
        listing.push_str(&format!(
            "  {k} -> {}\n",
            vs.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    eprintln!("top-level modules:\n{listing}");
    if let Some(c) = find_cycle(&g) {
        panic!("{}", explain(&c, &tops, |n| n.to_string()));
    }
}

#[test]
fn files_inside_lab_have_no_cycle() {
    let edges = all_edges();
    let inner: Vec<Edge> = edges
        .into_iter()
        .filter(|e| BY_FILE.contains(&top(&e.from)) && top(&e.from) == top(&e.to))
        .collect();
    let g = graph_of(inner.iter());
    let mut listing = String::new();
    for (k, vs) in &g {
        listing.push_str(&format!(
            "  {k} -> {}\n",
            vs.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    eprintln!("files inside {BY_FILE:?}:\n{listing}");
    if let Some(c) = find_cycle(&g) {
        panic!("{}", explain(&c, &inner, |n| n.to_string()));
    }
}

#[test]
fn lower_layers_never_import_a_frontend() {
    let edges = all_edges();
    let (tops, _) = top_graph(&edges);
    let mut bad = Vec::new();
    for e in &tops {
        let from_front = FRONTENDS.contains(&e.from.as_str());
        let to_front = FRONTENDS.contains(&e.to.as_str());
        let apart = APART
            .iter()
            .any(|(a, b)| (e.from == *a && e.to == *b) || (e.from == *b && e.to == *a));
        if (!from_front && to_front) || apart {
            bad.push(format!(
                "  {} -> {}: {}:{} `{}`",
                e.from,
                e.to,
                e.file.display(),
                e.line,
                e.path
            ));
        }
    }
    assert!(bad.is_empty(), "layer violations:\n{}", bad.join("\n"));
}

// The checker's own logic, on small inputs.

#[test]
fn strip_blanks_comments_strings_and_chars_but_keeps_lines() {
    let src = "use crate::a; // crate::b\n/* crate::c\n */ let s = \"crate::d\"; let c = '\"'; \
               let r = r#\"crate::e\"#; fn f<'a>(x: &'a crate::g::X) {}\n";
    let t = strip(src);
    assert_eq!(t.lines().count(), src.lines().count());
    assert!(t.contains("crate::a"));
    assert!(t.contains("crate::g"));
    for gone in ["crate::b", "crate::c", "crate::d", "crate::e"] {
        assert!(!t.contains(gone), "{gone} left in {t:?}");
    }
}

#[test]
fn references_read_groups_and_super() {
    let here: Vec<String> = vec!["lab".into(), "spec".into()];
    let r = references(
        "use crate::{uml::ids::X, util};\nuse super::kathara::K;\nlet x = crate::image::y();\n$crate::no",
        &here,
    );
    let paths: Vec<Vec<String>> = r.into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(
        paths,
        vec![
            vec!["uml".to_string()],
            vec!["util".to_string()],
            vec!["lab".to_string(), "kathara".to_string()],
            vec!["image".to_string(), "y".to_string()],
        ]
    );
}

#[test]
fn find_cycle_reports_a_two_node_cycle_and_passes_a_dag() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("b".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["b".to_string(), "c".to_string(), "b".to_string()])
    );
}
