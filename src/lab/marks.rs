//! How a lab's processes are recognised without its state file: by the marks they carry.
//!
//! `lab down` must stop a lab's supervisor and machines even when `<run>/labs/<name>/` is gone,
//! and must never end a process that is not the lab's. A process belongs to lab `name` when:
//!
//! - supervisor: its argv ends with `lab supervise <name>` and its environment names this lab's
//!   run directory (`UMLDBG_LAB_DIR`, set by `lab up`; for a supervisor started before that mark
//!   existed, the same `UMLDBG_RUN_DIR`);
//! - machine: its argv holds `umid=<umid>` (it is that UML machine) and one more mark ties it to
//!   the lab: the `UMLDBG_LAB_DIR` it inherited from the supervisor, a supervisor of the lab among
//!   its ancestors, the lab's network namespace, an argument under the lab's directory (its
//!   `init=` script), or the pid in the lab's state.
//!
//! The decisions are pure functions of [`ProcInfo`] values, so they are tested without processes;
//! [`scan`] reads them from `/proc`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::state::{self, LabState};
use crate::uml::ids::check_umid;

/// Environment entry naming the lab, set on the supervisor (and so inherited by its machines).
pub const ENV_LAB: &str = "UMLDBG_LAB";
/// Environment entry holding the lab's absolute run directory.
pub const ENV_LAB_DIR: &str = "UMLDBG_LAB_DIR";

/// What `/proc/<pid>` says of one process.
#[derive(Debug, Clone, Default)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub argv: Vec<Vec<u8>>,
    /// None when it cannot be read (another user's process, a process that just exited).
    pub env: Option<Vec<Vec<u8>>>,
    /// (device, inode) of its network namespace.
    pub netns: Option<(u64, u64)>,
}

impl ProcInfo {
    fn env_var(&self, key: &str) -> Option<&[u8]> {
        self.env.as_ref()?.iter().find_map(|e| {
            e.strip_prefix(key.as_bytes())
                .and_then(|r| r.strip_prefix(b"="))
        })
    }

    /// The umid of a UML kernel process (`umid=NAME` in its argv), if it is a valid one.
    pub fn umid(&self) -> Option<String> {
        self.argv.iter().find_map(|a| {
            let u = std::str::from_utf8(a.strip_prefix(b"umid=")?).ok()?;
            check_umid(u).is_ok().then(|| u.to_owned())
        })
    }

    /// The lab name when argv ends with `lab supervise NAME`.
    pub fn supervised_lab(&self) -> Option<&[u8]> {
        match self.argv.as_slice() {
            [.., lab, sup, name] if lab == b"lab" && sup == b"supervise" => Some(name),
            _ => None,
        }
    }

    /// The cache directory a supervisor was started with (`--cache DIR`).
    pub fn cache_arg(&self) -> Option<PathBuf> {
        let i = self.argv.iter().position(|a| a == b"--cache")?;
        self.argv
            .get(i + 1)
            .map(|a| PathBuf::from(OsStr::from_bytes(a)))
    }
}

fn split_nul(b: &[u8]) -> Vec<Vec<u8>> {
    b.split(|&c| c == 0)
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn dev_ino(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Read one process; None when it is gone or a kernel thread.
pub fn read_proc(pid: i32) -> Option<ProcInfo> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let argv = split_nul(&std::fs::read(base.join("cmdline")).ok()?);
    if argv.is_empty() {
        return None;
    }
    let stat = std::fs::read_to_string(base.join("stat")).ok()?;
    let ppid = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        argv,
        env: std::fs::read(base.join("environ"))
            .ok()
            .map(|e| split_nul(&e)),
        netns: dev_ino(&base.join("ns/net")),
    })
}

/// Every process of the host (thread-group leaders), except this one.
pub fn scan() -> Vec<ProcInfo> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != me)
                .filter_map(read_proc)
                .collect()
        })
        .unwrap_or_default()
}

/// One machine of the lab found running: its umid and every host process that carries it (the
/// kernel's main process first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMachine {
    pub umid: String,
    pub main: i32,
    pub pids: Vec<i32>,
}

/// What identifies lab `name`'s processes.
#[derive(Debug, Clone)]
pub struct LabMarks {
    pub name: String,
    /// The lab's run directory, absolute.
    pub dir: PathBuf,
    /// This command's run root, compared with the `UMLDBG_RUN_DIR` of unmarked supervisors.
    pub run_root: PathBuf,
    /// (device, inode) of the lab's network namespace, when it exists.
    pub netns: Option<(u64, u64)>,
}

impl LabMarks {
    pub fn new(name: &str) -> LabMarks {
        LabMarks {
            name: name.to_owned(),
            dir: std::path::absolute(state::lab_dir(name)).unwrap_or(state::lab_dir(name)),
            run_root: state::run_root(),
            netns: dev_ino(&Path::new("/run/netns").join(state::netns_name(name))),
        }
    }

