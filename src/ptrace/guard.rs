//! The kernel-text guard, the one safety net of every frontend: a watchdog process that puts a
//! dead tracer's `int3` bytes back, and the journal that the next attach repairs from.
//!
//! A tracer can be killed with SIGKILL at any moment. The host then detaches the kernel's
//! threads and they run on into whatever `int3` is still in their text; our UML kernel waits up
//! to two seconds for such a byte to change back (kernel patch 0001) and panics otherwise. The
//! guard is forked when the tracer attaches and learns every breakpoint (address, original byte)
//! over a pipe before the `int3` is written. When the pipe reaches end-of-file without a
//! "clean" message first, the tracer is gone: the guard writes the original bytes back through
//! `/proc/<pid>/mem` at once and exits. The pipe closes when the tracer's files are closed, which
//! the host does before it detaches the tracees, so the guard is already at work when the kernel
//! meets the trap.
//!
//! The tracer is either this process (the tracer of `trace` and `serve`), or another process it
//! drives (gdb, under the gdb/MI daemon): then the guard also watches that process, and it is
//! the watched process's exit that sets it to work. The daemon's end alone does not: gdb then
//! reads end-of-file, detaches and takes its breakpoints out itself, and when it dies instead,
//! the guard is still there.
//!
//! The child runs between `fork` and `_exit` without allocating or locking (the tracer may have
//! other threads holding the allocator's lock at the fork): fixed arrays on its stack, paths
//! prepared before the fork, raw `libc` calls only.
//!
//! The journal keeps the same facts on disk (`~/.uml/<umid>/umldbg.trace-journal`, one format
//! for every frontend, tied to the kernel's pid) with the stub cursor (see `runctl/stubs.rs`),
//! for a tracer and a guard that both died.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const INT3: u8 = 0xcc;
/// Breakpoints a guard can hold.
const GUARD_MAX: usize = 4096;
/// One message: op, length, address, original bytes, patched bytes (zero-padded).
const REC: usize = 32;
/// Most bytes one entry covers (a `jmp rel32` probe takes 5).
pub const GUARD_BYTES: usize = 8;
const OP_ARM: u8 = b'A';
const OP_DISARM: u8 = b'D';
const OP_CLEAN: u8 = b'C';

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot start the breakpoint guard: {0}")]
    Spawn(#[source] io::Error),
    #[error("the breakpoint guard (pid {pid}) is gone: {source}")]
    Lost {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("the breakpoint guard holds at most {GUARD_MAX} breakpoints")]
    Full,
    #[error("process {0}, which the breakpoint guard was to watch, is already gone")]
    WatchedGone(i32),
}

/// The tracer's end of a running guard.
#[derive(Debug)]
pub struct Guard {
    pid: i32,
    pipe: Option<OwnedFd>,
    armed: usize,
}

impl Guard {
    /// Forks the guard for the process `target`. The guard is a grandchild (its parent exits at
    /// once), so it is never among the tracer's children that `waitpid(-1)` collects.
    pub fn spawn(target: i32) -> Result<Guard, GuardError> {
        Guard::spawn_with(target, true)
    }

    /// As [`Guard::spawn`]; `int3_first` says whether multi-byte restores may go through an
    /// `int3` (only a kernel with patch 0001 waits such a trap out; without it the bytes are
    /// written in one go).
    pub fn spawn_with(target: i32, int3_first: bool) -> Result<Guard, GuardError> {
        Guard::fork(target, int3_first, None)
    }

