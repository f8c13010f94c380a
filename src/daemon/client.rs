//! The CLI's side of a session: find the daemon's socket, send a request, read the response.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::protocol::{Request, Response};

pub const SOCKET: &str = "umldbg.sock";

pub fn socket_path(uml_dir: &Path, umid: &str) -> PathBuf {
    uml_dir.join(umid).join(SOCKET)
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no session on {0}: run `umldbg attach {0}` first{1}")]
    NoSession(String, String),
    #[error("no session is running: run `umldbg attach <umid>` first")]
    NoSessions,
    #[error("several sessions are running ({0}): pick one with --umid")]
    Several(String),
    #[error("session socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("session socket {path}: bad response: {reason}")]
    Bad { path: PathBuf, reason: String },
}

/// Umids with a live session under `uml_dir`.
pub fn sessions(uml_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(uml_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| UnixStream::connect(e.path().join(SOCKET)).is_ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The umid to talk to: the one given, or the only session there is.
pub fn pick(uml_dir: &Path, umid: Option<&str>) -> Result<String, ClientError> {
    if let Some(u) = umid {
        return Ok(u.to_string());
    }
    let s = sessions(uml_dir);
    match s.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ClientError::NoSessions),
        many => Err(ClientError::Several(many.join(", "))),
    }
}

pub struct Connection {
    path: PathBuf,
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Connection {
    pub fn open(uml_dir: &Path, umid: &str) -> Result<Connection, ClientError> {
        let path = socket_path(uml_dir, umid);
        let stream = UnixStream::connect(&path).map_err(|_| {
            let last = std::fs::read_to_string(uml_dir.join(umid).join("umldbg.last"))
                .map(|t| format!(" (the last session ended: {})", t.trim()))
                .unwrap_or_default();
            ClientError::NoSession(umid.to_string(), last)
        })?;
        let reader = BufReader::new(stream.try_clone().map_err(|source| ClientError::Io {
            path: path.clone(),
            source,
        })?);
        Ok(Connection {
            path,
            stream,
            reader,
        })
    }

    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let mut line = serde_json::to_string(req).expect("request serialises");
        line.push('\n');
        self.stream
            .write_all(line.as_bytes())
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        let mut reply = String::new();
        let n = self
            .reader
            .read_line(&mut reply)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ClientError::Bad {
                path: self.path.clone(),
                reason: "the daemon closed the connection".into(),
            });
        }
        serde_json::from_str(&reply).map_err(|e| ClientError::Bad {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Read one line of an events stream.
    pub fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    }
}
