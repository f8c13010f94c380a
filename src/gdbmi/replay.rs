//! gdb without gdb: a recorded GDB/MI transcript played back over an in-memory stream, so that
//! code holding a [`Gdb`](super::Gdb) (the debug daemon's session) runs its real logic against
//! what a real gdb said, with no gdb and no machine.
//!
//! A transcript is what [`GdbConfig::record`](super::GdbConfig::record) writes: one line per
//! line that passed, `> ` before what was sent to gdb and `< ` before what gdb wrote, in the
//! order they passed. Playing it back writes gdb's lines until the next `> ` line, then reads the
//! client's next command and checks that it is the recorded one; tokens are mapped (the client's
//! numbering may differ) and placeholders such as `@PID@` stand for what differs between the
//! recording and the replay (a pid, a path).
//!
//! [`scripted`] is the same shell with a function in place of the transcript, for unit tests
//! that need a gdb answering a few commands in a given way.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Sent to gdb: a command with its token.
    In(String),
    /// Written by gdb.
    Out(String),
}

#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("transcript line {line}: neither `> ` nor `< ` at the start")]
    BadLine { line: usize },
    #[error("command {index} of the transcript: expected `{expected}`, the client sent `{got}`")]
    Mismatch {
        index: usize,
        expected: String,
        got: String,
    },
    #[error(
        "command {index} of the transcript: expected `{expected}`, the client sent nothing within {waited:?}"
    )]
    Silent {
        index: usize,
        expected: String,
        waited: Duration,
    },
    #[error(
        "command {index} of the transcript: expected `{expected}`, the client closed the stream"
    )]
    Closed { index: usize, expected: String },
    #[error("the replay stream")]
    Io(#[from] std::io::Error),
}

/// How long the player waits for the client's next command before it calls the replay failed.
pub const COMMAND_WAIT: Duration = Duration::from_secs(30);

impl Transcript {
    pub fn parse(text: &str) -> Result<Transcript, ReplayError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if let Some(c) = line.strip_prefix("> ") {
                entries.push(Entry::In(c.to_string()));
            } else if let Some(o) = line.strip_prefix("< ") {
                entries.push(Entry::Out(o.to_string()));
            } else if !line.is_empty() {
                return Err(ReplayError::BadLine { line: i + 1 });
            }
        }
        Ok(Transcript { entries })
    }

    /// The transcript as text, the way [`Transcript::parse`] reads it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for e in &self.entries {
            let (dir, text) = match e {
                Entry::In(c) => ("> ", c),
                Entry::Out(o) => ("< ", o),
            };
            s.push_str(dir);
            s.push_str(text);
            s.push('\n');
        }
        s
    }

    /// Replace `from` by `to` in every line (a placeholder by the value of this replay, or a
    /// value of the recording by its placeholder).
    pub fn substitute(&mut self, from: &str, to: &str) {
        if from.is_empty() {
            return;
        }
        for e in &mut self.entries {
            let (Entry::In(t) | Entry::Out(t)) = e;
            if t.contains(from) {
                *t = t.replace(from, to);
            }
        }
    }

    /// The commands of the transcript, without tokens.
    pub fn commands(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| match e {
            Entry::In(c) => Some(split_token(c).1),
            Entry::Out(_) => None,
        })
    }
}

/// `12-exec-continue` -> (Some(12), `-exec-continue`).
fn split_token(line: &str) -> (Option<u64>, &str) {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    (line[..digits].parse().ok(), &line[digits..])
}

/// `12^done,...` with the recorded token 12 replaced by the client's.
fn map_token(line: &str, map: &std::collections::HashMap<u64, u64>) -> String {
    let (token, rest) = split_token(line);
    match token.and_then(|t| map.get(&t)) {
        Some(actual) if rest.starts_with('^') => format!("{actual}{rest}"),
        _ => line.to_string(),
    }
}

/// The client's ends of a played-back gdb: hand them to [`Gdb::over`](super::Gdb::over).
pub type ClientEnds = (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>);

