//! The session daemon's socket: JSON lines in, JSON lines out, stop events streamed to
//! subscribers. Only the socket's owner (or root) may connect: the peer's credentials are
//! checked, not only the file mode.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::protocol::{Event, Request, Response};
use super::session::Msg;

pub async fn serve(
    listener: UnixListener,
    tx: mpsc::Sender<Msg>,
    events: broadcast::Sender<Event>,
) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        match conn.peer_cred() {
            Ok(c) if c.uid() == 0 || c.uid() == me => {}
            _ => continue,
        }
        let tx = tx.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let _ = connection(conn, tx, events).await;
        });
    }
}

async fn send_line<T: serde::Serialize>(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    v: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_string(v).unwrap_or_default();
    line.push('\n');
    w.write_all(line.as_bytes()).await
}

async fn connection(
    conn: UnixStream,
    tx: mpsc::Sender<Msg>,
    events: broadcast::Sender<Event>,
) -> std::io::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                send_line(&mut w, &Response::err(format!("bad request {line:?}: {e}"))).await?;
                continue;
            }
        };
        if let Request::Events = req {
            let mut rx = events.subscribe();
            send_line(&mut w, &Response::ok_text("streaming events")).await?;
            loop {
                match rx.recv().await {
                    Ok(ev) => send_line(&mut w, &ev).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
        let timeout = match &req {
            Request::Wait { timeout } => timeout.map(Duration::from_secs_f64),
            _ => Some(Duration::from_secs(300)),
        };
        let (rtx, rrx) = oneshot::channel();
        if tx.send(Msg::Request(req, rtx)).await.is_err() {
            send_line(&mut w, &Response::err("the session is over")).await?;
            return Ok(());
        }
        let resp = match timeout {
            Some(t) => match tokio::time::timeout(t, rrx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Response::err("the session ended before answering"),
                Err(_) => Response::err(format!(
                    "no stop within {:.0} s; the machine keeps running",
                    t.as_secs_f64()
                )),
            },
            None => rrx
                .await
                .unwrap_or_else(|_| Response::err("the session ended before answering")),
        };
        send_line(&mut w, &resp).await?;
    }
    Ok(())
}

/// Remove a socket file that no daemon answers on.
pub fn remove_stale(path: &Path) {
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}
