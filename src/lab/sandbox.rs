//! The sandbox every lab machine runs in: what the UML process, and so its guest, can reach.
//!
//! hostfs gives the guest whatever its UML process can open on the host, and a guest's root can
//! remount, or mount hostfs again with any host path: the read-only flag on the guest's root
//! is not a boundary. The boundary is the UML process itself, started through bubblewrap:
//!
//! - its own mount namespace whose root is an empty tmpfs holding only read-only binds of `/usr`
//!   (with the merged-usr links `/bin`, `/sbin`, `/lib*`), `/etc` and `/var`, the kernel it runs,
//!   its modules, the lab's own read-only inputs, and one writable directory for UML's
//!   `pid`/`mconsole` files (owned by the machine's user, empty but for those);
//! - a pid namespace and a procfs of its own (UML reads `/proc/self`), with `/proc/sys` and the
//!   other knobs read-only; no `/sys`, no `/home`, no `/root`, no `/run`, no `/srv`, no `/mnt`, no host `/tmp`:
//!   `/tmp` and `/dev/shm` are its own tmpfs (UML's memory file lives there), `/dev` holds only
//!   the basic device nodes (the supervisor opens the machine's taps and hands it the fds);
//! - a user of its own: the process runs under a uid and gid no account on the host has (one
//!   per lab, derived from its name) with no supplementary groups, no capabilities and
//!   `no_new_privs`. Files of `/etc` that are not world-readable (`shadow`, ssh host keys) stay
//!   unreadable, and every bind but the UML directory is read-only whatever the guest mounts;
//! - the pid in `~/.uml/<umid>/pid` is rewritten with the kernel's host pid once the machine is
//!   up ([`publish_host_pid`]): that is the pid gdb, `serve` and `trace` attach to as root.
//!
//! The UML directory: UML creates `<uml_dir>/<umid>/` itself and removes it when it exits, so
//! the sandbox gets a private parent directory at [`UML_DIR_INSIDE`] (kernel argument
//! `uml_dir=`), and the host's `~/.uml/<umid>` is a symlink into it; everything that looks up a
//! machine by umid follows the link.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the machine's private UML directory is seen inside the sandbox.
pub const UML_DIR_INSIDE: &str = "/umldbg-uml";

/// bubblewrap, from Debian's `bubblewrap` package.
pub const BWRAP: &str = "bwrap";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "bubblewrap ({BWRAP}) is not installed: run scripts/setup.sh or apt-get install bubblewrap"
    )]
    NoBwrap,
    #[error("sandbox path {path} is not absolute")]
    Relative { path: PathBuf },
    #[error("prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The host user a lab's machines run as: a uid and gid that no account uses (above 2^30), one
/// per lab. The machines of a lab share it so that files one writes in the lab's shared folder
/// are the others' to change, as in Kathará; each machine has a pid namespace of its own, so no
/// machine can signal or trace another, and other labs run under other users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineUser {
    pub uid: u32,
    pub gid: u32,
}

impl MachineUser {
    pub fn for_lab(lab: &str) -> MachineUser {
        // FNV-1a over the lab's name: stable across runs, spread over 2^28 ids.
        let mut h: u32 = 0x811c_9dc5;
        for b in lab.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        let id = 0x6000_0000 + (h & 0x0fff_ffff);
        MachineUser { uid: id, gid: id }
    }
}

/// What one machine's sandbox holds.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub user: MachineUser,
    /// Host paths visible read-only at the same path (files or directories).
    pub read_only: Vec<PathBuf>,
    /// Host directories visible read-write at the same path (a machine's COW files, say).
    pub writable: Vec<PathBuf>,
    /// Host directory seen as [`UML_DIR_INSIDE`]; created, owned by the machine's user.
    pub uml_parent: PathBuf,
    /// An empty directory made in the sandbox's root for the guest to mount the lab's shared
    /// folder on (`/shared`).
    pub shared_at: Option<PathBuf>,
}

/// Is bubblewrap there?
pub fn available() -> bool {
    crate::util::which(BWRAP).is_some()
}

