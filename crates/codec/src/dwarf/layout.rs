//! The value types of a struct layout and their pahole/gdb-like rendering.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Struct or union.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregateKind {
    Struct,
    Union,
}

impl AggregateKind {
    pub fn keyword(self) -> &'static str {
        match self {
            AggregateKind::Struct => "struct",
            AggregateKind::Union => "union",
        }
    }
}

/// One member, at any depth. Members of nested structs and unions follow the member that
/// contains them, with `depth` one higher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The C member path a user types after `skb->`: `len`, `protocol` (reached through
    /// anonymous unions, which add nothing to the path), `headers.protocol`.
    /// For an anonymous struct or union this is the path of its parent (`""` at the top).
    pub path: String,
    /// Byte offset from the start of the outermost struct. For a bitfield: the byte that holds
    /// its lowest bit.
    pub offset: u64,
    /// Size in bytes of the member's type (for a bitfield: of its declared storage type, as gdb
    /// prints it).
    pub size: u64,
    /// For a bitfield: position of its lowest bit inside the byte at `offset` (little-endian).
    pub bit_offset: Option<u32>,
    /// For a bitfield: width in bits.
    pub bit_size: Option<u32>,
    /// The member's C type without the name: `unsigned int`, `struct sk_buff *`, `char [16]`,
    /// `void (*)(struct sk_buff *)`.
    pub type_name: String,
    /// The declaration as gdb prints it: `unsigned char *head`, `__u8 pkt_type : 3`.
    pub decl: String,
    /// Nesting depth: 0 for direct members of the struct.
    pub depth: u32,
    /// Set when the member's type is a struct or union whose members follow.
    pub aggregate: Option<AggregateKind>,
    /// True for an anonymous struct or union (it has no name of its own).
    pub anonymous: bool,
    /// True when the member sits in a union: every member of a union starts at its offset.
    pub in_union: bool,
}

impl Member {
    /// True for a bitfield.
    pub fn is_bitfield(&self) -> bool {
        self.bit_size.is_some()
    }

    /// The member's last name component (`protocol` for `headers.protocol`).
    pub fn name(&self) -> &str {
        if self.anonymous {
            ""
        } else {
            self.path.rsplit('.').next().unwrap_or("")
        }
    }
}

/// Unused space inside a struct, as pahole and gdb's `ptype /o` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hole {
    /// Path of the member before the hole (`""` if the hole opens the struct).
    pub after: String,
    /// Index in `members` of the member the hole comes before (`members.len()` for padding
    /// at the very end): where a listing prints it.
    pub pos: usize,
    /// Start of the hole in bits from the start of the outermost struct.
    pub bit_start: u64,
    /// Length in bits.
    pub bits: u64,
    /// True for unused space at the end of a struct (padding), false for a gap between members.
    pub padding: bool,
    /// Depth of the struct the hole is in (0 for the outermost).
    pub depth: u32,
}

impl Hole {
    /// Whole bytes of the hole.
    pub fn bytes(&self) -> u64 {
        self.bits / 8
    }
}

/// The layout of one struct or union, members flattened in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StructLayout {
    pub name: String,
    pub kind: AggregateKind,
    /// `sizeof`.
    pub size: u64,
    pub members: Vec<Member>,
    pub holes: Vec<Hole>,
    /// Source file and line of the definition, when DWARF records them.
    pub decl_file: Option<String>,
    pub decl_line: Option<u64>,
}

impl StructLayout {
    /// The member reachable with this C path (`len`, `protocol`, `headers.protocol`).
    pub fn member(&self, path: &str) -> Option<&Member> {
        self.members.iter().find(|m| !m.anonymous && m.path == path)
    }

    /// Total of all hole bytes, padding excluded.
    pub fn hole_bytes(&self) -> u64 {
        self.holes
            .iter()
            .filter(|h| !h.padding)
            .map(|h| h.bits)
            .sum::<u64>()
            / 8
    }
}

/// Render like gdb's `ptype /o`: offset and size columns, nested members indented, holes and
/// total sizes as comments.
impl fmt::Display for StructLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "/* offset      |    size */  type = {} {} {{",
            self.kind.keyword(),
            self.name
        )?;
        // Open nested scopes: (depth of the aggregate member, its size, closing text).
        let mut open: Vec<(u32, u64, String)> = Vec::new();
        for pos in 0..=self.members.len() {
            let member = self.members.get(pos);
            let depth = member.map_or(0, |m| m.depth);
            // Close the scopes this member is no longer inside, printing each one's padding
            // before its brace.
            while let Some((d, size, close)) = open.last().cloned() {
                if d < depth {
                    break;
                }
                self.write_holes(f, pos, d + 1)?;
                let pad = "    ".repeat(d as usize + 1);
                writeln!(f)?;
                writeln!(f, "{:27}{pad}    /* total size (bytes): {size:>4} */", "")?;
                writeln!(f, "{:27}{pad}{close}", "")?;
                open.pop();
            }
            self.write_holes(f, pos, depth)?;
            let Some(m) = member else { break };
            let indent = "    ".repeat(m.depth as usize + 1);
            let column = match (m.in_union, m.bit_offset) {
                (true, _) => format!("/* {:>21} */", m.size),
                (false, Some(bit)) => format!("/* {:>6}:{bit:>2}   | {:>7} */", m.offset, m.size),
                (false, None) => format!("/* {:>6}      | {:>7} */", m.offset, m.size),
            };
            let has_children = self.members.get(pos + 1).is_some_and(|n| n.depth > m.depth);
            match m.aggregate {
                Some(kind) => {
                    let (head, close) = if m.anonymous {
                        (kind.keyword().to_owned(), "};".to_owned())
                    } else {
                        let name = m.name();
                        let head = m.decl.strip_suffix(name).unwrap_or(&m.decl).trim_end();
                        // A named member of an anonymous type: `struct {...} named`.
                        let head = head.strip_suffix(" {...}").unwrap_or(head);
                        (head.to_owned(), format!("}} {name};"))
                    };
                    writeln!(f, "{column}{indent}{head} {{")?;
                    if !has_children {
                        writeln!(f, "{:27}{indent}    <no data fields>", "")?;
                    }
                    open.push((m.depth, m.size, close));
                }
                _ => writeln!(f, "{column}{indent}{};", m.decl)?,
            }
        }
        writeln!(f)?;
        writeln!(f, "{:31}/* total size (bytes): {:>4} */", "", self.size)?;
        writeln!(f, "{:29}}}", "")
    }
}

impl StructLayout {
    fn write_holes(&self, f: &mut fmt::Formatter<'_>, pos: usize, depth: u32) -> fmt::Result {
        for h in self
            .holes
            .iter()
            .filter(|h| h.pos == pos && h.depth == depth)
        {
            let what = if h.padding { "padding" } else { "hole" };
            if h.bits % 8 != 0 {
                writeln!(f, "/* XXX {:>2}-bit {what:<10} */", h.bits % 8)?;
            }
            if h.bits >= 8 {
                writeln!(f, "/* XXX {:>2}-byte {what:<9} */", h.bits / 8)?;
            }
        }
        Ok(())
    }
}
