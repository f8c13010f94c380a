//! Regression: the session daemon's accept loop spun on EMFILE (`continue` on any error), using a
//! whole core while the process had no file descriptor left. This binary holds one test so that
//! lowering its own descriptor limit touches nothing else.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

/// CPU time (user + system) this process has used so far.
fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let t = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    t(u.ru_utime) + t(u.ru_stime)
}

#[test]
fn accept_on_emfile_backs_off_instead_of_spinning() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("umldbg-accept-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let _ = std::fs::remove_file(&sock);
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let (events, _) = broadcast::channel(4);
        tokio::spawn(umldbg::daemon::server::serve(listener, tx, events));
        // Every descriptor taken, save one for the client: the server's accept gets EMFILE.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit on a struct of ours; this process runs only this test.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            lim.rlim_cur = 256;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        let mut held = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            held.push(f);
        }
        held.pop();
        let _client = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = cpu();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let used = cpu() - before;
        drop(held);
        // A spinning loop burns the whole second; backing off, a few milliseconds.
        assert!(
            used < Duration::from_millis(300),
            "the accept loop used {used:?} of CPU in 1 s of EMFILE"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
