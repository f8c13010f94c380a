//! Image recipes: TOML files naming a Debian suite, packages, files to add and commands to run,
//! the built-in ones compiled in from `images/`, and the layer umldbg adds to every image.
//!
//! A recipe file:
//!
//! ```toml
//! name = "my/router"                 # optional for a file: defaults to the file's stem
//! description = "..."
//! extends = "kathara/base"           # a built-in recipe whose packages, files and commands come first
//! suite = "bookworm"                 # the Debian suite (default: the parent's, else bookworm)
//! aliases = ["my/r"]                 # other names that select this recipe (built-ins only)
//! packages = ["frr", "bird2"]
//! dirs = ["/srv/www"]                # empty directories to create
//! commands = ["echo hi > /etc/motd"] # run with /bin/sh in the root after the files are laid
//! size_mb = 2048                     # ext4 size (sparse); default: what the root needs plus 1 GiB
//! [[file]]
//! path = "/etc/frr/daemons"
//! mode = 0o644                       # default 0o644
//! content = "..."                    # or: source = "daemons" (relative to the recipe file)
//! ```
//!
//! The parsers take text; reading files is left to [`load_file`] and the built-in table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ImageError;
use crate::util::Location;

/// Bumped whenever the way an image is made from a recipe changes, so old images are rebuilt.
pub const FORMAT: u32 = 2;

/// The suite when neither the recipe nor its parent names one: the Debian release umldbg runs on.
pub const DEFAULT_SUITE: &str = "bookworm";

/// Where the boot stub lives in every image (the kernel's `init=`).
pub const BOOT_STUB: &str = "/usr/local/sbin/umldbg-boot";

/// Built-in recipes: (file name, text).
const BUILTIN: &[(&str, &str)] = &[
    (
        "umldbg-core.toml",
        include_str!("../../images/umldbg-core.toml"),
    ),
    (
        "kathara-base.toml",
        include_str!("../../images/kathara-base.toml"),
    ),
    (
        "kathara-frr.toml",
        include_str!("../../images/kathara-frr.toml"),
    ),
    (
        "kathara-bind.toml",
        include_str!("../../images/kathara-bind.toml"),
    ),
    (
        "kathara-apache.toml",
        include_str!("../../images/kathara-apache.toml"),
    ),
    (
        "kathara-radvd.toml",
        include_str!("../../images/kathara-radvd.toml"),
    ),
    (
        "kathara-dnsmasq.toml",
        include_str!("../../images/kathara-dnsmasq.toml"),
    ),
];

/// Files the built-in recipes name with `source`.
const BUILTIN_FILES: &[(&str, &str)] = &[(
    "files/quagga-init.sh",
    include_str!("../../images/files/quagga-init.sh"),
)];

/// What every image gets besides its recipe: the pieces a lab machine needs.
const LAYER_PACKAGES: &[&str] = &["bash", "coreutils", "util-linux", "mount", "kmod", "procps"];
const LAYER_DIRS: &[&str] = &["/lib/modules", "/shared"];
const LAYER_FILES: &[(&str, u32, &str)] = &[
    (
        BOOT_STUB,
        0o755,
        include_str!("../../images/files/umldbg-boot.sh"),
    ),
    (
        "/usr/local/lib/umldbg/service-map.sh",
        0o644,
        include_str!("../../images/files/service-map.sh"),
    ),
    (
        "/usr/local/bin/systemctl",
        0o755,
        include_str!("../../images/files/systemctl.sh"),
    ),
    (
        "/usr/local/sbin/service",
        0o755,
        include_str!("../../images/files/service.sh"),
    ),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    name: Option<String>,
    #[serde(default)]
    description: String,
    extends: Option<String>,
    suite: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    dirs: Vec<String>,
    #[serde(default)]
    commands: Vec<String>,
    size_mb: Option<u64>,
    #[serde(default, rename = "file")]
    files: Vec<RawFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    mode: Option<u32>,
    content: Option<String>,
    source: Option<String>,
}

/// Where a recipe came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One file laid into the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
}

/// A recipe with its parents and umldbg's layer merged in: everything a build needs.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: String,
    pub description: String,
    pub aliases: Vec<String>,
    pub origin: Origin,
    pub suite: String,
    /// Sorted, without duplicates.
    pub packages: Vec<String>,
    pub dirs: Vec<String>,
    pub files: Vec<FileSpec>,
    pub commands: Vec<String>,
    pub size_mb: Option<u64>,
}

