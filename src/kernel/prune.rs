//! Removing cached kernel builds that nothing uses any more (each is about 2.7 GB).
//!
//! Kept: the newest valid build (the one `umldbg` boots), every build whose files a running
//! process executes (a lab still up on an older kernel reads its modules over hostfs), and
//! incomplete builds whose log changed in the last hour (a build may be running: the log grows
//! every few seconds while it does).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::manifest::{self, CacheEntry};

/// How long an incomplete build's log must have been quiet before the build counts as dead.
pub const QUIET: Duration = Duration::from_secs(3600);

/// One cached build and the facts the plan needs about it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub dir: PathBuf,
    pub valid: bool,
    pub built_at: u64,
    /// How long ago `build.log` last changed (None: no log).
    pub log_age: Option<Duration>,
}

/// What to do with one build, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep(&'static str),
    Remove(&'static str),
}

/// The plan, in the order of `builds`. `in_use`: build directories a running process executes
/// from.
pub fn plan(builds: &[Candidate], in_use: &BTreeSet<PathBuf>) -> Vec<Verdict> {
    let newest = builds
        .iter()
        .filter(|b| b.valid)
        .max_by_key(|b| b.built_at)
        .map(|b| b.dir.clone());
    builds
        .iter()
        .map(|b| {
            if Some(&b.dir) == newest.as_ref() {
                Verdict::Keep("the newest valid build")
            } else if in_use.contains(&b.dir) {
                Verdict::Keep("a running machine uses it")
            } else if b.valid {
                Verdict::Remove("an older build")
            } else if b.log_age.is_some_and(|a| a < QUIET) {
                Verdict::Keep("incomplete, but its log changed in the last hour (a build running?)")
            } else {
                Verdict::Remove("an incomplete build")
            }
        })
        .collect()
}

/// The build directories under `kernels` that running processes execute from.
pub fn dirs_in_use(kernels: &Path) -> BTreeSet<PathBuf> {
    let Ok(kernels) = std::fs::canonicalize(kernels) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(exe) = std::fs::read_link(e.path().join("exe")) else {
            continue;
        };
        if let Ok(rest) = exe.strip_prefix(&kernels)
            && let Some(first) = rest.components().next()
        {
            out.insert(kernels.join(first));
        }
    }
    out
}

fn candidate(e: &CacheEntry, now: SystemTime) -> Candidate {
    let log_age = std::fs::metadata(e.dir.join("build.log"))
        .and_then(|m| m.modified())
        .ok()
        .map(|t| now.duration_since(t).unwrap_or_default());
    Candidate {
        dir: std::fs::canonicalize(&e.dir).unwrap_or_else(|_| e.dir.clone()),
        valid: e.manifest.is_ok(),
        built_at: e.manifest.as_ref().map(|m| m.built_at).unwrap_or(0),
        log_age,
    }
}

/// One line of the report: the directory, its verdict, and its size for removals.
#[derive(Debug)]
pub struct Outcome {
    pub dir: PathBuf,
    pub verdict: Verdict,
    pub bytes: u64,
}

/// Plans and (unless `dry_run`) removes. Sizes are counted for the builds removed.
pub fn prune(cache: &Path, dry_run: bool) -> std::io::Result<Vec<Outcome>> {
    let kernels = manifest::kernels_dir(cache);
    let now = SystemTime::now();
    let builds: Vec<Candidate> = manifest::list(cache)
        .iter()
        .map(|e| candidate(e, now))
        .collect();
    let verdicts = plan(&builds, &dirs_in_use(&kernels));
    let mut out = Vec::new();
    for (b, v) in builds.into_iter().zip(verdicts) {
        let bytes = match v {
            Verdict::Remove(_) => du(&b.dir),
            Verdict::Keep(_) => 0,
        };
        if matches!(v, Verdict::Remove(_)) && !dry_run {
            std::fs::remove_dir_all(&b.dir)?;
        }
        out.push(Outcome {
            dir: b.dir,
            verdict: v,
            bytes,
        });
    }
    // Runs of developers' trees: each tree's current run and what machines execute stay; the
    // trees' build directories (their incremental state) are never pruned.
    for t in std::fs::read_dir(manifest::trees_dir(cache))
        .into_iter()
        .flatten()
        .flatten()
    {
        let runs = t.path().join("runs");
        let current = std::fs::read_to_string(t.path().join("state.json"))
            .ok()
            .and_then(|x| serde_json::from_str::<super::tree::TreeState>(&x).ok())
            .map(|st| st.run);
        let in_use = dirs_in_use(&runs);
        for r in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
            let dir = std::fs::canonicalize(r.path()).unwrap_or_else(|_| r.path());
            let verdict = if current.as_deref() == r.file_name().to_str() {
                Verdict::Keep("a tree's newest build")
            } else if in_use.contains(&dir) {
                Verdict::Keep("a running machine uses it")
            } else {
                Verdict::Remove("an older build of a tree")
            };
            let bytes = match verdict {
                Verdict::Remove(_) => du(&dir),
                Verdict::Keep(_) => 0,
            };
            if matches!(verdict, Verdict::Remove(_)) && !dry_run {
                std::fs::remove_dir_all(&dir)?;
            }
            out.push(Outcome {
                dir,
                verdict,
                bytes,
            });
        }
    }
    Ok(out)
}

/// Bytes under `dir` (symlinks not followed).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(dir: &str, valid: bool, built_at: u64, log_age_s: Option<u64>) -> Candidate {
        Candidate {
            dir: PathBuf::from(dir),
            valid,
            built_at,
            log_age: log_age_s.map(Duration::from_secs),
        }
    }

    #[test]
    fn keeps_the_newest_what_runs_and_a_build_in_progress() {
        let builds = [
            c("/k/old", true, 100, Some(99_999)),
            c("/k/new", true, 300, Some(99_999)),
            c("/k/running-lab", true, 200, Some(99_999)),
            c("/k/building", false, 0, Some(20)),
            c("/k/dead", false, 0, Some(7200)),
            c("/k/nolog", false, 0, None),
        ];
        let in_use = BTreeSet::from([PathBuf::from("/k/running-lab")]);
        let v = plan(&builds, &in_use);
        assert!(matches!(v[0], Verdict::Remove(_)));
        assert!(matches!(v[1], Verdict::Keep("the newest valid build")));
        assert!(matches!(v[2], Verdict::Keep("a running machine uses it")));
        assert!(matches!(v[3], Verdict::Keep(_)));
        assert!(matches!(v[4], Verdict::Remove(_)));
        assert!(matches!(v[5], Verdict::Remove(_)));
    }

    #[test]
    fn nothing_valid_removes_only_dead_builds() {
        let v = plan(&[c("/k/a", false, 0, Some(5))], &BTreeSet::new());
        assert!(matches!(v[0], Verdict::Keep(_)));
    }
}
