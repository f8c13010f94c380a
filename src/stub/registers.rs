//! The x86-64 register file as the server describes it to clients: one table gives the `g`
//! packet layout (what gdbstub_arch's `X86_64CoreRegs` serializes), the target description
//! gdb and LLDB read, LLDB's `qRegisterInfo` answers, and the registers expedited in stop
//! replies (so neither client needs a `g` round trip per breakpoint hit).
//!
//! Register numbers are positions in the table; they are gdb's amd64 numbers and, because
//! `qRegisterInfo` lists the same table in the same order, LLDB's too.

use std::fmt::Write as _;

use gdbstub::arch::lldb::{Encoding, Format, Generic, Register};

/// What kind of value a register holds (target description type, LLDB encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    CodePtr,
    DataPtr,
    Flags,
    X87,
    Vec128,
}

/// One register of the `g` packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg {
    pub name: &'static str,
    pub bits: usize,
    /// Byte offset in the `g` packet.
    pub offset: usize,
    pub kind: Kind,
    /// DWARF (and eh_frame) register number.
    pub dwarf: Option<usize>,
    pub generic: Option<&'static str>,
    /// The target-description feature it belongs to.
    pub feature: Feature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Core,
    Sse,
}

const fn r(
    name: &'static str,
    bits: usize,
    offset: usize,
    kind: Kind,
    dwarf: Option<usize>,
    generic: Option<&'static str>,
    feature: Feature,
) -> Reg {
    Reg {
        name,
        bits,
        offset,
        kind,
        dwarf,
        generic,
        feature,
    }
}

use Feature::{Core, Sse};
use Kind::*;

/// The registers in `g` packet order (536 bytes in all).
pub const REGS: &[Reg] = &[
    r("rax", 64, 0, Int, Some(0), None, Core),
    r("rbx", 64, 8, Int, Some(3), None, Core),
    r("rcx", 64, 16, Int, Some(2), Some("arg4"), Core),
    r("rdx", 64, 24, Int, Some(1), Some("arg3"), Core),
    r("rsi", 64, 32, Int, Some(4), Some("arg2"), Core),
    r("rdi", 64, 40, Int, Some(5), Some("arg1"), Core),
    r("rbp", 64, 48, DataPtr, Some(6), Some("fp"), Core),
    r("rsp", 64, 56, DataPtr, Some(7), Some("sp"), Core),
    r("r8", 64, 64, Int, Some(8), Some("arg5"), Core),
    r("r9", 64, 72, Int, Some(9), Some("arg6"), Core),
    r("r10", 64, 80, Int, Some(10), None, Core),
    r("r11", 64, 88, Int, Some(11), None, Core),
    r("r12", 64, 96, Int, Some(12), None, Core),
    r("r13", 64, 104, Int, Some(13), None, Core),
    r("r14", 64, 112, Int, Some(14), None, Core),
    r("r15", 64, 120, Int, Some(15), None, Core),
    r("rip", 64, 128, CodePtr, Some(16), Some("pc"), Core),
    r("eflags", 32, 136, Flags, Some(49), Some("flags"), Core),
    r("cs", 32, 140, Int, Some(51), None, Core),
    r("ss", 32, 144, Int, Some(52), None, Core),
    r("ds", 32, 148, Int, Some(53), None, Core),
    r("es", 32, 152, Int, Some(50), None, Core),
    r("fs", 32, 156, Int, Some(54), None, Core),
    r("gs", 32, 160, Int, Some(55), None, Core),
    r("st0", 80, 164, X87, Some(33), None, Core),
    r("st1", 80, 174, X87, Some(34), None, Core),
    r("st2", 80, 184, X87, Some(35), None, Core),
    r("st3", 80, 194, X87, Some(36), None, Core),
    r("st4", 80, 204, X87, Some(37), None, Core),
    r("st5", 80, 214, X87, Some(38), None, Core),
    r("st6", 80, 224, X87, Some(39), None, Core),
    r("st7", 80, 234, X87, Some(40), None, Core),
    r("fctrl", 32, 244, Int, Some(65), None, Core),
    r("fstat", 32, 248, Int, Some(66), None, Core),
    r("ftag", 32, 252, Int, None, None, Core),
    r("fiseg", 32, 256, Int, None, None, Core),
    r("fioff", 32, 260, Int, None, None, Core),
    r("foseg", 32, 264, Int, None, None, Core),
    r("fooff", 32, 268, Int, None, None, Core),
    r("fop", 32, 272, Int, None, None, Core),
    r("xmm0", 128, 276, Vec128, Some(17), None, Sse),
    r("xmm1", 128, 292, Vec128, Some(18), None, Sse),
    r("xmm2", 128, 308, Vec128, Some(19), None, Sse),
    r("xmm3", 128, 324, Vec128, Some(20), None, Sse),
    r("xmm4", 128, 340, Vec128, Some(21), None, Sse),
    r("xmm5", 128, 356, Vec128, Some(22), None, Sse),
    r("xmm6", 128, 372, Vec128, Some(23), None, Sse),
    r("xmm7", 128, 388, Vec128, Some(24), None, Sse),
    r("xmm8", 128, 404, Vec128, Some(25), None, Sse),
    r("xmm9", 128, 420, Vec128, Some(26), None, Sse),
    r("xmm10", 128, 436, Vec128, Some(27), None, Sse),
    r("xmm11", 128, 452, Vec128, Some(28), None, Sse),
    r("xmm12", 128, 468, Vec128, Some(29), None, Sse),
    r("xmm13", 128, 484, Vec128, Some(30), None, Sse),
    r("xmm14", 128, 500, Vec128, Some(31), None, Sse),
    r("xmm15", 128, 516, Vec128, Some(32), None, Sse),
    r("mxcsr", 32, 532, Int, Some(64), None, Sse),
];

