//! The hit ring: what a probe's code records in the kernel process, and the tracer's reader.
//!
//! Each probe runs a few dozen instructions of ours (built by [`probe_body`]) at function entry:
//! take a ticket with `lock xadd` on the ring's head, fill the ticket's slot (probe id, TSC,
//! argument registers and, for an skb, a copy of the `struct sk_buff` and of its linear data
//! from `head`), and write the ticket into the slot last as its commit mark. Nothing stops: the
//! tracer reads the ring with `process_vm_readv` in batches while the machine runs on. A slot
//! whose ticket was overtaken (the ring went round before the tracer read it) counts as lost.
//!
//! A ticket per hit keeps nested hits apart (UML runs interrupts as host signals on the same
//! thread, so a probe can fire inside another probe's code); x86 keeps stores in order, so a
//! slot whose commit mark is seen has its data written.

use std::io::IoSliceMut;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};

/// Bytes per slot.
pub const SLOT: u64 = 4096;
/// The ring's first page holds the head counter.
pub const HEADER: u64 = 4096;
/// Where the copy of `struct sk_buff` starts in a slot, and room for it.
pub const STRUCT_AT: usize = 128;
pub const STRUCT_MAX: usize = 512;
/// Where the copy of the linear data starts, and room for it.
pub const DATA_AT: usize = STRUCT_AT + STRUCT_MAX;
pub const DATA_CAP: usize = SLOT as usize - DATA_AT;
/// Bytes read of each slot in the first pass (header, struct, and the first data bytes).
const FIRST_PASS: usize = DATA_AT + 320;

/// Slot header offsets.
const OFF_ID: i8 = 8;
const OFF_FLAGS: i8 = 12;
const OFF_TSC: i8 = 16;
const OFF_SKB: i8 = 24;
const OFF_ARGS: i8 = 32;
const OFF_COPIED: i8 = 80;
const OFF_HEAD: i8 = 88;

/// Where the ring is in the kernel process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    pub base: u64,
    /// A power of two.
    pub slots: u64,
}

impl RingLayout {
    pub fn bytes(slots: u64) -> u64 {
        HEADER + slots * SLOT
    }

    fn slot_addr(&self, ticket: u64) -> u64 {
        self.base + HEADER + (ticket & (self.slots - 1)) * SLOT
    }
}

/// What a probe copies of its skb argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkbCopy {
    /// Which argument register holds the skb: 0 = rdi, 1 = rsi, 2 = rdx, 3 = rcx, 4 = r8, 5 = r9.
    pub arg: u8,
    /// `sizeof(struct sk_buff)` (at most [`STRUCT_MAX`]).
    pub size: u32,
    /// Offsets of `head` (a pointer) and `tail` (a u32 offset from head).
    pub head_off: u32,
    pub tail_off: u32,
    /// Pointers outside [lo, hi) are not followed (UML's kernel memory).
    pub lo: u64,
    pub hi: u64,
}

/// A tiny assembler: bytes plus forward jumps patched when their label is placed.
struct Asm {
    code: Vec<u8>,
    fixups: Vec<(usize, usize)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.code.extend_from_slice(bytes);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.b(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.b(&v.to_le_bytes())
    }
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    /// A rel32 jump (opcode bytes given) to `label`.
    fn jump(&mut self, opcode: &[u8], label: usize) -> &mut Self {
        self.b(opcode);
        self.fixups.push((self.code.len(), label));
        self.u32(0)
    }
    fn place(&mut self, label: usize) {
        self.labels[label] = Some(self.code.len());
    }
    fn finish(mut self) -> Vec<u8> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l].expect("label placed") as i64;
            let rel = (target - (at as i64 + 4)) as i32;
            self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        }
        self.code
    }
}

/// Stack offset of each argument register after the pushes in [`probe_body`].
fn arg_slot(arg: u8) -> u8 {
    // pushed: flags, rax, rcx, rdx, rsi, rdi, r8, r9, r11 (r11 at rsp+0)
    match arg {
        0 => 24, // rdi
        1 => 32, // rsi
        2 => 40, // rdx
        3 => 48, // rcx
        4 => 16, // r8
        _ => 8,  // r9
    }
}

