//! The debug daemon's `Session` without a machine: driven by a GDB/MI transcript recorded from a
//! real attach to a UML machine (`fixtures/gdbmi/session/`), and by scripted gdbs for the state
//! logic's regressions. No gdb, no UML: only the session's own logic and real gdb output.
//!
//! Re-record the transcript (a lab's machine A with no module loaded; see the fixture's
//! README): `UMLDBG_GDBMI_RECORD=FILE umldbg attach UMID`, then the commands the replay test
//! sends, in its order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use umldbg::daemon::protocol::{Event, Request, Response};
use umldbg::daemon::session::{Msg, Session, SessionConfig};
use umldbg::gdbmi::replay::{self, Reply, Transcript};
use umldbg::gdbmi::{Gdb, GdbConfig};

/// A scratch directory for the session's journal and cache, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("umldbg-states-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process of ours whose pid the session may hold: the transcript's machine is long gone,
/// and a pid must never name somebody else's process. Killed on drop.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(
            std::process::Command::new("sleep")
                .arg("120")
                .spawn()
                .expect("start sleep"),
        )
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// An ELF with a function symbol, standing in for the kernel image (the session refuses an
/// image without symbols).
fn image() -> PathBuf {
    fixture("fixtures/kmod/layouts.elf")
}

fn config(scratch: &Scratch, pid: i32, stopped: bool) -> SessionConfig {
    SessionConfig {
        umid: "replayed".into(),
        pid,
        gdb_path: "gdb".into(),
        image: image(),
        modules_dir: None,
        module_paths: Vec::new(),
        console: None,
        notes: Vec::new(),
        stopped,
        cache: scratch.0.join("cache"),
        journal: scratch.0.join("umldbg.trace-journal"),
    }
}

/// A running session over `gdb`: requests go to `tx`, events come on `events`.
struct Running {
    tx: mpsc::Sender<Msg>,
    events: broadcast::Sender<Event>,
    summary: String,
    task: tokio::task::JoinHandle<()>,
}

async fn start(gdb: Gdb, cfg: SessionConfig) -> Running {
    let (tx, rx) = mpsc::channel(64);
    let (events, _) = broadcast::channel(256);
    let (session, summary) =
        Session::start_with(gdb, cfg, Some(Vec::new()), tx.clone(), events.clone())
            .await
            .unwrap_or_else(|e| panic!("session start: {e}"));
    let task = tokio::spawn(session.run(rx));
    Running {
        tx,
        events,
        summary,
        task,
    }
}

/// The session holds a sender to itself (for its load jobs), so it does not end when the test
/// lets go of it: the test ends it.
impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    /// Send a request; its reply channel (the answer may come later, e.g. a step's).
    async fn send(&self, req: Request) -> oneshot::Receiver<Response> {
        let (rtx, rrx) = oneshot::channel();
        self.tx
            .send(Msg::Request(req, rtx))
            .await
            .expect("session listens");
        rrx
    }

    async fn ask(&self, req: Request) -> Response {
        let what = format!("{req:?}");
        let rx = self.send(req).await;
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .unwrap_or_else(|_| panic!("no answer to {what} within 20 s"))
            .unwrap_or_else(|_| panic!("the session dropped {what}"))
    }

    async fn ok(&self, req: Request) -> Response {
        let what = format!("{req:?}");
        let r = self.ask(req).await;
        assert!(r.ok, "{what}: {:?}", r.error);
        r
    }
}

fn text(r: &Response) -> &str {
    r.text.as_deref().unwrap_or("")
}

