//! One image build: lock, mmdebstrap into a directory, lay the files, run the commands, mke2fs,
//! write the manifest. Whatever fails (a missing package, the mirror, a full disk, a kill) leaves
//! no image and no manifest behind: the build directory is removed and only its log is kept, as
//! `<hash>.failed.log` beside it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::ImageError;
use super::manifest::{self, IMAGE, Manifest};
use super::recipe::Recipe;

/// Free space a build needs under the cache: the unpacked root (up to about 600 MB for the
/// largest built-in) and the image's blocks beside it.
pub const MIN_FREE_MB: u64 = 1536;

/// What `umldbg image build` was asked for.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub cache: PathBuf,
    /// A Debian mirror URI; `None`: the first Debian archive of the machine's apt sources.
    pub mirror: Option<String>,
    /// Build again even when a valid image is cached.
    pub rebuild: bool,
}

/// What a build reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Another process builds the same image; this one waits for it (and then reuses it).
    Waiting(&'a Path),
    /// A new step: `mmdebstrap: downloading packages with apt...`, `ext4`, ...
    Phase(&'a str),
    /// Any other line a tool printed.
    Output(&'a str),
}

/// The result of a build request.
#[derive(Debug)]
pub struct Built {
    pub manifest: Manifest,
    /// The image was in the cache already (possibly built by another process while this one waited).
    pub cached: bool,
    pub seconds: f64,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ImageError {
    move |source| ImageError::Io { what, source }
}

/// Free space in MB of the file system holding `dir`.
fn free_mb(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024))
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
        || Path::new("/sbin").join(tool).is_file()
}

/// Removes a build directory that did not finish, keeping its log beside it.
struct Unfinished {
    dir: PathBuf,
    armed: bool,
}

impl Unfinished {
    fn failed_log(dir: &Path) -> PathBuf {
        dir.with_extension("failed.log")
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::rename(self.dir.join("build.log"), Self::failed_log(&self.dir));
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Build the image of `recipe`, or find it in the cache.
pub fn build(
    recipe: &Recipe,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Built, ImageError> {
    let t0 = Instant::now();
    let images = super::images_dir(&opts.cache);
    let dir = images.join(recipe.hash());
    let cached = |m: Manifest| Built {
        manifest: m,
        cached: true,
        seconds: t0.elapsed().as_secs_f64(),
    };
    if !opts.rebuild
        && let Ok(m) = Manifest::read_valid(&dir)
    {
        return Ok(cached(m));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NotRoot);
    }
    for (tool, package) in [("mmdebstrap", "mmdebstrap"), ("mke2fs", "e2fsprogs")] {
        if !have(tool) {
            return Err(ImageError::MissingTool { tool, package });
        }
    }
    std::fs::create_dir_all(&images).map_err(io(format!("create {}", images.display())))?;

    // One build per image at a time; the lock file stays (removing it would let a third process
    // lock a file the second no longer sees).
    let lock_path = dir.with_extension("lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("open {}", lock_path.display())))?;
    let _lock =
        match nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                progress(Progress::Waiting(&dir));
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(
                    |(_, e)| ImageError::Io {
                        what: format!("lock {}", lock_path.display()),
                        source: e.into(),
                    },
                )?
            }
            Err((_, e)) => {
                return Err(ImageError::Io {
                    what: format!("lock {}", lock_path.display()),
                    source: e.into(),
                });
            }
        };
    if let Ok(m) = Manifest::read_valid(&dir)
        && (!opts.rebuild || m.built_at as f64 >= unix_now() as f64 - t0.elapsed().as_secs_f64())
    {
        // Built by the process this one waited for.
        return Ok(cached(m));
    }

    let mirror = match &opts.mirror {
        Some(m) => m.trim_end_matches('/').to_string(),
        None => crate::kernel::source::system_mirror().map_err(|_| ImageError::NoMirror)?,
    };
    if let Some(free) = free_mb(&images)
        && free < MIN_FREE_MB
    {
        return Err(ImageError::DiskFull {
            dir: images.clone(),
            free_mb: free,
            need_mb: MIN_FREE_MB,
        });
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))?;
    }
    let _ = std::fs::remove_file(Unfinished::failed_log(&dir));
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let mut guard = Unfinished {
        dir: dir.clone(),
        armed: true,
    };
    let log_path = dir.join("build.log");
    let mut log =
        std::fs::File::create(&log_path).map_err(io(format!("create {}", log_path.display())))?;
    let _ = writeln!(
        log,
        "recipe {} ({}), suite {}, mirror {mirror}\npackages: {}",
        recipe.name,
        recipe.origin,
        recipe.suite,
        recipe.packages.join(" ")
    );
    let ctx = Ctx {
        recipe,
        dir: &dir,
        log_path: &log_path,
        mirror: &mirror,
    };

    let root = dir.join("root");
    mmdebstrap(&ctx, &root, &mut log, progress)?;

    progress(Progress::Phase("files"));
    lay_files(recipe, &root).map_err(|e| ctx.io_error("lay the recipe's files", e))?;
    for cmd in &recipe.commands {
        progress(Progress::Phase(&format!("command: {cmd}")));
        let mut c = Command::new("chroot");
        c.arg(&root).args(["/bin/sh", "-c", cmd]);
        c.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        run_logged(&ctx, c, &format!("command `{cmd}`"), &mut log, progress)?;
    }

    progress(Progress::Phase("ext4"));
    let used = disk_usage(&root).map_err(|e| ctx.io_error("measure the root", e))?;
    let need_mb = (used * 11 / 10).div_ceil(1 << 20) + 64;
    let size_mb = match recipe.size_mb {
        Some(s) if s < need_mb => {
            return Err(ImageError::TooSmall {
                recipe: recipe.name.clone(),
                size_mb: s,
                need_mb,
            });
        }
        Some(s) => s,
        // Room for what guests write (it lands in their COW files; the image is sparse).
        None => (need_mb + 1024).div_ceil(256) * 256,
    };
    let tmp_image = dir.join("rootfs.img.tmp");
    let mut c = Command::new("mke2fs");
    // No journal and no lazy inode-table init: both would write into every machine's COW file
    // (the journal on each change, ext4lazyinit zeroing inode tables in the background after the
    // first mount), and a machine's disk is thrown away with its COW file anyway.
    c.args(["-q", "-F", "-t", "ext4", "-L", "umldbg-root", "-m", "0"])
        .args(["-O", "^has_journal"])
        .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg("-d")
        .arg(&root)
        .arg(&tmp_image)
        .arg(format!("{size_mb}M"));
    run_logged(&ctx, c, "mke2fs", &mut log, progress)?;
    let image = dir.join(IMAGE);
    let f = std::fs::File::open(&tmp_image).map_err(|e| ctx.io_error("open the image", e))?;
    f.sync_all()
        .map_err(|e| ctx.io_error("sync the image", e))?;
    std::fs::set_permissions(&tmp_image, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| ctx.io_error("make the image read-only", e))?;
    std::fs::rename(&tmp_image, &image).map_err(|e| ctx.io_error("rename the image", e))?;
    progress(Progress::Phase("cleanup"));
    std::fs::remove_dir_all(&root).map_err(|e| ctx.io_error("remove the unpacked root", e))?;

    let md = std::fs::metadata(&image).map_err(|e| ctx.io_error("stat the image", e))?;
    let m = Manifest {
        format: super::recipe::FORMAT,
        name: recipe.name.clone(),
        origin: recipe.origin.to_string(),
        hash: recipe.hash(),
        suite: recipe.suite.clone(),
        packages: recipe.packages.clone(),
        image: image.clone(),
        boot_stub: super::BOOT_STUB.to_string(),
        size_bytes: md.len(),
        disk_bytes: std::os::unix::fs::MetadataExt::blocks(&md) * 512,
        mtime: manifest::mtime_of(&md).unwrap_or((0, 0)),
        mirror: mirror.clone(),
        built_at: unix_now(),
        build_seconds: t0.elapsed().as_secs_f64(),
    };
    m.write(&dir)
        .map_err(|e| ctx.io_error("write the manifest", std::io::Error::other(e.to_string())))?;
    guard.armed = false;
    Ok(Built {
        manifest: m,
        cached: false,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Ctx<'a> {
    recipe: &'a Recipe,
    dir: &'a Path,
    log_path: &'a Path,
    mirror: &'a str,
}

impl Ctx<'_> {
    fn io_error(&self, what: &str, e: std::io::Error) -> ImageError {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            return self.no_space(what);
        }
        ImageError::Io {
            what: format!("recipe {}: {what}", self.recipe.name),
            source: e,
        }
    }

    fn no_space(&self, step: &str) -> ImageError {
        ImageError::NoSpace {
            recipe: self.recipe.name.clone(),
            dir: self.dir.parent().unwrap_or(self.dir).to_path_buf(),
            step: step.to_string(),
        }
    }

    fn failed(&self, step: &str, lines: &[String]) -> ImageError {
        if lines.iter().any(|l| l.contains("No space left on device")) {
            return self.no_space(step);
        }
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .map(String::as_str)
            .collect();
        ImageError::Step {
            recipe: self.recipe.name.clone(),
            step: step.to_string(),
            log: Unfinished::failed_log(self.dir),
            tail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        }
    }
}

