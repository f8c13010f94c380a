//! Struct and union layouts from a kernel image's DWARF, cached per kernel build-id.
//!
//! [`build_layouts`] reads any set of struct, union or typedef names from the image bytes in one
//! pass over `.debug_info` (see `scan` for how that pass stays fast on a 90 MB image).
//! [`build_net_layouts`] and [`skb_layout`] give packet decoding the structs it needs
//! (`sk_buff`, `net_device` and the protocol headers). The main crate's `dwarf::LayoutStore` adds
//! the file and the cache (`<cache>/layouts/<build-id>.json`) around the functions here.
//!
//! gimli reads the DWARF; object finds (and if needed decompresses) the debug sections; the
//! build-id comes from `kmod::elf_build_id` (goblin). Nothing here touches files.

mod build;
mod image;
pub mod layout;
mod scan;
mod skb;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::kmod::LoadError;

pub use layout::{AggregateKind, Hole, Member, StructLayout};
pub use skb::skb_layout;

pub(crate) type R<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;

/// The structs packet decoding needs, read together in one pass.
pub const NET_STRUCTS: [&str; 9] = [
    "sk_buff",
    "net_device",
    "iphdr",
    "ipv6hdr",
    "icmphdr",
    "tcphdr",
    "udphdr",
    "ethhdr",
    "arphdr",
];

/// Without these the skb view cannot work; the header structs are optional (their layouts are
/// fixed by the protocols, a kernel that never uses one may not describe it).
const REQUIRED_NET_STRUCTS: [&str; 2] = ["sk_buff", "net_device"];

/// Why a layout could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{}", path.display())]
    InFile {
        path: PathBuf,
        source: Box<DwarfError>,
    },
    #[error("not a readable x86_64 ELF image: {0}")]
    Elf(String),
    #[error(
        "no .debug_info: the kernel was built without CONFIG_DEBUG_INFO, or stripped \
         (`umldbg kernel build` makes one with full DWARF)"
    )]
    NoDebugInfo,
    #[error("DWARF error in the unit at .debug_info+{unit:#x}: {source}")]
    Dwarf { unit: u64, source: gimli::Error },
    #[error("unreadable type in the unit at .debug_info+{unit:#x}: {what}")]
    BadType { unit: u64, what: String },
    #[error(
        "no struct, union or typedef named `{name}` in the kernel's DWARF{}",
        hint(suggestions)
    )]
    NotFound {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("struct {structure} has no member `{member}` in this kernel")]
    MissingMember { structure: String, member: String },
}

fn hint(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
}

impl DwarfError {
    /// This error as one of the file at `path` (load errors already name their file).
    pub fn in_file(self, path: &Path) -> DwarfError {
        match self {
            e @ (DwarfError::Load(_) | DwarfError::InFile { .. }) => e,
            e => DwarfError::InFile {
                path: path.to_owned(),
                source: Box::new(e),
            },
        }
    }

    /// The innermost error, past any file context.
    pub fn root(&self) -> &DwarfError {
        match self {
            DwarfError::InFile { source, .. } => source.root(),
            e => e,
        }
    }
}

/// Read the layouts of `names` (struct, union or typedef names) from an image's bytes, in one
/// DWARF pass. A name the image does not define is a [`DwarfError::NotFound`] with suggestions.
pub fn build_layouts(
    image: &[u8],
    names: &[&str],
) -> Result<BTreeMap<String, StructLayout>, DwarfError> {
    let (found, known) = scan_image(image, names)?;
    if let Some(missing) = names.iter().find(|n| !found.contains_key(**n)) {
        return Err(not_found(missing, &known));
    }
    Ok(found)
}

/// The layouts of those of `names` the image defines, and every struct, union and typedef name
/// it knows (for suggestions).
#[allow(clippy::type_complexity)]
pub fn scan_image(
    image: &[u8],
    names: &[&str],
) -> Result<(BTreeMap<String, StructLayout>, Vec<String>), DwarfError> {
    let debug = image::DebugImage::parse(image)?;
    let dwarf = debug.dwarf();
    let wanted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let outcome = scan::scan(&dwarf, &wanted)?;
    Ok((outcome.layouts, outcome.known_names))
}

/// The error for a name the image does not define, with near names from `known`.
pub fn not_found(name: &str, known: &[String]) -> DwarfError {
    DwarfError::NotFound {
        name: name.to_owned(),
        suggestions: crate::suggest::near_names(name, known.iter().map(String::as_str), 5),
    }
}

/// The layouts of [`NET_STRUCTS`] for one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetLayouts {
    /// The cache key: the kernel's GNU build-id (or a size-and-time stand-in without one).
    pub build_id: String,
    pub layouts: BTreeMap<String, StructLayout>,
    /// Header structs this kernel's DWARF does not describe.
    pub absent: Vec<String>,
    /// True when read from the cache rather than from DWARF.
    pub from_cache: bool,
}

impl NetLayouts {
    pub fn get(&self, name: &str) -> Option<&StructLayout> {
        self.layouts.get(name)
    }

    fn require(&self, name: &str) -> Result<&StructLayout, DwarfError> {
        self.layouts.get(name).ok_or_else(|| not_found(name, &[]))
    }

    /// Shorthand for [`skb_layout`].
    pub fn skb(&self) -> Result<crate::net::layout::SkbLayout, DwarfError> {
        skb_layout(self)
    }
}

/// Read [`NET_STRUCTS`] from an image's bytes, without the cache.
pub fn build_net_layouts(image: &[u8]) -> Result<NetLayouts, DwarfError> {
    let (layouts, known) = scan_image(image, &NET_STRUCTS)?;
    net_from(layouts, &known, build_key(image, None), false)
}

/// [`NetLayouts`] from layouts read earlier (from DWARF or a cache), checking that the required
/// structs are there.
pub fn net_from(
    layouts: BTreeMap<String, StructLayout>,
    known: &[String],
    build_id: String,
    from_cache: bool,
) -> Result<NetLayouts, DwarfError> {
    if let Some(missing) = REQUIRED_NET_STRUCTS
        .iter()
        .find(|n| !layouts.contains_key(**n))
    {
        return Err(not_found(missing, known));
    }
    let absent = NET_STRUCTS
        .iter()
        .filter(|n| !layouts.contains_key(**n))
        .map(|n| n.to_string())
        .collect();
    let layouts = layouts
        .into_iter()
        .filter(|(k, _)| NET_STRUCTS.contains(&k.as_str()))
        .collect();
    Ok(NetLayouts {
        build_id,
        layouts,
        absent,
        from_cache,
    })
}

/// The cache key of an image: its build-id, else its size and modification time (a kernel
/// linked without `--build-id`; rebuilding it changes the time).
pub fn build_key(image: &[u8], modified: Option<std::time::SystemTime>) -> String {
    if let Some(id) = crate::kmod::elf_build_id(image) {
        return id;
    }
    let secs = modified
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("nobuildid-{}-{secs}", image.len())
}
