//! The console framing replayed over recorded transcripts (`fixtures/console/`, see its README):
//! the request side is rebuilt from the recorded lines and must match them byte for byte, and the
//! reply side, fed in the recorded chunks and byte by byte, must give the recorded outputs and
//! statuses.

use std::path::PathBuf;

use umldbg_codec::base64;
use umldbg_codec::console::{
    ConsoleEvent, ConsoleFramer, Exchange, Nonce, Progress, file_request, run_request, shell_lines,
};

fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/console"
    ))
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            other => panic!("bad escape {other:?} in {s:?}"),
        }
        i += 2;
    }
    out
}

/// `(to_guest, bytes)` per recorded read or write.
fn transcript(name: &str) -> Vec<(bool, Vec<u8>)> {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    text.lines()
        .map(|l| {
            let (dir, rest) = l.split_at(2);
            match dir {
                "> " => (true, unescape(rest)),
                "< " => (false, unescape(rest)),
                _ => panic!("{name}: bad line {l:?}"),
            }
        })
        .collect()
}

struct Expected {
    id: u64,
    nonce: Nonce,
    status: i32,
    output: Vec<u8>,
}

fn expected(name: &str) -> Vec<Expected> {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    text.lines()
        .map(|l| {
            let mut w = l.splitn(5, ' ');
            assert_eq!(w.next(), Some("command"));
            Expected {
                id: w.next().unwrap().parse().unwrap(),
                nonce: Nonce(u64::from_str_radix(w.next().unwrap(), 16).unwrap()),
                status: w.next().unwrap().parse().unwrap(),
                output: unescape(w.next().unwrap_or("")),
            }
        })
        .collect()
}

/// Per command: its id, output and status (None while it runs).
type Got = Vec<(u64, Vec<u8>, Option<i32>)>;

/// Every reply of the transcript through one framer fed `chunks`; per command id its output and
/// status, and the stray bytes.
fn replay(chunks: &[Vec<u8>], commands: &[Expected]) -> (Got, Vec<u8>) {
    let mut f = ConsoleFramer::default();
    for c in commands {
        f.expect(c.id, c.nonce);
    }
    let mut got: Got = commands.iter().map(|c| (c.id, Vec::new(), None)).collect();
    let mut stray = Vec::new();
    for chunk in chunks {
        for e in f.push(chunk) {
            match e {
                ConsoleEvent::Output(id, d) => {
                    let g = got.iter_mut().find(|g| g.0 == id).unwrap();
                    assert!(g.2.is_none(), "output of {id} after its end");
                    g.1.extend(d);
                }
                ConsoleEvent::Done(id, rc) => {
                    let g = got.iter_mut().find(|g| g.0 == id).unwrap();
                    assert!(g.2.replace(rc).is_none(), "{id} ended twice");
                }
                ConsoleEvent::Stray(d) => stray.extend(d),
                ConsoleEvent::Ready => stray.extend_from_slice(b"<READY>"),
            }
        }
    }
    (got, stray)
}

fn check_replies(name: &str, commands: &[Expected]) -> Vec<u8> {
    let t = transcript(&format!("{name}.transcript"));
    let chunks: Vec<Vec<u8>> = t.iter().filter(|c| !c.0).map(|c| c.1.clone()).collect();
    let bytes: Vec<Vec<u8>> = chunks.concat().into_iter().map(|b| vec![b]).collect();
    let (got, stray) = replay(&chunks, commands);
    let (got_bytewise, stray_bytewise) = replay(&bytes, commands);
    assert_eq!(got, got_bytewise, "{name}: chunking changed the result");
    assert_eq!(
        stray, stray_bytewise,
        "{name}: chunking changed the stray bytes"
    );
    for (c, g) in commands.iter().zip(&got) {
        assert_eq!(
            String::from_utf8_lossy(&g.1),
            String::from_utf8_lossy(&c.output),
            "{name}: output of command {}",
            c.id
        );
        assert_eq!(g.1, c.output, "{name}: output bytes of command {}", c.id);
        assert_eq!(g.2, Some(c.status), "{name}: status of command {}", c.id);
    }
    stray
}

