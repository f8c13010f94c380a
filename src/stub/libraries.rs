//! The guest's loaded modules as gdb's library list (`qXfer:libraries:read`) and LLDB's
//! (`qXfer:libraries-svr4:read`).
//!
//! gdb's generic library list names a host file per library and gives one `<section address>`
//! per allocated section of that file, in the file's section order (gdb matches them by
//! position: the count must equal the number of `SHF_ALLOC` sections it sees). A module's
//! section addresses come from kernel memory, walked the way `/sys/module/*/sections` is
//! built: `modules` -> `struct module` -> `sect_attrs->grp.bin_attrs[]`, each a
//! `struct bin_attribute` with the section name in `attr.name` and its address in `private`.
//! Host shared libraries (UML's libc) are listed too, by segment, so a stop in libc has symbols.
//!
//! LLDB places a library by one displacement. For a relocatable file (a `.ko`) it first lays the
//! allocated sections out one after another from 0, each at its alignment, and adds the
//! displacement to all of them; the SVR4 list gives, per module, the displacement that puts
//! `.text` where the guest has it (code, symbols and line tables; a module's data sections live
//! elsewhere in the guest and stay approximate in LLDB).
//!
//! Everything here is sans-IO: memory comes through [`Memory`], files as bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use umldbg_codec::xml::escape;

use crate::dwarf::StructLayout;
use crate::guest::modules::GuestModule;

/// Reads guest (= UML process) memory.
pub trait Memory {
    fn read(&mut self, addr: u64, len: usize) -> Option<Vec<u8>>;
}

impl<F: FnMut(u64, usize) -> Option<Vec<u8>>> Memory for F {
    fn read(&mut self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self(addr, len)
    }
}

/// Member offsets the module walk needs, from the kernel's DWARF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleOffsets {
    /// `struct module`: `list`, `name` (and its array length), `sect_attrs`.
    pub list: u64,
    pub name: u64,
    pub name_len: usize,
    pub sect_attrs: u64,
    /// `struct attribute_group`: `bin_attrs` (`struct module_sect_attrs` starts with `grp`).
    pub bin_attrs: u64,
    /// `struct bin_attribute`: `attr.name`, `private`.
    pub attr_name: u64,
    pub private: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LibraryError {
    #[error("struct {strukt} has no member {member} in this kernel's DWARF")]
    NoMember { strukt: String, member: String },
    #[error("cannot read guest memory at {addr:#x} ({what})")]
    Read { addr: u64, what: String },
    #[error("the kernel's module list loops or is longer than {0} entries")]
    TooLong(usize),
    #[error("{file}: not an ELF file gdb can load: {reason}")]
    BadFile { file: String, reason: String },
}

fn member(l: &StructLayout, path: &str) -> Result<u64, LibraryError> {
    l.member(path)
        .map(|m| m.offset)
        .ok_or_else(|| LibraryError::NoMember {
            strukt: l.name.clone(),
            member: path.to_owned(),
        })
}

impl ModuleOffsets {
    /// From the layouts of `struct module`, `struct attribute_group` and `struct bin_attribute`.
    pub fn from_layouts(
        module: &StructLayout,
        group: &StructLayout,
        bin_attr: &StructLayout,
    ) -> Result<ModuleOffsets, LibraryError> {
        let name_len = module.member("name").map_or(56, |m| m.size as usize);
        Ok(ModuleOffsets {
            list: member(module, "list")?,
            name: member(module, "name")?,
            name_len,
            sect_attrs: member(module, "sect_attrs")?,
            bin_attrs: member(group, "bin_attrs")?,
            attr_name: member(bin_attr, "attr.name")?,
            private: member(bin_attr, "private")?,
        })
    }
}

/// More than any kernel loads; a bound on a list corrupted under our feet.
const MAX_MODULES: usize = 1024;
const MAX_SECTIONS: usize = 256;