    /// A guard for breakpoints that another process (`watched`: gdb) writes into `target`. The
    /// guard restores them once `watched` has exited without [`Guard::dismiss`]; the end of this
    /// process alone does not set it to work. `open` gives the pidfd it waits on
    /// ([`pidfd_open`]; the tests hand in failing ones): when it fails other than with ESRCH,
    /// or the descriptor wakes while the process still runs, the guard reads
    /// `/proc/<watched>/stat` every 100 ms instead. It never takes the process for gone.
    pub fn watching(
        target: i32,
        watched: i32,
        open: &dyn Fn(i32) -> io::Result<OwnedFd>,
    ) -> Result<Guard, GuardError> {
        let pidfd = match open(watched) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(GuardError::WatchedGone(watched));
            }
            Err(_) => None,
        };
        Guard::fork(target, true, Some((watched, pidfd)))
    }

    fn fork(
        target: i32,
        int3_first: bool,
        watch: Option<(i32, Option<OwnedFd>)>,
    ) -> Result<Guard, GuardError> {
        let mem = CString::new(format!("/proc/{target}/mem")).expect("no NUL in a path");
        let (watched_stat, pidfd) = match &watch {
            Some((pid, fd)) => (
                Some(CString::new(format!("/proc/{pid}/stat")).expect("no NUL in a path")),
                fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
            ),
            None => (None, -1),
        };
        let stat_ptr = watched_stat
            .as_ref()
            .map(|c| c.as_ptr())
            .unwrap_or(std::ptr::null());
        let mut fds = [0i32; 2];
        // A socket rather than a pipe: a dead guard then shows as EPIPE from send(MSG_NOSIGNAL)
        // instead of a SIGPIPE that would kill the tracer with its breakpoints in.
        // SAFETY: socketpair writes two descriptors into the array.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        } != 0
        {
            return Err(GuardError::Spawn(io::Error::last_os_error()));
        }
        let (rd, wr) = (fds[1], fds[0]);
        // SAFETY: the children only call async-signal-safe functions and never return.
        let mid = unsafe { libc::fork() };
        if mid < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: both descriptors are ours.
            unsafe {
                libc::close(rd);
                libc::close(wr);
            }
            return Err(GuardError::Spawn(e));
        }
        if mid == 0 {
            // SAFETY: in the child of fork: fork again and leave; the grandchild is the guard.
            unsafe {
                libc::close(wr);
                let pid = libc::fork();
                if pid == 0 {
                    guard_main(rd, mem.as_ptr(), int3_first, stat_ptr, pidfd);
                }
                libc::_exit(if pid < 0 { 1 } else { 0 });
            }
        }
        // SAFETY: rd is ours and no longer needed; wr is ours and owned from here on.
        unsafe { libc::close(rd) };
        drop(watch); // the guard has its own copy of the pidfd
        let sock = unsafe { OwnedFd::from_raw_fd(wr) };
        let mut st = 0;
        // SAFETY: reaping the short-lived middle child.
        unsafe { libc::waitpid(mid, &mut st, libc::__WALL) };
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            return Err(GuardError::Spawn(io::Error::other(
                "the guard's fork failed",
            )));
        }
        let mut g = Guard {
            pid: 0,
            pipe: Some(sock),
            armed: 0,
        };
        // The guard says its pid first; that also proves it runs.
        let mut b = [0u8; 4];
        let fd = g.pipe.as_ref().map(|p| p.as_raw_fd()).unwrap_or(-1);
        // SAFETY: reading 4 bytes into a stack buffer.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 4) };
        if n != 4 {
            g.pipe = None;
            return Err(GuardError::Spawn(io::Error::other(
                "the guard did not start",
            )));
        }
        g.pid = i32::from_le_bytes(b);
        Ok(g)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn send(
        &mut self,
        op: u8,
        addr: u64,
        original: &[u8],
        patched: &[u8],
    ) -> Result<(), GuardError> {
        let mut rec = [0u8; REC];
        rec[0] = op;
        rec[1] = original.len().min(GUARD_BYTES) as u8;
        rec[2..10].copy_from_slice(&addr.to_le_bytes());
        for (i, b) in original.iter().take(GUARD_BYTES).enumerate() {
            rec[10 + i] = *b;
        }
        for (i, b) in patched.iter().take(GUARD_BYTES).enumerate() {
            rec[18 + i] = *b;
        }
        let fd = self.pipe.as_ref().map(|p| p.as_raw_fd()).unwrap_or(-1);
        loop {
            // SAFETY: sending a stack buffer on our socket.
            let n = unsafe { libc::send(fd, rec.as_ptr().cast(), REC, libc::MSG_NOSIGNAL) };
            if n == REC as isize {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(GuardError::Lost {
                pid: self.pid,
                source: e,
            });
        }
    }

    /// Tell the guard about a breakpoint before its `int3` is written.
    pub fn arm(&mut self, addr: u64, original: u8) -> Result<(), GuardError> {
        self.arm_bytes(addr, &[original], &[INT3])
    }

    /// Tell the guard about `patched` bytes (a probe's jump) about to replace `original` at
    /// `addr`. The guard puts them back `int3` first, then the tail, then the first byte, so
    /// that a thread running into them meanwhile meets an `int3` that the kernel waits out.
    pub fn arm_bytes(
        &mut self,
        addr: u64,
        original: &[u8],
        patched: &[u8],
    ) -> Result<(), GuardError> {
        if self.armed >= GUARD_MAX {
            return Err(GuardError::Full);
        }
        self.send(OP_ARM, addr, original, patched)?;
        self.armed += 1;
        Ok(())
    }

    /// Tell the guard that the original bytes at `addr` are back.
    pub fn disarm(&mut self, addr: u64) -> Result<(), GuardError> {
        self.send(OP_DISARM, addr, &[], &[])?;
        self.armed = self.armed.saturating_sub(1);
        Ok(())
    }

    /// Dismiss the guard: every byte is back, it has nothing to do.
    pub fn dismiss(mut self) -> Result<(), GuardError> {
        let r = self.send(OP_CLEAN, 0, &[], &[]);
        self.pipe = None;
        r
    }

    /// Close the channel without the clean message, as a crash of the tracer would, and wait
    /// (at most `timeout`) until the guard has put the bytes back and exited.
    pub fn abandon(mut self, timeout: std::time::Duration) {
        self.pipe = None;
        let end = std::time::Instant::now() + timeout;
        while self.pid > 0 && process_running(self.pid) && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

impl Drop for Guard {
    /// Dropped without `dismiss`: the channel closes and the guard restores what it knows, as
    /// after a crash of the tracer.
    fn drop(&mut self) {
        self.pipe = None;
    }
}

/// Whether `pid` exists and is not a zombie: the crate's one rule, [`crate::util::pid_alive`].
pub use crate::util::pid_alive as process_running;

/// Opens a pidfd for `pid` (`pidfd_open(2)`): the seam the tests of [`wait_gone`] replace.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open has no memory arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process whose `/proc/<pid>/stat` is `stat` has exited (gone, or a zombie).
/// Raw calls and a stack buffer only (runs in the guard).
///
/// # Safety
/// `stat` is a NUL-terminated path.
unsafe fn exited_raw(stat: *const libc::c_char) -> bool {
    // SAFETY: open, read and close of our own descriptor into a stack buffer.
    unsafe {
        let fd = libc::open(stat, libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return true;
        }
        let mut buf = [0u8; 512];
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        if n <= 0 {
            return true;
        }
        // "pid (comm) S ...": the state follows the last ')'; comm may hold ')' itself.
        match buf[..n as usize].iter().rposition(|&c| c == b')') {
            Some(i) if i + 2 < n as usize => matches!(buf[i + 2], b'Z' | b'X'),
            _ => false,
        }
    }
}

/// Puts `original` back at `addr` where `patched` (or, for one byte, an `int3`) still is:
/// `int3` first, then the tail, then the first byte. Raw calls only (runs in the guard).
///
/// # Safety
/// `fd` is an open `/proc/<pid>/mem`.
unsafe fn restore_raw(
    fd: libc::c_int,
    addr: u64,
    original: &[u8],
    patched: &[u8],
    int3_first: bool,
) -> bool {
    let n = original.len();
    if n == 0 {
        return false;
    }
    let mut cur = [0u8; GUARD_BYTES];
    let off = addr as libc::off_t;
    // SAFETY: reads and writes of at most GUARD_BYTES through our descriptor and stack buffers.
    unsafe {
        if libc::pread(fd, cur.as_mut_ptr().cast(), n, off) != n as isize {
            return false;
        }
        if n == 1 {
            if cur[0] != INT3 {
                return false;
            }
            return libc::pwrite(fd, original.as_ptr().cast(), 1, off) == 1;
        }
        // Our jump is still there (or the int3 of an interrupted restore)?
        let mut ours = cur[0] == INT3;
        if !ours {
            ours = true;
            for i in 0..n {
                if cur[i] != patched[i] {
                    ours = false;
                }
            }
        }
        if !ours {
            return false;
        }
        if !int3_first {
            return libc::pwrite(fd, original.as_ptr().cast(), n, off) == n as isize;
        }
        let int3 = [INT3];
        libc::pwrite(fd, int3.as_ptr().cast(), 1, off);
        libc::pwrite(fd, original.as_ptr().add(1).cast(), n - 1, off + 1);
        libc::pwrite(fd, original.as_ptr().cast(), 1, off) == 1
    }
}

/// Safe wrapper of the same restore for the tracer and the journal repair.
pub fn restore_bytes(
    pid: i32,
    addr: u64,
    original: &[u8],
    patched: &[u8],
    int3_first: bool,
) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))?;
    let o: Vec<u8> = original.iter().copied().take(GUARD_BYTES).collect();
    let p: Vec<u8> = patched.iter().copied().take(GUARD_BYTES).collect();
    // SAFETY: f is an open /proc/<pid>/mem for the duration of the call.
    Ok(unsafe { restore_raw(f.as_raw_fd(), addr, &o, &p, int3_first) })
}

