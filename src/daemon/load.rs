//! `umldbg load`: find a module file on the host, load it in the guest (dependencies first), and
//! read back where the guest placed it.
//!
//! The file may sit anywhere on the host, also where the guest cannot see it (the guest mounts
//! its own tmpfs over /tmp and /run): such a file is copied to a stage directory under the cache,
//! which the guest sees through its read-only hostfs root.

use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use super::protocol::Response;
use super::session::{LoadedSymbols, Msg};
use super::{GuestConsole, GuestShell};
use crate::guest::modules::{self, GuestModule};

pub use crate::guest::load::{Resolved, exec, load_in_guest, load_in_guest_on, resolve};

// ---------------------------------------------------------------------------------------------
// `load --replace FILE.ko` and `load --build DIR`: a newer build takes a loaded module's place.
//
// The job runs beside the session task (the console work blocks, and the module loader's
// internal stops must be served meanwhile) and asks the session, which owns gdb, for the three
// things only it can do: take the module's breakpoints out, give gdb the new symbols, and set
// the breakpoints again by their location.

/// A breakpoint taken out of a module's old code, to be set again in the new code.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MovedBreakpoint {
    /// Its number before the swap.
    pub id: u32,
    /// What the user asked for (`reject_tg`, `ipt_REJECT.c:40`).
    pub location: String,
    pub cond: Option<String>,
    pub func: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Where a moved breakpoint landed in the new code, or why it could not be placed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placement {
    pub old: MovedBreakpoint,
    /// The new breakpoint's number, function, file and line.
    pub placed: Option<Placed>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Placed {
    pub id: u32,
    pub func: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Placement {
    /// The line number moved (or the file changed): the code above it changed.
    pub fn moved(&self) -> bool {
        self.placed
            .as_ref()
            .is_some_and(|p| p.line != self.old.line || p.file != self.old.file)
    }
}

/// What a job asks of the session task.
pub enum Op {
    /// Delete the user breakpoints whose code is in module `module` (and forget their journal
    /// entries: that memory goes with the module) and say what they were.
    TakeBreakpoints {
        module: String,
        reply: oneshot::Sender<Result<Vec<MovedBreakpoint>, String>>,
    },
    /// Give gdb the symbols of `file` at the sections the guest lists for the module.
    AddSymbols {
        module: GuestModule,
        file: PathBuf,
        reply: oneshot::Sender<Result<LoadedSymbols, String>>,
    },
    /// The end of a swap, in one stop of the machine: the symbols of the module now loaded
    /// (`None`: none, or no file for them), then the breakpoints set again by their location.
    /// Also ends the swap that [`Op::TakeBreakpoints`] began.
    Install {
        symbols: Option<(GuestModule, PathBuf)>,
        bps: Vec<MovedBreakpoint>,
        reply: oneshot::Sender<Installed>,
    },
}

/// What [`Op::Install`] did: the symbols (if it was given a file) and where the breakpoints went.
pub type Installed = (Option<Result<LoadedSymbols, String>>, Vec<Placement>);

/// Why a module swap (`load --replace`, `load --build`) or its build did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(
        "{umid} runs {}, which is not a kernel in the cache {}: build the module against that kernel's build tree yourself and `umldbg load --replace FILE.ko`",
        image.display(),
        cache.display()
    )]
    NotCachedKernel {
        umid: String,
        image: PathBuf,
        cache: PathBuf,
    },
    #[error("internal: {0}")]
    Internal(#[source] tokio::task::JoinError),
    #[error("the session is over")]
    SessionOver,
    #[error("the session ended during the swap")]
    SessionEnded,
    /// The session's answer (gdb's words, or the symbols it could not give).
    #[error("{0}")]
    Session(String),
    #[error(transparent)]
    Load(#[from] crate::guest::load::LoadError),
    #[error(transparent)]
    Shell(#[from] crate::guest::shell::ShellError),
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copy {} to {}: {source}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest does not list module {0} after loading it")]
    NotListed(String),
    #[error("{}: {source}: give the directory of the module's source and Makefile", dir.display())]
    SourceDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} has no Makefile or Kbuild: an out-of-tree module needs one (e.g. `obj-m += mymod.o`)",
        .0.display()
    )]
    NoMakefile(PathBuf),
    #[error("run make: {0} (install build-essential)")]
    Make(#[source] std::io::Error),
    #[error(
        "the module in {} does not build: {why} (make -C {} M={} ARCH=um modules); the machine keeps running the module it has",
        dir.display(),
        build_dir.display(),
        dir.display()
    )]
    DoesNotBuild {
        dir: PathBuf,
        build_dir: PathBuf,
        why: String,
    },
    /// The swap's report: what failed, and what runs now.
    #[error("{0}")]
    NotReplaced(String),
    #[error("make built no module in {}: does its Makefile say `obj-m += NAME.o`?", .0.display())]
    NothingBuilt(PathBuf),
}