#[test]
fn lab_init_transcript_gives_each_command_its_exact_output_and_status() {
    let commands = expected("lab-exec.expect");
    assert_eq!(commands.len(), 3);
    let stray = check_replies("lab-exec", &commands);
    assert!(stray.is_empty(), "{}", String::from_utf8_lossy(&stray));
    // The request lines are the codec's, byte for byte.
    let requests: Vec<Vec<u8>> = transcript("lab-exec.transcript")
        .into_iter()
        .filter(|c| c.0)
        .map(|c| c.1)
        .collect();
    assert_eq!(requests.len(), commands.len());
    for (line, c) in requests.iter().zip(&commands) {
        let text = std::str::from_utf8(line).unwrap();
        let w: Vec<&str> = text.trim_end().split(' ').collect();
        assert_eq!(w[..3], ["RUN", &c.id.to_string(), &c.nonce.to_string()]);
        let script = base64::decode(w[4].as_bytes()).unwrap();
        let script = String::from_utf8(script).unwrap();
        let tmo: u64 = w[3].parse().unwrap();
        assert_eq!(
            run_request(c.id, c.nonce, tmo, &script).as_deref(),
            Some(text)
        );
    }
    assert_eq!(
        file_request(7, Nonce(0xab), 30, "/stage/cmd.sh"),
        "FILE 7 00000000000000ab 30 /stage/cmd.sh\n"
    );
}

/// The `>` lines of each command of a pty transcript, and the `<` chunks read until its end.
fn pty_groups(commands: &[Expected]) -> Vec<(Vec<String>, Vec<Vec<u8>>)> {
    let t = transcript("pty-shell.transcript");
    let mut groups: Vec<(Vec<String>, Vec<Vec<u8>>)> = Vec::new();
    let mut cur = (Vec::new(), Vec::new());
    let mut n = 0;
    for (to_guest, bytes) in t {
        if to_guest {
            cur.0.push(String::from_utf8(bytes).unwrap());
            continue;
        }
        let end = format!("\x01E{} {} ", commands[n].id, commands[n].nonce);
        let ends = String::from_utf8_lossy(&bytes).contains(&end);
        cur.1.push(bytes);
        if ends {
            groups.push(std::mem::take(&mut cur));
            n += 1;
        }
    }
    assert!(cur.0.is_empty() && cur.1.is_empty());
    groups
}

/// The script a command's typed lines carry.
fn typed_script(lines: &[String]) -> String {
    let b64: String = if lines.len() == 1 {
        let after = lines[0].split("printf %s '").nth(1).unwrap();
        after.split('\'').next().unwrap().to_string()
    } else {
        lines[..lines.len() - 1]
            .iter()
            .map(|l| l.split('\'').nth(1).unwrap())
            .collect()
    };
    String::from_utf8(base64::decode(b64.as_bytes()).unwrap()).unwrap()
}

#[test]
fn pty_shell_transcript_with_echo_gives_each_command_its_exact_output_and_status() {
    let commands = expected("pty-shell.expect");
    assert_eq!(commands.len(), 4);
    let stray = check_replies("pty-shell", &commands);
    // The guest tty's echo of every typed line and the prompts are stray, never output.
    let stray = String::from_utf8_lossy(&stray);
    assert!(
        stray.contains("__umldbg_rc") && stray.contains("# "),
        "{stray}"
    );
}

#[test]
fn pty_shell_transcript_replays_through_exchange_with_acknowledged_parts() {
    let commands = expected("pty-shell.expect");
    let groups = pty_groups(&commands);
    assert_eq!(groups.len(), commands.len());
    let mut parts_seen = 0;
    for ((lines, chunks), c) in groups.iter().zip(&commands) {
        let script = typed_script(lines);
        // What was typed is what the codec builds, byte for byte, and never holds a marker byte.
        assert_eq!(&shell_lines(c.id, c.nonce, &script).unwrap(), lines);
        assert!(lines.iter().all(|l| !l.contains('\x01')));
        let mut ex = Exchange::new(&script, c.id, c.nonce).unwrap();
        let mut acked = Vec::new();
        let mut last = Progress::Pending;
        for chunk in chunks {
            match ex.push(chunk) {
                Progress::Acked(n) => acked.push(n),
                Progress::Pending => {}
                p => last = p,
            }
        }
        assert_eq!(acked, (0..lines.len() - 1).collect::<Vec<_>>());
        parts_seen = parts_seen.max(lines.len());
        let Progress::Done(out) = last else {
            panic!("command {} did not end: {last:?}", c.id)
        };
        assert!(ex.started());
        assert_eq!(out.status, c.status);
        assert_eq!(out.output.as_bytes(), &c.output[..]);
    }
    assert!(parts_seen >= 3, "the transcript has a script sent in parts");
}