    /// A supervisor of a lab of this name, whatever its run directory.
    pub fn names_this_lab(&self, p: &ProcInfo) -> bool {
        p.supervised_lab() == Some(self.name.as_bytes())
    }

    /// A supervisor of this very lab (this name under this run directory).
    pub fn is_supervisor(&self, p: &ProcInfo) -> bool {
        if !self.names_this_lab(p) {
            return false;
        }
        match p.env_var(ENV_LAB_DIR) {
            Some(d) => Path::new(OsStr::from_bytes(d)) == self.dir,
            // Started before the mark existed: it used the run root of its environment.
            None => {
                p.env.is_some() && {
                    let root = p
                        .env_var("UMLDBG_RUN_DIR")
                        .map(|r| PathBuf::from(OsStr::from_bytes(r)))
                        .unwrap_or_else(|| PathBuf::from("/run/umldbg"));
                    root == self.run_root
                }
            }
        }
    }

    /// Supervisors of a lab of this name under another run directory: their machines, namespace
    /// and stage directory are not ours to touch.
    pub fn foreign_supervisors(&self, procs: &[ProcInfo]) -> Vec<i32> {
        procs
            .iter()
            .filter(|p| self.names_this_lab(p) && !self.is_supervisor(p))
            .map(|p| p.pid)
            .collect()
    }

    /// The lab's UML machines among `procs`. `supervisors` are this lab's supervisors;
    /// `use_netns` is false when another lab of this name may own the namespace; `st` is the
    /// lab's state when it could be read; `pid_files` maps a umid to the pid in its
    /// `~/.uml/<umid>/pid`.
    pub fn machines(
        &self,
        procs: &[ProcInfo],
        supervisors: &[i32],
        use_netns: bool,
        st: Option<&LabState>,
        pid_files: &HashMap<String, i32>,
    ) -> Vec<FoundMachine> {
        let by_pid: HashMap<i32, &ProcInfo> = procs.iter().map(|p| (p.pid, p)).collect();
        let descends_from_supervisor = |p: &ProcInfo| {
            let mut ppid = p.ppid;
            for _ in 0..64 {
                if supervisors.contains(&ppid) {
                    return true;
                }
                match by_pid.get(&ppid) {
                    Some(q) if q.ppid != ppid => ppid = q.ppid,
                    _ => return false,
                }
            }
            false
        };
        let dir_prefix = {
            let mut d = self.dir.as_os_str().as_bytes().to_vec();
            d.push(b'/');
            d
        };
        let in_state = |umid: &str, pid: i32| {
            st.and_then(|s| s.machine(umid))
                .is_some_and(|m| m.pid == pid || pid_files.get(umid) == Some(&pid))
        };
        let mut groups: BTreeMap<String, Vec<&ProcInfo>> = BTreeMap::new();
        for p in procs {
            let Some(umid) = p.umid() else { continue };
            let ours = p.env_var(ENV_LAB_DIR) == Some(self.dir.as_os_str().as_bytes())
                || descends_from_supervisor(p)
                || (use_netns && self.netns.is_some() && p.netns == self.netns)
                || p.argv.iter().any(|a| {
                    // `init=<dir>/machines/<umid>.init`, or a bare path under the lab's dir.
                    let value = a
                        .iter()
                        .position(|&b| b == b'=')
                        .map_or(&a[..], |i| &a[i + 1..]);
                    value.starts_with(&dir_prefix) || a.starts_with(&dir_prefix)
                })
                || in_state(&umid, p.pid);
            if ours {
                groups.entry(umid).or_default().push(p);
            }
        }
        groups
            .into_iter()
            .map(|(umid, ps)| {
                let pids: Vec<i32> = ps.iter().map(|p| p.pid).collect();
                // The process the supervisor started (the machine's group leader: the kernel,
                // or a sandbox that runs it): the state's pid, else the one whose parent does
                // not carry the umid (the others are the kernel and its helpers under it).
                let main = st
                    .and_then(|s| s.machine(&umid))
                    .map(|m| m.pid)
                    .filter(|p| pids.contains(p))
                    .or_else(|| ps.iter().find(|p| !pids.contains(&p.ppid)).map(|p| p.pid))
                    .unwrap_or(pids[0]);
                let mut all = vec![main];
                all.extend(pids.into_iter().filter(|&p| p != main));
                FoundMachine {
                    umid,
                    main,
                    pids: all,
                }
            })
            .collect()
    }
}

/// Is `pid` a live supervisor of lab `name` (for a message; the argv is enough here)?
pub fn supervisor_runs(pid: i32, name: &str) -> bool {
    crate::util::pid_alive(pid)
        && read_proc(pid).is_some_and(|p| p.supervised_lab() == Some(name.as_bytes()))
}

/// Is `pid` a live UML kernel process started with `umid=<umid>`?
pub fn runs_umid(pid: i32, umid: &str) -> bool {
    crate::util::pid_alive(pid)
        && read_proc(pid).is_some_and(|p| {
            p.argv
                .iter()
                .any(|a| a == format!("umid={umid}").as_bytes())
        })
}