/// What a replace job needs from the session, copied out of it.
pub struct JobContext {
    pub tx: mpsc::Sender<Msg>,
    pub console: GuestConsole,
    pub umid: String,
    pub cache: PathBuf,
    pub modules_dir: Option<PathBuf>,
    pub search: Vec<PathBuf>,
    /// The kernel image the machine runs: `--build` builds against its cached build tree.
    pub image: PathBuf,
}

/// A module file, or a directory to build modules in first.
pub enum JobInput {
    File(String),
    Build(PathBuf),
}

/// Run a replace job and answer the request.
pub async fn run_job(ctx: JobContext, input: JobInput, reply: oneshot::Sender<Response>) {
    let r = job(&ctx, input).await;
    let _ = reply.send(match r {
        Ok((text, data)) => Response::ok_data(text, data),
        Err(e) => Response::err(e.to_string()),
    });
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SwapError> + Send + 'static,
) -> Result<T, SwapError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(SwapError::Internal)?
}

async fn ask<T>(
    tx: &mpsc::Sender<Msg>,
    make: impl FnOnce(oneshot::Sender<T>) -> Op,
) -> Result<T, SwapError> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(Msg::Op(make(rtx)))
        .await
        .map_err(|_| SwapError::SessionOver)?;
    rrx.await.map_err(|_| SwapError::SessionEnded)
}

async fn job(ctx: &JobContext, input: JobInput) -> Result<(String, serde_json::Value), SwapError> {
    let (files, built) = match input {
        JobInput::File(f) => (vec![f], None),
        JobInput::Build(dir) => {
            let m = crate::kernel::manifest::find_by_image(&ctx.cache, &ctx.image).ok_or_else(
                || SwapError::NotCachedKernel {
                    umid: ctx.umid.clone(),
                    image: ctx.image.clone(),
                    cache: ctx.cache.clone(),
                },
            )?;
            let d = dir.clone();
            let t0 = std::time::Instant::now();
            let kos = blocking(move || build_module(&d, &m.build_dir)).await?;
            let secs = t0.elapsed().as_secs_f64();
            let names: Vec<String> = kos.iter().map(|p| p.display().to_string()).collect();
            (names, Some((dir, secs)))
        }
    };
    let mut texts = Vec::new();
    let mut datas = Vec::new();
    if let Some((dir, secs)) = &built {
        texts.push(format!(
            "built {} in {}: {:.1}s",
            files
                .iter()
                .map(|f| Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", "),
            dir.display(),
            secs
        ));
    }
    for f in files {
        let (t, d) = replace_one(ctx, &f).await?;
        texts.push(t);
        datas.push(d);
    }
    Ok((
        texts.join("\n"),
        serde_json::json!({ "modules": datas, "built": built.map(|(d, s)| serde_json::json!({"dir": d, "seconds": s})) }),
    ))
}

/// The module's file name in the stage directory: one per build, so that the build that runs
/// stays there to be put back if its successor does not load.
fn staged_name(name: &str, build_id: Option<&str>) -> String {
    match build_id {
        Some(id) => format!("{name}-{}.ko", &id[..12.min(id.len())]),
        None => format!("{name}.ko"),
    }
}