/// The guard process. Only raw, async-signal-safe calls; no allocation; never returns.
///
/// It reads the tracer's messages until the channel closes, then restores what is armed unless
/// it was dismissed. With a watched process (`stat` not null) it is that process's exit that
/// counts: the channel's end only ends the messages. `pidfd` (or -1) is the watched process's
/// pidfd; without one, or after a wake of it while the process still runs, `stat` is read every
/// 100 ms.
///
/// # Safety
/// Must be called in a freshly forked child, with `rd` the guard's end of the channel, `mem` a
/// NUL-terminated path prepared before the fork, `stat` null or another such path, and `pidfd`
/// -1 or a descriptor this child inherited.
#[allow(clippy::needless_range_loop)] // fixed arrays, no iterator state: see the module doc
unsafe fn guard_main(
    rd: libc::c_int,
    mem: *const libc::c_char,
    int3_first: bool,
    stat: *const libc::c_char,
    pidfd: libc::c_int,
) -> ! {
    // SAFETY (whole body): plain libc calls on descriptors and stack buffers this child owns.
    unsafe {
        // Out of the tracer's session: Ctrl-C and a hangup of its terminal are not for us.
        libc::setsid();
        let name = c"umldbg-guard";
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
        // Keep only the channel (as fd 3), the pidfd (as fd 4) and the tracee's memory; nothing
        // of the tracer's (its stdout pipe above all) may stay open here. Both go above 9 first
        // so that neither dup2 closes the other.
        let chan = libc::fcntl(rd, libc::F_DUPFD, 10);
        let pfd = if pidfd >= 0 {
            libc::fcntl(pidfd, libc::F_DUPFD, 10)
        } else {
            -1
        };
        libc::dup2(chan, 3);
        let mut pidfd = -1;
        if pfd >= 0 {
            libc::dup2(pfd, 4);
            pidfd = 4;
        }
        libc::close_range(5, u32::MAX, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 4 {
                libc::close(null);
            }
        }
        let fd = libc::open(mem, libc::O_RDWR | libc::O_CLOEXEC);
        let me = libc::getpid().to_le_bytes();
        libc::send(3, me.as_ptr().cast(), 4, libc::MSG_NOSIGNAL);

        let watching = !stat.is_null();
        let mut addrs = [0u64; GUARD_MAX];
        let mut lens = [0u8; GUARD_MAX];
        let mut orig = [[0u8; GUARD_BYTES]; GUARD_MAX];
        let mut patched = [[0u8; GUARD_BYTES]; GUARD_MAX];
        let mut n = 0usize;
        let mut clean = false;
        let mut open = true;
        let mut buf = [0u8; REC * 64];
        let mut have = 0usize;
        loop {
            if clean || (!open && !watching) {
                break;
            }
            let mut fds = [
                libc::pollfd {
                    fd: if open { 3 } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timeout = if watching && pidfd < 0 { 100 } else { -1 };
            let r = libc::poll(fds.as_mut_ptr(), 2, timeout);
            if r < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                // poll itself failing: no more waiting on descriptors.
                pidfd = -1;
                if !watching {
                    break;
                }
                libc::usleep(100_000);
            }
            if watching && (fds[1].revents != 0 || pidfd < 0) {
                if exited_raw(stat) {
                    break;
                }
                if fds[1].revents != 0 {
                    // A wake that is not the exit: read /proc from here on.
                    pidfd = -1;
                }
            }
            if !open || fds[0].revents == 0 {
                continue;
            }
            let r = libc::read(3, buf.as_mut_ptr().add(have).cast(), buf.len() - have);
            if r < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                open = false;
                continue;
            }
            if r == 0 {
                open = false;
                continue;
            }
            have += r as usize;
            let mut at = 0;
            while have - at >= REC {
                let rec = &buf[at..at + REC];
                let mut a = [0u8; 8];
                a.copy_from_slice(&rec[2..10]);
                let addr = u64::from_le_bytes(a);
                let mut o = [0u8; GUARD_BYTES];
                o.copy_from_slice(&rec[10..18]);
                let mut p = [0u8; GUARD_BYTES];
                p.copy_from_slice(&rec[18..26]);
                let len = if (rec[1] as usize) > GUARD_BYTES {
                    GUARD_BYTES as u8
                } else {
                    rec[1]
                };
                match rec[0] {
                    OP_ARM => {
                        let mut slot = n;
                        for i in 0..n {
                            if addrs[i] == addr {
                                slot = i;
                            }
                        }
                        if slot < GUARD_MAX {
                            addrs[slot] = addr;
                            lens[slot] = len;
                            orig[slot] = o;
                            patched[slot] = p;
                            if slot == n {
                                n += 1;
                            }
                        }
                    }
                    OP_DISARM => {
                        let mut i = 0;
                        while i < n {
                            if addrs[i] == addr {
                                addrs[i] = addrs[n - 1];
                                lens[i] = lens[n - 1];
                                orig[i] = orig[n - 1];
                                patched[i] = patched[n - 1];
                                n -= 1;
                            } else {
                                i += 1;
                            }
                        }
                    }
                    OP_CLEAN => clean = true,
                    _ => {}
                }
                at += REC;
            }
            libc::memmove(
                buf.as_mut_ptr().cast(),
                buf.as_ptr().add(at).cast(),
                have - at,
            );
            have -= at;
        }
        if !clean && fd >= 0 {
            for i in 0..n {
                restore_raw(
                    fd,
                    addrs[i],
                    &orig[i][..lens[i] as usize],
                    &patched[i][..lens[i] as usize],
                    int3_first,
                );
            }
        }
        libc::_exit(0)
    }
}