fn read_u64(mem: &mut impl Memory, addr: u64, what: &str) -> Result<u64, LibraryError> {
    let b = mem
        .read(addr, 8)
        .filter(|b| b.len() == 8)
        .ok_or_else(|| LibraryError::Read {
            addr,
            what: what.to_owned(),
        })?;
    Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// A NUL-terminated string of at most `max` bytes. Reads stop at page ends, and after a failed
/// read go byte by byte: a short string may end just before an unmapped page.
fn read_c_string(mem: &mut impl Memory, addr: u64, max: usize) -> Option<String> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let chunk = ((0x1000 - (at & 0xfff)) as usize).min(max - out.len());
        let bytes = match mem.read(at, chunk) {
            Some(b) if b.len() == chunk => b,
            _ => match mem.read(at, 1) {
                Some(b) if b.len() == 1 => b,
                _ => return None,
            },
        };
        match bytes.iter().position(|&c| c == 0) {
            Some(end) => {
                out.extend_from_slice(&bytes[..end]);
                break;
            }
            None => out.extend_from_slice(&bytes),
        }
        at += bytes.len() as u64;
    }
    let s = String::from_utf8(out).ok()?;
    (!s.is_empty()).then_some(s)
}

/// Walk the kernel's module list from the `modules` list head. `skip` is the address of a
/// `struct module` being freed (it is still linked in when `free_module` starts).
pub fn walk_modules(
    mem: &mut impl Memory,
    offs: &ModuleOffsets,
    head: u64,
    skip: Option<u64>,
) -> Result<Vec<GuestModule>, LibraryError> {
    let mut out = Vec::new();
    let mut next = read_u64(mem, head, "modules.next")?;
    while next != head {
        if out.len() >= MAX_MODULES {
            return Err(LibraryError::TooLong(MAX_MODULES));
        }
        let m = next.wrapping_sub(offs.list);
        next = read_u64(mem, next, "module list.next")?;
        if Some(m) == skip {
            continue;
        }
        let Some(name) = read_c_string(mem, m + offs.name, offs.name_len) else {
            continue;
        };
        let mut sections = BTreeMap::new();
        let attrs = read_u64(mem, m + offs.sect_attrs, "module.sect_attrs")?;
        if attrs != 0 {
            let array = read_u64(mem, attrs + offs.bin_attrs, "sect_attrs->grp.bin_attrs")?;
            for i in 0..MAX_SECTIONS as u64 {
                if array == 0 {
                    break;
                }
                let attr = read_u64(mem, array + 8 * i, "bin_attrs[i]")?;
                if attr == 0 {
                    break;
                }
                let name_ptr = read_u64(mem, attr + offs.attr_name, "bin_attribute.attr.name")?;
                let addr = read_u64(mem, attr + offs.private, "bin_attribute.private")?;
                if let Some(sec) = read_c_string(mem, name_ptr, 128) {
                    sections.insert(sec, addr);
                }
            }
        }
        out.push(GuestModule {
            name,
            sections,
            build_id: None,
        });
    }
    Ok(out)
}

/// One section of a file as gdb (BFD) counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSection {
    pub name: String,
    pub size: u64,
    pub align: u64,
}

/// Where LLDB puts each section of a relocatable file before displacing it: allocated
/// sections in file order, each at the next multiple of its alignment.
pub fn object_layout(secs: &[FileSection]) -> Vec<u64> {
    let mut next = 0u64;
    secs.iter()
        .map(|s| {
            let a = s.align.max(1);
            let at = next.div_ceil(a).saturating_mul(a);
            next = at.saturating_add(s.size);
            at
        })
        .collect()
}

/// The `SHF_ALLOC` sections of a module file in section-header order: what gdb's library list
/// matches `<section>` elements against ([`crate::kmod::Section::file_alloc`]).
pub fn alloc_sections(file: &str, bytes: &[u8]) -> Result<Vec<FileSection>, LibraryError> {
    let bad = |reason: String| LibraryError::BadFile {
        file: file.to_owned(),
        reason,
    };
    let out: Vec<FileSection> = crate::kmod::sections(bytes)
        .map_err(|e| bad(e.to_string()))?
        .into_iter()
        .filter(|s| s.file_alloc())
        .map(|s| FileSection {
            name: s.name,
            size: s.size,
            align: s.align,
        })
        .collect();
    if out.is_empty() {
        return Err(bad("no allocated sections".into()));
    }
    Ok(out)
}