/// Prepare the host side (the UML directory) and return the command that runs `program args`
/// inside the sandbox. The caller adds stdio, the network namespace and the process group.
pub fn command(
    spec: &SandboxSpec,
    program: &Path,
    args: &[String],
) -> Result<Command, SandboxError> {
    let bwrap = crate::util::which(BWRAP).ok_or(SandboxError::NoBwrap)?;
    for p in spec
        .read_only
        .iter()
        .chain(&spec.writable)
        .chain(std::iter::once(&spec.uml_parent))
        .chain(std::iter::once(&program.to_path_buf()))
    {
        if !p.is_absolute() {
            return Err(SandboxError::Relative { path: p.clone() });
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { path, source }
    };
    std::fs::create_dir_all(&spec.uml_parent).map_err(io(&spec.uml_parent))?;
    nix::unistd::chown(
        &spec.uml_parent,
        Some(nix::unistd::Uid::from_raw(spec.user.uid)),
        Some(nix::unistd::Gid::from_raw(spec.user.gid)),
    )
    .map_err(|e| io(&spec.uml_parent)(e.into()))?;
    std::fs::set_permissions(&spec.uml_parent, std::fs::Permissions::from_mode(0o700))
        .map_err(io(&spec.uml_parent))?;

    let mut cmd = Command::new(bwrap);
    cmd.args(bwrap_args(spec));
    cmd.arg("--").arg(setpriv());
    cmd.args([
        format!("--reuid={}", spec.user.uid),
        format!("--regid={}", spec.user.gid),
    ]);
    cmd.args(["--clear-groups", "--no-new-privs", "--inh-caps=-all", "--"]);
    cmd.arg(program).args(args);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        // UML's physical memory file goes here (its own tmpfs); tools recognise the mapping.
        .env("TMPDIR", "/dev/shm")
        .env("HOME", "/");
    Ok(cmd)
}

fn setpriv() -> OsString {
    crate::util::which("setpriv")
        .map(PathBuf::into_os_string)
        .unwrap_or_else(|| "/usr/bin/setpriv".into())
}

/// The host pid of the UML kernel a sandbox runs: the one process below bubblewrap's init
/// (bwrap `sandbox_pid` -> its init in the namespace -> the kernel) that runs `kernel`.
pub fn kernel_host_pid(sandbox_pid: i32, kernel: &Path) -> Option<i32> {
    let children = |pid: i32| -> Vec<i32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let runs_kernel = |pid: i32| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| {
            let e = e.to_string_lossy();
            Path::new(e.strip_suffix(" (deleted)").unwrap_or(&e)) == kernel
        })
    };
    let mut level = vec![sandbox_pid];
    for _ in 0..3 {
        if let Some(&k) = level.iter().find(|&&p| runs_kernel(p)) {
            return Some(k);
        }
        level = level.into_iter().flat_map(children).collect();
    }
    level.into_iter().find(|&p| runs_kernel(p))
}

/// Replace the pid UML wrote in `<dir>/pid` (its pid inside the sandbox) with its host pid.
pub fn publish_host_pid(uml_machine_dir: &Path, host_pid: i32) -> std::io::Result<()> {
    let tmp = uml_machine_dir.join(".pid.umldbg");
    std::fs::write(&tmp, format!("{host_pid}\n"))?;
    std::fs::rename(&tmp, uml_machine_dir.join("pid"))
}