/// An exclusive claim on a machine's text for one tracer: a `flock` on a file beside the
/// journal, held for the life of the value (the kernel drops it when the holder dies, SIGKILL
/// included). Probes outlive ptrace (see `runctl/probe.rs`), so TracerPid alone cannot tell
/// that a machine is taken.
#[derive(Debug)]
pub struct TextLock {
    _file: std::fs::File,
}

impl TextLock {
    /// Takes the lock for the machine whose journal is `journal`; `Err(pid)` names the holder.
    pub fn take(journal: &Path) -> Result<TextLock, Option<i32>> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let path = journal.with_extension("lock");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|_| None)?;
        // SAFETY: flock on our own descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut t = String::new();
            let _ = f.read_to_string(&mut t);
            return Err(t.trim().parse().ok());
        }
        let _ = f.set_len(0);
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = write!(f, "{}", std::process::id());
        Ok(TextLock { _file: f })
    }
}

/// One breakpoint (or probe jump) as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JournalEntry {
    pub addr: u64,
    pub original: u8,
    /// A probe's original bytes (more than one), empty for an `int3`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bytes: Vec<u8>,
    /// What the probe wrote there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patched: Vec<u8>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct JournalData {
    /// The kernel process the entries belong to; another pid means a rebooted machine.
    pid: i32,
    entries: Vec<JournalEntry>,
    /// Where the next step-over stub goes.
    next_stub: u64,
    /// Scratch memory mapped into the process by an earlier tracer: (address, length).
    #[serde(default)]
    scratch: Option<(u64, u64)>,
    /// Executable memory for probe stubs mapped by an earlier tracer, and where its next stub
    /// goes.
    #[serde(default)]
    probe_text: Option<(u64, u64)>,
    #[serde(default)]
    next_probe_stub: u64,
}