/// The code a probe runs before the displaced instructions: records one hit of probe `id`.
/// It keeps every register and the flags, and refers to nothing by its own address.
pub fn probe_body(ring: &RingLayout, id: u32, skb: Option<&SkbCopy>) -> Vec<u8> {
    let mut a = Asm {
        code: Vec::with_capacity(256),
        fixups: Vec::new(),
        labels: Vec::new(),
    };
    // pushfq; push rax, rcx, rdx, rsi, rdi, r8, r9, r11; cld
    a.b(&[
        0x9c, 0x50, 0x51, 0x52, 0x56, 0x57, 0x41, 0x50, 0x41, 0x51, 0x41, 0x53, 0xfc,
    ]);
    // ticket: movabs r11, head; mov eax, 1; lock xadd [r11], rax; mov r9, rax
    a.b(&[0x49, 0xbb]).u64(ring.base);
    a.b(&[0xb8, 1, 0, 0, 0]);
    a.b(&[0xf0, 0x49, 0x0f, 0xc1, 0x03]);
    a.b(&[0x49, 0x89, 0xc1]);
    // slot: and eax, mask; shl rax, 12; movabs r11, slots; add r11, rax
    a.b(&[0x25]).u32((ring.slots - 1) as u32);
    a.b(&[0x48, 0xc1, 0xe0, 0x0c]);
    a.b(&[0x49, 0xbb]).u64(ring.base + HEADER);
    a.b(&[0x49, 0x01, 0xc3]);
    // id, flags = 0
    a.b(&[0x41, 0xc7, 0x43, OFF_ID as u8]).u32(id);
    a.b(&[0x41, 0xc7, 0x43, OFF_FLAGS as u8]).u32(0);
    // tsc: rdtsc; shl rdx, 32; or rax, rdx; mov [r11+16], rax
    a.b(&[0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0]);
    a.b(&[0x49, 0x89, 0x43, OFF_TSC as u8]);
    // the six argument registers, from the stack
    for (i, arg) in (0u8..6).enumerate() {
        a.b(&[0x48, 0x8b, 0x44, 0x24, arg_slot(arg)]); // mov rax, [rsp+d]
        a.b(&[0x49, 0x89, 0x43, (OFF_ARGS + 8 * i as i8) as u8]); // mov [r11+d], rax
    }
    a.b(&[0x41, 0xc7, 0x43, OFF_COPIED as u8]).u32(0);
    if let Some(s) = skb {
        let skip = a.label();
        // mov rsi, [rsp+arg]; mov [r11+24], rsi
        a.b(&[0x48, 0x8b, 0x74, 0x24, arg_slot(s.arg)]);
        a.b(&[0x49, 0x89, 0x73, OFF_SKB as u8]);
        // lo <= rsi < hi, else skip
        a.b(&[0x48, 0xb8])
            .u64(s.lo)
            .b(&[0x48, 0x39, 0xc6])
            .jump(&[0x0f, 0x82], skip);
        a.b(&[0x48, 0xb8])
            .u64(s.hi)
            .b(&[0x48, 0x39, 0xc6])
            .jump(&[0x0f, 0x83], skip);
        // struct: lea rdi, [r11+STRUCT_AT]; mov ecx, size; rep movsb
        a.b(&[0x49, 0x8d, 0xbb]).u32(STRUCT_AT as u32);
        a.b(&[0xb9]).u32(s.size.min(STRUCT_MAX as u32));
        a.b(&[0xf3, 0xa4]);
        // head and tail: mov rsi, [r11+24]; mov rax, [rsi+head]; mov [r11+88], rax;
        // mov ecx, [rsi+tail]
        a.b(&[0x49, 0x8b, 0x73, OFF_SKB as u8]);
        a.b(&[0x48, 0x8b, 0x86]).u32(s.head_off);
        a.b(&[0x49, 0x89, 0x43, OFF_HEAD as u8]);
        a.b(&[0x8b, 0x8e]).u32(s.tail_off);
        // ecx = min(ecx, DATA_CAP)
        let ok = a.label();
        a.b(&[0x81, 0xf9])
            .u32(DATA_CAP as u32)
            .jump(&[0x0f, 0x86], ok);
        a.b(&[0xb9]).u32(DATA_CAP as u32);
        a.place(ok);
        // head in [lo, hi), else no data
        let flags = a.label();
        a.b(&[0x48, 0x89, 0xc6]); // mov rsi, rax
        a.b(&[0x48, 0xb8])
            .u64(s.lo)
            .b(&[0x48, 0x39, 0xc6])
            .jump(&[0x0f, 0x82], flags);
        a.b(&[0x48, 0xb8])
            .u64(s.hi)
            .b(&[0x48, 0x39, 0xc6])
            .jump(&[0x0f, 0x83], flags);
        // mov [r11+80], ecx; lea rdi, [r11+DATA_AT]; rep movsb
        a.b(&[0x41, 0x89, 0x4b, OFF_COPIED as u8]);
        a.b(&[0x49, 0x8d, 0xbb]).u32(DATA_AT as u32);
        a.b(&[0xf3, 0xa4]);
        a.place(flags);
        a.b(&[0x41, 0xc7, 0x43, OFF_FLAGS as u8]).u32(1);
        a.place(skip);
    }
    // commit: lea rax, [r9+1]; mov [r11], rax
    a.b(&[0x49, 0x8d, 0x41, 0x01, 0x49, 0x89, 0x03]);
    // pop r11, r9, r8, rdi, rsi, rdx, rcx, rax; popfq
    a.b(&[
        0x41, 0x5b, 0x41, 0x59, 0x41, 0x58, 0x5f, 0x5e, 0x5a, 0x59, 0x58, 0x9d,
    ]);
    a.finish()
}

