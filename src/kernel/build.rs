//! The build itself: unpack, configure, make, install modules, write the manifest.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::manifest::{self, Manifest};
use super::source::{self, PrivateApt};
use super::{FRAGMENT, KernelError, PATCHES};
use crate::util;

/// What `umldbg kernel build` was asked for.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The user's kernel tree or tarball; `None` means Debian's newest `linux-source-X.Y`.
    pub source: Option<PathBuf>,
    pub jobs: usize,
    pub cache: PathBuf,
    /// Ask the mirror for a newer source even when a valid build exists.
    pub refresh: bool,
    /// A configuration to start a tree's build directory from (`--source TREE` only).
    pub config: Option<PathBuf>,
}

/// Result of a build request.
#[derive(Debug)]
pub struct BuildOutcome {
    pub manifest: Manifest,
    pub cache_hit: bool,
    pub seconds: f64,
    /// Objects compiled (a tree's incremental build).
    pub compiled: Option<u64>,
    /// What the user should know: options set on top of their configuration, a missing patch.
    pub notes: Vec<String>,
}

enum Source {
    Deb { path: PathBuf, package: String },
    Tarball(PathBuf),
}

impl Source {
    fn identity(&self) -> String {
        match self {
            Source::Deb { path, .. } => {
                format!(
                    "deb:{}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                )
            }
            Source::Tarball(p) => format!("path:{}", p.display()),
        }
    }
}

/// Fragment lines as (option, wanted value).
pub fn fragment_options(text: &str) -> Vec<(String, char)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_string(), v.trim().chars().next()?))
        })
        .collect()
}

/// Options whose final value differs from what the fragment asked for.
pub fn config_mismatches(fragment: &[(String, char)], config: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for (name, want) in fragment {
        let key = format!("CONFIG_{name}=");
        let got = config
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.chars().next());
        let got = got.unwrap_or('n');
        if got != *want {
            bad.push(format!("{name}={got} (wanted {want})"));
        }
    }
    bad
}