/// The pid in `<uml_dir>/<umid>/pid`, if it holds one.
pub fn pid_file(uml_dir: &Path, umid: &str) -> Option<i32> {
    std::fs::read_to_string(uml_dir.join(umid).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    fn marks() -> LabMarks {
        LabMarks {
            name: "t1-lab".into(),
            dir: "/run/umldbg/labs/t1-lab".into(),
            run_root: "/run/umldbg".into(),
            netns: Some((4, 4026532000)),
        }
    }

    fn sup(pid: i32, env: &[&str]) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: 1,
            argv: argv("/usr/bin/umldbg --cache /c lab supervise t1-lab"),
            env: Some(env.iter().map(|e| e.as_bytes().to_vec()).collect()),
            netns: Some((4, 1)),
        }
    }

    fn uml(pid: i32, ppid: i32, umid: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            argv: argv(&format!("/k/linux mem=64M umid={umid} ro")),
            env: Some(vec![]),
            netns: Some((4, 1)),
        }
    }

    #[test]
    fn supervisor_is_recognised_by_argv_and_run_directory() {
        let m = marks();
        assert!(m.is_supervisor(&sup(10, &["UMLDBG_LAB_DIR=/run/umldbg/labs/t1-lab"])));
        assert!(
            m.is_supervisor(&sup(10, &["HOME=/root"])),
            "unmarked, default run root"
        );
        assert!(!m.is_supervisor(&sup(10, &["UMLDBG_LAB_DIR=/tmp/x/labs/t1-lab"])));
        assert!(!m.is_supervisor(&sup(10, &["UMLDBG_RUN_DIR=/tmp/x"])));
        let mut other = sup(10, &[]);
        other.argv = argv("umldbg lab supervise t1-lab2");
        assert!(!m.names_this_lab(&other));
        other.argv = argv("umldbg lab down t1-lab");
        assert!(!m.names_this_lab(&other));
        let procs = vec![sup(10, &["UMLDBG_RUN_DIR=/tmp/x"]), sup(11, &[])];
        assert_eq!(m.foreign_supervisors(&procs), vec![10]);
    }

    #[test]
    fn machines_need_a_umid_and_a_lab_mark() {
        let m = marks();
        let s = sup(10, &["UMLDBG_LAB_DIR=/run/umldbg/labs/t1-lab"]);
        let child = uml(20, 10, "t1-A");
        let helper = uml(21, 20, "t1-A");
        let mut in_ns = uml(30, 1, "t1-B");
        in_ns.netns = m.netns;
        let mut marked = uml(40, 1, "t1-R");
        marked.env = Some(vec![b"UMLDBG_LAB_DIR=/run/umldbg/labs/t1-lab".to_vec()]);
        let mut by_init = uml(50, 1, "t1-C");
        by_init
            .argv
            .push(b"init=/run/umldbg/labs/t1-lab/machines/t1-C.init".to_vec());
        let stranger = uml(60, 1, "someone-else");
        let mut beside = uml(70, 1, "t1-D");
        beside
            .argv
            .push(b"init=/run/umldbg/labs/t1-lab2/machines/t1-D.init".to_vec());
        let mut no_umid = uml(80, 10, "x");
        no_umid.argv = argv("/bin/sleep 100");
        let procs = vec![
            s, child, helper, in_ns, marked, by_init, stranger, beside, no_umid,
        ];
        let found = m.machines(&procs, &[10], true, None, &HashMap::new());
        let names: Vec<(&str, i32)> = found.iter().map(|f| (f.umid.as_str(), f.main)).collect();
        assert_eq!(
            names,
            vec![("t1-A", 20), ("t1-B", 30), ("t1-C", 50), ("t1-R", 40)]
        );
        assert_eq!(found[0].pids, vec![20, 21]);
        // A sandbox wrapper whose argv carries the kernel's: the wrapper is the machine's main
        // process, whatever the pid file (the kernel's) says.
        let wrapper = uml(90, 10, "t1-W");
        let kernel = uml(91, 90, "t1-W");
        let pid_files = HashMap::from([("t1-W".to_string(), 91)]);
        let found = m.machines(&[wrapper, kernel], &[10], true, None, &pid_files);
        assert_eq!((found[0].main, found[0].pids.clone()), (90, vec![90, 91]));
        // Without the namespace mark (another lab of this name may own it), B is not ours.
        let found = m.machines(&procs, &[10], false, None, &HashMap::new());
        assert!(found.iter().all(|f| f.umid != "t1-B"));
    }

    #[test]
    fn a_umid_that_is_a_path_is_never_a_machine() {
        let p = uml(20, 1, "../../etc");
        assert_eq!(p.umid(), None);
    }

    #[test]
    fn cache_argument_is_read_from_the_supervisor_argv() {
        assert_eq!(sup(1, &[]).cache_arg(), Some(PathBuf::from("/c")));
    }
}