/// The general registers, flags and segments (0..=23): what a stop reply carries. With them
/// gdb and LLDB can show the frame, unwind and evaluate `skb->len` without a `g` packet.
pub const EXPEDITED: std::ops::Range<usize> = 0..24;

/// Values of the expedited registers from ptrace's register set, in table order.
pub fn expedited_values(r: &libc::user_regs_struct) -> [u64; 24] {
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.eflags, r.cs, r.ss, r.ds, r.es, r.fs, r.gs,
    ]
}

/// `NN:VALUE;` pairs for a stop reply (values little-endian hex, as in the `g` packet).
pub fn expedite(r: &libc::user_regs_struct) -> String {
    let vals = expedited_values(r);
    let mut out = String::with_capacity(24 * 20);
    for i in EXPEDITED {
        let reg = &REGS[i];
        let bytes = vals[i].to_le_bytes();
        let _ = write!(out, "{i:02x}:");
        for b in &bytes[..reg.bits / 8] {
            let _ = write!(out, "{b:02x}");
        }
        out.push(';');
    }
    out
}

fn tdesc_type(k: Kind, bits: usize) -> &'static str {
    match (k, bits) {
        (CodePtr, _) => "code_ptr",
        (DataPtr, _) => "data_ptr",
        (Flags, _) => "i386_eflags",
        (X87, _) => "i387_ext",
        (Vec128, _) => "vec128",
        (_, 64) => "int64",
        _ => "int32",
    }
}

/// The target description: gdb's standard amd64 core and SSE features with every register, so
/// that LLDB (which takes its register file from here) and gdb agree on the `g` layout. The
/// OS ABI is `none`: the `linux` executable carries a GNU/Linux ABI note, and with that ABI gdb
/// lists shared libraries the SVR4 way (the host's dynamic linker's list) and never reads
/// `qXfer:libraries`. The description's OS ABI wins over the file's (seen with Debian's gdb
/// 13.1; `tests/serve_session.rs` checks it).
pub fn target_xml() -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n<target version=\"1.0\">\
         <architecture>i386:x86-64</architecture><osabi>none</osabi>\n",
    );
    for (feature, fname) in [
        (Core, "org.gnu.gdb.i386.core"),
        (Sse, "org.gnu.gdb.i386.sse"),
    ] {
        let _ = writeln!(x, "<feature name=\"{fname}\">");
        if feature == Core {
            x.push_str(
                "<flags id=\"i386_eflags\" size=\"4\"><field name=\"CF\" start=\"0\" end=\"0\"/>\
                 <field name=\"\" start=\"1\" end=\"1\"/><field name=\"PF\" start=\"2\" end=\"2\"/>\
                 <field name=\"AF\" start=\"4\" end=\"4\"/><field name=\"ZF\" start=\"6\" end=\"6\"/>\
                 <field name=\"SF\" start=\"7\" end=\"7\"/><field name=\"TF\" start=\"8\" end=\"8\"/>\
                 <field name=\"IF\" start=\"9\" end=\"9\"/><field name=\"DF\" start=\"10\" end=\"10\"/>\
                 <field name=\"OF\" start=\"11\" end=\"11\"/></flags>\n",
            );
        } else {
            x.push_str(
                "<vector id=\"v4f\" type=\"ieee_single\" count=\"4\"/>\
                 <vector id=\"v2d\" type=\"ieee_double\" count=\"2\"/>\
                 <vector id=\"v16i8\" type=\"int8\" count=\"16\"/>\
                 <vector id=\"v8i16\" type=\"int16\" count=\"8\"/>\
                 <vector id=\"v4i32\" type=\"int32\" count=\"4\"/>\
                 <vector id=\"v2i64\" type=\"int64\" count=\"2\"/>\
                 <union id=\"vec128\"><field name=\"v4_float\" type=\"v4f\"/>\
                 <field name=\"v2_double\" type=\"v2d\"/><field name=\"v16_int8\" type=\"v16i8\"/>\
                 <field name=\"v8_int16\" type=\"v8i16\"/><field name=\"v4_int32\" type=\"v4i32\"/>\
                 <field name=\"v2_int64\" type=\"v2i64\"/><field name=\"uint128\" type=\"uint128\"/>\
                 </union>\n",
            );
        }
        for (n, reg) in REGS
            .iter()
            .enumerate()
            .filter(|(_, r)| r.feature == feature)
        {
            let group = match reg.kind {
                X87 | Vec128 => " group=\"float\"",
                _ if reg.name.starts_with('f') && reg.name != "fs" => " group=\"float\"",
                _ => "",
            };
            // dwarf_regnum and generic are LLDB's attributes; gdb ignores attributes it does
            // not know.
            let mut extra = String::new();
            if let Some(d) = reg.dwarf {
                let _ = write!(extra, " dwarf_regnum=\"{d}\" ehframe_regnum=\"{d}\"");
            }
            if let Some(g) = reg.generic {
                let _ = write!(extra, " generic=\"{g}\"");
            }
            let _ = writeln!(
                x,
                "<reg name=\"{}\" bitsize=\"{}\" type=\"{}\" regnum=\"{n}\"{group}{extra}/>",
                reg.name,
                reg.bits,
                tdesc_type(reg.kind, reg.bits)
            );
        }
        x.push_str("</feature>\n");
    }
    x.push_str("</target>\n");
    x
}