/// The trace journal of one machine.
#[derive(Debug)]
pub struct TraceJournal {
    path: PathBuf,
    data: JournalData,
}

/// Where a machine's trace journal lives: beside its mconsole socket.
pub fn journal_path(uml_dir: &Path, umid: &str) -> PathBuf {
    uml_dir.join(umid).join("umldbg.trace-journal")
}

impl TraceJournal {
    /// Opens the journal for `pid`, keeping what a tracer of the same process left.
    pub fn open(path: &Path, pid: i32) -> TraceJournal {
        let data = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<JournalData>(&t).ok())
            .filter(|d| d.pid == pid)
            .unwrap_or(JournalData {
                pid,
                ..JournalData::default()
            });
        TraceJournal {
            path: path.to_path_buf(),
            data,
        }
    }

    pub fn entries(&self) -> &[JournalEntry] {
        &self.data.entries
    }

    pub fn original(&self, addr: u64) -> Option<u8> {
        self.data
            .entries
            .iter()
            .find(|e| e.addr == addr)
            .map(|e| e.original)
    }

    pub fn next_stub(&self) -> u64 {
        self.data.next_stub
    }

    pub fn scratch(&self) -> Option<(u64, u64)> {
        self.data.scratch
    }

    pub fn set_scratch(&mut self, s: (u64, u64)) {
        self.data.scratch = Some(s);
        self.save();
    }

    pub fn probe_text(&self) -> Option<(u64, u64)> {
        self.data.probe_text
    }

    pub fn next_probe_stub(&self) -> u64 {
        self.data.next_probe_stub
    }

    pub fn set_next_probe_stub(&mut self, n: u64) {
        if self.data.next_probe_stub != n {
            self.data.next_probe_stub = n;
            self.save();
        }
    }

    pub fn set_probe_text(&mut self, s: (u64, u64), next: u64) {
        self.data.probe_text = Some(s);
        self.data.next_probe_stub = next;
        self.save();
    }

    pub fn set_next_stub(&mut self, n: u64) {
        if self.data.next_stub != n {
            self.data.next_stub = n;
            self.save();
        }
    }

    /// Put back every original byte that an `int3` still covers (a tracer and its guard both
    /// died); returns the addresses repaired. Entries are kept: their bytes may come back.
    pub fn repair(&self) -> io::Result<Vec<u64>> {
        let mut fixed = Vec::new();
        for e in &self.data.entries {
            let done = if e.bytes.len() > 1 {
                restore_bytes(self.data.pid, e.addr, &e.bytes, &e.patched, false)?
            } else if crate::ptrace::mem::peek(self.data.pid, e.addr)? == INT3 {
                crate::ptrace::mem::poke(self.data.pid, e.addr, e.original)?;
                true
            } else {
                false
            };
            if done {
                fixed.push(e.addr);
            }
        }
        Ok(fixed)
    }

    pub fn record(&mut self, addr: u64, original: u8) {
        self.record_bytes(addr, &[original], &[]);
    }

    pub fn record_bytes(&mut self, addr: u64, original: &[u8], patched: &[u8]) {
        let e = JournalEntry {
            addr,
            original: original.first().copied().unwrap_or(0),
            bytes: if original.len() > 1 {
                original.to_vec()
            } else {
                Vec::new()
            },
            patched: if original.len() > 1 {
                patched.to_vec()
            } else {
                Vec::new()
            },
        };
        if let Some(old) = self.data.entries.iter_mut().find(|x| x.addr == addr) {
            *old = e;
        } else {
            self.data.entries.push(e);
        }
        self.save();
    }

    /// Many probes at once, with one write of the journal: (address, original, patched).
    pub fn record_many(&mut self, probes: &[(u64, Vec<u8>, Vec<u8>)], next_probe_stub: u64) {
        let mut at: std::collections::HashMap<u64, usize> = self
            .data
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.addr, i))
            .collect();
        for (addr, original, patched) in probes {
            let e = JournalEntry {
                addr: *addr,
                original: original.first().copied().unwrap_or(0),
                bytes: original.clone(),
                patched: patched.clone(),
            };
            match at.get(addr) {
                Some(&i) => self.data.entries[i] = e,
                None => {
                    at.insert(*addr, self.data.entries.len());
                    self.data.entries.push(e);
                }
            }
        }
        self.data.next_probe_stub = next_probe_stub;
        self.save();
    }

    pub fn forget(&mut self, addr: u64) {
        self.data.entries.retain(|e| e.addr != addr);
        self.save();
    }

    /// Every breakpoint is out: only the stub cursor stays.
    pub fn clear(&mut self) {
        self.data.entries.clear();
        self.save();
    }

    fn save(&self) {
        if let Some(dir) = self.path.parent()
            && !dir.is_dir()
        {
            return;
        }
        let tmp = self.path.with_extension("tmp");
        if std::fs::write(&tmp, serde_json::to_string(&self.data).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(tmp, &self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of this test process that only the calling test writes through `/proc/self/mem`:
    /// on the heap, never a `static` or a literal, which the compiler may share with constants
    /// of other code (a test that wrote 0xcc into a static `[0x57]` once turned another test's
    /// `push rdi` into an `int3`).
    fn scratch<const N: usize>(bytes: [u8; N]) -> &'static [u8; N] {
        Box::leak(Box::new(bytes))
    }

    /// This test process's memory, to read and write as a tracer does.
    fn self_mem() -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/self/mem")
            .unwrap()
    }

    /// A byte of this test process with an `int3` in it, armed in a guard that watches a
    /// `sleep` standing for gdb.
    struct Watched {
        mem: std::fs::File,
        addr: u64,
        gdb: std::process::Child,
        guard: Option<Guard>,
        guard_pid: i32,
    }

    impl Watched {
        fn start(original: u8, open: fn(i32) -> io::Result<OwnedFd>) -> Watched {
            use std::os::unix::fs::FileExt;
            let addr = scratch([original]).as_ptr() as u64;
            let mem = self_mem();
            let gdb = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let mut g = Guard::watching(std::process::id() as i32, gdb.id() as i32, &open).unwrap();
            g.arm(addr, original).unwrap();
            mem.write_all_at(&[INT3], addr).unwrap();
            Watched {
                mem,
                addr,
                gdb,
                guard_pid: g.pid(),
                guard: Some(g),
            }
        }

        fn byte(&self) -> u8 {
            use std::os::unix::fs::FileExt;
            let mut b = [0u8; 1];
            self.mem.read_exact_at(&mut b, self.addr).unwrap();
            b[0]
        }

        /// Kills the watched process and waits (at most 5 s) for the guard to exit.
        fn end_gdb(&mut self) {
            self.gdb.kill().unwrap();
            self.gdb.wait().unwrap();
            let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while process_running(self.guard_pid) && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(!process_running(self.guard_pid), "the guard exits");
        }
    }

    /// The tracer's end is dropped at once, as when the daemon is killed: whether the byte was
    /// still an `int3` after `ms` milliseconds (while the watched process lives); and it must be
    /// back once the watched process has exited.
    fn kept_while_the_watched_process_lives(
        original: u8,
        open: fn(i32) -> io::Result<OwnedFd>,
        ms: u64,
    ) -> bool {
        let mut w = Watched::start(original, open);
        drop(w.guard.take());
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let kept = w.byte() == INT3 && process_running(w.guard_pid);
        w.end_gdb();
        assert_eq!(
            w.byte(),
            original,
            "the guard restores once the watched process is gone"
        );
        kept
    }

    #[test]
    fn guard_keeps_bytes_while_gdb_lives_when_pidfd_open_fails_with_emfile() {
        // Before: any pidfd_open failure was taken for "gdb is gone", and the bytes restored
        // under a live gdb.
        let emfile = |_| Err(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(kept_while_the_watched_process_lives(0x55, emfile, 400));
    }

    #[test]
    fn guard_wait_on_a_wake_that_is_not_the_exit_falls_back_instead_of_ending() {
        // A descriptor that polls readable at once, as an error or a stray wake would: before,
        // the guard took any return of poll but an error for gdb's exit (and spun on errors).
        let ready = |_| std::fs::File::open("/dev/null").map(OwnedFd::from);
        assert!(kept_while_the_watched_process_lives(0x41, ready, 400));
    }

    #[test]
    fn guard_wait_ends_with_the_process_on_a_real_pidfd() {
        assert!(kept_while_the_watched_process_lives(0x53, pidfd_open, 200));
    }

    #[test]
    fn a_dismissed_watching_guard_leaves_the_bytes_when_the_watched_process_ends() {
        let mut w = Watched::start(0x57, pidfd_open);
        w.guard.take().unwrap().dismiss().unwrap();
        w.end_gdb();
        assert_eq!(w.byte(), INT3);
    }

    #[test]
    fn watching_a_process_that_is_gone_is_refused() {
        let mut p = std::process::Command::new("true").spawn().unwrap();
        let pid = p.id() as i32;
        p.wait().unwrap();
        let e = Guard::watching(std::process::id() as i32, pid, &pidfd_open).unwrap_err();
        assert!(e.to_string().contains("already gone"), "{e}");
    }

    #[test]
    fn journal_round_trip_and_other_pid() {
        let dir = std::env::temp_dir().join(format!("umldbg-tj-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("j");
        let mut j = TraceJournal::open(&p, 42);
        j.record(0x1000, 0x55);
        j.record(0x2000, 0x48);
        j.set_next_stub(7);
        j.forget(0x1000);
        let k = TraceJournal::open(&p, 42);
        assert_eq!(
            k.entries(),
            &[JournalEntry {
                addr: 0x2000,
                original: 0x48,
                bytes: vec![],
                patched: vec![]
            }]
        );
        assert_eq!(k.next_stub(), 7);
        assert_eq!(k.original(0x2000), Some(0x48));
        let other = TraceJournal::open(&p, 43);
        assert!(other.entries().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A guard whose pipe closes without the clean message restores the bytes it was told
    /// about and still covered by an int3; here the "tracee" is this test process itself.
    #[test]
    fn restores_on_pipe_close_and_not_after_dismiss() {
        use std::os::unix::fs::FileExt;
        let addr = scratch([0x55u8, 0x48]).as_ptr() as u64;
        let me = std::process::id() as i32;
        let f = self_mem();
        let mut g = Guard::spawn(me).unwrap();
        g.arm(addr, 0x55).unwrap();
        g.arm(addr + 1, 0x48).unwrap();
        g.disarm(addr + 1).unwrap();
        f.write_all_at(&[INT3, INT3], addr).unwrap();
        g.abandon(std::time::Duration::from_secs(5)); // no clean message: addr is restored, addr+1 not
        let mut b = [0u8; 2];
        f.read_exact_at(&mut b, addr).unwrap();
        assert_eq!(b, [0x55, INT3]);
        f.write_all_at(&[INT3], addr).unwrap();
        let mut g = Guard::spawn(me).unwrap();
        g.arm(addr, 0x55).unwrap();
        g.dismiss().unwrap();
        f.read_exact_at(&mut b[..1], addr).unwrap();
        assert_eq!(b[0], INT3);
        f.write_all_at(&[0x55, 0x48], addr).unwrap();
    }

    /// A probe's jump (five bytes) goes back whole, int3-first or in one write; bytes that are
    /// no longer the jump (someone else's since) are left alone.
    #[test]
    fn restores_a_probe_jump_only_where_it_still_is() {
        use std::os::unix::fs::FileExt;
        const CODE: [u8; 16] = [
            0x48, 0x8b, 0x4e, 0x08, 0x48, 0x8b, 0x46, 0x10, 0x55, 0x48, 0x89, 0xe5, 0x41, 0x57,
            0x90, 0x90,
        ];
        let a = scratch(CODE).as_ptr() as u64;
        let me = std::process::id() as i32;
        let f = self_mem();
        let jmp = [0xe9, 1, 2, 3, 4];
        for int3_first in [true, false] {
            let mut g = Guard::spawn_with(me, int3_first).unwrap();
            g.arm_bytes(a, &CODE[..5], &jmp).unwrap();
            g.arm_bytes(a + 8, &CODE[8..13], &jmp).unwrap();
            f.write_all_at(&jmp, a).unwrap();
            f.write_all_at(&[0x90; 5], a + 8).unwrap(); // not our jump any more
            g.abandon(std::time::Duration::from_secs(5));
            let mut b = [0u8; 16];
            f.read_exact_at(&mut b, a).unwrap();
            assert_eq!(&b[..8], &CODE[..8], "int3_first {int3_first}");
            assert_eq!(&b[8..13], &[0x90; 5]);
            f.write_all_at(&CODE, a).unwrap();
        }
    }
}
