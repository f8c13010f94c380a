//! Classic BPF (what libpcap compiles a pcap-filter expression to) translated to x86-64, so that
//! a probe can run the filter on a packet inside the traced kernel and record only what it
//! selects. The translation is one x86 sequence per BPF instruction, in the same order (BPF
//! jumps only forward), with the semantics of the kernel's and libpcap's interpreters: a load
//! past the packet's end or a division by zero ends the program with 0 (reject).
//!
//! The code is a function `u32 f(const u8 *packet /* rdi */, u64 len /* rsi */)` in the System V
//! calling convention, so that the host can run it too (the tests compare it with libpcap's own
//! interpreter); it uses rax, rcx, rdx, rsi, rdi, r8 and r9 and 64 bytes of stack for the
//! scratch memory `M[16]`, and refers to nothing by its own address.

/// One classic BPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JitError {
    #[error("BPF instruction {at} (code {code:#06x}) is not supported")]
    Unsupported { at: usize, code: u16 },
    #[error("BPF instruction {at} jumps past the end of the program")]
    BadJump { at: usize },
    #[error("the BPF program is empty")]
    Empty,
}

// Instruction classes and fields (linux/bpf_common.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;
const SRC_X: u16 = 0x08;

/// Machine code with rel32 jumps to instruction labels, fixed up at the end.
struct Code {
    out: Vec<u8>,
    /// (where the rel32 is, target label); label `n` is BPF instruction `n`, `n == len` is the
    /// shared "return 0" exit.
    fixups: Vec<(usize, usize)>,
}

