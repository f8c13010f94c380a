//! One running UML machine as the host sees it: `<uml_dir>/<umid>/pid` names the kernel's main
//! process, `<uml_dir>/<umid>/mconsole` is its management socket.
//!
//! A pid file alone proves little: UML leaves it behind when it is killed, and the pid may since
//! belong to another process. `resolve` therefore checks that the process lives and that its
//! command line carries `umid=<umid>` before anyone attaches a debugger to it or halts it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::ids::{HostPid, Umid};

/// A UML machine whose kernel process was found alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmlInstance {
    pub umid: Umid,
    pub uml_dir: PathBuf,
    pub pid: HostPid,
}

/// Why a umid does not lead to a live UML kernel.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("no UML machine `{umid}` in {} (machines there: {known}): check the umid or pass --uml-dir", uml_dir.display())]
    UnknownUmid {
        umid: Umid,
        uml_dir: PathBuf,
        known: String,
    },
    #[error(
        "UML machine `{umid}` has no pid file {}: it is still booting, or another machine with \
         the same umid removed it on exit",
        path.display()
    )]
    NoPidFile { umid: Umid, path: PathBuf },
    #[error("pid file {} of `{umid}` holds {content:?}, not a pid: remove {} if the machine is gone", path.display(), dir.display())]
    BadPidFile {
        umid: Umid,
        path: PathBuf,
        dir: PathBuf,
        content: String,
    },
    #[error(
        "UML machine `{umid}` is not running: pid {pid} from {} has exited (stale pid file): \
         remove {}",
        path.display(), dir.display()
    )]
    StalePid {
        umid: Umid,
        pid: HostPid,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error(
        "pid {pid} from {} is not UML machine `{umid}`'s kernel: its command line `{cmdline}` \
         has no `umid={umid}` (the pid was reused): remove {}",
        path.display(), dir.display()
    )]
    NotThatMachine {
        umid: Umid,
        pid: HostPid,
        path: PathBuf,
        dir: PathBuf,
        cmdline: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where umldbg looks machines up by umid: `$UMLDBG_UML_DIR` (what `--uml-dir` sets for the
/// whole process and the lab supervisors it starts), else UML's default `$HOME/.uml`.
pub fn default_uml_dir() -> PathBuf {
    match std::env::var_os("UMLDBG_UML_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => crate::util::home_dir().join(".uml"),
    }
}

/// Whether `umid` names a live UML kernel in `uml_dir`.
pub fn is_running(uml_dir: &Path, umid: &Umid) -> bool {
    UmlInstance::resolve(umid, uml_dir).is_ok()
}

/// The umids with a directory in `uml_dir`, sorted; empty when the directory does not exist.
pub fn list_umids(uml_dir: &Path) -> Vec<Umid> {
    let Ok(entries) = fs::read_dir(uml_dir) else {
        return Vec::new();
    };
    let mut out: Vec<Umid> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Umid::new(e.file_name().to_string_lossy().into_owned()).ok())
        .collect();
    out.sort();
    out
}

/// A process's state letter ([`crate::util::proc_state`]), a failure to read `/proc` named.
fn proc_state(pid: HostPid) -> Result<Option<char>, InstanceError> {
    crate::util::proc_state(pid.get()).map_err(|source| InstanceError::Io {
        path: PathBuf::from(format!("/proc/{pid}/stat")),
        source,
    })
}

impl UmlInstance {
    /// Finds the live kernel of machine `umid` under `uml_dir`.
    pub fn resolve(umid: &Umid, uml_dir: &Path) -> Result<UmlInstance, InstanceError> {
        let dir = uml_dir.join(umid.as_str());
        if !dir.is_dir() {
            let known: Vec<String> = list_umids(uml_dir)
                .iter()
                .map(ToString::to_string)
                .collect();
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            return Err(InstanceError::UnknownUmid {
                umid: umid.clone(),
                uml_dir: uml_dir.to_owned(),
                known,
            });
        }
        let path = dir.join("pid");
        let content = match fs::read_to_string(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(InstanceError::NoPidFile {
                    umid: umid.clone(),
                    path,
                });
            }
            Err(source) => return Err(InstanceError::Io { path, source }),
        };
        let pid: HostPid = content.parse().map_err(|_| InstanceError::BadPidFile {
            umid: umid.clone(),
            path: path.clone(),
            dir: dir.clone(),
            content: content.clone(),
        })?;
        // A zombie has exited; only its parent has not collected it yet.
        if !crate::util::state_alive(proc_state(pid)?) {
            return Err(InstanceError::StalePid {
                umid: umid.clone(),
                pid,
                path,
                dir,
            });
        }
        let cmd_path = PathBuf::from(format!("/proc/{pid}/cmdline"));
        let cmdline = match fs::read(&cmd_path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(InstanceError::StalePid {
                    umid: umid.clone(),
                    pid,
                    path,
                    dir,
                });
            }
            Err(source) => {
                return Err(InstanceError::Io {
                    path: cmd_path,
                    source,
                });
            }
        };
        let want = format!("umid={umid}");
        let has_umid = cmdline.split(|&b| b == 0).any(|arg| arg == want.as_bytes());
        if !has_umid {
            let shown: Vec<String> = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let mut cmdline = shown.join(" ");
            if cmdline.len() > 200 {
                let mut cut = 200;
                while !cmdline.is_char_boundary(cut) {
                    cut -= 1;
                }
                cmdline.truncate(cut);
                cmdline.push_str("...");
            }
            return Err(InstanceError::NotThatMachine {
                umid: umid.clone(),
                pid,
                path,
                dir,
                cmdline,
            });
        }
        Ok(UmlInstance {
            umid: umid.clone(),
            uml_dir: uml_dir.to_owned(),
            pid,
        })
    }

    /// `<uml_dir>/<umid>`.
    pub fn dir(&self) -> PathBuf {
        self.uml_dir.join(self.umid.as_str())
    }

    /// The machine's management console socket.
    pub fn mconsole_path(&self) -> PathBuf {
        self.dir().join("mconsole")
    }

    /// The kernel image the process runs (`/proc/<pid>/exe`), for loading its symbols.
    pub fn exe_path(&self) -> Result<PathBuf, InstanceError> {
        let link = PathBuf::from(format!("/proc/{}/exe", self.pid));
        fs::read_link(&link).map_err(|source| InstanceError::Io { path: link, source })
    }

    /// Whether the process is still alive (not exited, not a zombie).
    pub fn is_alive(&self) -> bool {
        crate::util::pid_alive(self.pid.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};

    /// A scratch uml_dir removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("umldbg-inst-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A child killed and reaped on drop, so a failing test leaves no process behind.
    struct Proc(Child);

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `sleep` whose argv[0] is `umid=<umid>`: its /proc cmdline then carries the argument
    /// a UML kernel's would, which is all `resolve` looks at.
    ///
    /// `spawn` returns once the child is in execve, before the kernel has set up the new
    /// argument pages (cmdline reads empty for a moment): wait until it shows, as a real UML's
    /// does long before it writes its pid file.
    fn fake_uml(umid: &str) -> Proc {
        let p = Proc(
            Command::new("sleep")
                .arg0(format!("umid={umid}"))
                .arg("60")
                .spawn()
                .unwrap(),
        );
        let cmdline = format!("/proc/{}/cmdline", p.0.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read(&cmdline).map_or(true, |c| c.is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{cmdline} stayed empty"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        p
    }

    fn write_pid(dir: &Path, umid: &str, pid: &str) {
        fs::create_dir_all(dir.join(umid)).unwrap();
        fs::write(dir.join(umid).join("pid"), pid).unwrap();
    }

    fn umid(s: &str) -> Umid {
        Umid::new(s).unwrap()
    }

    #[test]
    fn resolves_a_live_machine() {
        let d = TempDir::new("live");
        let p = fake_uml("m1");
        write_pid(&d.0, "m1", &format!("{}\n", p.0.id()));
        let inst = UmlInstance::resolve(&umid("m1"), &d.0).unwrap();
        assert_eq!(inst.pid.get() as u32, p.0.id());
        assert_eq!(inst.mconsole_path(), d.0.join("m1").join("mconsole"));
        assert!(inst.exe_path().unwrap().ends_with("sleep"));
        assert!(inst.is_alive());
        assert!(is_running(&d.0, &umid("m1")));
    }

    #[test]
    fn unknown_umid_lists_the_known_ones() {
        let d = TempDir::new("unknown");
        write_pid(&d.0, "b", "1");
        write_pid(&d.0, "a", "1");
        let e = UmlInstance::resolve(&umid("zz"), &d.0).unwrap_err();
        assert!(
            matches!(&e, InstanceError::UnknownUmid { known, .. } if known == "a, b"),
            "{e}"
        );
        let e = UmlInstance::resolve(&umid("zz"), &d.0.join("nope")).unwrap_err();
        assert!(e.to_string().contains("machines there: none"), "{e}");
    }

    #[test]
    fn dead_pid_is_stale() {
        let d = TempDir::new("stale");
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        write_pid(&d.0, "gone", &pid.to_string());
        let e = UmlInstance::resolve(&umid("gone"), &d.0).unwrap_err();
        assert!(matches!(e, InstanceError::StalePid { .. }), "{e}");
        assert!(!is_running(&d.0, &umid("gone")));
    }

    #[test]
    fn zombie_is_stale() {
        let d = TempDir::new("zombie");
        let c = Proc(Command::new("true").arg0("umid=z").spawn().unwrap());
        let pid = HostPid::new(c.0.id() as i32).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proc_state(pid).unwrap() != Some('Z') {
            assert!(
                std::time::Instant::now() < deadline,
                "child never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        write_pid(&d.0, "z", &pid.to_string());
        let e = UmlInstance::resolve(&umid("z"), &d.0).unwrap_err();
        assert!(matches!(e, InstanceError::StalePid { .. }), "{e}");
    }

    #[test]
    fn other_process_is_not_the_machine() {
        let d = TempDir::new("other");
        let p = fake_uml("someone-else");
        write_pid(&d.0, "m2", &p.0.id().to_string());
        let e = UmlInstance::resolve(&umid("m2"), &d.0).unwrap_err();
        assert!(
            matches!(&e, InstanceError::NotThatMachine { cmdline, .. } if cmdline.contains("umid=someone-else")),
            "{e}"
        );
        // A prefix of the right umid is not the right umid.
        let p2 = fake_uml("m2x");
        write_pid(&d.0, "m2", &p2.0.id().to_string());
        assert!(matches!(
            UmlInstance::resolve(&umid("m2"), &d.0),
            Err(InstanceError::NotThatMachine { .. })
        ));
    }

    #[test]
    fn missing_and_garbled_pid_files() {
        let d = TempDir::new("garbled");
        fs::create_dir_all(d.0.join("nopid")).unwrap();
        assert!(matches!(
            UmlInstance::resolve(&umid("nopid"), &d.0),
            Err(InstanceError::NoPidFile { .. })
        ));
        write_pid(&d.0, "junk", "hello\n");
        let e = UmlInstance::resolve(&umid("junk"), &d.0).unwrap_err();
        assert!(matches!(e, InstanceError::BadPidFile { .. }), "{e}");
    }
}