/// LLDB's description of register `n` (`None` past the last one).
pub fn lldb_register(n: usize) -> Option<Register<'static>> {
    let reg = REGS.get(n)?;
    let (encoding, format) = match reg.kind {
        Vec128 => (Encoding::Vector, Format::VectorUInt8),
        X87 => (Encoding::Vector, Format::VectorUInt8),
        _ => (Encoding::Uint, Format::Hex),
    };
    let generic = reg.generic.map(|g| match g {
        "pc" => Generic::Pc,
        "sp" => Generic::Sp,
        "fp" => Generic::Fp,
        "flags" => Generic::Flags,
        "arg1" => Generic::Arg1,
        "arg2" => Generic::Arg2,
        "arg3" => Generic::Arg3,
        "arg4" => Generic::Arg4,
        "arg5" => Generic::Arg5,
        _ => Generic::Arg6,
    });
    let set = match (reg.feature, reg.kind) {
        (Core, Int | CodePtr | DataPtr | Flags) if n < 24 => "General Purpose Registers",
        _ => "Floating Point Registers",
    };
    Some(Register {
        name: reg.name,
        alt_name: None,
        bitsize: reg.bits,
        offset: reg.offset,
        encoding,
        format,
        set,
        gcc: reg.dwarf,
        dwarf: reg.dwarf,
        generic,
        container_regs: None,
        invalidate_regs: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_g_packet_layout() {
        let mut at = 0;
        for reg in REGS {
            assert_eq!(reg.offset, at, "{}", reg.name);
            at += reg.bits / 8;
        }
        assert_eq!(at, 0x218);
        assert_eq!(REGS[16].name, "rip");
        assert_eq!(REGS[7].name, "rsp");
    }

    #[test]
    fn expedited_registers_are_little_endian_pairs() {
        // SAFETY: plain integers; zero is a valid value.
        let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        r.rip = 0x6000_1234;
        r.eflags = 0x246;
        let e = expedite(&r);
        assert!(e.contains("10:3412006000000000;"), "{e}");
        assert!(e.contains("11:46020000;"), "{e}");
        assert_eq!(e.matches(';').count(), 24);
    }

    #[test]
    fn the_description_numbers_every_register() {
        let x = target_xml();
        assert_eq!(x.matches("<reg ").count(), REGS.len());
        assert!(x.contains("<osabi>none</osabi>"));
        assert!(
            x.contains("name=\"mxcsr\" bitsize=\"32\" type=\"int32\" regnum=\"56\""),
            "{x}"
        );
        assert!(
            x.contains("regnum=\"16\" dwarf_regnum=\"16\" ehframe_regnum=\"16\" generic=\"pc\"")
        );
        assert!(lldb_register(REGS.len()).is_none());
        assert_eq!(lldb_register(16).unwrap().offset, 128);
    }
}