/// One entry of the library list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Library {
    /// A module: its host file and one address per allocated section of that file.
    Module {
        name: String,
        file: String,
        sections: Vec<u64>,
        text: Option<u64>,
        /// The displacement for LLDB (see the module comment): `.text`'s guest address minus
        /// its place in [`object_layout`].
        bias: Option<u64>,
    },
    /// A host shared library mapped into the UML process, by load base.
    Shared { file: String, base: u64 },
}

impl Library {
    pub fn file(&self) -> &str {
        match self {
            Library::Module { file, .. } | Library::Shared { file, .. } => file,
        }
    }
}

/// Section addresses for a module file: the guest's address of each allocated section, in
/// file order. A section the guest does not place (empty, or `.modinfo`) gets the address of
/// the guest's `.text` as a harmless stand-in: gdb needs a value for each.
pub fn module_library(m: &GuestModule, file: &str, file_sections: &[FileSection]) -> Library {
    let text = m.text();
    let filler = text.unwrap_or(0);
    let sections = file_sections
        .iter()
        .map(|s| m.sections.get(&s.name).copied().unwrap_or(filler))
        .collect();
    let layout = object_layout(file_sections);
    let bias = file_sections
        .iter()
        .position(|s| s.name == ".text")
        .zip(text)
        .map(|(i, t)| t.wrapping_sub(layout[i]));
    Library::Module {
        name: m.name.clone(),
        file: file.to_owned(),
        sections,
        text,
        bias,
    }
}

/// Host shared objects mapped into the process, from `/proc/<pid>/maps`: the first mapping of
/// each file whose name looks like a shared object, except the main executable.
pub fn shared_libraries(maps: &str, exe: &str) -> Vec<Library> {
    let mut out: Vec<Library> = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(offset), Some(_dev), Some(_inode), Some(path)) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if !path.starts_with('/')
            || path == exe
            || !(path.ends_with(".so") || path.contains(".so."))
        {
            continue;
        }
        if u64::from_str_radix(offset, 16) != Ok(0) || out.iter().any(|l| l.file() == path) {
            continue;
        }
        let Some(start) = range
            .split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
        else {
            continue;
        };
        out.push(Library::Shared {
            file: path.to_owned(),
            base: start,
        });
    }
    out
}

/// The `qXfer:libraries:read` document.
pub fn library_list_xml(libs: &[Library]) -> String {
    let mut x = String::from("<library-list version=\"1.0\">\n");
    for l in libs {
        let _ = write!(x, "  <library name=\"{}\">", escape(l.file()));
        match l {
            Library::Module { sections, .. } => {
                for a in sections {
                    let _ = write!(x, "<section address=\"{a:#x}\"/>");
                }
            }
            Library::Shared { base, .. } => {
                let _ = write!(x, "<segment address=\"{base:#x}\"/>");
            }
        }
        x.push_str("</library>\n");
    }
    x.push_str("</library-list>\n");
    x
}

/// The `qXfer:libraries-svr4:read` document, for LLDB: each library by name and displacement
/// (`l_addr`). gdb never reads it: the target description's OS ABI keeps gdb on the generic list.
/// `lm` only has to be distinct per library; no link map exists in the guest.
pub fn library_list_svr4_xml(libs: &[Library]) -> String {
    let mut x = String::from("<library-list-svr4 version=\"1.0\">\n");
    for (i, l) in libs.iter().enumerate() {
        let bias = match l {
            Library::Module { bias: Some(b), .. } => *b,
            Library::Module { bias: None, .. } => continue,
            Library::Shared { base, .. } => *base,
        };
        let _ = writeln!(
            x,
            "  <library name=\"{}\" lm=\"{:#x}\" l_addr=\"{bias:#x}\" l_ld=\"0x0\"/>",
            escape(l.file()),
            i + 1
        );
    }
    x.push_str("</library-list-svr4>\n");
    x
}

