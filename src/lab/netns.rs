//! The lab's network namespace: bridges (one per domain), taps (one per guest interface) and the
//! lab host's addresses, all created inside a namespace of the lab's own so that no lab packet can
//! reach the host's network.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

use crate::util::{self, CmdError};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "network namespace {0} already exists: a lab of that name is up or was not cleaned up; run `umldbg lab down {1}`"
    )]
    Exists(String, String),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("open /run/netns/{ns}: {source}")]
    Open { ns: String, source: std::io::Error },
    #[error("tap name {0:?} is empty or longer than 15 bytes")]
    BadTap(String),
}

/// Does the named namespace exist?
pub fn exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

pub fn create(ns: &str, lab: &str) -> Result<(), NetnsError> {
    if exists(ns) {
        return Err(NetnsError::Exists(ns.to_string(), lab.to_string()));
    }
    util::run(Command::new("ip").args(["netns", "add", ns]))?;
    ip(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Delete the namespace; its bridges and taps go with it.
pub fn delete(ns: &str) -> Result<(), NetnsError> {
    if exists(ns) {
        util::run(Command::new("ip").args(["netns", "del", ns]))?;
    }
    Ok(())
}

/// `ip -n NS ARGS...`
pub fn ip(ns: &str, args: &[&str]) -> Result<(), NetnsError> {
    util::run(Command::new("ip").args(["-n", ns]).args(args))?;
    Ok(())
}

pub fn add_bridge(ns: &str, bridge: &str, host_address: Option<&str>) -> Result<(), NetnsError> {
    ip(
        ns,
        &[
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ],
    )?;
    if let Some(a) = host_address {
        ip(ns, &["address", "add", a, "dev", bridge])?;
    }
    ip(ns, &["link", "set", bridge, "up"])
}

/// A tap on `bridge`, owned by the host user (`uid`, `gid`) whose sandboxed machine attaches to
/// it without `CAP_NET_ADMIN`.
pub fn add_tap(ns: &str, tap: &str, bridge: &str, uid: u32, gid: u32) -> Result<(), NetnsError> {
    let (u, g) = (uid.to_string(), gid.to_string());
    ip(
        ns,
        &[
            "tuntap", "add", "dev", tap, "mode", "tap", "user", &u, "group", &g,
        ],
    )?;
    ip(ns, &["link", "set", tap, "master", bridge])?;
    ip(ns, &["link", "set", tap, "up"])
}

/// An open handle on the namespace, for `setns` in a child before exec.
pub fn open(ns: &str) -> Result<OwnedFd, NetnsError> {
    std::fs::File::open(format!("/run/netns/{ns}"))
        .map(OwnedFd::from)
        .map_err(|source| NetnsError::Open {
            ns: ns.to_string(),
            source,
        })
}

/// Make `cmd` run inside the namespace (setns between fork and exec).
pub fn enter_on_spawn(cmd: &mut Command, fd: &OwnedFd) {
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    // SAFETY: setns is async-signal-safe; the fd stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The first descriptor [`attach_taps_on_spawn`] gives a child: taps are fds 10, 11, ...
pub const TAP_FD_BASE: i32 = 10;

/// Open each tap (by name, in the namespace the child has entered) on `/dev/net/tun` between
/// fork and exec, as fds [`TAP_FD_BASE`] + i. The child is sandboxed and has no right to open
/// `/dev/net/tun` itself; it gets plain Ethernet frames on these fds (UML's `transport=fd`).
/// Register after [`enter_on_spawn`] and after any `dup2` of a descriptor the child keeps (the
/// fds chosen here may reuse a number that descriptor had in the parent).
pub fn attach_taps_on_spawn(cmd: &mut Command, taps: &[String]) -> Result<(), NetnsError> {
    use std::os::unix::process::CommandExt;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut reqs = Vec::new();
    for t in taps {
        if t.is_empty() || t.len() >= libc::IFNAMSIZ {
            return Err(NetnsError::BadTap(t.clone()));
        }
        let mut name = [0u8; libc::IFNAMSIZ];
        name[..t.len()].copy_from_slice(t.as_bytes());
        reqs.push(IfReq {
            name,
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        });
    }
    // SAFETY: only open, ioctl, dup2 and close (async-signal-safe) run in the child; `reqs` was
    // built before the fork and is moved into the closure, so nothing is allocated there.
    unsafe {
        cmd.pre_exec(move || {
            for (i, r) in reqs.iter().enumerate() {
                let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(fd, TUNSETIFF, r as *const IfReq) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let want = TAP_FD_BASE + i as i32;
                if fd != want {
                    if libc::dup2(fd, want) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
    Ok(())
}