impl Code {
    fn b(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn jump(&mut self, opcode: &[u8], label: usize) {
        self.b(opcode);
        self.fixups.push((self.out.len(), label));
        self.u32(0);
    }
}

/// `mov eax, [rdi+r8]`-style loads of `size` bytes at `rdi + r8`, big-endian to host, into eax.
fn load_at_r8(c: &mut Code, size: u16) {
    match size {
        W => {
            c.b(&[0x42, 0x8b, 0x04, 0x07]); // mov eax, [rdi+r8]
            c.b(&[0x0f, 0xc8]); // bswap eax
        }
        H => {
            c.b(&[0x42, 0x0f, 0xb7, 0x04, 0x07]); // movzx eax, word [rdi+r8]
            c.b(&[0x66, 0xc1, 0xc8, 0x08]); // ror ax, 8
        }
        _ => c.b(&[0x42, 0x0f, 0xb6, 0x04, 0x07]), // movzx eax, byte [rdi+r8]
    }
}

fn width(size: u16) -> u64 {
    match size {
        W => 4,
        H => 2,
        _ => 1,
    }
}

/// Translates a program. Registers: A = eax, X = r9d, packet = rdi, length = rsi.
pub fn compile(prog: &[Insn]) -> Result<Vec<u8>, JitError> {
    if prog.is_empty() {
        return Err(JitError::Empty);
    }
    let n = prog.len();
    let fail = n;
    let mut c = Code {
        out: Vec::with_capacity(64 + n * 16),
        fixups: Vec::new(),
    };
    let mut labels = vec![0usize; n + 1];
    // Prologue: M[16] on the stack; A = X = 0.
    c.b(&[0x48, 0x83, 0xec, 0x40]); // sub rsp, 64
    c.b(&[0x31, 0xc0]); // xor eax, eax
    c.b(&[0x45, 0x31, 0xc9]); // xor r9d, r9d
    for (at, i) in prog.iter().enumerate() {
        labels[at] = c.out.len();
        let class = i.code & 0x07;
        let size = i.code & 0x18;
        let mode = i.code & 0xe0;
        let k = i.k;
        let unsupported = JitError::Unsupported { at, code: i.code };
        let target = |off: u8| -> Result<usize, JitError> {
            let t = at + 1 + off as usize;
            if t >= n {
                Err(JitError::BadJump { at })
            } else {
                Ok(t)
            }
        };
        match class {
            LD | LDX if mode == ABS || mode == IND => {
                if class == LDX {
                    return Err(unsupported);
                }
                // r8 = offset (64-bit, no wrap), then offset + width <= len or return 0.
                c.b(&[0x41, 0xb8]); // mov r8d, k
                c.u32(k);
                if mode == IND {
                    c.b(&[0x4d, 0x01, 0xc8]); // add r8, r9
                }
                c.b(&[0x49, 0x8d, 0x48, width(size) as u8]); // lea rcx, [r8+width]
                c.b(&[0x48, 0x39, 0xf1]); // cmp rcx, rsi
                c.jump(&[0x0f, 0x87], fail); // ja fail
                load_at_r8(&mut c, size);
            }
            LD => match mode {
                IMM => {
                    c.b(&[0xb8]); // mov eax, k
                    c.u32(k);
                }
                LEN => c.b(&[0x89, 0xf0]), // mov eax, esi
                MEM if k < 16 => c.b(&[0x8b, 0x44, 0x24, (k * 4) as u8]), // mov eax, [rsp+4k]
                _ => return Err(unsupported),
            },
            LDX => match mode {
                IMM => {
                    c.b(&[0x41, 0xb9]); // mov r9d, k
                    c.u32(k);
                }
                LEN => c.b(&[0x41, 0x89, 0xf1]), // mov r9d, esi
                MEM if k < 16 => c.b(&[0x44, 0x8b, 0x4c, 0x24, (k * 4) as u8]), // mov r9d, [rsp+4k]
                MSH if size == B => {
                    // X = 4 * (P[k] & 0xf)
                    c.b(&[0x41, 0xb8]); // mov r8d, k
                    c.u32(k);
                    c.b(&[0x49, 0x8d, 0x48, 0x01]); // lea rcx, [r8+1]
                    c.b(&[0x48, 0x39, 0xf1]); // cmp rcx, rsi
                    c.jump(&[0x0f, 0x87], fail);
                    c.b(&[0x46, 0x0f, 0xb6, 0x0c, 0x07]); // movzx r9d, byte [rdi+r8]
                    c.b(&[0x41, 0x83, 0xe1, 0x0f]); // and r9d, 15
                    c.b(&[0x41, 0xc1, 0xe1, 0x02]); // shl r9d, 2
                }
                _ => return Err(unsupported),
            },
            ST if k < 16 => c.b(&[0x89, 0x44, 0x24, (k * 4) as u8]), // mov [rsp+4k], eax
            STX if k < 16 => c.b(&[0x44, 0x89, 0x4c, 0x24, (k * 4) as u8]), // mov [rsp+4k], r9d
            ALU => {
                let op = i.code & 0xf0;
                let x = i.code & SRC_X != 0;
                // The operand in ecx.
                if x {
                    c.b(&[0x44, 0x89, 0xc9]); // mov ecx, r9d
                } else {
                    c.b(&[0xb9]); // mov ecx, k
                    c.u32(k);
                }
                match op {
                    0x00 => c.b(&[0x01, 0xc8]),       // add eax, ecx
                    0x10 => c.b(&[0x29, 0xc8]),       // sub eax, ecx
                    0x20 => c.b(&[0x0f, 0xaf, 0xc1]), // imul eax, ecx
                    0x30 | 0x90 => {
                        // div / mod: by zero returns 0.
                        c.b(&[0x85, 0xc9]); // test ecx, ecx
                        c.jump(&[0x0f, 0x84], fail);
                        c.b(&[0x31, 0xd2]); // xor edx, edx
                        c.b(&[0xf7, 0xf1]); // div ecx
                        if op == 0x90 {
                            c.b(&[0x89, 0xd0]); // mov eax, edx
                        }
                    }
                    0x40 => c.b(&[0x09, 0xc8]), // or eax, ecx
                    0x50 => c.b(&[0x21, 0xc8]), // and eax, ecx
                    0x60 => c.b(&[0xd3, 0xe0]), // shl eax, cl
                    0x70 => c.b(&[0xd3, 0xe8]), // shr eax, cl
                    0x80 => c.b(&[0xf7, 0xd8]), // neg eax
                    0xa0 => c.b(&[0x31, 0xc8]), // xor eax, ecx
                    _ => return Err(unsupported),
                }
                // BPF shifts by 32 or more give 0 (x86 masks the count to 5 bits).
                if matches!(op, 0x60 | 0x70) {
                    c.b(&[0x83, 0xf9, 0x1f]); // cmp ecx, 31
                    c.b(&[0x76, 0x02]); // jbe +2
                    c.b(&[0x31, 0xc0]); // xor eax, eax
                }
            }
            JMP => {
                let op = i.code & 0xf0;
                if op == 0x00 {
                    // ja k
                    let t = at + 1 + k as usize;
                    if t >= n {
                        return Err(JitError::BadJump { at });
                    }
                    c.jump(&[0xe9], t);
                    continue;
                }
                let x = i.code & SRC_X != 0;
                if x {
                    c.b(&[0x44, 0x39, 0xc8]); // cmp eax, r9d
                } else if op == 0x40 {
                    c.b(&[0xa9]); // test eax, k
                    c.u32(k);
                } else {
                    c.b(&[0x3d]); // cmp eax, k
                    c.u32(k);
                }
                if x && op == 0x40 {
                    c.b(&[0x44, 0x85, 0xc8]); // test eax, r9d
                }
                let (jt, jf) = (target(i.jt)?, target(i.jf)?);
                let cond: u8 = match op {
                    0x10 => 0x84, // je
                    0x20 => 0x87, // ja (unsigned >)
                    0x30 => 0x83, // jae
                    0x40 => 0x85, // jne (some bit set)
                    _ => return Err(unsupported),
                };
                c.jump(&[0x0f, cond], jt);
                c.jump(&[0xe9], jf);
            }
            RET => {
                if i.code & 0x18 == 0x10 {
                    // ret A
                } else if i.code & 0x18 == 0x00 {
                    c.b(&[0xb8]); // mov eax, k
                    c.u32(k);
                } else {
                    return Err(unsupported);
                }
                c.b(&[0x48, 0x83, 0xc4, 0x40]); // add rsp, 64
                c.b(&[0xc3]); // ret
            }
            MISC => match i.code & 0xf8 {
                0x00 => c.b(&[0x41, 0x89, 0xc1]), // tax: mov r9d, eax
                0x80 => c.b(&[0x44, 0x89, 0xc8]), // txa: mov eax, r9d
                _ => return Err(unsupported),
            },
            _ => return Err(unsupported),
        }
    }
    // Falling off the end, and every failed check: return 0.
    labels[n] = c.out.len();
    c.b(&[0x31, 0xc0]); // xor eax, eax
    c.b(&[0x48, 0x83, 0xc4, 0x40]); // add rsp, 64
    c.b(&[0xc3]);
    let mut out = c.out;
    for (at, l) in c.fixups {
        let rel = labels[l] as i64 - (at as i64 + 4);
        out[at..at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
    }
    Ok(out)
}

/// The instructions of a program compiled by libpcap.
pub fn instructions(p: &pcap::BpfProgram) -> Vec<Insn> {
    p.get_instructions()
        .iter()
        .map(|i| {
            // "code jt jf k", the crate's Display of `struct bpf_insn`.
            let s = i.to_string();
            let v: Vec<u64> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            Insn {
                code: v.first().copied().unwrap_or(0) as u16,
                jt: v.get(1).copied().unwrap_or(0) as u8,
                jf: v.get(2).copied().unwrap_or(0) as u8,
                k: v.get(3).copied().unwrap_or(0) as u32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs machine code on this host: copies it into an executable mapping and calls it.
    fn run(code: &[u8], packet: &[u8]) -> u32 {
        // SAFETY: an anonymous private mapping of our own, written then made executable; the
        // code follows the System V convention (checked by these tests) and touches only the
        // packet bytes it is given and its own stack.
        unsafe {
            let len = code.len().div_ceil(4096) * 4096;
            let m = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(m, libc::MAP_FAILED);
            std::ptr::copy_nonoverlapping(code.as_ptr(), m.cast::<u8>(), code.len());
            assert_eq!(libc::mprotect(m, len, libc::PROT_READ | libc::PROT_EXEC), 0);
            let f: extern "C" fn(*const u8, u64) -> u32 = std::mem::transmute(m);
            let r = f(packet.as_ptr(), packet.len() as u64);
            libc::munmap(m, len);
            r
        }
    }

    fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ihl: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let opts = (ihl as usize - 5) * 4;
        f.extend_from_slice(&[0x40 | ihl, 0, 0, 60, 0x12, 0x34, 0, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend(std::iter::repeat_n(1u8, opts));
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 20, 0, 0, 8, 0, 0x55, 0x66, 0, 1, 0, 2]);
        f
    }

    #[test]
    fn translated_filters_agree_with_libpcap_on_every_packet() {
        let exprs = [
            "icmp and host 192.168.20.2",
            "udp and dst port 9999",
            "tcp[tcpflags] & tcp-syn != 0",
            "ip[8] > 32 and len >= 40",
            "udp[8:2] = 0x5566 or icmp[icmptype] = icmp-echo",
            "portrange 1000-2000 and not net 10.0.0.0/8",
            "ether host 02:00:00:00:00:01",
            "arp",
            "ip[2:2] / 4 = 15 and ip[2:2] % 7 = 4",
            "ip6",
            "greater 60",
        ];
        let mut packets = Vec::new();
        for proto in [1u8, 6, 17] {
            for (src, dst) in [
                ([192, 168, 10, 2], [192, 168, 20, 2]),
                ([10, 1, 2, 3], [192, 168, 20, 9]),
            ] {
                for (sp, dp) in [(40000, 9999), (1500, 53), (8, 0)] {
                    for ihl in [5, 6] {
                        packets.push(frame(proto, src, dst, sp, dp, ihl));
                    }
                }
            }
        }
        let mut short = frame(17, [1, 1, 1, 1], [2, 2, 2, 2], 1, 9999, 5);
        short.truncate(30);
        packets.push(short);
        packets.push(vec![0; 14]);
        let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        for e in exprs {
            let prog = cap.compile(e, true).unwrap();
            let code = compile(&instructions(&prog)).unwrap_or_else(|err| panic!("{e}: {err}"));
            for (i, p) in packets.iter().enumerate() {
                assert_eq!(
                    run(&code, p) != 0,
                    prog.filter(p),
                    "`{e}` on packet {i}: {p:02x?}"
                );
            }
        }
    }

    #[test]
    fn jumps_out_of_the_program_are_refused() {
        let bad = [Insn {
            code: JMP | 0x10,
            jt: 5,
            jf: 0,
            k: 0,
        }];
        assert_eq!(compile(&bad), Err(JitError::BadJump { at: 0 }));
        assert_eq!(compile(&[]), Err(JitError::Empty));
    }
}