/// Run a command, its output into the log and to `progress`; its stderr's lines come back.
fn run_logged(
    ctx: &Ctx,
    mut c: Command,
    step: &str,
    log: &mut std::fs::File,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<String>, ImageError> {
    let _ = writeln!(log, "$ {}", crate::util::describe(&c));
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, || {
            // A build killed outright (SIGKILL, no chance to clean up) must not leave mmdebstrap
            // writing into a directory that the next build removes: it hears TERM and stops.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!("run {step}")))?;
    // stdout in a thread (mmdebstrap and mke2fs print little there), stderr here, line by line.
    let out = child.stdout.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        let _ = writeln!(log, "{line}");
        match line.strip_prefix("I: ") {
            Some(p) if p.starts_with("running --extract-hook") => progress(Progress::Phase(
                "mmdebstrap: checking that every package exists",
            )),
            Some(p) => progress(Progress::Phase(&format!("mmdebstrap: {p}"))),
            None => progress(Progress::Output(&line)),
        }
        lines.push(line);
        if lines.len() > 200 {
            lines.drain(..100);
        }
    }
    let status = child.wait().map_err(io(format!("wait for {step}")))?;
    let out_lines = out_thread.join().unwrap_or_default();
    for l in &out_lines {
        let _ = writeln!(log, "{l}");
    }
    let _ = log.flush();
    if !status.success() {
        lines.extend(out_lines);
        return Err(ctx.failed(step, &lines));
    }
    Ok(lines)
}

/// apt's word for a package it does not know, from mmdebstrap's output.
pub fn unknown_package(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|l| {
        if let Some(rest) = l.split("Unable to locate package ").nth(1) {
            return rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = l.split("Package '").nth(1)
            && l.contains("has no installation candidate")
        {
            return rest.split('\'').next().map(str::to_string);
        }
        None
    })
}

/// apt's word for a mirror it could not reach, from mmdebstrap's output.
pub fn mirror_failure(lines: &[String]) -> Option<String> {
    let l = lines.iter().find(|l| {
        l.contains("Could not connect")
            || l.contains("Could not resolve")
            || l.contains("Temporary failure resolving")
            || l.contains("Failed to fetch")
            || (l.contains("404") && l.contains("Not Found"))
    })?;
    // The reason after the URL: `E: Failed to fetch URL  reason`.
    let reason = l
        .rsplit("  ")
        .next()
        .unwrap_or(l)
        .trim()
        .trim_start_matches("E: ");
    Some(reason.to_string())
}

fn mmdebstrap(
    ctx: &Ctx,
    root: &Path,
    log: &mut std::fs::File,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    let r = ctx.recipe;
    let pkgs = r.packages.join(" ");
    let mut c = Command::new("mmdebstrap");
    c.args(["--variant=minbase", "--mode=root", "--format=directory"])
        .arg(format!("--include={}", r.packages.join(",")))
        // dpkg's fsync per file makes no sense for a root that becomes an image (synced once).
        .arg("--dpkgopt=force-unsafe-io")
        .arg("--aptopt=Acquire::Languages \"none\"")
        // Documentation is dead weight in a lab machine; copyright files stay.
        .args([
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
        ])
        // Unknown packages fail here, right after the download of the essential set, instead of
        // after the essential set is installed (40 s later). Names are checked by the recipe
        // parser, so they are safe as shell words.
        .arg(format!(
            "--extract-hook=apt-get --simulate -q install {pkgs} >/dev/null"
        ))
        .arg(&r.suite)
        .arg(root)
        .arg(ctx.mirror)
        .env("LC_ALL", "C.UTF-8");
    progress(Progress::Phase("mmdebstrap"));
    match run_logged(ctx, c, "mmdebstrap", log, progress) {
        Ok(_) => Ok(()),
        Err(ImageError::Step { tail, step, .. }) => {
            // Classify from the log: the whole of mmdebstrap's output is there.
            let text = std::fs::read_to_string(ctx.log_path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if let Some(package) = unknown_package(&lines) {
                return Err(ImageError::UnknownPackage {
                    recipe: r.name.clone(),
                    package,
                    suite: r.suite.clone(),
                    mirror: ctx.mirror.to_string(),
                });
            }
            if let Some(detail) = mirror_failure(&lines) {
                return Err(ImageError::Mirror {
                    mirror: ctx.mirror.to_string(),
                    detail,
                });
            }
            Err(ImageError::Step {
                recipe: r.name.clone(),
                step,
                log: Unfinished::failed_log(ctx.dir),
                tail,
            })
        }
        Err(e) => Err(e),
    }
}

/// The recipe's directories and files, in order, as root with the recipe's modes.
fn lay_files(r: &Recipe, root: &Path) -> std::io::Result<()> {
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    for d in &r.dirs {
        std::fs::create_dir_all(inside(d))?;
    }
    for f in &r.files {
        let p = inside(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // A symlink in the image must not send the write outside the root.
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&p)?;
        }
        std::fs::write(&p, &f.content)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// Bytes the tree uses on disk (blocks), not following symlinks.
fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let md = e.path().symlink_metadata()?;
            total += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(t: &str) -> Vec<String> {
        t.lines().map(str::to_string).collect()
    }

    /// Recorded from mmdebstrap 1.3.5 with `--include=nosuchpkg-xyz`.
    #[test]
    fn finds_the_unknown_package() {
        let out = lines(
            "I: extracting archives...\nE: Unable to locate package nosuchpkg-xyz\nE: setup failed: E: command failed: apt-get --simulate\n",
        );
        assert_eq!(unknown_package(&out).as_deref(), Some("nosuchpkg-xyz"));
        let out = lines("E: Package 'foo' has no installation candidate\n");
        assert_eq!(unknown_package(&out).as_deref(), Some("foo"));
        assert_eq!(unknown_package(&lines("E: other\n")), None);
    }

    /// Recorded from mmdebstrap 1.3.5 with a mirror on a closed local port.
    #[test]
    fn finds_the_mirror_failure() {
        let out = lines(
            "Err:1 http://127.0.0.1:9/debian bookworm InRelease\n  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\nE: Failed to fetch http://127.0.0.1:9/debian/dists/bookworm/InRelease  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\n",
        );
        let d = mirror_failure(&out).unwrap();
        assert!(d.contains("Connection refused"), "{d}");
    }
}