/// bubblewrap's arguments for a spec (pure: the tests read them).
pub fn bwrap_args(spec: &SandboxSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |xs: &[&std::ffi::OsStr]| a.extend(xs.iter().map(|x| x.to_os_string()));
    push(&[
        "--die-with-parent".as_ref(),
        "--unshare-ipc".as_ref(),
        "--unshare-uts".as_ref(),
        "--unshare-cgroup-try".as_ref(),
        // A pid namespace of its own: the guest's procfs shows only the sandbox's processes,
        // and when the sandbox's init goes (with its parent, bwrap) the kernel ends every
        // process in it. UML writes its pid as seen inside; see [`publish_host_pid`].
        "--unshare-pid".as_ref(),
        // Only what setpriv needs to become the machine's user; it keeps none of them after.
        "--cap-drop".as_ref(),
        "ALL".as_ref(),
        "--cap-add".as_ref(),
        "CAP_SETUID".as_ref(),
        "--cap-add".as_ref(),
        "CAP_SETGID".as_ref(),
        "--ro-bind".as_ref(),
        "/usr".as_ref(),
        "/usr".as_ref(),
    ]);
    // Debian's merged /usr: /bin, /sbin and /lib* are links into it; on an older layout, binds.
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let p = Path::new(top);
        match std::fs::read_link(p) {
            Ok(target) => push(&["--symlink".as_ref(), target.as_os_str(), top.as_ref()]),
            Err(_) if p.is_dir() => push(&["--ro-bind".as_ref(), top.as_ref(), top.as_ref()]),
            Err(_) => {}
        }
    }
    for top in ["/etc", "/var"] {
        if Path::new(top).is_dir() {
            push(&["--ro-bind".as_ref(), top.as_ref(), top.as_ref()]);
        }
    }
    push(&[
        // UML reads /proc/self; bubblewrap's procfs has /proc/sys and the other writable
        // knobs read-only, and the machine's user can write nothing of it in any case.
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--perms".as_ref(),
        "1777".as_ref(),
        "--tmpfs".as_ref(),
        "/dev/shm".as_ref(),
        "--perms".as_ref(),
        "1777".as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
    ]);
    // Empty mount points the guest expects in its root (it mounts its own proc, sysfs and tmpfs
    // there); nothing of the host's is behind them.
    // Parents of the binds are made here, traversable: bubblewrap would copy the host's modes
    // (root's 0700 home, say), which the machine's user cannot pass.
    let mut dirs: Vec<PathBuf> = [
        "/sys", "/run", "/root", "/home", "/mnt", "/srv", "/opt", "/media",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for p in spec.read_only.iter().chain(&spec.writable) {
        let mut up: Vec<PathBuf> = p
            .ancestors()
            .skip(1)
            .filter(|a| a.parent().is_some())
            .map(Path::to_path_buf)
            .collect();
        up.reverse();
        for d in up {
            if !dirs.contains(&d)
                && !["/usr", "/etc", "/var", "/dev"]
                    .iter()
                    .any(|t| d.starts_with(t))
            {
                dirs.push(d);
            }
        }
    }
    dirs.extend(spec.shared_at.iter().cloned());
    for d in &dirs {
        push(&[
            "--perms".as_ref(),
            "0755".as_ref(),
            "--dir".as_ref(),
            d.as_os_str(),
        ]);
    }
    for p in &spec.read_only {
        push(&["--ro-bind".as_ref(), p.as_os_str(), p.as_os_str()]);
    }
    for p in &spec.writable {
        push(&["--bind".as_ref(), p.as_os_str(), p.as_os_str()]);
    }
    push(&[
        "--bind".as_ref(),
        spec.uml_parent.as_os_str(),
        UML_DIR_INSIDE.as_ref(),
        "--chdir".as_ref(),
        "/".as_ref(),
    ]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            user: MachineUser::for_lab("lab"),
            read_only: vec![PathBuf::from("/k/linux")],
            writable: vec![PathBuf::from("/w")],
            uml_parent: PathBuf::from("/p"),
            shared_at: None,
        }
    }

    fn strs(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn lab_users_are_unprivileged_and_distinct() {
        let a = MachineUser::for_lab("lab");
        let b = MachineUser::for_lab("lab2");
        assert_ne!(a, b);
        for u in [a, b] {
            assert!(u.uid >= 0x6000_0000 && u.uid < 0x7000_0000, "{u:?}");
        }
        assert_eq!(a, MachineUser::for_lab("lab"));
    }

    #[test]
    fn the_view_has_no_host_sys_home_or_root_and_binds_read_only() {
        let a = strs(&bwrap_args(&spec()));
        let joined = a.join(" ");
        assert!(joined.contains("--proc /proc"));
        for hidden in ["/sys", "/home", "/root", "/run", "/srv", "/mnt"] {
            // Only as an empty directory (--dir), never bound or mounted from the host.
            let bound = (1..a.len()).any(|i| a[i] == hidden && a[i - 1] != "--dir");
            assert!(
                a.windows(4)
                    .any(|w| w[0] == "--perms" && w[1] == "0755" && w[3] == hidden)
            );
            assert!(!bound, "{hidden} must not come from the host: {joined}");
        }
        assert!(joined.contains("--ro-bind /usr /usr"));
        assert!(joined.contains("--ro-bind /etc /etc"));
        assert!(joined.contains("--ro-bind /k/linux /k/linux"));
        assert!(joined.contains("--bind /w /w"));
        assert!(joined.contains(&format!("--bind /p {UML_DIR_INSIDE}")));
        assert!(joined.contains("--cap-drop ALL"));
        assert!(joined.contains("--unshare-pid"));
        // Writable binds are exactly the ones asked for.
        let rw: Vec<_> = a
            .windows(2)
            .filter(|w| w[0] == "--bind")
            .map(|w| w[1].clone())
            .collect();
        assert_eq!(rw, vec!["/w", "/p"]);
    }
}
