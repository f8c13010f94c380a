//! The guest shell: where a frontend runs shell commands on a machine (reading `/sys/module`,
//! `modprobe`, `insmod`, `/proc/kallsyms`).
//!
//! One trait, [`GuestShell`], over the two consoles a machine can have: a lab machine's console
//! owned by its lab supervisor ([`LabShell`], through `lab::client::exec`), and a root shell on a
//! host pty ([`PtyShell`], through `uml::console::PtyConsole`). Both wrap the existing calls; the
//! console framing stays where it is. [`GuestConsole`] is the one a session picks at attach.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::uml::console::PtyConsole;

/// Why a command could not be run in the guest (not: it ran and exited non-zero).
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The lab supervisor could not be asked, or answered with an error.
    #[error("lab {lab}'s console: {reason}")]
    Lab { lab: String, reason: String },
    /// The pty console failed.
    #[error("{}: {source}", path.display())]
    Pty {
        path: PathBuf,
        #[source]
        source: crate::uml::console::ConsoleError,
    },
}

/// A shell on a running guest.
pub trait GuestShell {
    /// Runs `script` in the guest; its exit status and output.
    fn run(&self, script: &str, timeout_s: u64) -> Result<(i32, String), ShellError>;
    /// Which console this is, for summaries: `lab article's console`, `/dev/pts/3, given with
    /// --console`.
    fn describe(&self) -> String;
}

/// A lab machine's console: its lab supervisor owns it.
#[derive(Debug, Clone)]
pub struct LabShell {
    pub umid: String,
    pub lab: String,
}

impl GuestShell for LabShell {
    fn run(&self, script: &str, timeout_s: u64) -> Result<(i32, String), ShellError> {
        let err = |reason: String| ShellError::Lab {
            lab: self.lab.clone(),
            reason,
        };
        let r = crate::lab::client::exec(&self.umid, script, timeout_s)
            .map_err(|e| err(e.to_string()))?;
        match (r.ok, r.status) {
            (true, Some(rc)) => Ok((rc, r.text())),
            _ => Err(err(r.error.unwrap_or_else(|| "console error".into()))),
        }
    }

    fn describe(&self) -> String {
        format!("lab {}'s console", self.lab)
    }
}

/// A shell on a host pty, kept open for the session's life (closing it hangs the line up).
#[derive(Debug, Clone)]
pub struct PtyShell {
    pub console: Arc<Mutex<PtyConsole>>,
    pub path: PathBuf,
    /// How it was found: "given with --console", "ssl0 per mconsole".
    pub origin: String,
}

impl GuestShell for PtyShell {
    fn run(&self, script: &str, timeout_s: u64) -> Result<(i32, String), ShellError> {
        let mut c = self.console.lock().unwrap_or_else(|p| p.into_inner());
        c.run(script, Duration::from_secs(timeout_s))
            .map(|o| (o.status, o.output))
            .map_err(|source| ShellError::Pty {
                path: self.path.clone(),
                source,
            })
    }

    fn describe(&self) -> String {
        format!("{}, {}", self.path.display(), self.origin)
    }
}

/// The console a session runs shell commands on.
#[derive(Debug, Clone)]
pub enum GuestConsole {
    Lab(LabShell),
    Pty(PtyShell),
}

impl GuestConsole {
    /// The console of a lab machine.
    pub fn lab(umid: &str, lab: &str) -> GuestConsole {
        GuestConsole::Lab(LabShell {
            umid: umid.to_string(),
            lab: lab.to_string(),
        })
    }

    /// A shell on a host pty found by `origin`.
    pub fn pty(c: PtyConsole, origin: String) -> GuestConsole {
        GuestConsole::Pty(PtyShell {
            path: c.path().to_owned(),
            console: Arc::new(Mutex::new(c)),
            origin,
        })
    }

    /// The console of `umid` if it is a lab machine (the lab's supervisor is asked).
    pub fn of_lab_machine(umid: &str) -> GuestConsole {
        let lab = crate::lab::state::lab_of_umid(umid)
            .map(|(n, _)| n)
            .unwrap_or_default();
        GuestConsole::lab(umid, &lab)
    }
}

impl GuestShell for GuestConsole {
    fn run(&self, script: &str, timeout_s: u64) -> Result<(i32, String), ShellError> {
        match self {
            GuestConsole::Lab(s) => s.run(script, timeout_s),
            GuestConsole::Pty(s) => s.run(script, timeout_s),
        }
    }

    fn describe(&self) -> String {
        match self {
            GuestConsole::Lab(s) => s.describe(),
            GuestConsole::Pty(s) => s.describe(),
        }
    }
}
