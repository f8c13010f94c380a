//! `umldbg serve UMID`: a gdb remote-protocol server on a UML machine's kernel, for any gdb and
//! any IDE. Modules appear as shared libraries; see `umldbg::stub`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

use umldbg::ptrace::runctl::Tracee;
use umldbg::ptrace::runctl::tracer_of;
use umldbg::stub::server::{self, Control, Listen, Listener, ServeError};
use umldbg::stub::target::{MachineInfo, UmlTarget};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The machine's umid, e.g. router-uml-R
    #[arg(value_parser = umldbg::uml::ids::parse_umid)]
    pub umid: String,
    /// TCP address to listen on (loopback unless --allow-remote)
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:1234",
        conflicts_with = "unix"
    )]
    pub listen: SocketAddr,
    /// Listen on a Unix socket instead (gdb: `target remote PATH`)
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Accept a non-loopback --listen address (the protocol has no authentication)
    #[arg(long)]
    pub allow_remote: bool,
    /// Directories searched for module files, before the kernel's installed modules
    #[arg(long = "module-path", value_name = "DIR")]
    pub module_path: Vec<PathBuf>,
    /// Exit when the first client leaves (what IDE tasks use)
    #[arg(long)]
    pub once: bool,
}

/// Block the termination signals in every thread and handle them in one: the current client's
/// session ends cleanly (bytes restored, machine detached) and the server exits.
fn handle_signals(control: Arc<Control>) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("umldbg serve: {sig}: detaching and leaving the machine running");
            control.stop();
        }
    });
}

pub fn run(a: ServeArgs, g: &super::global::Global) -> anyhow::Result<i32> {
    let cache = g.cache.clone();
    // Before any thread exists, so that every thread has it blocked (see server::block_sigchld).
    server::block_sigchld()?;
    let uml_dir = g.uml_dir.clone();
    let (inst, info, warnings) = MachineInfo::discover(&a.umid, &uml_dir, &cache, &a.module_path)
        .with_context(|| format!("serve {}", a.umid))?;
    let pid = inst.pid.get();
    if let Some((t, name)) = tracer_of(pid) {
        bail!(
            "{} (pid {pid}) is already traced by process {t} ({name}): another debugger, or the \
             session of `umldbg attach` (`umldbg detach --umid {}` ends it)",
            a.umid,
            a.umid
        );
    }
    for w in &warnings {
        eprintln!("umldbg serve: warning: {w}");
    }
    let at = match &a.unix {
        Some(p) => Listen::Unix(p.clone()),
        None => Listen::Tcp(a.listen),
    };
    let listener = Listener::bind(&at, a.allow_remote)?;
    let address = listener.address();
    let control = Arc::new(Control::default());
    handle_signals(control.clone());
    let journal = umldbg::ptrace::guard::journal_path(&uml_dir, &a.umid);
    // The kernel's GDB scripts want the image under the name vmlinux (see MachineInfo::vmlinux).
    let vmlinux = info.vmlinux();
    let umid = a.umid.clone();
    let mut make_target = move || -> Result<UmlTarget<Tracee>, ServeError> {
        if let Some((tracer, name)) = tracer_of(pid) {
            return Err(ServeError::TracedByOther {
                umid: umid.clone(),
                tracer,
                name,
            });
        }
        let tracee = Tracee::attach(pid, &journal).map_err(|source| ServeError::Attach {
            umid: umid.clone(),
            pid,
            source,
        })?;
        let mut info = info.clone();
        info.maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        Ok(UmlTarget::new(tracee, info))
    };
    let umid = a.umid.clone();
    println!(
        "umldbg serve: {umid} (pid {pid}) listening on {address}; in gdb: file {}, then target remote {address}",
        vmlinux.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let busy = move |who: &str| {
        format!("umldbg serve: {umid} is already being debugged by {who}; one client at a time")
    };
    server::serve(listener, a.once, control, &mut make_target, busy, |l| {
        eprintln!("umldbg serve: {l}")
    })?;
    Ok(0)
}
