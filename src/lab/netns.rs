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
    #[error("{0}")]
    Cmd(#[from] CmdError),
    #[error("open /run/netns/{ns}: {source}")]
    Open { ns: String, source: std::io::Error },
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

pub fn add_tap(ns: &str, tap: &str, bridge: &str) -> Result<(), NetnsError> {
    ip(ns, &["tuntap", "add", "dev", tap, "mode", "tap"])?;
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