fn data_str<'a>(r: &'a Response, key: &str) -> &'a str {
    r.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| v.as_str())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_uml_attach_replays_through_the_session() {
    let scratch = Scratch::new("replay");
    let sleeper = Sleeper::new();
    let text_of = std::fs::read_to_string(fixture("fixtures/gdbmi/session/attach-uml.txt"))
        .expect("the recorded transcript");
    let mut t = Transcript::parse(&text_of).expect("transcript parses");
    t.substitute("@IMAGE@", &image().display().to_string());
    t.substitute("@BUILD@", "/build");
    t.substitute("@PID@", &sleeper.pid().to_string());
    let recorded = t.commands().count();
    let ((r, w), player) = replay::play(t);
    let gdb = Gdb::over(r, w, GdbConfig::new("gdb"))
        .await
        .expect("gdb's setup replayed");
    let mut s = start(gdb, config(&scratch, sleeper.pid(), false)).await;
    assert!(
        s.summary.contains("attached to replayed") && s.summary.contains("0 module(s)"),
        "{}",
        s.summary
    );
    let mut events = s.events.subscribe();

    let st = s.ok(Request::Status).await;
    assert_eq!(data_str(&st, "state"), "running", "{st:?}");
    let b = s
        .ok(Request::Break {
            location: "icmp_rcv".into(),
            cond: None,
        })
        .await;
    assert!(text(&b).starts_with("breakpoint 3 on icmp_rcv"), "{b:?}");
    let hit = s
        .ok(Request::Wait {
            timeout: Some(30.0),
        })
        .await;
    assert_eq!(data_str(&hit, "reason"), "breakpoint-hit", "{hit:?}");
    assert_eq!(data_str(&hit, "function"), "icmp_rcv");
    let skb = s
        .ok(Request::Print {
            expr: "skb->len".into(),
        })
        .await;
    assert_eq!(text(&skb), "64");
    let bt = s.ok(Request::Bt).await;
    assert!(
        text(&bt).starts_with("#0  icmp_rcv (skb=0x60910000)"),
        "{bt:?}"
    );
    let next = s.ok(Request::Next).await;
    assert!(text(&next).contains("1453"), "{next:?}");
    assert_eq!(data_str(&next, "reason"), "end-stepping-range", "{next:?}");
    let st = s.ok(Request::Status).await;
    assert_eq!(data_str(&st, "state"), "stopped");
    // The stop was the step's: `wait` has nothing new to report.
    let w = s.ask(Request::Wait { timeout: Some(1.0) }).await;
    assert!(
        !w.ok && w.error.as_deref().unwrap_or("").contains("was reported"),
        "{w:?}"
    );
    assert_eq!(text(&s.ok(Request::Continue).await), "continuing");
    let hit = s
        .ok(Request::Wait {
            timeout: Some(30.0),
        })
        .await;
    assert_eq!(data_str(&hit, "function"), "icmp_rcv");
    s.ok(Request::Delete { id: 3 }).await;
    s.ok(Request::Continue).await;
    let i = s.ok(Request::Interrupt).await;
    assert_eq!(text(&i), "interrupted");
    s.ok(Request::Continue).await;
    let st = s.ok(Request::Status).await;
    assert_eq!(data_str(&st, "state"), "running");
    let d = s.ok(Request::Detach { reason: None }).await;
    assert!(text(&d).starts_with("detached from replayed"), "{d:?}");

    let played = tokio::time::timeout(Duration::from_secs(20), player)
        .await
        .expect("the player ends")
        .expect("player task")
        .unwrap_or_else(|e| panic!("replay: {e}"));
    assert_eq!(played, recorded, "every recorded command was sent");
    tokio::time::timeout(Duration::from_secs(10), &mut s.task)
        .await
        .expect("the session ends after detach")
        .expect("session task");

    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        seen.push(match ev {
            Event::Stopped(i) => format!("stopped {}", i.reason),
            Event::Exited { reason } => format!("exited {reason}"),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        seen,
        [
            "stopped breakpoint-hit",
            "stopped end-stepping-range",
            "stopped breakpoint-hit",
            "exited detached"
        ]
    );
}

/// Answers for the commands a session sends while it starts: the attach stops the target.
fn starting(cmd: &str) -> Option<Reply> {
    if cmd.starts_with("-target-attach") {
        return Some(Reply::Lines(vec![
            "{T}^done".into(),
            "*stopped,frame={addr=\"0x1\",func=\"poll\",args=[]},thread-id=\"1\"".into(),
            "(gdb) ".into(),
        ]));
    }
    None
}

fn stop_line(reason: &str, func: &str) -> String {
    format!(
        "*stopped,reason=\"{reason}\",frame={{addr=\"0x60000010\",func=\"{func}\",args=[]}},thread-id=\"1\""
    )
}

/// `pause()` (an interrupt, or the moment a breakpoint is set on a running machine) saw gdb
/// exit and set the session gone by itself: kernel text stayed as gdb left it and the `wait`
/// waiters were never told. It must end the way every other end does.
#[tokio::test(flavor = "current_thread")]
async fn pause_seeing_gdb_exit_repairs_the_journal_and_tells_waiters() {
    // The "kernel text": one byte of this process, which the journal reads and repairs through
    // /proc/<pid>/mem like the machine's.
    static TEXT: AtomicU8 = AtomicU8::new(0x55);
    let addr = &TEXT as *const AtomicU8 as u64;
    let scratch = Scratch::new("pause");
    let ((r, w), gdb_task) = replay::scripted(move |cmd| {
        if let Some(r) = starting(cmd) {
            return r;
        }
        if cmd.starts_with("-break-insert probe") {
            return Reply::Lines(vec![format!(
                "{{T}}^done,bkpt={{number=\"3\",type=\"breakpoint\",disp=\"keep\",enabled=\"y\",addr=\"{addr:#x}\",func=\"probe\",times=\"0\"}}"
            )]);
        }
        if cmd == "-exec-continue" {
            return Reply::Lines(vec![
                "{T}^running".into(),
                "*running,thread-id=\"all\"".into(),
            ]);
        }
        if cmd == "-exec-interrupt" {
            // gdb dies before the machine stops (killed, crashed).
            return Reply::Exit(vec!["{T}^done".into()]);
        }
        Reply::done()
    });
    let gdb = Gdb::over(r, w, GdbConfig::new("gdb")).await.expect("setup");
    let mut s = start(gdb, config(&scratch, std::process::id() as i32, true)).await;
    let mut events = s.events.subscribe();
    s.ok(Request::Break {
        location: "probe".into(),
        cond: None,
    })
    .await;
    // gdb inserts its int3 when the machine runs.
    TEXT.store(0xcc, Ordering::SeqCst);
    s.ok(Request::Continue).await;
    let waiter = s.send(Request::Wait { timeout: None }).await;
    let i = s.ask(Request::Interrupt).await;
    assert!(!i.ok, "{i:?}");
    let w = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is told")
        .expect("answered, not dropped");
    assert!(
        !w.ok
            && w.error
                .as_deref()
                .unwrap_or("")
                .contains("the session is over"),
        "{w:?}"
    );
    assert_eq!(
        TEXT.load(Ordering::SeqCst),
        0x55,
        "the breakpoint byte is put back"
    );
    // A session that is gone ends, and leaves why for the next command to tell.
    tokio::time::timeout(Duration::from_secs(10), &mut s.task)
        .await
        .expect("the session ends")
        .expect("session task");
    let last = std::fs::read_to_string(scratch.0.join("umldbg.last")).expect("umldbg.last");
    assert!(last.contains("gdb exited"), "{last}");
    let ended = events.recv().await.expect("an event");
    assert!(
        matches!(&ended, Event::Exited { reason } if reason.contains("restored 1 breakpoint byte")),
        "{ended:?}"
    );
    drop(s);
    let _ = gdb_task.await;
}

/// A stop among gdb events the session lost (its event channel lagged) was dropped without a
/// word: the machine sat stopped while the session said it ran. The session now asks gdb.
#[tokio::test(flavor = "current_thread")]
async fn lagged_gdb_events_do_not_lose_a_stop() {
    let scratch = Scratch::new("lagged");
    let ((r, w), gdb_task) = replay::scripted(|cmd| {
        if let Some(r) = starting(cmd) {
            return r;
        }
        if cmd == "-exec-continue" {
            // The stop, then more news than the session's channel holds.
            let mut l = vec![
                "{T}^running".to_string(),
                "*running,thread-id=\"all\"".into(),
                stop_line("breakpoint-hit", "icmp_rcv"),
            ];
            for n in 0..8 {
                l.push(format!("=thread-created,id=\"{}\",group-id=\"i1\"", n + 10));
            }
            return Reply::Lines(l);
        }
        if cmd == "-thread-info" {
            return Reply::Lines(vec![
                "{T}^done,threads=[{id=\"1\",target-id=\"LWP 1\",frame={level=\"0\",addr=\"0x60000010\",func=\"icmp_rcv\",args=[]},state=\"stopped\"}],current-thread-id=\"1\"".into(),
            ]);
        }
        Reply::done()
    });
    let mut gc = GdbConfig::new("gdb");
    gc.event_capacity = 2;
    let gdb = Gdb::over(r, w, gc).await.expect("setup");
    let s = start(gdb, config(&scratch, Sleeper::new().pid(), true)).await;
    s.ok(Request::Continue).await;
    let hit = s
        .ok(Request::Wait {
            timeout: Some(10.0),
        })
        .await;
    assert_eq!(data_str(&hit, "function"), "icmp_rcv", "{hit:?}");
    let st = s.ok(Request::Status).await;
    assert_eq!(data_str(&st, "state"), "stopped");
    drop(s);
    let seen = gdb_task.await.expect("task").expect("script");
    assert!(seen.iter().any(|c| c == "-thread-info"), "{seen:?}");
}

/// `step`, `next` and `finish` held the session's task until their stop (up to 30 s): no
/// `status`, no `interrupt` meanwhile. Now the owner keeps serving, and an interrupt ends the
/// step with an answer to its client.
#[tokio::test(flavor = "current_thread")]
async fn long_next_leaves_the_session_serving_status_and_interrupt() {
    let scratch = Scratch::new("next");
    let ((r, w), gdb_task) = replay::scripted(|cmd| {
        if let Some(r) = starting(cmd) {
            return r;
        }
        if cmd == "-exec-next" {
            // A next over a call that does not come back soon: no stop.
            return Reply::Lines(vec![
                "{T}^running".into(),
                "*running,thread-id=\"all\"".into(),
            ]);
        }
        if cmd == "-exec-interrupt" {
            return Reply::Lines(vec![
                "{T}^done".into(),
                "*stopped,reason=\"signal-received\",signal-name=\"SIGINT\",signal-meaning=\"Interrupt\",frame={addr=\"0x60000020\",func=\"schedule\",args=[]},thread-id=\"1\"".into(),
            ]);
        }
        Reply::done()
    });
    let gdb = Gdb::over(r, w, GdbConfig::new("gdb")).await.expect("setup");
    let s = start(gdb, config(&scratch, Sleeper::new().pid(), true)).await;
    let next = s.send(Request::Next).await;
    let st = s.ok(Request::Status).await;
    assert_eq!(data_str(&st, "state"), "stepping", "{st:?}");
    let c = s.ok(Request::Continue).await;
    assert_eq!(text(&c), "the machine is already running");
    let i = s.ok(Request::Interrupt).await;
    assert_eq!(text(&i), "interrupted");
    let n = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("the step's client is answered")
        .expect("not dropped");
    assert!(
        !n.ok
            && n.error
                .as_deref()
                .unwrap_or("")
                .contains("next was interrupted"),
        "{n:?}"
    );
    let st = s.ok(Request::Status).await;
    assert_eq!(data_str(&st, "state"), "stopped");
    drop(s);
    let _ = gdb_task.await;
}

/// An events subscriber that fell behind lost stop events without a word (the socket server
/// skipped `Lagged`). It is now told how many it missed, then where the session is.
#[tokio::test(flavor = "current_thread")]
async fn lagging_event_subscriber_is_told_it_lagged_and_resynced() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let scratch = Scratch::new("subscriber");
    let sock = scratch.0.join("s.sock");
    let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
    let (tx, mut rx) = mpsc::channel::<Msg>(8);
    let (events, _) = broadcast::channel::<Event>(2);
    tokio::spawn(umldbg::daemon::server::serve(listener, tx, events.clone()));
    let conn = tokio::net::UnixStream::connect(&sock)
        .await
        .expect("connect");
    let (r, mut w) = conn.into_split();
    let mut lines = BufReader::new(r).lines();
    w.write_all(b"{\"op\":\"events\"}\n").await.expect("send");
    let first = lines.next_line().await.expect("read").expect("a line");
    assert!(first.contains("streaming events"), "{first}");
    // Five events at once into a channel of two: the subscriber misses three.
    for n in 0..5 {
        let _ = events.send(Event::ModuleUnloaded {
            name: format!("m{n}"),
        });
    }
    // The server asks the session where it is: stopped at a breakpoint.
    let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the server asks for the state")
        .expect("a message");
    let Msg::Request(Request::Status, reply) = msg else {
        panic!("expected a status request");
    };
    let _ = reply.send(Response::ok_data(
        "session",
        serde_json::json!({"state": "stopped", "stop": {
            "reason": "breakpoint-hit", "function": "icmp_rcv", "file": null, "line": null,
            "args": {}, "backtrace": []}}),
    ));
    let mut got = Vec::new();
    for _ in 0..4 {
        let l = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("an event line")
            .expect("read")
            .expect("a line");
        got.push(serde_json::from_str::<serde_json::Value>(&l).expect("JSON"));
    }
    assert_eq!(got[0]["event"], "lagged", "{got:?}");
    assert_eq!(got[0]["missed"], 3);
    assert_eq!(got[1]["event"], "stopped");
    assert_eq!(got[1]["function"], "icmp_rcv");
    assert_eq!(got[2]["name"], "m3");
    assert_eq!(got[3]["name"], "m4");
}