async fn replace_one(
    ctx: &JobContext,
    arg: &str,
) -> Result<(String, serde_json::Value), SwapError> {
    let r = resolve(arg, &ctx.search, ctx.modules_dir.as_deref())?;
    let bytes = std::fs::read(&r.file).map_err(|source| SwapError::File {
        path: r.file.clone(),
        source,
    })?;
    let new_id = crate::kmod::elf_build_id(&bytes);
    let console = ctx.console.clone();
    let umid = ctx.umid.clone();
    let name = r.name.clone();
    let listing = blocking(move || {
        Ok(
            exec(&console, &umid, &modules::listing_script_for(&name), 30)
                .map(|t| modules::parse_listing(&t))?,
        )
    })
    .await?;
    let before = listing
        .into_iter()
        .find(|m| modules::same_module_name(&m.name, &r.name));
    let file = r.file.clone();
    let Some(before) = before else {
        // Nothing to replace: a plain load.
        let (console, umid, cache, rr) = (
            ctx.console.clone(),
            ctx.umid.clone(),
            ctx.cache.clone(),
            r.clone(),
        );
        let mods =
            blocking(move || Ok(load_in_guest_on(&console, &umid, &rr, &cache, None)?)).await?;
        let m = mods
            .into_iter()
            .find(|m| modules::same_module_name(&m.name, &r.name))
            .ok_or_else(|| SwapError::NotListed(r.name.clone()))?;
        let ls = ask(&ctx.tx, |reply| Op::AddSymbols {
            module: m,
            file: file.clone(),
            reply,
        })
        .await?
        .map_err(SwapError::Session)?;
        return Ok((
            format!(
                "{}: loaded (it was not loaded): .text {:#x}, symbols from {}",
                ls.name,
                ls.text,
                ls.file.display()
            ),
            serde_json::json!({"name": ls.name, "action": "loaded", "symbols": ls}),
        ));
    };
    if before.build_id.is_some() && before.build_id == new_id {
        let ls = ask(&ctx.tx, |reply| Op::AddSymbols {
            module: before.clone(),
            file: file.clone(),
            reply,
        })
        .await?
        .map_err(SwapError::Session)?;
        return Ok((
            format!(
                "{}: the guest runs this build already (build-id {}): nothing to replace; symbols from {}",
                ls.name,
                short_id(new_id.as_deref()),
                ls.file.display()
            ),
            serde_json::json!({"name": ls.name, "action": "unchanged", "symbols": ls}),
        ));
    }

    // Stage the new build beside the old one.
    let stage = crate::lab::state::machine_stage_dir(&ctx.cache, &ctx.umid);
    std::fs::create_dir_all(&stage).map_err(|source| SwapError::File {
        path: stage.clone(),
        source,
    })?;
    let staged = stage.join(staged_name(&r.name, new_id.as_deref()));
    std::fs::copy(&r.file, &staged).map_err(|source| SwapError::Copy {
        from: r.file.clone(),
        to: staged.clone(),
        source,
    })?;
    let installed_old = ctx
        .modules_dir
        .as_deref()
        .and_then(|md| modules::find_module_file(&r.name, &[], md))
        .filter(|f| {
            std::fs::read(f)
                .ok()
                .and_then(|b| crate::kmod::elf_build_id(&b))
                == before.build_id
        });
    // The running build's staged copy: put there by an earlier replace (named by build-id) or
    // by a plain `load` (named by the module).
    let old_staged = [
        stage.join(staged_name(&r.name, before.build_id.as_deref())),
        stage.join(staged_name(&r.name, None)),
    ]
    .into_iter()
    .find(|p| {
        *p != staged
            && before.build_id.is_some()
            && std::fs::read(p)
                .ok()
                .and_then(|b| crate::kmod::elf_build_id(&b))
                == before.build_id
    });
    let put_back = match (&installed_old, &old_staged) {
        (Some(_), _) => PutBack::Modprobe,
        (None, Some(p)) => PutBack::Insmod(p.clone()),
        (None, None) => PutBack::None,
    };

    let moved = ask(&ctx.tx, |reply| Op::TakeBreakpoints {
        module: before.name.clone(),
        reply,
    })
    .await?
    .map_err(SwapError::Session)?;
    let t_swap = std::time::Instant::now();
    let script = swap_script(&before.name, &staged, &r.depends, &put_back);
    let (console, umid) = (ctx.console.clone(), ctx.umid.clone());
    let out = blocking(move || Ok(console.run(&script, 120).map(|(_, out)| out)?)).await;
    let (outcome, listing) = match out {
        Ok(o) => (parse_swap(&o), modules::parse_listing(&o)),
        Err(e) => {
            // Whatever happened, the module now in the guest (new, old put back, or none) gets
            // its symbols and the breakpoints go back where its code is: ask what is there.
            let (console, umid2, n) = (ctx.console.clone(), umid.clone(), before.name.clone());
            let listing = blocking(move || {
                Ok(exec(&console, &umid2, &modules::listing_script_for(&n), 30)
                    .map(|t| modules::parse_listing(&t))?)
            })
            .await
            .unwrap_or_default();
            let outcome = SwapOutcome {
                failure: Some(format!("the swap script did not finish: {e}")),
                ..Default::default()
            };
            (outcome, listing)
        }
    };
    let after = listing
        .into_iter()
        .find(|m| modules::same_module_name(&m.name, &r.name));
    let symbols_from = after.as_ref().and_then(|a| {
        let f = if a.build_id.is_some() && a.build_id == new_id {
            // The user's file (the staged copy has the same bytes): the path the user knows.
            Some(r.file.clone())
        } else if let Some(f) = &installed_old {
            Some(f.clone())
        } else if let PutBack::Insmod(p) = &put_back {
            Some(p.clone())
        } else {
            None
        };
        f.map(|f| (a.clone(), f))
    });
    // Without the module, the breakpoints have nowhere to go (they are reported as such).
    let bps = if after.is_some() {
        moved.clone()
    } else {
        Vec::new()
    };
    let (sym, placements) = ask(&ctx.tx, |reply| Op::Install {
        symbols: symbols_from,
        bps,
        reply,
    })
    .await?;
    let (symbols, symbol_error) = match sym {
        Some(Ok(ls)) => (Some(ls), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let swap_seconds = t_swap.elapsed().as_secs_f64();
    let replaced = outcome.failure.is_none();
    if replaced {
        // The build that ran before is not needed to fall back on any more.
        if let Some(p) = &old_staged {
            let _ = std::fs::remove_file(p);
        }
    } else {
        let _ = std::fs::remove_file(&staged);
    }
    let mut lines = Vec::new();
    if let Some(f) = &outcome.failure {
        let mut msg = format!("{}: not replaced: {f}", r.name);
        match (&after, outcome.old_back) {
            (Some(_), true) => msg.push_str(&format!(
                "; the previous build runs again{}",
                if outcome.rules.is_empty() {
                    String::new()
                } else {
                    " with its rules restored".into()
                }
            )),
            (Some(_), false) => msg.push_str("; the previous build still runs"),
            (None, _) => msg.push_str(&format!(
                "; {} is not loaded now (the previous build could not be put back: {})",
                r.name,
                put_back.describe()
            )),
        }
        lines.push(msg);
    } else {
        let ls = symbols.as_ref();
        lines.push(format!(
            "{}: replaced in {swap_seconds:.1}s (build-id {} -> {}): .text {}, symbols from {}",
            r.name,
            short_id(before.build_id.as_deref()),
            short_id(new_id.as_deref()),
            ls.map(|l| format!("{:#x}", l.text))
                .unwrap_or_else(|| "?".into()),
            ls.map(|l| l.file.display().to_string())
                .unwrap_or_else(|| "nowhere".into()),
        ));
    }
    if !outcome.rules.is_empty() {
        lines.push(format!(
            "  netfilter rules set aside and restored: {}",
            outcome
                .rules
                .iter()
                .map(|(f, n)| format!("{} ({n} rule{})", flavour_name(f), plural(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for f in &outcome.restore_failed {
        lines.push(format!("  warning: restoring rules failed: {f}"));
    }
    if let Some(e) = &symbol_error {
        lines.push(format!(
            "  warning: no symbols for the module now loaded: {e}"
        ));
    }
    if !moved.is_empty() {
        lines.push(format!(
            "  {}",
            placements_line(&moved, &placements, replaced)
        ));
    }
    let data = serde_json::json!({
        "name": r.name,
        "action": if replaced { "replaced" } else { "failed" },
        "old_build_id": before.build_id,
        "new_build_id": new_id,
        "rules": outcome.rules.iter().map(|(f, n)| serde_json::json!({"family": f, "rules": n})).collect::<Vec<_>>(),
        "breakpoints": placements,
        "symbols": symbols,
        "error": outcome.failure,
        "seconds": swap_seconds,
    });
    if replaced {
        Ok((lines.join("\n"), data))
    } else {
        Err(SwapError::NotReplaced(lines.join("\n")))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn short_id(id: Option<&str>) -> String {
    id.map(|i| i[..12.min(i.len())].to_string())
        .unwrap_or_else(|| "none".into())
}

/// The one line that says where the breakpoints went.
pub fn placements_line(
    moved: &[MovedBreakpoint],
    placements: &[Placement],
    replaced: bool,
) -> String {
    let at = |f: &Option<String>, l: Option<u32>| match (f, l) {
        (Some(f), Some(l)) => format!("{f}:{l}"),
        _ => "?".into(),
    };
    let mut set = Vec::new();
    let mut not = Vec::new();
    for p in placements {
        match &p.placed {
            Some(n) => {
                let how = if p.moved() {
                    format!(
                        "moved from line {}",
                        p.old.line.map(|l| l.to_string()).unwrap_or("?".into())
                    )
                } else {
                    "same line".into()
                };
                set.push(format!(
                    "{} {} -> {} at {} ({how})",
                    p.old.id,
                    p.old.location,
                    n.id,
                    at(&n.file, n.line)
                ));
            }
            None => not.push(format!(
                "{} {} ({})",
                p.old.id,
                p.old.location,
                p.error.as_deref().unwrap_or("?")
            )),
        }
    }
    // Taken out but never tried (the module did not come back).
    for m in moved {
        if !placements.iter().any(|p| p.old.id == m.id) {
            not.push(format!(
                "{} {} (the module is not loaded)",
                m.id, m.location
            ));
        }
    }
    let mut s = String::from(if replaced {
        "breakpoints set again in the new code: "
    } else {
        "breakpoints set again in the code that runs: "
    });
    s.push_str(
        if set.is_empty() {
            "none".into()
        } else {
            set.join("; ")
        }
        .as_str(),
    );
    if !not.is_empty() {
        s.push_str("; could not be placed: ");
        s.push_str(&not.join("; "));
    }
    s
}

/// How the build that runs now is put back if the new one does not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutBack {
    /// It is the kernel's installed module.
    Modprobe,
    /// Its staged copy (umldbg loaded it).
    Insmod(PathBuf),
    /// Loaded by other means from a file umldbg does not have.
    None,
}

impl PutBack {
    fn describe(&self) -> String {
        match self {
            PutBack::Modprobe => "modprobe failed".into(),
            PutBack::Insmod(p) => format!("insmod {} failed", p.display()),
            PutBack::None => "umldbg has no copy of it".into(),
        }
    }
}

/// What the guest side of a swap reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SwapOutcome {
    /// Rule sets set aside and restored: (flavour, number of rules).
    pub rules: Vec<(String, usize)>,
    /// Why the new build does not run, for the user.
    pub failure: Option<String>,
    /// The previous build was loaded again after the new one failed.
    pub old_back: bool,
    pub restore_failed: Vec<String>,
}

fn flavour_name(f: &str) -> &'static str {
    match f {
        "v4-legacy" => "iptables-legacy",
        "v6-legacy" => "ip6tables-legacy",
        "v4-nft" => "iptables-nft",
        "v6-nft" => "ip6tables-nft",
        "nft" => "nft",
        _ => "rules",
    }
}

/// The guest side of a swap, one script so that the module is out of service as briefly as
/// possible: if dependent modules hold it, say which and stop; if its reference count is not
/// zero, set aside every netfilter rule set (iptables-legacy and iptables-nft for IPv4 and IPv6,
/// or nft's ruleset), wait for the count to drop; if it does not, something else holds it:
/// restore and say so. Then `rmmod`, `insmod` the new build (putting the old one back if the new
/// one fails), and restore the rules. Lines starting `swap:` report to [`parse_swap`]; the
/// module's listing (see `modules.rs`) follows them, whatever happened.
pub fn swap_script(name: &str, staged: &Path, depends: &[String], put_back: &PutBack) -> String {
    let q = crate::lab::init::sh_quote;
    let put_back = match put_back {
        PutBack::Modprobe => format!("modprobe {}", q(name)),
        PutBack::Insmod(p) => format!("insmod {}", q(&p.display().to_string())),
        PutBack::None => "false".into(),
    };
    // Names passed is_module_name already; quoted all the same, as every guest shell word is.
    let deps = depends.iter().map(|d| q(d)).collect::<Vec<_>>().join(" ");
    // Process creation is slow in a guest (a few milliseconds to tens of milliseconds each, more
    // on a loaded host): what the shell can do itself (globs, `case`, `read` on ordinary files,
    // counting) it does, and the module's listing follows in the same run.
    format!(
        r#"n={name}; new={new}
m=/sys/module/$n
d=/tmp/umldbg-swap.$$
saved=""
count() {{
  c=0
  while IFS= read -r l; do
    case $1 in
      nft) case $l in *table*|*chain*|*type*|*policy*|*"}}"*|"") ;; *) c=$((c+1)) ;; esac ;;
      *) case $l in "-A "*|"["*"] -A "*) c=$((c+1)) ;; esac ;;
    esac
  done < "$d.$1"
  echo $c
}}
# Empty tables, one per table of a save: restoring them flushes every rule in one process.
empty() {{ while IFS= read -r l; do case $l in "*"*) printf '%s\nCOMMIT\n' "$l" ;; esac; done < "$d.$1"; }}
aside() {{
  # procfs files have no size: read them.
  if [ -n "$(cat /proc/net/ip_tables_names /proc/net/ip6_tables_names 2>/dev/null)" ]; then
    for f in v4 v6; do
      c=iptables-legacy; [ $f = v6 ] && c=ip6tables-legacy
      command -v $c-save >/dev/null || continue
      $c-save -c > "$d.$f-legacy" 2>/dev/null || continue
      [ -s "$d.$f-legacy" ] || continue
      saved="$saved $f-legacy"; empty $f-legacy | $c-restore
    done
  fi
  if [ -d /sys/module/nf_tables ]; then
    for f in v4 v6; do
      c=iptables-nft; [ $f = v6 ] && c=ip6tables-nft
      command -v $c-save >/dev/null || continue
      $c-save -c > "$d.$f-nft" 2>/dev/null || continue
      [ "$(count $f-nft)" != 0 ] || continue
      saved="$saved $f-nft"; empty $f-nft | $c-restore
    done
    case "$saved" in *-nft*) ;; *)
      if command -v nft >/dev/null && nft list ruleset > "$d.nft" 2>/dev/null && [ -s "$d.nft" ]; then
        saved="$saved nft"; nft flush ruleset
      fi ;;
    esac
  fi
}}
restore() {{
  for s in $saved; do
    case $s in
      v4-legacy) iptables-legacy-restore -c < "$d.$s" ;;
      v6-legacy) ip6tables-legacy-restore -c < "$d.$s" ;;
      v4-nft) iptables-nft-restore -c < "$d.$s" ;;
      v6-nft) ip6tables-nft-restore -c < "$d.$s" ;;
      nft) nft -f "$d.$s" ;;
    esac 2> "$d.err" || echo "swap:restore-failed $s: $(head -c 300 "$d.err" | tr '\n' ' ')"
  done
}}
report() {{ for s in $saved; do echo "swap:rules $s $(count $s)"; done; }}
swap() {{
  need=""
  for x in {deps}; do [ -d "/sys/module/$x" ] || need="$need $x"; done
  [ -z "$need" ] || modprobe -a $need 2>/dev/null
  h=""
  for x in "$m"/holders/*; do [ -e "$x" ] && h="$h ${{x##*/}}"; done
  if [ -n "$h" ]; then echo "swap:holders$h"; return; fi
  if [ "$(cat "$m/refcnt" 2>/dev/null || echo 0)" != 0 ]; then
    aside
    i=0
    while [ "$(cat "$m/refcnt")" != 0 ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
    r=$(cat "$m/refcnt")
    if [ "$r" != 0 ]; then
      restore
      echo "swap:held $r $(grep "^$n " /proc/modules | head -n1)"
      return
    fi
  fi
  if ! rmmod "$n" 2> "$d.err"; then
    restore; echo "swap:rmmod $(head -c 300 "$d.err" | tr '\n' ' ')"; return
  fi
  if ! insmod "$new" 2> "$d.err"; then
    e=$(head -c 300 "$d.err" | tr '\n' ' ')
    if {put_back} 2>/dev/null; then echo "swap:old-back"; fi
    restore; report; echo "swap:insmod $e"; return
  fi
  restore; report
  echo "swap:ok"
}}
swap
rm -f "$d".*
{listing}"#,
        name = q(name),
        new = q(&staged.display().to_string()),
        listing = modules::listing_script_for(name),
    )
}