impl Recipe {
    /// The cache key: what goes into the image (suite, packages, files, commands, size, format),
    /// not its name, so aliases and identical recipes share one image.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("format {FORMAT}\nsuite {}\n", self.suite));
        for p in &self.packages {
            h.update(format!("package {p}\n"));
        }
        for d in &self.dirs {
            h.update(format!("dir {d}\n"));
        }
        for f in &self.files {
            h.update(format!(
                "file {} {:o} {}\n",
                f.path,
                f.mode,
                hex(&Sha256::digest(&f.content))
            ));
        }
        for c in &self.commands {
            h.update(format!("command {}\n", c.len()));
            h.update(c.as_bytes());
        }
        h.update(format!("size {:?}\n", self.size_mb));
        hex(&h.finalize())[..16].to_string()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A built-in recipe's summary, for listings and for naming the known images in errors.
#[derive(Debug, Clone)]
pub struct BuiltinInfo {
    pub name: String,
    pub aliases: Vec<String>,
    pub description: String,
}

fn builtin_raw() -> Vec<(&'static str, RawRecipe)> {
    BUILTIN
        .iter()
        .map(|(file, text)| {
            // Built-ins are tested to parse (see the tests below); a failure is a bug in the binary.
            let raw: RawRecipe =
                toml::from_str(text).unwrap_or_else(|e| panic!("built-in recipe {file}: {e}"));
            (*file, raw)
        })
        .collect()
}

/// Every built-in recipe, in the order of the table.
pub fn builtins() -> Vec<BuiltinInfo> {
    builtin_raw()
        .into_iter()
        .map(|(file, r)| BuiltinInfo {
            name: r.name.unwrap_or_else(|| file.to_string()),
            aliases: r.aliases,
            description: r.description,
        })
        .collect()
}

/// A name as lab files give it, reduced to what recipes are named by: Docker's `docker.io/`
/// prefix and `:tag` go (`kathara/bind:9.11` is `kathara/bind`).
pub fn normalize_name(name: &str) -> String {
    let n = name.trim();
    let n = n.strip_prefix("docker.io/").unwrap_or(n);
    let n = match n.rsplit_once(':') {
        Some((base, tag)) if !tag.contains('/') => base,
        _ => n,
    };
    n.to_ascii_lowercase()
}

/// Whether `name` (or an alias, after [`normalize_name`]) is a built-in recipe.
pub fn is_builtin(name: &str) -> bool {
    builtin_name(name).is_some()
}

fn builtin_name(name: &str) -> Option<String> {
    let n = normalize_name(name);
    builtins()
        .into_iter()
        .find(|b| b.name == n || b.aliases.contains(&n))
        .map(|b| b.name)
}

/// The file name and text of the built-in recipe called `canonical`.
fn builtin_text(canonical: &str) -> (&'static str, &'static str) {
    let names = builtin_raw();
    let i = names
        .iter()
        .position(|(file, r)| r.name.as_deref().unwrap_or(file) == canonical)
        .expect("a listed built-in exists");
    BUILTIN[i]
}

fn known_names() -> String {
    builtins()
        .iter()
        .map(|b| {
            if b.aliases.is_empty() {
                b.name.clone()
            } else {
                format!("{} (also {})", b.name, b.aliases.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A built-in recipe by name or alias, resolved.
pub fn builtin(name: &str) -> Result<Recipe, ImageError> {
    let canonical = builtin_name(name).ok_or_else(|| ImageError::UnknownImage {
        name: name.to_string(),
        known: known_names(),
    })?;
    let (file, text) = builtin_text(&canonical);
    parse(
        text,
        Path::new(&format!("images/{file}")),
        Origin::Builtin,
        0,
    )
}

/// A recipe given on the command line: a `.toml` file (or any existing file), else a built-in name.
pub fn find(name_or_file: &str) -> Result<Recipe, ImageError> {
    let p = Path::new(name_or_file);
    if name_or_file.ends_with(".toml") || (p.is_file() && !is_builtin(name_or_file)) {
        return load_file(p);
    }
    builtin(name_or_file)
}

/// Read and resolve a recipe file.
pub fn load_file(path: &Path) -> Result<Recipe, ImageError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImageError::Io {
        what: format!("read recipe {}", path.display()),
        source,
    })?;
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    parse(&text, path, Origin::File(abs), 0)
}

fn syntax(file: &Path, text: &str, offset: usize, message: String) -> ImageError {
    ImageError::Syntax {
        at: Location::from_offset(file, text, offset),
        message,
    }
}

/// Parse and resolve a recipe's text; `file` names it in errors, `origin` says where `source`
/// paths are relative to.
pub fn parse(text: &str, file: &Path, origin: Origin, depth: u32) -> Result<Recipe, ImageError> {
    let raw: RawRecipe = toml::from_str(text).map_err(|e| {
        let msg = e.message().lines().next().unwrap_or("").trim().to_string();
        syntax(file, text, e.span().map_or(0, |s| s.start), msg)
    })?;
    // Semantic errors point at the key's line: find it in the text (good enough for one-key lines).
    let at_key = |key: &str, value: &str| -> usize {
        text.find(&format!("\"{value}\""))
            .or_else(|| text.find(key))
            .unwrap_or(0)
    };
    let recipe_name = raw.name.clone().unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "recipe".into())
    });
    let mut base = match &raw.extends {
        Some(parent) => {
            if depth > 8 {
                return Err(syntax(
                    file,
                    text,
                    at_key("extends", parent),
                    format!("`extends` goes deeper than 8 recipes (a loop?) at `{parent}`"),
                ));
            }
            let canonical = builtin_name(parent).ok_or_else(|| {
                syntax(
                    file,
                    text,
                    at_key("extends", parent),
                    format!(
                        "`extends = \"{parent}\"` names no built-in recipe; known: {}",
                        known_names()
                    ),
                )
            })?;
            let (pfile, ptext) = builtin_text(&canonical);
            parse(
                ptext,
                Path::new(&format!("images/{pfile}")),
                Origin::Builtin,
                depth + 1,
            )?
        }
        None => Recipe {
            name: String::new(),
            description: String::new(),
            aliases: Vec::new(),
            origin: origin.clone(),
            suite: DEFAULT_SUITE.to_string(),
            packages: LAYER_PACKAGES.iter().map(|s| s.to_string()).collect(),
            dirs: LAYER_DIRS.iter().map(|s| s.to_string()).collect(),
            files: LAYER_FILES
                .iter()
                .map(|(p, m, c)| FileSpec {
                    path: p.to_string(),
                    mode: *m,
                    content: c.as_bytes().to_vec(),
                })
                .collect(),
            commands: Vec::new(),
            size_mb: None,
        },
    };
    base.name = recipe_name;
    base.description = raw.description;
    base.aliases = raw.aliases;
    base.origin = origin.clone();
    if let Some(s) = raw.suite {
        if !valid_word(&s) {
            return Err(syntax(
                file,
                text,
                at_key("suite", &s),
                format!("suite `{s}` is not a Debian suite name (e.g. bookworm)"),
            ));
        }
        base.suite = s;
    }
    let mut packages: BTreeSet<String> = base.packages.into_iter().collect();
    for p in raw.packages {
        if !valid_package(&p) {
            return Err(syntax(
                file,
                text,
                at_key("packages", &p),
                format!("`{p}` is not a Debian package name (lowercase letters, digits, + - .)"),
            ));
        }
        packages.insert(p);
    }
    base.packages = packages.into_iter().collect();
    for d in raw.dirs {
        check_path(&d).map_err(|m| syntax(file, text, at_key("dirs", &d), m.to_string()))?;
        base.dirs.push(d);
    }
    for f in raw.files {
        check_path(&f.path)
            .map_err(|m| syntax(file, text, at_key("path", &f.path), m.to_string()))?;
        let mode = f.mode.unwrap_or(0o644);
        if mode > 0o7777 {
            return Err(syntax(
                file,
                text,
                at_key("mode", &f.path),
                format!("file {}: mode {mode:o} is not a file mode", f.path),
            ));
        }
        let content = match (f.content, f.source) {
            (Some(c), None) => c.into_bytes(),
            (None, Some(src)) => read_source(&origin, &src).map_err(|m| {
                syntax(
                    file,
                    text,
                    at_key("source", &src),
                    format!("file {}: {m}", f.path),
                )
            })?,
            _ => {
                return Err(syntax(
                    file,
                    text,
                    at_key("path", &f.path),
                    format!(
                        "file {}: give exactly one of `content` and `source`",
                        f.path
                    ),
                ));
            }
        };
        // A later file with the same path replaces an earlier one (a child overrides its parent).
        base.files.retain(|g| g.path != f.path);
        base.files.push(FileSpec {
            path: f.path,
            mode,
            content,
        });
    }
    base.commands.extend(raw.commands);
    if let Some(s) = raw.size_mb {
        if !(64..=1 << 20).contains(&s) {
            return Err(syntax(
                file,
                text,
                at_key("size_mb", ""),
                format!("size_mb = {s}: give a size between 64 and 1048576 MB"),
            ));
        }
        base.size_mb = Some(s);
    }
    Ok(base)
}

fn read_source(origin: &Origin, src: &str) -> Result<Vec<u8>, String> {
    match origin {
        Origin::Builtin => BUILTIN_FILES
            .iter()
            .find(|(n, _)| *n == src)
            .map(|(_, t)| t.as_bytes().to_vec())
            .ok_or_else(|| format!("no built-in file `{src}`")),
        Origin::File(recipe) => {
            let dir = recipe.parent().unwrap_or(Path::new("."));
            let p = dir.join(src);
            std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
    }
}

fn valid_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Debian policy: lowercase letters, digits, `+`, `-`, `.`; at least two characters, starting
/// with a letter or digit. (Also keeps anything else out of apt's and mmdebstrap's arguments.)
pub fn valid_package(p: &str) -> bool {
    p.len() >= 2
        && p.as_bytes()[0].is_ascii_alphanumeric()
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'+' || b == b'-' || b == b'.'
        })
}