/// One hit as read from the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHit {
    pub ticket: u64,
    pub probe: u32,
    pub tsc: u64,
    pub args: [u64; 6],
    /// The skb pointer and copies, when the probe copies an skb and the pointer was plausible.
    pub skb: Option<u64>,
    pub head: u64,
    pub skb_struct: Vec<u8>,
    pub data: Vec<u8>,
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Parses a slot's bytes (at least the first pass); `None` when it does not hold `ticket`.
pub fn parse_slot(b: &[u8], ticket: u64, struct_size: usize) -> Option<RawHit> {
    if b.len() < DATA_AT || u64_at(b, 0) != ticket + 1 {
        return None;
    }
    let flags = u32_at(b, OFF_FLAGS as usize);
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = u64_at(b, OFF_ARGS as usize + 8 * i);
    }
    let copied = (u32_at(b, OFF_COPIED as usize) as usize).min(DATA_CAP);
    let skb = (flags & 1 != 0).then(|| u64_at(b, OFF_SKB as usize));
    let have = b.len().saturating_sub(DATA_AT).min(copied);
    Some(RawHit {
        ticket,
        probe: u32_at(b, OFF_ID as usize),
        tsc: u64_at(b, OFF_TSC as usize),
        args,
        skb,
        head: u64_at(b, OFF_HEAD as usize),
        skb_struct: if skb.is_some() {
            b[STRUCT_AT..STRUCT_AT + struct_size.min(STRUCT_MAX)].to_vec()
        } else {
            Vec::new()
        },
        data: b[DATA_AT..DATA_AT + have].to_vec(),
    })
}

/// How many data bytes a slot says it holds.
fn copied_of(b: &[u8]) -> usize {
    if b.len() < DATA_AT {
        return 0;
    }
    (u32_at(b, OFF_COPIED as usize) as usize).min(DATA_CAP)
}

