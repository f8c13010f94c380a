//! The blocking mconsole client against a fake machine: a datagram socket in this test that
//! answers the way UML's driver does (or does not answer at all).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use umldbg::uml::mconsole::{Mconsole, MconsoleError, decode_request, encode_reply};

/// What the fake machine does with each request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answer like UML: `version`, `config ssl0`, a long `help`, `Unknown command` otherwise.
    Answer,
    /// Never answer (a stopped machine, or one that halts).
    Silent,
    /// Answer the first request twice as late as the client waits, then answer normally.
    LateFirst(Duration),
}

struct FakeMachine {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Set once a `LateFirst` machine has sent its late answer.
    late_sent: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<String>>>,
}

fn scratch(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("umldbg-fake-mc-{tag}-{}-{n}", std::process::id()))
}

const LONG: usize = 1300;

impl FakeMachine {
    fn start(tag: &str, behaviour: Behaviour) -> FakeMachine {
        FakeMachine::start_at(scratch(tag), behaviour)
    }

    fn start_at(path: PathBuf, behaviour: Behaviour) -> FakeMachine {
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let late_sent = Arc::new(AtomicBool::new(false));
        let late_sent2 = late_sent.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let (_, cmd) = decode_request(&buf[..n]).unwrap();
                seen.push(cmd.clone());
                let to = from.as_pathname().unwrap().to_owned();
                let (text, err): (Vec<u8>, u32) = match cmd.as_str() {
                    "version" => (b"Linux fake 7.2.0 #1 x86_64".to_vec(), 0),
                    "config ssl0" => (b"pts:/dev/pts/3".to_vec(), 0),
                    "help" => ((0..LONG).map(|i| b'a' + (i % 26) as u8).collect(), 0),
                    _ => (b"Unknown command".to_vec(), 1),
                };
                match behaviour {
                    Behaviour::Silent => continue,
                    Behaviour::LateFirst(d) if seen.len() == 1 => {
                        std::thread::sleep(d);
                        for p in encode_reply(b"stale answer", 0) {
                            let _ = sock.send_to(&p, &to);
                        }
                        late_sent2.store(true, Ordering::SeqCst);
                        continue;
                    }
                    _ => {}
                }
                for p in encode_reply(&text, err) {
                    sock.send_to(&p, &to).unwrap();
                }
            }
            seen
        });
        FakeMachine {
            path,
            stop,
            late_sent,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for FakeMachine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn commands_get_their_replies() {
    let fake = FakeMachine::start("answer", Behaviour::Answer);
    let mc = Mconsole::connect(&fake.path, Duration::from_secs(5)).unwrap();
    assert_eq!(mc.version().unwrap(), "Linux fake 7.2.0 #1 x86_64");
    assert_eq!(mc.config("ssl0").unwrap(), "pts:/dev/pts/3");
    let help = mc.command("help").unwrap();
    assert_eq!(help.len(), LONG, "three parts joined");
    let e = mc.command("frobnicate").unwrap_err();
    assert!(
        matches!(&e, MconsoleError::Refused { message, .. } if message == "Unknown command"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("`frobnicate` failed: Unknown command"),
        "{e}"
    );
    drop(mc);
    assert_eq!(
        fake.finish(),
        ["version", "config ssl0", "help", "frobnicate"]
    );
}

#[test]
fn silent_machine_times_out_on_time() {
    let fake = FakeMachine::start("silent", Behaviour::Silent);
    let mc = Mconsole::connect(&fake.path, Duration::from_millis(300)).unwrap();
    let t0 = Instant::now();
    let e = mc.version().unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e, MconsoleError::Timeout { .. }), "{e}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        e.to_string()
            .contains("no answer to `version` within 300 ms"),
        "{e}"
    );
}

#[test]
fn late_reply_is_not_taken_for_the_next_answer() {
    let fake = FakeMachine::start("late", Behaviour::LateFirst(Duration::from_millis(400)));
    let mc = Mconsole::connect(&fake.path, Duration::from_millis(200)).unwrap();
    assert!(matches!(mc.version(), Err(MconsoleError::Timeout { .. })));
    // Let the stale answer arrive; the client must drop it before its next command.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake.late_sent.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the fake never sent its late answer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(mc.config("ssl0").unwrap(), "pts:/dev/pts/3");
    drop(mc);
    assert_eq!(fake.finish(), ["version", "config ssl0"]);
}

#[test]
fn halt_without_reply_succeeds_once_the_machine_is_gone() {
    let fake = FakeMachine::start("halt", Behaviour::Silent);
    let mc = Mconsole::connect(&fake.path, Duration::from_secs(5)).unwrap();
    let t0 = Instant::now();
    let gone_at = t0 + Duration::from_millis(200);
    mc.halt(|| Instant::now() >= gone_at).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "halt waited {:?}",
        t0.elapsed()
    );
    assert_eq!(fake.finish(), ["halt"]);
}

#[test]
fn halt_of_a_machine_that_stays_is_a_timeout() {
    let fake = FakeMachine::start("stays", Behaviour::Silent);
    let mc = Mconsole::connect(&fake.path, Duration::from_millis(300)).unwrap();
    let e = mc.halt(|| false).unwrap_err();
    assert!(matches!(e, MconsoleError::Timeout { .. }), "{e}");
}

#[test]
fn missing_socket_is_not_listening() {
    let path = scratch("missing");
    let e = Mconsole::connect(&path, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, MconsoleError::NotListening { .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[test]
fn socket_that_vanished_after_connect() {
    let fake = FakeMachine::start("vanish", Behaviour::Answer);
    let mc = Mconsole::connect(&fake.path, Duration::from_millis(300)).unwrap();
    drop(fake);
    let e = mc.version().unwrap_err();
    assert!(
        matches!(
            e,
            MconsoleError::NotListening { .. } | MconsoleError::Timeout { .. }
        ),
        "{e}"
    );
    // A machine that is gone counts as halted.
    mc.halt(|| true).unwrap();
}

#[test]
fn client_removes_its_socket_file() {
    let fake = FakeMachine::start("cleanup", Behaviour::Answer);
    let mc = Mconsole::connect(&fake.path, Duration::from_secs(5)).unwrap();
    mc.version().unwrap();
    let own = mc.reply_socket_path().to_owned();
    assert!(own.exists());
    drop(mc);
    assert!(!own.exists());
}

#[test]
fn machine_restarted_at_the_same_path_is_reached_again() {
    let fake = FakeMachine::start("restart", Behaviour::Answer);
    let path = fake.path.clone();
    let mc = Mconsole::connect(&path, Duration::from_secs(5)).unwrap();
    assert_eq!(mc.config("ssl0").unwrap(), "pts:/dev/pts/3");
    drop(fake);
    // A new machine binds the same path (as a rebooted UML with the same umid would).
    let fake2 = FakeMachine::start_at(path, Behaviour::Answer);
    assert_eq!(mc.version().unwrap(), "Linux fake 7.2.0 #1 x86_64");
    drop(mc);
    assert_eq!(fake2.finish(), ["version"]);
}