/// A recipe's path that would leave the image or name its root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` must be an absolute path inside the image, without `..`")]
struct OutsideImage(String);

fn check_path(p: &str) -> Result<(), OutsideImage> {
    if !p.starts_with('/') || p.split('/').any(|c| c == "..") || p == "/" {
        return Err(OutsideImage(p.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_carries_the_layer() {
        for b in builtins() {
            let r = builtin(&b.name).unwrap_or_else(|e| panic!("{}: {e}", b.name));
            assert!(r.packages.contains(&"bash".to_string()), "{}", b.name);
            assert!(r.files.iter().any(|f| f.path == BOOT_STUB), "{}", b.name);
            assert!(r.dirs.contains(&"/lib/modules".to_string()), "{}", b.name);
            assert_eq!(r.suite, "bookworm");
        }
    }

    #[test]
    fn frr_extends_base_and_quagga_is_an_alias() {
        let frr = builtin("kathara/frr").unwrap();
        assert!(frr.packages.contains(&"frr".to_string()));
        assert!(frr.packages.contains(&"tcpdump".to_string()));
        assert!(frr.packages.contains(&"apache2".to_string()));
        assert!(frr.files.iter().any(|f| f.path == "/etc/init.d/quagga"));
        let q = builtin("kathara/quagga:latest").unwrap();
        assert_eq!(q.name, "kathara/frr");
        assert_eq!(q.hash(), frr.hash());
        assert_ne!(frr.hash(), builtin("kathara/base").unwrap().hash());
    }

    #[test]
    fn names_lose_registry_prefix_and_tag() {
        assert_eq!(normalize_name("kathara/bind:9.11"), "kathara/bind");
        assert_eq!(normalize_name("docker.io/kathara/frr"), "kathara/frr");
        assert!(is_builtin("kathara/bind:9.11"));
        assert!(!is_builtin("lscr.io/linuxserver/wireshark"));
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let e = builtin("lscr.io/linuxserver/wireshark")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lscr.io/linuxserver/wireshark"), "{e}");
        assert!(
            e.contains("kathara/frr") && e.contains("kathara/quagga"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let text = "name = \"x\"\npackages = [\"frr\",\n  oops]\n";
        let e = parse(text, Path::new("r.toml"), Origin::Builtin, 0)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.toml:3:3"), "{e}");
    }

    #[test]
    fn unknown_key_and_bad_package_are_errors_with_places() {
        let e = parse("nme = \"x\"\n", Path::new("r.toml"), Origin::Builtin, 0)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.toml:1:1") && e.contains("nme"), "{e}");
        let e = parse(
            "packages = [\n \"Frr;rm\"]\n",
            Path::new("r.toml"),
            Origin::Builtin,
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("r.toml:2:2") && e.contains("Frr;rm"), "{e}");
    }

    #[test]
    fn child_files_override_and_hash_follows_content() {
        let a = parse(
            "extends = \"umldbg/core\"\n[[file]]\npath = \"/etc/motd\"\ncontent = \"a\"\n",
            Path::new("a.toml"),
            Origin::Builtin,
            0,
        )
        .unwrap();
        let b = parse(
            "extends = \"umldbg/core\"\n[[file]]\npath = \"/etc/motd\"\ncontent = \"b\"\n",
            Path::new("b.toml"),
            Origin::Builtin,
            0,
        )
        .unwrap();
        assert_ne!(a.hash(), b.hash());
        let core = builtin("umldbg/core").unwrap();
        let same = parse(
            "name = \"other\"\nextends = \"umldbg/core\"\n",
            Path::new("c.toml"),
            Origin::Builtin,
            0,
        )
        .unwrap();
        assert_eq!(same.hash(), core.hash(), "the name is not part of the key");
    }
}