/// Read the `swap:` lines of [`swap_script`]'s output.
pub fn parse_swap(out: &str) -> SwapOutcome {
    let mut o = SwapOutcome::default();
    let mut ok = false;
    for line in out.lines() {
        let Some(rest) = line.trim_end().strip_prefix("swap:") else {
            continue;
        };
        let (key, val) = rest.split_once(' ').unwrap_or((rest, ""));
        let val = val.trim();
        match key {
            "ok" => ok = true,
            "rules" => {
                let mut it = val.split_whitespace();
                if let Some(f) = it.next() {
                    let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                    o.rules.push((f.to_string(), n));
                }
            }
            "holders" => {
                o.failure = Some(format!(
                    "module(s) {} depend on it and hold it: remove them first (rmmod {}) and load them again after",
                    val.split_whitespace().collect::<Vec<_>>().join(", "),
                    val
                ))
            }
            "held" => {
                let (count, lsmod) = val.split_once(' ').unwrap_or((val, ""));
                o.failure = Some(format!(
                    "it is in use ({count} reference{}) by something other than netfilter rules (they were set aside and are back): a socket, device or process of the guest holds it{}",
                    if count == "1" { "" } else { "s" },
                    if lsmod.trim().is_empty() {
                        String::new()
                    } else {
                        format!(" (/proc/modules: {})", lsmod.trim())
                    }
                ))
            }
            "rmmod" => o.failure = Some(format!("rmmod failed: {val}")),
            "insmod" => o.failure = Some(format!("the new build does not load: insmod: {val}")),
            "old-back" => o.old_back = true,
            "restore-failed" => o.restore_failed.push(val.to_string()),
            "fail" => o.failure = Some(val.to_string()),
            _ => {}
        }
    }
    if !ok && o.failure.is_none() {
        o.failure = Some(format!(
            "the swap script ended early: {}",
            out.lines().last().unwrap_or("no output")
        ));
    }
    o
}