/// Copy the part of `doc` a `qXfer` read asks for into `buf`; the number of bytes copied.
pub fn xfer_slice(doc: &[u8], offset: u64, length: usize, buf: &mut [u8]) -> usize {
    let Ok(start) = usize::try_from(offset) else {
        return 0;
    };
    if start >= doc.len() {
        return 0;
    }
    let n = (doc.len() - start).min(length).min(buf.len());
    buf[..n].copy_from_slice(&doc[start..start + n]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse little-endian memory image.
    #[derive(Default)]
    struct FakeMem(BTreeMap<u64, u8>);

    impl FakeMem {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(addr + i as u64, *b);
            }
        }
        fn put_u64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
    }

    impl Memory for FakeMem {
        fn read(&mut self, addr: u64, len: usize) -> Option<Vec<u8>> {
            (0..len as u64)
                .map(|i| self.0.get(&(addr + i)).copied())
                .collect()
        }
    }

    const OFFS: ModuleOffsets = ModuleOffsets {
        list: 8,
        name: 24,
        name_len: 56,
        sect_attrs: 0x300,
        bin_attrs: 0x18,
        attr_name: 0,
        private: 0x30,
    };

    /// One module at `m` with the given sections, linked after `prev_list`.
    fn module(mem: &mut FakeMem, m: u64, name: &str, secs: &[(&str, u64)], next_list: u64) {
        mem.put_u64(m + OFFS.list, next_list);
        let mut n = name.as_bytes().to_vec();
        n.resize(56, 0);
        mem.put(m + OFFS.name, &n);
        let attrs = m + 0x1000;
        mem.put_u64(m + OFFS.sect_attrs, attrs);
        let array = m + 0x2000;
        mem.put_u64(attrs + OFFS.bin_attrs, array);
        for (i, (sec, addr)) in secs.iter().enumerate() {
            let attr = m + 0x3000 + 0x100 * i as u64;
            let sname = m + 0x8000 + 0x40 * i as u64;
            let mut s = sec.as_bytes().to_vec();
            s.push(0);
            mem.put(sname, &s);
            mem.put_u64(attr + OFFS.attr_name, sname);
            mem.put_u64(attr + OFFS.private, *addr);
            mem.put_u64(array + 8 * i as u64, attr);
        }
        mem.put_u64(array + 8 * secs.len() as u64, 0);
    }

    fn two_modules() -> (FakeMem, u64) {
        let mut mem = FakeMem::default();
        let head = 0x6000_0000;
        let a = 0x7000_0000;
        let b = 0x7100_0000;
        mem.put_u64(head, a + OFFS.list);
        module(
            &mut mem,
            a,
            "ipt_REJECT",
            &[(".text", 0x60b5e000), (".data", 0x60b62000)],
            b + OFFS.list,
        );
        module(&mut mem, b, "x_tables", &[(".text", 0x60a00000)], head);
        (mem, head)
    }

    #[test]
    fn walks_the_module_list_and_its_section_attributes() {
        let (mut mem, head) = two_modules();
        let v = walk_modules(&mut mem, &OFFS, head, None).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "ipt_REJECT");
        assert_eq!(v[0].sections[".text"], 0x60b5e000);
        assert_eq!(v[0].sections[".data"], 0x60b62000);
        assert_eq!(v[1].name, "x_tables");
    }

    #[test]
    fn a_module_being_freed_is_left_out() {
        let (mut mem, head) = two_modules();
        let v = walk_modules(&mut mem, &OFFS, head, Some(0x7000_0000)).unwrap();
        assert_eq!(
            v.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["x_tables"]
        );
    }

    #[test]
    fn a_looping_list_is_an_error_not_a_hang() {
        let mut mem = FakeMem::default();
        let head = 0x6000_0000;
        let a = 0x7000_0000;
        mem.put_u64(head, a + OFFS.list);
        module(&mut mem, a, "loop", &[], a + OFFS.list);
        assert_eq!(
            walk_modules(&mut mem, &OFFS, head, None),
            Err(LibraryError::TooLong(MAX_MODULES))
        );
    }

    #[test]
    fn unreadable_memory_names_the_address() {
        let mut mem = FakeMem::default();
        let e = walk_modules(&mut mem, &OFFS, 0x1234, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read guest memory at 0x1234 (modules.next)"
        );
    }

    #[test]
    fn module_sections_follow_the_file_order_with_a_filler_for_unplaced_ones() {
        let (mut mem, head) = two_modules();
        let m = walk_modules(&mut mem, &OFFS, head, None).unwrap().remove(0);
        let file = [
            FileSection {
                name: ".note.gnu.build-id".into(),
                size: 36,
                align: 4,
            },
            FileSection {
                name: ".text".into(),
                size: 0x200,
                align: 16,
            },
            FileSection {
                name: ".modinfo".into(),
                size: 0x80,
                align: 1,
            },
            FileSection {
                name: ".data".into(),
                size: 0x10,
                align: 8,
            },
        ];
        let lib = module_library(&m, "/m/ipt_REJECT.ko", &file);
        assert_eq!(
            lib,
            Library::Module {
                name: "ipt_REJECT".into(),
                file: "/m/ipt_REJECT.ko".into(),
                sections: vec![0x60b5e000, 0x60b5e000, 0x60b5e000, 0x60b62000],
                text: Some(0x60b5e000),
                // .text is laid out at 0x30 (after 36 bytes of note, aligned to 16).
                bias: Some(0x60b5e000 - 0x30),
            }
        );
        assert_eq!(object_layout(&file), [0, 0x30, 0x230, 0x2b0]);
    }

    #[test]
    fn xml_lists_sections_and_segments_escaped() {
        let libs = [
            Library::Module {
                name: "m".into(),
                file: "/a&b/m.ko".into(),
                sections: vec![0x10, 0x20],
                text: Some(0x10),
                bias: Some(0x8),
            },
            Library::Shared {
                file: "/lib/libc.so.6".into(),
                base: 0x7f00_0000_0000,
            },
        ];
        assert_eq!(
            library_list_svr4_xml(&libs),
            "<library-list-svr4 version=\"1.0\">\n  <library name=\"/a&amp;b/m.ko\" lm=\"0x1\" l_addr=\"0x8\" l_ld=\"0x0\"/>\n  <library name=\"/lib/libc.so.6\" lm=\"0x2\" l_addr=\"0x7f0000000000\" l_ld=\"0x0\"/>\n</library-list-svr4>\n"
        );
        assert_eq!(
            library_list_xml(&libs),
            "<library-list version=\"1.0\">\n  <library name=\"/a&amp;b/m.ko\"><section address=\"0x10\"/><section address=\"0x20\"/></library>\n  <library name=\"/lib/libc.so.6\"><segment address=\"0x7f0000000000\"/></library>\n</library-list>\n"
        );
    }

    #[test]
    fn shared_libraries_from_maps_skip_the_executable_and_repeats() {
        let maps = "\
60000000-60100000 r-xp 00000000 08:01 1 /k/linux
7f0000000000-7f0000028000 r--p 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000028000-7f000019d000 r-xp 00028000 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000000000-7f1000001000 rw-p 00000000 00:00 0
7f2000000000-7f2000001000 r--p 00000000 08:01 3 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7f3000000000-7f3000001000 rw-s 00000000 00:01 4 /dev/shm/vm_file (deleted)
";
        let v = shared_libraries(maps, "/k/linux");
        assert_eq!(
            v,
            [
                Library::Shared {
                    file: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                    base: 0x7f0000000000
                },
                Library::Shared {
                    file: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
                    base: 0x7f2000000000
                },
            ]
        );
    }

    #[test]
    fn xfer_reads_in_pieces() {
        let doc = b"0123456789";
        let mut buf = [0u8; 4];
        assert_eq!(xfer_slice(doc, 0, 4, &mut buf), 4);
        assert_eq!(&buf, b"0123");
        assert_eq!(xfer_slice(doc, 8, 4, &mut buf), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(xfer_slice(doc, 10, 4, &mut buf), 0);
        assert_eq!(xfer_slice(doc, u64::MAX, 4, &mut buf), 0);
    }
}
