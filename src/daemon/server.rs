//! The session daemon's socket: JSON lines in, JSON lines out, stop events streamed to
//! subscribers. Only the socket's owner (or root) may connect: the peer's credentials are
//! checked, not only the file mode.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::protocol::{
    Event, LineSplitter, MAX_REQUEST_LINE, RawLine, Request, Response, StopInfo, parse_line,
};
use super::session::Msg;

pub async fn serve(
    listener: UnixListener,
    tx: mpsc::Sender<Msg>,
    events: broadcast::Sender<Event>,
) {
    let me = nix::unistd::geteuid().as_raw();
    let mut failures = 0u32;
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => {
                failures = 0;
                conn
            }
            Err(e) => {
                // EMFILE and its kind do not go away by themselves at once: trying again at once
                // would spin a core while the clients already connected wait.
                failures += 1;
                if failures == 1 {
                    tracing::warn!("session socket: accept failed ({e}); trying again, slower");
                }
                tokio::time::sleep(crate::util::accept_backoff(failures)).await;
                continue;
            }
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

/// Read the next request line, capped at [`MAX_REQUEST_LINE`]; None at the end of the stream.
async fn next_line(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    sp: &mut LineSplitter,
) -> std::io::Result<Option<RawLine>> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(sp.finish());
        }
        let (used, line) = sp.push(buf);
        r.consume(used);
        if line.is_some() {
            return Ok(line);
        }
    }
}

/// Serve one connection: every line gets exactly one reply (an error for a line that is empty,
/// too long, not UTF-8, not a request, or a request whose arguments are refused), and a bad line
/// never ends the connection.
async fn connection(
    conn: UnixStream,
    tx: mpsc::Sender<Msg>,
    events: broadcast::Sender<Event>,
) -> std::io::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    let mut sp = LineSplitter::new(MAX_REQUEST_LINE);
    while let Some(raw) = next_line(&mut r, &mut sp).await? {
        let req = match parse_line(&raw) {
            Ok(r) => r,
            Err(e) => {
                send_line(&mut w, &Response::err(e.to_string())).await?;
                continue;
            }
        };
        if let Request::Events = req {
            let mut rx = events.subscribe();
            send_line(&mut w, &Response::ok_text("streaming events")).await?;
            loop {
                match rx.recv().await {
                    Ok(ev) => send_line(&mut w, &ev).await?,
                    // Never lose a stop silently: say so, then where the session is now.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        send_line(&mut w, &Event::Lagged { missed }).await?;
                        if let Some(now) = current_state(&tx).await {
                            send_line(&mut w, &now).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
        // Checked by parse_line: finite, not negative, at most a year.
        let timeout = match &req {
            Request::Wait { timeout } => timeout.and_then(|t| crate::util::seconds("", t).ok()),
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

/// The session's state as an event, for a subscriber that lost events: its stop, `running`, or
/// `exited` with the reason; None when the session does not answer.
pub async fn current_state(tx: &mpsc::Sender<Msg>) -> Option<Event> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(Msg::Request(Request::Status, rtx)).await.ok()?;
    let r = tokio::time::timeout(Duration::from_secs(10), rrx)
        .await
        .ok()?
        .ok()?;
    let data = r.data?;
    let stop = data
        .get("stop")
        .cloned()
        .and_then(|s| serde_json::from_value::<StopInfo>(s).ok());
    match data.get("state").and_then(|s| s.as_str())? {
        "stopped" => stop.map(Event::Stopped),
        "gone" => Some(Event::Exited {
            reason: stop.map(|s| s.reason).unwrap_or_else(|| "gone".into()),
        }),
        _ => Some(Event::Running),
    }
}

/// Remove a socket file that no daemon answers on.
pub fn remove_stale(path: &Path) {
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}