/// Build the out-of-tree module(s) in `dir` against a kernel build tree; the `.ko` files made,
/// in the order kbuild lists them. A compile error comes back as the compiler's first error.
pub fn build_module(dir: &Path, build_dir: &Path) -> Result<Vec<PathBuf>, SwapError> {
    let dir = std::fs::canonicalize(dir).map_err(|source| SwapError::SourceDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    if !dir.join("Makefile").is_file() && !dir.join("Kbuild").is_file() {
        return Err(SwapError::NoMakefile(dir));
    }
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let out = std::process::Command::new("make")
        .arg("-C")
        .arg(build_dir)
        .arg(format!("M={}", dir.display()))
        .arg("ARCH=um")
        .arg(format!("-j{jobs}"))
        .arg("modules")
        .output()
        .map_err(SwapError::Make)?;
    if !out.status.success() {
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // gcc names the file as make gave it: relative to the module's directory.
        let why = first_compiler_error(&text)
            .map(|e| {
                if e.starts_with('/') {
                    e
                } else {
                    format!("{}/{e}", dir.display())
                }
            })
            .unwrap_or_else(|| {
                let err = String::from_utf8_lossy(&out.stderr);
                err.lines()
                    .filter(|l| !l.trim().is_empty())
                    .rev()
                    .take(2)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | ")
            });
        return Err(SwapError::DoesNotBuild {
            dir,
            build_dir: build_dir.to_path_buf(),
            why,
        });
    }
    let order = std::fs::read_to_string(dir.join("modules.order")).unwrap_or_default();
    let mut kos: Vec<PathBuf> = order
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let p = Path::new(l);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            };
            p.with_extension("ko")
        })
        .filter(|p| p.is_file())
        .collect();
    if kos.is_empty() {
        kos = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ko"))
            .collect();
        kos.sort();
    }
    if kos.is_empty() {
        return Err(SwapError::NothingBuilt(dir));
    }
    Ok(kos)
}

