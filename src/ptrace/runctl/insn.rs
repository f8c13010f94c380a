//! x86-64 instruction lengths and out-of-line copies, for stepping over a breakpoint without
//! taking the `int3` out of the text.
//!
//! A breakpoint's original instruction is copied into a stub elsewhere in the tracee; resuming a
//! thread that stopped on the breakpoint means pointing it at the stub, which runs that one
//! instruction and jumps back. Copying an instruction elsewhere changes what it means when it
//! refers to its own address: RIP-relative operands, relative jumps and calls (a call also pushes
//! its own address). [`decode`] finds the length and such references; [`relocate`] writes the
//! equivalent code for the stub's address. Only the general-purpose instruction set is decoded:
//! the kernel is built without SSE and AVX, and anything this module does not know is reported as
//! [`Kind::Unsupported`] rather than guessed at.

/// One decoded instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insn {
    pub len: usize,
    pub kind: Kind,
    bytes: [u8; 15],
}

/// How an instruction depends on its own address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Means the same wherever it sits.
    Plain,
    /// A RIP-relative memory operand: `disp32` at byte `disp_at`, relative to the next instruction.
    RipRel { disp_at: usize },
    /// `jmp rel8` / `jmp rel32`: the displacement is the instruction's last `size` bytes.
    Jmp { size: u8 },
    /// `jcc rel8` / `jcc rel32` with condition code `cond` (0..=15).
    Jcc { cond: u8, size: u8 },
    /// `call rel32`.
    Call,
    /// `call *r/m64` (`FF /2`): ModRM at byte `modrm_at`; `rip_disp_at` when the operand is
    /// RIP-relative.
    CallIndirect {
        modrm_at: usize,
        rip_disp_at: Option<usize>,
    },
    /// Not handled here (the reason says what it is).
    Unsupported(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsnError {
    #[error("instruction runs past the {0} bytes given")]
    Truncated(usize),
    #[error("invalid opcode {0:#04x} in 64-bit mode")]
    Invalid(u8),
    #[error("instruction longer than 15 bytes")]
    TooLong,
    #[error("cannot run `{what}` out of line")]
    Unsupported { what: &'static str },
    #[error("target {target:#x} is out of rel32 reach of the stub at {at:#x}")]
    OutOfReach { target: u64, at: u64 },
}

// Operand encodings of the one-byte and 0F maps.
const M: u8 = 1; // ModRM follows
const I8: u8 = 2; // imm8
const I16: u8 = 4; // imm16
const IZ: u8 = 8; // imm16 with 0x66, else imm32
const BAD: u8 = 16; // invalid in 64-bit mode

/// Operand encoding of each one-byte opcode (prefixes, REX, escapes and the special cases are
/// handled in [`decode`] before this table is consulted).
fn one_byte(op: u8) -> u8 {
    match op {
        0x00..=0x3f => match op & 7 {
            0..=3 => M,
            4 => I8,
            5 => IZ,
            _ => BAD, // push/pop seg, daa/das/aaa/aas; prefixes never reach here
        },
        0x50..=0x5f => 0,
        0x60..=0x62 => BAD,
        0x63 => M,
        0x68 => IZ,
        0x69 => M | IZ,
        0x6a => I8,
        0x6b => M | I8,
        0x6c..=0x6f => 0,
        0x70..=0x7f => I8,
        0x80 => M | I8,
        0x81 => M | IZ,
        0x82 => BAD,
        0x83 => M | I8,
        0x84..=0x8f => M,
        0x90..=0x99 => 0,
        0x9a => BAD,
        0x9b..=0x9f => 0,
        0xa0..=0xa3 => 0, // moffs: see decode
        0xa4..=0xa7 => 0,
        0xa8 => I8,
        0xa9 => IZ,
        0xaa..=0xaf => 0,
        0xb0..=0xb7 => I8,
        0xb8..=0xbf => 0, // imm16/32/64: see decode
        0xc0 | 0xc1 => M | I8,
        0xc2 => I16,
        0xc3 => 0,
        0xc6 => M | I8,
        0xc7 => M | IZ,
        0xc8 => I16 | I8,
        0xc9 => 0,
        0xca => I16,
        0xcb..=0xcc => 0,
        0xcd => I8,
        0xce => BAD,
        0xcf => 0,
        0xd0..=0xd3 => M,
        0xd4..=0xd6 => BAD,
        0xd7 => 0,
        0xd8..=0xdf => M,
        0xe0..=0xe7 => I8,
        0xe8 | 0xe9 => IZ,
        0xea => BAD,
        0xeb => I8,
        0xec..=0xef => 0,
        0xf1 | 0xf4 | 0xf5 => 0,
        0xf6 | 0xf7 => M, // immediate depends on ModRM.reg
        0xf8..=0xfd => 0,
        0xfe | 0xff => M,
        _ => BAD,
    }
}

/// Operand encoding of each `0F xx` opcode.
fn two_byte(op: u8) -> u8 {
    match op {
        0x00..=0x03 => M,
        0x04 => BAD,
        0x05..=0x09 => 0,
        0x0a => BAD,
        0x0b => 0,
        0x0c => BAD,
        0x0d => M,
        0x0e => 0,
        0x0f => M | I8,
        0x10..=0x2f => match op {
            0x24..=0x27 => BAD,
            _ => M,
        },
        0x30..=0x37 => 0,
        0x38..=0x3f => BAD, // 38 and 3A are escapes handled by the caller
        0x40..=0x6f => M,
        0x70..=0x73 => M | I8,
        0x74..=0x76 => M,
        0x77 => 0,
        0x78..=0x7f => M,
        0x80..=0x8f => IZ,
        0x90..=0x9f => M,
        0xa0..=0xa2 => 0,
        0xa3 => M,
        0xa4 => M | I8,
        0xa5 => M,
        0xa6 | 0xa7 => BAD,
        0xa8..=0xaa => 0,
        0xab => M,
        0xac => M | I8,
        0xad..=0xaf => M,
        0xb0..=0xb9 => M,
        0xba => M | I8,
        0xbb..=0xc1 => M,
        0xc2 => M | I8,
        0xc3 => M,
        0xc4..=0xc6 => M | I8,
        0xc7 => M,
        0xc8..=0xcf => 0,
        _ => M, // 0F D0..FF: MMX/SSE forms and ud0, all with ModRM
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, InsnError> {
        let v = *self
            .b
            .get(self.i)
            .ok_or(InsnError::Truncated(self.b.len()))?;
        self.i += 1;
        if self.i > 15 {
            return Err(InsnError::TooLong);
        }
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> Result<(), InsnError> {
        for _ in 0..n {
            self.next()?;
        }
        Ok(())
    }
}

/// Decodes the instruction at the start of `bytes` (64-bit mode).
pub fn decode(bytes: &[u8]) -> Result<Insn, InsnError> {
    let mut c = Cursor { b: bytes, i: 0 };
    let mut opsize16 = false;
    let mut addr32 = false;
    let mut rex = 0u8;
    let mut op = c.next()?;
    loop {
        match op {
            0x66 => opsize16 = true,
            0x67 => addr32 = true,
            0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 => {}
            _ => break,
        }
        op = c.next()?;
    }
    if (0x40..=0x4f).contains(&op) {
        rex = op;
        op = c.next()?;
    }
    let rex_w = rex & 8 != 0;
    let rex_b = rex & 1 != 0;

    let mut flags;
    let mut kind = Kind::Plain;
    let mut special_imm = 0usize;
    let mut group_f6 = false;
    let mut one_byte_map = true;
    match op {
        0xc4 | 0xc5 | 0x62 => {
            return Err(InsnError::Unsupported {
                what: "VEX/EVEX-encoded instruction",
            });
        }
        0x0f => {
            one_byte_map = false;
            let op2 = c.next()?;
            match op2 {
                0x38 => {
                    c.next()?;
                    flags = M;
                }
                0x3a => {
                    c.next()?;
                    flags = M | I8;
                }
                _ => {
                    flags = two_byte(op2);
                    if (0x80..=0x8f).contains(&op2) {
                        kind = Kind::Jcc {
                            cond: op2 & 0xf,
                            size: 4,
                        };
                        flags = 0;
                        special_imm = 4;
                    }
                }
            }
            if flags & BAD != 0 {
                return Err(InsnError::Invalid(op2));
            }
        }
        _ => {
            flags = one_byte(op);
            if flags & BAD != 0 {
                return Err(InsnError::Invalid(op));
            }
            match op {
                0x70..=0x7f => {
                    kind = Kind::Jcc {
                        cond: op & 0xf,
                        size: 1,
                    };
                }
                0xeb => kind = Kind::Jmp { size: 1 },
                0xe9 => {
                    kind = Kind::Jmp { size: 4 };
                    flags = 0;
                    special_imm = 4;
                }
                0xe8 => {
                    kind = Kind::Call;
                    flags = 0;
                    special_imm = 4;
                }
                0xe0..=0xe3 => kind = Kind::Unsupported("loop/jrcxz"),
                0xcc => kind = Kind::Unsupported("int3"),
                0xa0..=0xa3 => special_imm = if addr32 { 4 } else { 8 },
                0xb8..=0xbf => {
                    special_imm = if rex_w {
                        8
                    } else if opsize16 {
                        2
                    } else {
                        4
                    }
                }
                0xf6 | 0xf7 => group_f6 = true,
                _ => {}
            }
        }
    }

    let mut rip_disp_at = None;
    if flags & M != 0 {
        let modrm_at = c.i;
        let modrm = c.next()?;
        let md = modrm >> 6;
        let rm = modrm & 7;
        let reg = (modrm >> 3) & 7;
        if group_f6 && reg <= 1 {
            flags |= if op == 0xf6 { I8 } else { IZ };
        }
        if md != 3 {
            let mut base5 = false;
            if rm == 4 {
                let sib = c.next()?;
                base5 = sib & 7 == 5;
            }
            match md {
                0 if rm == 5 => {
                    rip_disp_at = Some(c.i);
                    c.skip(4)?;
                }
                0 if base5 => c.skip(4)?,
                1 => c.skip(1)?,
                2 => c.skip(4)?,
                _ => {}
            }
        }
        if one_byte_map && op == 0xff && reg == 2 {
            // call *r/m64; the stack pointer as the operand or its base would see the
            // emulated push, so those are refused.
            let uses_rsp = if md == 3 {
                rm == 4 && !rex_b
            } else if rm == 4 {
                let sib = bytes[modrm_at + 1];
                sib & 7 == 4 && !rex_b
            } else {
                false
            };
            kind = if uses_rsp {
                Kind::Unsupported("call through the stack pointer")
            } else {
                Kind::CallIndirect {
                    modrm_at,
                    rip_disp_at,
                }
            };
        } else if one_byte_map && op == 0xff && (reg == 3 || reg == 5) {
            kind = Kind::Unsupported("far call/jmp");
        }
    }
    let imm = special_imm
        + if flags & I8 != 0 { 1 } else { 0 }
        + if flags & I16 != 0 { 2 } else { 0 }
        + if flags & IZ != 0 {
            if opsize16 { 2 } else { 4 }
        } else {
            0
        };
    c.skip(imm)?;
    if kind == Kind::Plain
        && let Some(at) = rip_disp_at
    {
        kind = Kind::RipRel { disp_at: at };
    }
    let len = c.i;
    let mut b = [0u8; 15];
    b[..len].copy_from_slice(&bytes[..len]);
    Ok(Insn {
        len,
        kind,
        bytes: b,
    })
}

impl Insn {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn rel32(target: u64, next: u64, at: u64) -> Result<[u8; 4], InsnError> {
    let d = target.wrapping_sub(next) as i64;
    i32::try_from(d)
        .map(|v| v.to_le_bytes())
        .map_err(|_| InsnError::OutOfReach { target, at })
}

fn read_rel(bytes: &[u8], at: usize, size: u8) -> i64 {
    match size {
        1 => i64::from(bytes[at] as i8),
        _ => i64::from(i32::from_le_bytes([
            bytes[at],
            bytes[at + 1],
            bytes[at + 2],
            bytes[at + 3],
        ])),
    }
}

/// Appends `jmp target` (rel32) for code placed at `at + out.len()`.
pub fn push_jmp(out: &mut Vec<u8>, at: u64, target: u64) -> Result<(), InsnError> {
    let next = at + out.len() as u64 + 5;
    out.push(0xe9);
    out.extend_from_slice(&rel32(target, next, at)?);
    Ok(())
}

/// Appends the push of a 64-bit return address without touching the flags:
/// `lea -8(%rsp),%rsp; movl $lo,(%rsp); movl $hi,4(%rsp)`.
fn push_return_address(out: &mut Vec<u8>, ret: u64) {
    out.extend_from_slice(&[0x48, 0x8d, 0x64, 0x24, 0xf8]);
    out.extend_from_slice(&[0xc7, 0x04, 0x24]);
    out.extend_from_slice(&(ret as u32).to_le_bytes());
    out.extend_from_slice(&[0xc7, 0x44, 0x24, 0x04]);
    out.extend_from_slice(&((ret >> 32) as u32).to_le_bytes());
}

/// Code that, placed at `at`, does what `insn` does at `from` and then goes on at the
/// instruction after it (`from + len`), or wherever the instruction itself transfers control.
pub fn relocate(insn: &Insn, from: u64, at: u64) -> Result<Vec<u8>, InsnError> {
    let mut out = relocate_body(insn, from, at)?;
    if !insn.ends_flow() {
        push_jmp(&mut out, at, from + insn.len as u64)?;
    }
    Ok(out)
}

impl Insn {
    /// Control never falls through to the next instruction.
    pub fn ends_flow(&self) -> bool {
        matches!(
            self.kind,
            Kind::Jmp { .. } | Kind::Call | Kind::CallIndirect { .. }
        ) || matches!(self.bytes[0], 0xc3 | 0xc2)
    }

    /// Where a relative jump, jcc or call at `from` goes.
    pub fn branch_target(&self, from: u64) -> Option<u64> {
        let next = from + self.len as u64;
        let b = self.bytes();
        match self.kind {
            Kind::Jmp { size } | Kind::Jcc { size, .. } => {
                Some(next.wrapping_add(read_rel(b, self.len - size as usize, size) as u64))
            }
            Kind::Call => Some(next.wrapping_add(read_rel(b, self.len - 4, 4) as u64)),
            _ => None,
        }
    }
}

/// The relocated instruction alone: control falls through to the code that follows it (for a
/// conditional jump, when not taken).
pub fn relocate_body(insn: &Insn, from: u64, at: u64) -> Result<Vec<u8>, InsnError> {
    let len = insn.len as u64;
    let next = from + len;
    let b = insn.bytes();
    let mut out = Vec::with_capacity(32);
    match &insn.kind {
        Kind::Plain => out.extend_from_slice(b),
        Kind::RipRel { disp_at } => {
            let target = next.wrapping_add(read_rel(b, *disp_at, 4) as u64);
            out.extend_from_slice(b);
            let d = rel32(target, at + len, at)?;
            out[*disp_at..*disp_at + 4].copy_from_slice(&d);
        }
        Kind::Jmp { .. } => {
            let target = insn.branch_target(from).unwrap_or(next);
            push_jmp(&mut out, at, target)?;
        }
        Kind::Jcc { cond, .. } => {
            let target = insn.branch_target(from).unwrap_or(next);
            out.extend_from_slice(&[0x0f, 0x80 | cond]);
            out.extend_from_slice(&rel32(target, at + 6, at)?);
        }
        Kind::Call => {
            let target = insn.branch_target(from).unwrap_or(next);
            push_return_address(&mut out, next);
            push_jmp(&mut out, at, target)?;
        }
        Kind::CallIndirect {
            modrm_at,
            rip_disp_at,
        } => {
            // The operand is read before the emulated push moves %rsp; refused at decoding when
            // it depends on %rsp. Same bytes with ModRM.reg = 4 is `jmp *r/m64`.
            push_return_address(&mut out, next);
            let start = out.len();
            out.extend_from_slice(b);
            out[start + modrm_at] = (b[*modrm_at] & !0x38) | (4 << 3);
            if let Some(d) = rip_disp_at {
                let target = next.wrapping_add(read_rel(b, *d, 4) as u64);
                let end = at + out.len() as u64;
                let v = rel32(target, end, at)?;
                out[start + d..start + d + 4].copy_from_slice(&v);
            }
        }
        Kind::Unsupported(what) => return Err(InsnError::Unsupported { what }),
    }
    Ok(out)
}

/// The instructions at the start of a function that a `jmp rel32` (5 bytes) would cover, as
/// long as nothing jumps into the middle of them and they can run elsewhere.
///
/// `func` holds the function's bytes from its entry `from` (its whole body, for the check
/// that no branch lands inside the patched bytes). Calls and jumps may only come last.
pub fn displaced(func: &[u8], from: u64) -> Result<Vec<Insn>, InsnError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < 5 {
        let i = decode(&func[off..])?;
        if let Kind::Unsupported(what) = i.kind {
            return Err(InsnError::Unsupported { what });
        }
        if out
            .last()
            .is_some_and(|p: &Insn| p.ends_flow() || matches!(p.kind, Kind::Jcc { .. }))
        {
            return Err(InsnError::Unsupported {
                what: "a branch inside the patched bytes",
            });
        }
        off += i.len;
        out.push(i);
    }
    let end = from + off as u64;
    // Every branch of the function must land outside (from, end).
    let mut at = 0usize;
    while at < func.len() {
        let Ok(i) = decode(&func[at..]) else { break };
        if let Some(t) = i.branch_target(from + at as u64)
            && t > from
            && t < end
        {
            return Err(InsnError::Unsupported {
                what: "a jump into the patched bytes",
            });
        }
        at += i.len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(b: &[u8]) -> usize {
        decode(b).unwrap().len
    }

    #[test]
    fn lengths_of_kernel_prologues() {
        // Seen at the entry of ip_rcv, ip_forward, ip_output, reject_tg on UML 7.2.
        assert_eq!(len(&[0x48, 0xb8, 0xad, 0xcd, 0x36, 0x60, 0, 0, 0, 0]), 10);
        assert_eq!(len(&[0x55]), 1);
        assert_eq!(len(&[0x48, 0x89, 0xe5]), 3);
        assert_eq!(len(&[0x41, 0x57]), 2);
        assert_eq!(len(&[0x48, 0x8b, 0x4e, 0x08]), 4);
        assert_eq!(len(&[0x83, 0x39, 0x08]), 3);
        assert_eq!(len(&[0x0f, 0xb6, 0x10]), 3);
        assert_eq!(len(&[0x77, 0x6d]), 2);
        assert_eq!(len(&[0x48, 0x81, 0xec, 0x00, 0x01, 0x00, 0x00]), 7);
        assert_eq!(len(&[0x66, 0x81, 0x7f, 0x10, 0x34, 0x12]), 6);
        assert_eq!(len(&[0xf6, 0x47, 0x10, 0x01]), 4);
        assert_eq!(len(&[0xf7, 0xd8]), 2);
        assert_eq!(len(&[0xf7, 0x47, 0x10, 1, 0, 0, 0]), 7);
        assert_eq!(len(&[0x0f, 0x1f, 0x44, 0x00, 0x00]), 5);
        assert_eq!(len(&[0x66, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0]), 9);
        assert_eq!(len(&[0x8b, 0x04, 0x25, 0x10, 0, 0, 0]), 7);
        assert_eq!(len(&[0x8b, 0x44, 0x24, 0x08]), 4);
        assert_eq!(len(&[0xc3]), 1);
        assert_eq!(len(&[0xc2, 0x08, 0x00]), 3);
        assert_eq!(len(&[0xa1, 1, 2, 3, 4, 5, 6, 7, 8]), 9);
        assert_eq!(len(&[0x66, 0xb8, 1, 2]), 4);
        assert_eq!(len(&[0xb8, 1, 2, 3, 4]), 5);
        assert_eq!(len(&[0x0f, 0x3a, 0x0f, 0xc1, 0x08]), 5);
        assert_eq!(len(&[0xc8, 0x10, 0x00, 0x00]), 4);
    }

    #[test]
    fn finds_references_to_the_own_address() {
        assert_eq!(
            decode(&[0x48, 0x8b, 0x05, 1, 0, 0, 0]).unwrap().kind,
            Kind::RipRel { disp_at: 3 }
        );
        assert_eq!(decode(&[0xe8, 0, 0, 0, 0]).unwrap().kind, Kind::Call);
        assert_eq!(decode(&[0xeb, 0x10]).unwrap().kind, Kind::Jmp { size: 1 });
        assert_eq!(
            decode(&[0x0f, 0x84, 1, 0, 0, 0]).unwrap().kind,
            Kind::Jcc { cond: 4, size: 4 }
        );
        assert_eq!(
            decode(&[0xff, 0xd0]).unwrap().kind,
            Kind::CallIndirect {
                modrm_at: 1,
                rip_disp_at: None
            }
        );
        assert_eq!(
            decode(&[0xff, 0xd4]).unwrap().kind,
            Kind::Unsupported("call through the stack pointer")
        );
        assert_eq!(
            decode(&[0x41, 0xff, 0xd4]).unwrap().kind,
            Kind::CallIndirect {
                modrm_at: 2,
                rip_disp_at: None
            }
        );
        assert!(matches!(
            decode(&[0xe2, 0x00]).unwrap().kind,
            Kind::Unsupported(_)
        ));
        assert!(matches!(
            decode(&[0xc5, 0xf8, 0x77]),
            Err(InsnError::Unsupported { .. })
        ));
        assert!(matches!(decode(&[0x48]), Err(InsnError::Truncated(1))));
        assert!(matches!(decode(&[0x06]), Err(InsnError::Invalid(6))));
    }

    #[test]
    fn relocates_plain_with_a_jump_back() {
        let i = decode(&[0x55]).unwrap();
        let code = relocate(&i, 0x6036eb47, 0x6001c001).unwrap();
        assert_eq!(code[0], 0x55);
        assert_eq!(code[1], 0xe9);
        let rel = i32::from_le_bytes(code[2..6].try_into().unwrap()) as i64;
        assert_eq!((0x6001c001u64 + 6).wrapping_add(rel as u64), 0x6036eb48);
    }

    #[test]
    fn relocates_rip_relative_and_branches() {
        // mov 0x100(%rip),%rax at 0x1000: reads 0x1107.
        let i = decode(&[0x48, 0x8b, 0x05, 0x00, 0x01, 0, 0]).unwrap();
        let code = relocate(&i, 0x1000, 0x9000).unwrap();
        let d = i32::from_le_bytes(code[3..7].try_into().unwrap()) as i64;
        assert_eq!((0x9007i64 + d) as u64, 0x1107);
        // je +0x10 at 0x1000 (2 bytes): target 0x1012, fall through 0x1002.
        let i = decode(&[0x74, 0x10]).unwrap();
        let code = relocate(&i, 0x1000, 0x9000).unwrap();
        assert_eq!(&code[0..2], &[0x0f, 0x84]);
        let d = i32::from_le_bytes(code[2..6].try_into().unwrap()) as i64;
        assert_eq!((0x9006i64 + d) as u64, 0x1012);
        let d = i32::from_le_bytes(code[7..11].try_into().unwrap()) as i64;
        assert_eq!((0x900bi64 + d) as u64, 0x1002);
        // call +0x20 at 0x1000: pushes 0x1005, goes to 0x1025.
        let i = decode(&[0xe8, 0x20, 0, 0, 0]).unwrap();
        let code = relocate(&i, 0x1000, 0x9000).unwrap();
        assert_eq!(&code[0..5], &[0x48, 0x8d, 0x64, 0x24, 0xf8]);
        assert_eq!(u32::from_le_bytes(code[8..12].try_into().unwrap()), 0x1005);
        assert_eq!(u32::from_le_bytes(code[16..20].try_into().unwrap()), 0);
        assert_eq!(code[20], 0xe9);
        let d = i32::from_le_bytes(code[21..25].try_into().unwrap()) as i64;
        assert_eq!((0x9019i64 + d) as u64, 0x1025);
        // call *%rax becomes push + jmp *%rax.
        let i = decode(&[0xff, 0xd0]).unwrap();
        let code = relocate(&i, 0x1000, 0x9000).unwrap();
        assert_eq!(&code[20..22], &[0xff, 0xe0]);
    }

    #[test]
    fn displaces_whole_instructions_and_refuses_jumps_into_them() {
        // ip_forward: push %rbp; mov %rsp,%rbp; push %r15 ... -> 6 bytes displaced.
        let f = [0x55, 0x48, 0x89, 0xe5, 0x41, 0x57, 0x41, 0x56, 0xc3];
        let v = displaced(&f, 0x1000).unwrap();
        assert_eq!(v.iter().map(|i| i.len).sum::<usize>(), 6);
        // The same with a later `jmp` back to 0x1001 (inside the 5 patched bytes).
        let mut g = f.to_vec();
        g.extend_from_slice(&[0xeb, (0x1001i64 - (0x1000 + 11)) as i8 as u8]);
        assert!(matches!(
            displaced(&g, 0x1000),
            Err(InsnError::Unsupported { .. })
        ));
        // A call may come only last.
        let h = [0xe8, 0, 0, 0, 0, 0x90];
        assert_eq!(displaced(&h, 0x1000).unwrap().len(), 1);
        let k = [0x74, 0x02, 0x90, 0x90, 0x90, 0x90];
        assert!(displaced(&k, 0x1000).is_err());
    }

    #[test]
    fn refuses_far_targets() {
        let i = decode(&[0xeb, 0x00]).unwrap();
        assert!(matches!(
            relocate(&i, 0x1000, 0x7fff_0000_0000),
            Err(InsnError::OutOfReach { .. })
        ));
    }
}