/// The tracer's side of the ring.
#[derive(Debug)]
pub struct RingReader {
    pid: i32,
    ring: RingLayout,
    struct_size: usize,
    next: u64,
    lost: u64,
    /// When the oldest unread slot was first seen uncommitted with newer ones done.
    stuck_since: Option<std::time::Instant>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the hit ring at {addr:#x} in process {pid}: {source}")]
pub struct RingError {
    pid: i32,
    addr: u64,
    source: nix::Error,
}

impl RingError {
    /// The process is gone (or going: its memory was released before it became a zombie).
    pub fn process_gone(&self) -> bool {
        self.source == nix::errno::Errno::ESRCH
    }
}

impl RingReader {
    /// Starts reading at the ring's current head (hits recorded before are not ours).
    pub fn new(pid: i32, ring: RingLayout, struct_size: usize) -> Result<RingReader, RingError> {
        let mut r = RingReader {
            pid,
            ring,
            struct_size,
            next: 0,
            lost: 0,
            stuck_since: None,
        };
        r.next = r.head()?;
        Ok(r)
    }

    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Tickets handed out so far.
    pub fn head(&self) -> Result<u64, RingError> {
        let mut b = [0u8; 8];
        self.read(self.ring.base, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), RingError> {
        let remote = [RemoteIoVec {
            base: addr as usize,
            len: buf.len(),
        }];
        let pid = nix::unistd::Pid::from_raw(self.pid);
        process_vm_readv(pid, &mut [IoSliceMut::new(buf)], &remote)
            .map(|_| ())
            .map_err(|source| RingError {
                pid: self.pid,
                addr,
                source,
            })
    }

    /// Reads every hit committed since the last call, in ticket order, into `out`.
    pub fn poll(&mut self, out: &mut Vec<RawHit>) -> Result<(), RingError> {
        let head = self.head()?;
        if head.wrapping_sub(self.next) > self.ring.slots {
            // Overtaken: those slots were written over before we got to them.
            let skip = head - self.ring.slots - self.next;
            self.lost += skip;
            self.next += skip;
        }
        while self.next < head {
            let n = (head - self.next).min(256);
            // One process_vm_readv with a remote vector per slot (first pass of each).
            let mut bufs = vec![vec![0u8; FIRST_PASS]; n as usize];
            let remote: Vec<RemoteIoVec> = (0..n)
                .map(|i| RemoteIoVec {
                    base: self.ring.slot_addr(self.next + i) as usize,
                    len: FIRST_PASS,
                })
                .collect();
            {
                let mut local: Vec<IoSliceMut> =
                    bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                let pid = nix::unistd::Pid::from_raw(self.pid);
                process_vm_readv(pid, &mut local, &remote).map_err(|source| RingError {
                    pid: self.pid,
                    addr: remote[0].base as u64,
                    source,
                })?;
            }
            let mut done = 0;
            for (i, b) in bufs.iter_mut().enumerate() {
                let ticket = self.next + i as u64;
                let mark = u64_at(b, 0);
                if mark == ticket + 1 {
                    let copied = copied_of(b);
                    if DATA_AT + copied > FIRST_PASS {
                        b.resize(DATA_AT + copied, 0);
                        let addr = self.ring.slot_addr(ticket) + FIRST_PASS as u64;
                        self.read(addr, &mut b[FIRST_PASS..])?;
                    }
                    // The slot may have been overtaken while we read it.
                    if u64_at(b, 0) == ticket + 1
                        && let Some(h) = parse_slot(b, ticket, self.struct_size)
                    {
                        out.push(h);
                    }
                    done += 1;
                    self.stuck_since = None;
                } else if mark > ticket + 1 {
                    self.lost += 1;
                    done += 1;
                } else {
                    // Not committed yet: its writer is still at it (or was interrupted and
                    // nests another hit). Give it 200 ms before calling it lost.
                    let since = *self.stuck_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > std::time::Duration::from_millis(200) {
                        self.lost += 1;
                        done += 1;
                        self.stuck_since = None;
                        continue;
                    }
                    break;
                }
            }
            self.next += done as u64;
            if done < n as usize {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_decodes_as_instructions_and_keeps_the_stack_balanced() {
        let ring = RingLayout {
            base: 0x3f00_0000_0000,
            slots: 4096,
        };
        let skb = SkbCopy {
            arg: 2,
            size: 232,
            head_off: 200,
            tail_off: 188,
            lo: 0x6000_0000,
            hi: 0x8000_0000,
        };
        for body in [probe_body(&ring, 7, None), probe_body(&ring, 7, Some(&skb))] {
            let mut at = 0;
            let mut pushes = 0i32;
            while at < body.len() {
                let i = crate::stub::runctl::decode(&body[at..]).expect("decodes");
                match body[at] {
                    0x9c | 0x50..=0x57 => pushes += 1,
                    0x9d | 0x58..=0x5f => pushes -= 1,
                    0x41 if (0x50..=0x57).contains(&body[at + 1]) => pushes += 1,
                    0x41 if (0x58..=0x5f).contains(&body[at + 1]) => pushes -= 1,
                    _ => {}
                }
                at += i.len;
            }
            assert_eq!(at, body.len());
            assert_eq!(pushes, 0);
        }
    }

    #[test]
    fn parses_a_committed_slot_only() {
        let mut b = vec![0u8; FIRST_PASS];
        b[0..8].copy_from_slice(&6u64.to_le_bytes());
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[16..24].copy_from_slice(&99u64.to_le_bytes());
        b[24..32].copy_from_slice(&0x6090_0000u64.to_le_bytes());
        b[80..84].copy_from_slice(&4u32.to_le_bytes());
        b[DATA_AT..DATA_AT + 4].copy_from_slice(b"abcd");
        let h = parse_slot(&b, 5, 232).unwrap();
        assert_eq!((h.probe, h.tsc, h.skb), (3, 99, Some(0x6090_0000)));
        assert_eq!(h.data, b"abcd");
        assert_eq!(h.skb_struct.len(), 232);
        assert!(parse_slot(&b, 4, 232).is_none());
    }
}