/// The first `file:line:col: error: ...` (or `fatal error`) line of a compiler's output.
pub fn first_compiler_error(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| {
            let mut parts = l.splitn(3, ':');
            let (Some(_file), Some(line), Some(rest)) = (parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            line.chars().all(|c| c.is_ascii_digit())
                && !line.is_empty()
                && (rest.contains(" error: ") || rest.contains(" fatal error: "))
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use crate::guest::load::is_module_name;

    #[test]
    fn module_names_that_could_leave_the_stage_dir_are_refused() {
        assert!(is_module_name("ipt_REJECT") && is_module_name("nf-reject"));
        for bad in [
            "",
            ".",
            "..",
            "../../etc/x",
            "a/b",
            "a b",
            "x;rm -rf /",
            &"m".repeat(56),
        ] {
            assert!(!is_module_name(bad), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn a_swap_with_rules_set_aside_parses() {
        let o = parse_swap("noise\nswap:rules v4-legacy 2\nswap:rules v6-legacy 0\nswap:ok\n");
        assert_eq!(
            o,
            SwapOutcome {
                rules: vec![("v4-legacy".into(), 2), ("v6-legacy".into(), 0)],
                ..Default::default()
            }
        );
    }

    #[test]
    fn swap_failures_say_what_holds_the_module() {
        let o = parse_swap("swap:holders ipt_REJECT nft_reject_ipv4 \n");
        let f = o.failure.unwrap();
        assert!(
            f.contains("ipt_REJECT, nft_reject_ipv4 depend on it"),
            "{f}"
        );
        let o = parse_swap("swap:held 1 mymod 16384 1 - Live 0x0\n");
        let f = o.failure.unwrap();
        assert!(
            f.contains("1 reference") && f.contains("other than netfilter rules"),
            "{f}"
        );
        assert!(f.contains("mymod 16384"), "{f}");
        let o = parse_swap(
            "swap:old-back\nswap:rules v4-legacy 1\nswap:insmod insmod: ERROR: could not insert module x.ko: Invalid module format\n",
        );
        assert!(o.old_back);
        assert!(o.failure.unwrap().contains("Invalid module format"));
        // Cut short (the console gave up): a failure, never a silent success.
        assert!(parse_swap("swap:rules v4-legacy 1\n").failure.is_some());
    }

    #[test]
    fn the_compilers_first_error_is_found() {
        let out = "make[1]: Entering directory '/k'\n  CC [M]  /m/ipt_REJECT.o\n/m/ipt_REJECT.c: In function 'reject_tg':\n/m/ipt_REJECT.c:47:17: error: 'ICMP_PORT_UNREAC' undeclared (first use in this function)\n/m/ipt_REJECT.c:47:17: note: each undeclared identifier is reported only once\n/m/ipt_REJECT.c:50:1: error: expected ';'\nmake[2]: *** [x] Error 1\n";
        assert_eq!(
            first_compiler_error(out).as_deref(),
            Some(
                "/m/ipt_REJECT.c:47:17: error: 'ICMP_PORT_UNREAC' undeclared (first use in this function)"
            )
        );
        assert_eq!(
            first_compiler_error("/m/x.c:3:10: fatal error: nope.h: No such file or directory\n")
                .as_deref(),
            Some("/m/x.c:3:10: fatal error: nope.h: No such file or directory")
        );
        assert_eq!(
            first_compiler_error("make: *** No rule to make target\n"),
            None
        );
    }

    #[test]
    fn the_placements_line_names_moved_and_unplaced_breakpoints() {
        let bp = |id, loc: &str, line| MovedBreakpoint {
            id,
            location: loc.into(),
            cond: None,
            func: Some("reject_tg".into()),
            file: Some("ipt_REJECT.c".into()),
            line: Some(line),
        };
        let moved = vec![
            bp(1, "reject_tg", 31),
            bp(2, "ipt_REJECT.c:47", 47),
            bp(3, "*0x6000", 40),
            bp(4, "x", 1),
        ];
        let placements = vec![
            Placement {
                old: moved[0].clone(),
                placed: Some(Placed {
                    id: 5,
                    func: None,
                    file: Some("ipt_REJECT.c".into()),
                    line: Some(32),
                }),
                error: None,
            },
            Placement {
                old: moved[1].clone(),
                placed: Some(Placed {
                    id: 6,
                    func: None,
                    file: Some("ipt_REJECT.c".into()),
                    line: Some(47),
                }),
                error: None,
            },
            Placement {
                old: moved[2].clone(),
                placed: None,
                error: Some("an address in the old code".into()),
            },
        ];
        assert!(placements[0].moved() && !placements[1].moved());
        let l = placements_line(&moved, &placements, true);
        assert_eq!(
            l,
            "breakpoints set again in the new code: 1 reject_tg -> 5 at ipt_REJECT.c:32 (moved from line 31); 2 ipt_REJECT.c:47 -> 6 at ipt_REJECT.c:47 (same line); could not be placed: 3 *0x6000 (an address in the old code); 4 x (the module is not loaded)"
        );
    }

    #[test]
    fn the_swap_script_quotes_its_paths_and_puts_back_what_it_can() {
        let s = swap_script(
            "ipt_REJECT",
            Path::new("/c/stage/l/m/ipt_REJECT-0123.ko"),
            &["nf_reject_ipv4".into()],
            &PutBack::Modprobe,
        );
        assert!(
            s.starts_with("n=ipt_REJECT; new=/c/stage/l/m/ipt_REJECT-0123.ko\n"),
            "{s}"
        );
        assert!(s.contains("for x in nf_reject_ipv4; do"), "{s}");
        assert!(s.contains("/sys/module/ipt_REJECT/sections"), "{s}");
        assert!(s.contains("if modprobe ipt_REJECT 2>/dev/null"));
        // The swap's report comes before the listing (whose hex dump runs to the end).
        let o = parse_swap("swap:ok\n/sys/module/m/sections/.text:0x1000\nN m\nH\n 04 00\n");
        assert_eq!(o.failure, None);
        let s = swap_script("m", Path::new("/a b/m.ko"), &[], &PutBack::None);
        assert!(s.contains("new='/a b/m.ko'"), "{s}");
        assert!(s.contains("if false 2>/dev/null"));
    }
}
