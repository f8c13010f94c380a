//! What gdb's breakpoints cover in kernel text, told to the one kernel-text guard and journal of
//! [`crate::ptrace::guard`].
//!
//! gdb inserts `int3` into the kernel's text while the machine runs. If gdb dies (SIGKILL, a
//! crash, SIGPIPE after the daemon was killed) those bytes stay, and the next time the kernel
//! runs that code it traps with no debugger there. A guard watching gdb puts them back the
//! moment gdb is gone, the session does the same when it sees gdb go, and a later attach (of any
//! frontend) repairs from the journal what a guard that died too left.
//!
//! Bytes are noted while the machine is stopped: gdb has its breakpoints out then, so memory
//! holds the original bytes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::ptrace::guard::{Guard, TraceJournal, pidfd_open};

const INT3: u8 = 0xcc;

/// The breakpoints of one session, by gdb's number, and where they are written down.
#[derive(Debug)]
pub struct TextGuard {
    pid: i32,
    journal: TraceJournal,
    guard: Option<Guard>,
    /// The addresses each gdb breakpoint covers (several breakpoints may share one).
    by_number: BTreeMap<u32, Vec<u64>>,
}

impl TextGuard {
    /// The journal of machine `pid` at `journal`, and a guard watching `gdb` when there is one
    /// (a session replayed from a transcript has no gdb process).
    pub fn new(
        pid: i32,
        journal: &Path,
        gdb: Option<u32>,
    ) -> Result<TextGuard, super::error::SessionError> {
        let guard = match gdb {
            Some(g) => Some(
                Guard::watching(pid, g as i32, &pidfd_open)
                    .map_err(super::error::SessionError::Guard)?,
            ),
            None => None,
        };
        Ok(TextGuard {
            pid,
            journal: TraceJournal::open(journal, pid),
            guard,
            by_number: BTreeMap::new(),
        })
    }

    /// Notes the addresses of breakpoint `number` (the machine is stopped).
    pub fn record(&mut self, number: u32, addrs: &[u64]) {
        for &a in addrs {
            let list = self.by_number.entry(number).or_default();
            if !list.contains(&a) {
                list.push(a);
            }
            if self.journal.entries().iter().any(|e| e.addr == a) {
                continue;
            }
            let Ok(b) = crate::ptrace::mem::peek(self.pid, a) else {
                continue;
            };
            if b == INT3 {
                continue;
            }
            self.journal.record(a, b);
            if let Some(g) = self.guard.as_mut()
                && let Err(e) = g.arm(a, b)
            {
                tracing::warn!("{e}: breakpoint {number} at {a:#x} is in the journal only");
            }
        }
    }

    /// Breakpoint `number` is deleted: its addresses are forgotten unless another one covers
    /// them.
    pub fn forget(&mut self, number: u32) {
        let Some(addrs) = self.by_number.remove(&number) else {
            return;
        };
        for a in addrs {
            if self.by_number.values().any(|l| l.contains(&a)) {
                continue;
            }
            self.journal.forget(a);
            if let Some(g) = self.guard.as_mut() {
                let _ = g.disarm(a);
            }
        }
    }

    /// gdb is gone with its breakpoints perhaps in: puts the bytes back (the guard does the
    /// same; whoever comes first), returns how many.
    pub fn gdb_gone(&mut self) -> usize {
        let n = self.journal.repair().map(|v| v.len()).unwrap_or(0);
        self.journal.clear();
        self.by_number.clear();
        // The guard sees gdb's exit too and ends by itself.
        self.guard = None;
        n
    }

    /// gdb detached and took its breakpoints out: nothing is left to guard.
    pub fn detached(&mut self) {
        self.journal.clear();
        self.by_number.clear();
        if let Some(g) = self.guard.take()
            && let Err(e) = g.dismiss()
        {
            tracing::warn!("{e}");
        }
    }
}