/// Play `t` back. The task ends with the number of commands matched, or the first mismatch;
/// when the transcript is done it closes the stream, as gdb does when it exits.
pub fn play(t: Transcript) -> (ClientEnds, JoinHandle<Result<usize, ReplayError>>) {
    let (client, peer) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(peer);
        let mut lines = BufReader::new(r).lines();
        let mut map = std::collections::HashMap::new();
        let mut index = 0;
        for e in t.entries {
            match e {
                Entry::Out(o) => {
                    w.write_all(map_token(&o, &map).as_bytes()).await?;
                    w.write_all(b"\n").await?;
                }
                Entry::In(expected) => {
                    index += 1;
                    w.flush().await?;
                    let got = match tokio::time::timeout(COMMAND_WAIT, lines.next_line()).await {
                        Err(_) => {
                            return Err(ReplayError::Silent {
                                index,
                                expected,
                                waited: COMMAND_WAIT,
                            });
                        }
                        Ok(r) => match r? {
                            Some(l) => l,
                            None => return Err(ReplayError::Closed { index, expected }),
                        },
                    };
                    let (rec_token, want) = split_token(&expected);
                    let (token, sent) = split_token(&got);
                    if want != sent {
                        return Err(ReplayError::Mismatch {
                            index,
                            expected,
                            got,
                        });
                    }
                    if let (Some(a), Some(b)) = (rec_token, token) {
                        map.insert(a, b);
                    }
                }
            }
        }
        w.flush().await?;
        w.shutdown().await?;
        Ok(index)
    });
    (tokio::io::split(client), task)
}

/// What a [`scripted`] gdb does with one command.
pub enum Reply {
    /// Write these lines; `{T}` in them is the command's token.
    Lines(Vec<String>),
    /// Write these lines, then end the stream as a gdb that exits.
    Exit(Vec<String>),
}

impl Reply {
    /// `{T}^done` and a prompt.
    pub fn done() -> Reply {
        Reply::Lines(vec!["{T}^done".into(), "(gdb) ".into()])
    }
}

/// A gdb whose answer to each command (given without its token) is `answer`'s. The task ends
/// with the commands it was sent.
pub fn scripted(
    mut answer: impl FnMut(&str) -> Reply + Send + 'static,
) -> (ClientEnds, JoinHandle<Result<Vec<String>, ReplayError>>) {
    let (client, peer) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(peer);
        let mut lines = BufReader::new(r).lines();
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await? {
            let (token, cmd) = split_token(&line);
            let token = token.map(|t| t.to_string()).unwrap_or_default();
            seen.push(cmd.to_string());
            let (out, exit) = match answer(cmd) {
                Reply::Lines(l) => (l, false),
                Reply::Exit(l) => (l, true),
            };
            for l in out {
                w.write_all(l.replace("{T}", &token).as_bytes()).await?;
                w.write_all(b"\n").await?;
            }
            w.flush().await?;
            if exit {
                w.shutdown().await?;
                break;
            }
        }
        Ok(seen)
    });
    (tokio::io::split(client), task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_read_back_as_written() {
        let text = "> 1-gdb-set mi-async on\n< 1^done\n< (gdb) \n";
        let t = Transcript::parse(text).expect("parses");
        assert_eq!(t.entries.len(), 3);
        assert_eq!(t.render(), text);
        assert_eq!(t.commands().collect::<Vec<_>>(), ["-gdb-set mi-async on"]);
        assert!(matches!(
            Transcript::parse("1^done\n"),
            Err(ReplayError::BadLine { line: 1 })
        ));
    }

    #[test]
    fn answers_carry_the_clients_token() {
        let map = [(7u64, 3u64)].into_iter().collect();
        assert_eq!(map_token("7^done,value=\"1\"", &map), "3^done,value=\"1\"");
        assert_eq!(
            map_token("*stopped,reason=\"x\"", &map),
            "*stopped,reason=\"x\""
        );
        assert_eq!(map_token("8^done", &map), "8^done");
    }

    #[tokio::test]
    async fn a_played_gdb_answers_a_gdb_handle() {
        let text = "\
> 1-gdb-set mi-async on\n< 1^done\n> 2-gdb-set confirm off\n< 2^done\n\
> 3-gdb-set pagination off\n< 3^done\n> 4-gdb-set height 0\n< 4^done\n\
> 5-gdb-set width 0\n< 5^done\n\
> 9-data-evaluate-expression 1+1\n< 9^done,value=\"2\"\n";
        let ((r, w), task) = play(Transcript::parse(text).expect("parses"));
        let gdb = super::super::Gdb::over(r, w, super::super::GdbConfig::new("replay"))
            .await
            .expect("setup answered");
        assert_eq!(gdb.evaluate("1+1").await.expect("answered"), "2");
        assert_eq!(task.await.expect("task").expect("replayed"), 6);
    }

    #[tokio::test]
    async fn a_command_that_differs_from_the_recording_is_named() {
        let text = "> 1-gdb-set mi-async off\n< 1^done\n";
        let ((r, w), task) = play(Transcript::parse(text).expect("parses"));
        let _ = super::super::Gdb::over(r, w, super::super::GdbConfig::new("replay")).await;
        let err = task.await.expect("task").expect_err("mismatch");
        assert!(err.to_string().contains("-gdb-set mi-async on"), "{err}");
    }
}
