//! What a running lab leaves on disk: its run directory and `state.json`.
//!
//! Every lab has `<run>/labs/<name>/` holding the spec it was started from, the state written by
//! its supervisor, the supervisor's socket, the machines' init scripts and console logs. The
//! state is what `lab down` uses to clean up even when the supervisor is gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::LabSpec;

/// Root of every lab's run directory: `$UMLDBG_RUN_DIR`, else `/run/umldbg`.
pub fn run_root() -> PathBuf {
    std::env::var_os("UMLDBG_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/umldbg"))
}

/// A lab's run directory. `name` must have passed [`crate::uml::ids::check_lab_name`] (every
/// entry point checks it), so that this is one directory under `<run>/labs`.
pub fn lab_dir(name: &str) -> PathBuf {
    debug_assert!(crate::uml::ids::check_lab_name(name).is_ok(), "{name:?}");
    run_root().join("labs").join(name)
}

/// The network namespace that holds a lab's bridges, taps and lab-host addresses.
pub fn netns_name(lab: &str) -> String {
    format!("umldbg-{lab}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineState {
    pub umid: String,
    pub hostname: String,
    /// The machine's sandbox (bubblewrap, a process group leader): what `lab down` ends.
    pub pid: i32,
    /// The UML kernel's host pid (what `~/.uml/<umid>/pid` holds, what debuggers attach to).
    #[serde(default)]
    pub kernel_pid: i32,
    /// Tap name (inside the lab's namespace) per guest interface, in order.
    pub taps: Vec<String>,
    /// Guest interface name and its addresses, for the status table.
    pub addresses: Vec<(String, Vec<String>)>,
    pub console_log: PathBuf,
    /// The kernel it runs when `lab restart --kernel` gave it another than the lab's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainState {
    pub name: String,
    pub bridge: String,
    pub host_address: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub netns: String,
    pub supervisor_pid: i32,
    pub kernel: PathBuf,
    pub kernel_version: String,
    pub uml_dir: PathBuf,
    pub machines: Vec<MachineState>,
    pub domains: Vec<DomainState>,
    /// What went wrong but did not stop the lab (failing startup lines), for `lab up` to print.
    #[serde(default)]
    pub reports: Vec<String>,
}

pub const STATE: &str = "state.json";
pub const SPEC: &str = "spec.json";
pub const SOCKET: &str = "supervisor.sock";

impl LabState {
    pub fn read(dir: &Path) -> Option<LabState> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(STATE)).ok()?).ok()
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".state.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_string_pretty(self).expect("state serialises"),
        )?;
        std::fs::rename(tmp, dir.join(STATE))
    }

    pub fn machine(&self, umid: &str) -> Option<&MachineState> {
        self.machines.iter().find(|m| m.umid == umid)
    }
}

/// The spec a lab was started from, kept beside its state.
pub fn read_spec(dir: &Path) -> Option<LabSpec> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(SPEC)).ok()?).ok()
}

/// Names of every lab with a run directory (entries that are not valid lab names are not labs).
pub fn lab_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run_root().join("labs"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| crate::uml::ids::check_lab_name(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Find the lab that runs `umid`.
pub fn lab_of_umid(umid: &str) -> Option<(String, LabState)> {
    lab_names().into_iter().find_map(|n| {
        let st = LabState::read(&lab_dir(&n))?;
        st.machine(umid).is_some().then_some((n, st))
    })
}

/// The host directory whose files a machine can read (modules `umldbg load` copies in): for
/// a lab machine the one its sandbox shows it, `<cache>/stage/<lab>/<umid>`; for a machine
/// started by hand (no sandbox) `<cache>/stage/<umid>`.
pub fn machine_stage_dir(cache: &Path, umid: &str) -> PathBuf {
    match lab_of_umid(umid) {
        Some((lab, _)) => cache.join("stage").join(lab).join(umid),
        None => cache.join("stage").join(umid),
    }
}
