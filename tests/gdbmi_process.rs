//! The gdb child process against real gdb and a real program (fixtures/gdbmi/prog.c compiled
//! with gcc -g): break, run, stop, arguments, backtrace, evaluation, concurrent commands,
//! errors, continue to exit; attach, interrupt and detach; and the failure paths (gdb missing,
//! not gdb, killed, slow). Everything started here is killed by pid when the test ends.
//!
//! Needs gdb and gcc; set UMLDBG_TEST_GDB to use another gdb. Without them the tests say so on
//! stderr and pass.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout_at};
use umldbg::gdbmi::{
    AsyncEvent, BreakOptions, Command, Gdb, GdbError, ResultClass, StopEvent, StopReason,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn gdb_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("UMLDBG_TEST_GDB") {
        return Some(path.into());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("gdb"))
        .find(|p| p.is_file())
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("umldbg-gdbmi-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compile the fixture program. gdb and gcc are required (scripts/setup.sh installs them): a
/// missing one fails the test rather than skipping it.
fn setup(name: &str) -> Option<(PathBuf, TempDir, PathBuf)> {
    let gdb =
        gdb_path().expect("no gdb in PATH (set UMLDBG_TEST_GDB; scripts/setup.sh installs it)");
    let dir = TempDir::new(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gdbmi/prog.c");
    let prog = dir.0.join("prog");
    match std::process::Command::new("gcc")
        .args(["-g", "-O0", "-o"])
        .arg(&prog)
        .arg(&source)
        .status()
    {
        Ok(s) if s.success() => Some((gdb, dir, prog)),
        other => panic!("cannot compile {} with gcc: {other:?}", source.display()),
    }
}

/// A process this test started, killed by pid on drop.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next stop event, skipping other events, within the deadline.
async fn next_stop(events: &mut broadcast::Receiver<AsyncEvent>) -> StopEvent {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match timeout_at(deadline, events.recv()).await {
            Err(_) => panic!("no *stopped within {DEADLINE:?}"),
            Ok(Ok(AsyncEvent::Stopped(stop))) => return *stop,
            Ok(Ok(AsyncEvent::Exited(info))) => panic!("gdb {info} while waiting for a stop"),
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("lagged by {n} events"),
            Ok(Err(e)) => panic!("event channel: {e}"),
        }
    }
}

async fn wait_for_running(events: &mut broadcast::Receiver<AsyncEvent>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match timeout_at(deadline, events.recv()).await {
            Err(_) => panic!("no *running within {DEADLINE:?}"),
            Ok(Ok(AsyncEvent::Running { .. })) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event channel: {e}"),
        }
    }
}

#[tokio::test]
async fn break_run_inspect_and_continue_to_exit() {
    let Some((gdb_bin, _dir, prog)) = setup("run") else {
        return;
    };
    let gdb = Arc::new(Gdb::spawn(&gdb_bin, &[]).await.expect("gdb starts"));
    let mut events = gdb.events();

    gdb.cmd(Command::file_exec_and_symbols(&prog))
        .await
        .unwrap();
    // The program must not share our MI pipe.
    gdb.cmd(Command::inferior_tty_set(Path::new("/dev/null")))
        .await
        .unwrap();
    let bp = gdb
        .break_insert("walk", &BreakOptions::default())
        .await
        .unwrap();
    assert_eq!(bp.func.as_deref(), Some("walk"));
    let symbols = gdb.functions_matching("^wal", None).await.unwrap();
    assert_eq!(
        symbols.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["walk"]
    );

    let run = gdb.cmd(Command::exec_run()).await.unwrap();
    assert_eq!(run.class, ResultClass::Running);
    let stop = next_stop(&mut events).await;
    assert_eq!(stop.reason, Some(StopReason::BreakpointHit));
    assert_eq!(stop.bkptno, Some(bp.number));
    let frame = stop.frame.expect("a frame");
    assert_eq!(frame.func.as_deref(), Some("walk"));
    assert_eq!(frame.args[1], ("n".to_owned(), "3".to_owned()));
    assert!(frame.args[0].1.starts_with("0x"), "{:?}", frame.args);

    let bt = gdb.backtrace().await.unwrap();
    let funcs: Vec<_> =
        bt.0.iter()
            .map(|f| f.func.as_deref().unwrap_or("?"))
            .collect();
    assert_eq!(funcs, ["walk", "main"]);
    assert_eq!(bt.0[0].args[1].1, "3");
    assert_eq!(bt.0[1].args[0], ("argc".to_owned(), "1".to_owned()));

    assert_eq!(gdb.evaluate("p->x").await.unwrap(), "3");
    assert!(
        gdb.evaluate("p->name")
            .await
            .unwrap()
            .contains("tab\\there")
    );
    let printed = gdb.console("print *p").await.unwrap();
    assert!(printed.contains("x = 3, y = 4"), "{printed}");

    // Several callers at once: every answer reaches the caller that asked.
    let mut tasks = Vec::new();
    for k in 0..8u32 {
        let gdb = gdb.clone();
        tasks.push(tokio::spawn(async move {
            (k, gdb.evaluate(&format!("n * {k}")).await)
        }));
    }
    for task in tasks {
        let (k, value) = task.await.unwrap();
        assert_eq!(value.unwrap(), (3 * k).to_string());
    }

    match gdb.evaluate("nosuchvar").await {
        Err(GdbError::Command { msg, command, .. }) => {
            assert!(msg.contains("nosuchvar"), "{msg}");
            assert!(command.contains("-data-evaluate-expression"), "{command}");
        }
        other => panic!("expected a command error, got {other:?}"),
    }
    // An error is not the end of the session.
    assert_eq!(gdb.evaluate("1 + 1").await.unwrap(), "2");

    gdb.cmd(Command::break_delete(bp.number)).await.unwrap();
    gdb.cmd(Command::exec_continue()).await.unwrap();
    let exit = next_stop(&mut events).await;
    assert_eq!(exit.reason, Some(StopReason::Exited));
    // prog returns total % 7 + 2 with total = 7 + 16 + 30.
    assert_eq!(exit.exit_code, Some(53 % 7 + 2));

    let gdb = Arc::try_unwrap(gdb).expect("no other handle left");
    let status = gdb.exit().await.unwrap();
    assert_eq!(status.code, Some(0), "{status}");
}

#[tokio::test]
async fn attach_interrupt_and_detach_leave_the_process_running() {
    let Some((gdb_bin, _dir, prog)) = setup("attach") else {
        return;
    };
    let target = Started(
        std::process::Command::new(&prog)
            .arg("loop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its own group, like a UML kernel started elsewhere.
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let pid = target.0.id();

    let gdb = Gdb::spawn(&gdb_bin, &[]).await.unwrap();
    let mut events = gdb.events();
    gdb.cmd(Command::file_exec_and_symbols(&prog))
        .await
        .unwrap();
    gdb.cmd_timeout(Command::target_attach(pid), DEADLINE)
        .await
        .unwrap();
    let stop = next_stop(&mut events).await;
    assert!(stop.frame.is_some());

    gdb.cmd(Command::exec_continue()).await.unwrap();
    wait_for_running(&mut events).await;
    // With mi-async on, gdb takes commands while the target runs.
    let bps = gdb.break_list().await.unwrap();
    assert!(bps.is_empty());
    gdb.cmd(Command::exec_interrupt()).await.unwrap();
    let stop = next_stop(&mut events).await;
    assert_eq!(stop.reason, Some(StopReason::SignalReceived));
    assert_eq!(stop.signal_name.as_deref(), Some("SIGINT"));

    gdb.cmd(Command::console("frame function main"))
        .await
        .unwrap();
    assert!(gdb.evaluate("pt.y").await.unwrap() == "4");

    gdb.cmd(Command::target_detach()).await.unwrap();
    gdb.exit().await.unwrap();

    // Alive and not stopped by a leftover trace stop.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let state = status
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap()
        .to_owned();
    assert!(
        state.contains("S (sleeping)") || state.contains("R (running)"),
        "{state}"
    );
    assert!(status.contains("TracerPid:\t0"), "{status}");
    drop(target);
}

#[tokio::test]
async fn missing_gdb_names_the_path_and_the_fix() {
    let err = Gdb::spawn("/nonexistent/umldbg-test/gdb", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, GdbError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/umldbg-test/gdb"), "{msg}");
    assert!(
        msg.contains("install gdb") && msg.contains("--gdb PATH"),
        "{msg}"
    );
    assert!(err.is_fatal());
}

#[tokio::test]
async fn a_program_that_is_not_gdb_fails_at_startup() {
    let err = Gdb::spawn("false", &[]).await.unwrap_err();
    let GdbError::Startup { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(**source, GdbError::Exited { ref status, .. } if status.code == Some(1)),
        "{source:?}"
    );
}

#[tokio::test]
async fn gdb_killed_mid_session_is_reported_as_exited() {
    let gdb_bin = gdb_path().expect("no gdb in PATH (scripts/setup.sh installs it)");
    let gdb = Gdb::spawn(&gdb_bin, &[]).await.unwrap();
    let mut events = gdb.events();
    let pid = gdb.pid().expect("gdb has a pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();

    let deadline = Instant::now() + DEADLINE;
    let info = loop {
        match timeout_at(deadline, events.recv()).await {
            Ok(Ok(AsyncEvent::Exited(info))) => break info,
            Ok(Ok(_)) => {}
            other => panic!("no Exited event: {other:?}"),
        }
    };
    assert_eq!(info.signal, Some(9));
    let err = gdb.evaluate("1").await.unwrap_err();
    assert!(
        matches!(err, GdbError::Exited { status, .. } if status.signal == Some(9)),
        "{err:?}"
    );
    assert!(err.is_fatal());
    assert!(err.to_string().contains("killed by signal 9"), "{err}");
}

#[tokio::test]
async fn a_late_answer_after_a_timeout_goes_nowhere() {
    let gdb_bin = gdb_path().expect("no gdb in PATH (scripts/setup.sh installs it)");
    let gdb = Gdb::spawn(&gdb_bin, &[]).await.unwrap();
    let err = gdb
        .cmd_timeout(
            Command::console("shell sleep 1"),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GdbError::Timeout { .. }), "{err:?}");
    assert!(!err.is_fatal());
    // Answered after the sleep; the token keeps the late ^done of the shell command away.
    assert_eq!(gdb.evaluate("2 + 3").await.unwrap(), "5");
    let err = gdb
        .cmd(Command::console("print 1\nprint 2"))
        .await
        .unwrap_err();
    assert!(matches!(err, GdbError::InvalidCommand(_)), "{err:?}");
    gdb.exit().await.unwrap();
}

/// gdb must take its breakpoints out when it exits while the target runs: a breakpoint left in a
/// busy path would kill the process with SIGTRAP on the next pass (which is what happens when gdb
/// is SIGKILLed instead).
#[tokio::test]
async fn exit_while_running_removes_breakpoints_and_detaches() {
    let Some((gdb_bin, _dir, prog)) = setup("exit-running") else {
        return;
    };
    let target = Started(
        std::process::Command::new(&prog)
            .arg("loop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let pid = target.0.id();

    let gdb = Gdb::spawn(&gdb_bin, &[]).await.unwrap();
    let mut events = gdb.events();
    gdb.cmd_timeout(Command::target_attach(pid), DEADLINE)
        .await
        .unwrap();
    next_stop(&mut events).await;
    // On the loop's path (sleep is called every second), never true so gdb resumes at once.
    let options = BreakOptions {
        condition: Some("0".into()),
        ..Default::default()
    };
    gdb.break_insert("sleep", &options).await.unwrap();
    gdb.cmd(Command::exec_continue()).await.unwrap();
    wait_for_running(&mut events).await;
    let status = gdb.exit().await.unwrap();
    assert_eq!(status.code, Some(0), "{status}");

    // The loop calls sleep() once a second: two more passes over the old breakpoint address.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the process survived gdb's exit");
    assert!(status.contains("TracerPid:\t0"), "{status}");
    assert!(!status.contains("State:\tZ"), "{status}");
    drop(target);
}