/// What a build tells its caller while it runs; the caller draws it (the command line: a bar
/// on a terminal, lines otherwise). The library itself never writes to the terminal.
#[derive(Debug, Clone, Copy)]
pub enum BuildEvent<'a> {
    /// A phase begins: `source`, `unpack`, `patch`, `configure`, `build`, `modules`.
    Phase(&'a str),
    /// kbuild's steps so far, and about how many the build takes (from the last build).
    Steps { done: u64, total: u64 },
    /// Options the configuration did not take as the fragment asked.
    ConfigMismatch(&'a [String]),
    /// Another build of the same tree holds its lock (the path); this one waits for it.
    Waiting(&'a Path),
    /// The build is over (built, or answered from the cache).
    Done,
}

/// The caller's callback, handed through the build's steps.
#[derive(Clone, Copy)]
pub(super) struct Progress<'a>(pub(super) &'a dyn Fn(BuildEvent));

impl Progress<'_> {
    pub(super) fn phase(&self, name: &str) {
        (self.0)(BuildEvent::Phase(name))
    }
    fn steps(&self, done: u64, total: u64) {
        (self.0)(BuildEvent::Steps { done, total })
    }
    pub(super) fn finish(&self) {
        (self.0)(BuildEvent::Done)
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> KernelError {
    move |source| KernelError::Io { what, source }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Free space in MB of the file system holding `dir`.
fn free_mb(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024))
}

/// Build (or find in the cache) the UML kernel; `report` hears of the build's phases and steps.
pub fn build(
    opts: &BuildOptions,
    report: &dyn Fn(BuildEvent),
) -> Result<BuildOutcome, KernelError> {
    let t0 = Instant::now();
    let progress = Progress(report);
    let kernels = manifest::kernels_dir(&opts.cache);
    std::fs::create_dir_all(&kernels).map_err(io(format!("create {}", kernels.display())))?;
    let frag_hash = hex(&Sha256::digest(super::recipe().as_bytes()));

    // A valid build from Debian's source with this fragment answers without asking the network.
    if opts.source.is_none()
        && !opts.refresh
        && let Some(m) = manifest::list(&opts.cache).into_iter().find_map(|e| {
            let m = e.manifest.ok()?;
            let stamp = std::fs::read_to_string(e.dir.join("fragment.sha256")).ok()?;
            (m.source.starts_with("deb:") && stamp.trim() == frag_hash).then_some(m)
        })
    {
        return Ok(BuildOutcome {
            manifest: m,
            cache_hit: true,
            seconds: t0.elapsed().as_secs_f64(),
            compiled: None,
            notes: Vec::new(),
        });
    }

    let src = match &opts.source {
        Some(p) => {
            let p = std::fs::canonicalize(p).map_err(|_| KernelError::NotATree(p.clone()))?;
            if p.is_dir() {
                // A tree is built where it is, with `make O=` (see tree.rs).
                return super::tree::build_tree(opts, &p, report);
            } else {
                let name = p.to_string_lossy();
                if !(name.contains(".tar")) {
                    return Err(KernelError::NotATree(p));
                }
                Source::Tarball(p)
            }
        }
        None => {
            progress.phase("source");
            let mirror = source::system_mirror()?;
            let apt = PrivateApt::new(&opts.cache, &mirror)?;
            apt.update()?;
            let (package, _) = apt.newest_source_package()?;
            let path = apt.download(&package, &opts.cache.join("downloads"))?;
            Source::Deb { path, package }
        }
    };

    let key_hash = hex(&Sha256::digest(
        format!("{}\n{}", src.identity(), super::recipe()).as_bytes(),
    ));
    let key = format!("uml-{}", &key_hash[..16]);
    let dir = kernels.join(&key);
    if let Ok(m) = Manifest::read(&dir)
        && m.check().is_ok()
    {
        progress.finish();
        return Ok(BuildOutcome {
            manifest: m,
            cache_hit: true,
            seconds: t0.elapsed().as_secs_f64(),
            compiled: None,
            notes: Vec::new(),
        });
    }

    // Only this key's own unfinished directory is removed; other builds stay as they are.
    if let Some(free) = free_mb(&kernels) {
        let need = 6000;
        if free < need {
            return Err(KernelError::DiskFull {
                dir: kernels.clone(),
                free_mb: free,
                need_mb: need,
            });
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(io(format!("remove unfinished {}", dir.display())))?;
    }
    let tree = dir.join("build");
    std::fs::create_dir_all(&tree).map_err(io(format!("create {}", tree.display())))?;
    let log_path = dir.join("build.log");

    progress.phase("unpack");
    match &src {
        Source::Deb { path, package } => {
            let ver = package.trim_start_matches("linux-source-");
            let script = format!(
                "set -o pipefail; dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./usr/src/linux-source-{ver}.tar.xz | tar -xJ -C \"$2\" --strip-components=1"
            );
            let mut c = Command::new("bash");
            c.args(["-c", &script, "unpack"]).arg(path).arg(&tree);
            util::run(&mut c).map_err(|e| KernelError::Step {
                step: "unpack the source package",
                source: e,
            })?;
        }
        Source::Tarball(p) => {
            let mut c = Command::new("tar");
            c.arg("-xf")
                .arg(p)
                .arg("-C")
                .arg(&tree)
                .arg("--strip-components=1");
            util::run(&mut c).map_err(|e| KernelError::Step {
                step: "unpack the tarball",
                source: e,
            })?;
        }
    }
    let v = source::tree_version(&tree)?;
    source::check_version(v, &src.identity())?;
    progress.phase("patch");
    for (name, text) in PATCHES {
        apply_patch(&tree, name, text)?;
    }
    if tree.join(".config").exists() {
        make(&tree, &["mrproper"], 1, &log_path, "make mrproper", None)?;
    }

    progress.phase("configure");
    make(&tree, &["defconfig"], 1, &log_path, "make defconfig", None)?;
    let wanted = fragment_options(FRAGMENT);
    let mut c = Command::new(tree.join("scripts/config"));
    c.current_dir(&tree).args(["--file", ".config"]);
    for (name, val) in &wanted {
        match val {
            'y' => c.args(["--enable", name]),
            'm' => c.args(["--module", name]),
            _ => c.args(["--disable", name]),
        };
    }
    util::run(&mut c).map_err(|e| KernelError::Step {
        step: "scripts/config",
        source: e,
    })?;
    make(
        &tree,
        &["olddefconfig"],
        1,
        &log_path,
        "make olddefconfig",
        None,
    )?;
    let config =
        std::fs::read_to_string(tree.join(".config")).map_err(io("read .config".into()))?;
    let bad = config_mismatches(&wanted, &config);
    if !bad.is_empty() {
        progress.0(BuildEvent::ConfigMismatch(&bad));
    }

    progress.phase("build");
    let estimate = previous_step_count(&kernels).unwrap_or(3200);
    let steps = make(
        &tree,
        &["all"],
        opts.jobs.max(1),
        &log_path,
        "make (linux and modules)",
        Some((&progress, estimate)),
    )?;
    let _ = std::fs::write(kernels.join("last-step-count"), steps.to_string());

    progress.phase("modules");
    let modroot = dir.join("modroot");
    let arg = format!("INSTALL_MOD_PATH={}", modroot.display());
    make(
        &tree,
        &["modules_install", &arg],
        1,
        &log_path,
        "make modules_install",
        None,
    )?;
    let out = Command::new("make")
        .current_dir(&tree)
        .args(["-s", "ARCH=um", "kernelrelease"])
        .output()
        .map_err(io("make kernelrelease".into()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let linux = tree.join("linux");
    let build_id = super::file_build_id(&linux)?;
    let m = Manifest {
        modules_dir: modroot.join("lib/modules").join(&version),
        version,
        linux,
        build_dir: tree.clone(),
        build_id,
        config_hash: hex(&Sha256::digest(config.as_bytes())),
        source: src.identity(),
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    std::fs::write(dir.join("fragment.sha256"), &frag_hash)
        .map_err(io("write fragment stamp".into()))?;
    m.write(&dir)?;
    progress.finish();
    Ok(BuildOutcome {
        manifest: m,
        cache_hit: false,
        seconds: t0.elapsed().as_secs_f64(),
        compiled: None,
        notes: Vec::new(),
    })
}

/// Apply one patch; a tree that already has it (a user's patched tree) is fine.
fn patch_failed(name: &str, out: &std::process::Output) -> KernelError {
    KernelError::Patch {
        name: name.to_string(),
        reason: String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .take(2)
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

fn apply_patch(tree: &Path, name: &str, text: &str) -> Result<(), KernelError> {
    let run = |extra: &[&str]| -> std::io::Result<std::process::Output> {
        let mut child = Command::new("patch")
            .current_dir(tree)
            .args(["-p1", "--batch", "--silent", "--fuzz=0"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())?;
        child.wait_with_output()
    };
    let io_err = |e: std::io::Error| KernelError::Io {
        what: format!("run patch for {name} (apt-get install patch)"),
        source: e,
    };
    // `--forward` refuses a patch that is already in (a reused tree); `--dry-run` first so that a
    // patch that does not fit leaves no half-applied files behind. A plain `--reverse` dry run is
    // no test for "already applied": patch exits 0 on an unpatched tree ("Unreversed patch
    // detected! Ignoring -R."), so only a forced reverse counts.
    let forward = run(&["--dry-run", "--forward"]).map_err(io_err)?;
    if !forward.status.success() {
        if run(&["--dry-run", "--reverse", "--force"])
            .map_err(io_err)?
            .status
            .success()
        {
            return Ok(());
        }
        return Err(patch_failed(name, &forward));
    }
    let out = run(&["--forward"]).map_err(io_err)?;
    if !out.status.success() {
        return Err(patch_failed(name, &out));
    }
    Ok(())
}

fn previous_step_count(kernels: &Path) -> Option<u64> {
    std::fs::read_to_string(kernels.join("last-step-count"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Run `make ARCH=um TARGET` in the tree, appending to the log; count kbuild's step lines.
pub(super) fn make(
    tree: &Path,
    targets: &[&str],
    jobs: usize,
    log_path: &Path,
    step: &'static str,
    progress: Option<(&Progress, u64)>,
) -> Result<u64, KernelError> {
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(io(format!("open {}", log_path.display())))?;
    let mut child = Command::new("make")
        .current_dir(tree)
        .arg("ARCH=um")
        .arg(format!("-j{jobs}"))
        .args(targets)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(
            "run make (is build-essential installed? run scripts/setup.sh)".into(),
        ))?;
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.push(l);
        }
        lines
    });
    let mut steps = 0u64;
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        let _ = writeln!(log, "{line}");
        if line.starts_with("  ") && line.len() > 10 {
            steps += 1;
            if let Some((p, total)) = progress {
                p.steps(steps, total);
            }
        }
    }
    let status = child.wait().map_err(io("wait for make".into()))?;
    let err_lines = err_thread.join().unwrap_or_default();
    for l in &err_lines {
        let _ = writeln!(log, "{l}");
    }
    if !status.success() {
        let tail: Vec<&str> = err_lines.iter().rev().take(3).map(String::as_str).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(KernelError::Make {
            step,
            log: log_path.to_path_buf(),
            tail: tail.join(" | "),
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The regression of session 1: an unpatched tree was taken for a patched one.
    #[test]
    fn a_patch_goes_in_once_and_a_misfit_is_refused() {
        let dir = std::env::temp_dir().join(format!("umldbg-patch-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/f.c"), "one\ntwo\nthree\n").unwrap();
        let diff = "--- a/a/f.c\n+++ b/a/f.c\n@@ -1,3 +1,4 @@\n one\n two\n+added\n three\n";
        apply_patch(&dir, "t.patch", diff).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a/f.c")).unwrap(),
            "one\ntwo\nadded\nthree\n"
        );
        // Applied already: nothing changes and it is no error.
        apply_patch(&dir, "t.patch", diff).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a/f.c")).unwrap(),
            "one\ntwo\nadded\nthree\n"
        );
        std::fs::write(dir.join("a/f.c"), "something\nelse\n").unwrap();
        let e = apply_patch(&dir, "t.patch", diff).unwrap_err().to_string();
        assert!(e.contains("t.patch"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("a/f.c")).unwrap(),
            "something\nelse\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fragment_parses_and_checks() {
        let frag = fragment_options(FRAGMENT);
        assert!(
            frag.iter()
                .any(|(k, v)| k == "IP_NF_TARGET_REJECT" && *v == 'm')
        );
        assert!(
            frag.iter()
                .any(|(k, v)| k == "DEBUG_INFO_REDUCED" && *v == 'n')
        );
        let cfg = "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n";
        let want = vec![
            ("A".into(), 'y'),
            ("B".into(), 'y'),
            ("C".into(), 'n'),
            ("D".into(), 'm'),
        ];
        assert_eq!(
            config_mismatches(&want, cfg),
            vec!["B=m (wanted y)", "D=n (wanted m)"]
        );
    }
}
