//! The hit ring: what a probe's code records in the kernel process, and the tracer's reader.
//!
//! Every probe runs the same recorder (built once by [`recorder`] and placed beside the probe
//! stubs); a probe's own stub only pushes its skb argument and its id and calls it
//! ([`probe_prologue`]). The recorder takes a ticket with `lock xadd` on the ring's head, fills
//! the ticket's slot (probe id, TSC, argument registers and, for an skb, a copy of the `struct
//! sk_buff` and of the packet from its first set header: at most the snap length, not the whole
//! buffer), and writes the ticket into the slot last as its commit mark. Nothing stops: the
//! tracer reads the ring with `process_vm_readv` in batches while the machine runs on. A slot
//! whose ticket was overtaken (the ring went round before the tracer read it) counts as lost.
//!
//! A ticket per hit keeps nested hits apart (UML runs interrupts as host signals on the same
//! thread, so a probe can fire inside another probe's code); x86 keeps stores in order, so a
//! slot whose commit mark is seen has its data written.

use std::io::IoSliceMut;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};

/// The ring's first page holds the head counter.
pub const HEADER: u64 = 4096;
/// Where the copy of `struct sk_buff` starts in a slot, and room for it.
pub const STRUCT_AT: usize = 128;
pub const STRUCT_MAX: usize = 256;
/// Where the copy of the packet starts in a slot.
pub const DATA_AT: usize = STRUCT_AT + STRUCT_MAX;
/// Packet bytes copied per hit unless told otherwise: Ethernet, IPv4 or IPv6 and TCP headers
/// with options, and the start of the payload.
pub const DEFAULT_SNAPLEN: usize = 128;
/// Most packet bytes a hit may copy.
pub const MAX_SNAPLEN: usize = 4096 - DATA_AT;

/// Entries of the table of followed addresses (skbs and their buffers) that probes with an
/// in-kernel filter keep beside the ring: a power of two, 8 bytes each.
pub const FOLLOW_SLOTS: u64 = 16384;
/// How many table entries a lookup or an insertion tries.
const FOLLOW_PROBES: u32 = 8;
/// A removed entry (lookups go on past it; insertions reuse it).
const TOMBSTONE: u64 = 1;
/// In the ring's header page: hits the in-kernel filter left out.
const OFF_FILTERED: u64 = 8;
/// Slot flags.
const FLAG_SKB: u32 = 1;
const FLAG_INSERTED: u32 = 2;

/// Slot header offsets.
const OFF_ID: i8 = 8;
const OFF_FLAGS: i8 = 12;
const OFF_TSC: i8 = 16;
const OFF_SKB: i8 = 24;
const OFF_ARGS: i8 = 32;
const OFF_COPIED: i8 = 80;
const OFF_START: i8 = 84;
const OFF_HEAD: i8 = 88;

/// Where the ring is in the kernel process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    pub base: u64,
    /// A power of two.
    pub slots: u64,
    /// log2 of the bytes per slot.
    pub slot_shift: u32,
    /// Packet bytes a slot has room for.
    pub snaplen: usize,
    /// Whether slots hold the kernel stack's return addresses (after the packet bytes).
    pub stack: bool,
}

/// Return addresses a hit records with `--stack`.
pub const STACK_DEPTH: usize = 16;

impl RingLayout {
    /// A ring of `slots` slots, each holding a header, the struct and `snaplen` packet bytes
    /// (and, with `stack`, [`STACK_DEPTH`] return addresses).
    pub fn new(base: u64, slots: u64, snaplen: usize, stack: bool) -> RingLayout {
        let snaplen = snaplen.min(MAX_SNAPLEN).div_ceil(8) * 8;
        let need = (DATA_AT + snaplen + if stack { STACK_DEPTH * 8 } else { 0 }) as u64;
        RingLayout {
            base,
            slots,
            slot_shift: need.next_power_of_two().trailing_zeros(),
            snaplen,
            stack,
        }
    }

    /// Where the return addresses start in a slot.
    pub fn stack_at(&self) -> usize {
        DATA_AT + self.snaplen
    }

    pub fn slot_bytes(&self) -> u64 {
        1 << self.slot_shift
    }

    /// Packet bytes a slot has room for.
    pub fn data_cap(&self) -> usize {
        self.snaplen
    }

    /// The ring and, after it, the table of followed addresses.
    pub fn bytes(&self) -> u64 {
        self.table() - self.base + FOLLOW_SLOTS * 8
    }

    /// Where the table of followed addresses starts.
    pub fn table(&self) -> u64 {
        self.base + HEADER + self.slots * self.slot_bytes()
    }

    fn slot_addr(&self, ticket: u64) -> u64 {
        self.base + HEADER + (ticket & (self.slots - 1)) * self.slot_bytes()
    }
}

/// What a probe copies of its skb argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkbCopy {
    /// `sizeof(struct sk_buff)` (at most [`STRUCT_MAX`]).
    pub size: u32,
    /// Offsets of `head` and `data` (pointers), `tail` (a u32 offset from head), and the u16
    /// `mac_header` and `network_header` offsets.
    pub head_off: u32,
    pub data_off: u32,
    pub tail_off: u32,
    pub mac_off: u32,
    pub net_off: u32,
    /// Offset of `len` (u32).
    pub len_off: u32,
    /// Packet bytes to copy at most.
    pub snaplen: u32,
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
    fn new() -> Asm {
        Asm {
            code: Vec::with_capacity(512),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }
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

/// `push` of an argument register: 0 = rdi, 1 = rsi, 2 = rdx, 3 = rcx, 4 = r8, 5 = r9.
fn push_arg(arg: u8) -> &'static [u8] {
    match arg {
        0 => &[0x57],
        1 => &[0x56],
        2 => &[0x52],
        3 => &[0x51],
        4 => &[0x41, 0x50],
        _ => &[0x41, 0x51],
    }
}

/// A probe's own code: pushes its skb argument (or 0) and its id, calls the recorder at
/// `recorder` (an absolute address: the code refers to nothing by its own address), and leaves
/// every register, the flags and the stack as they were.
pub fn probe_prologue(recorder: u64, id: u32, skb_arg: Option<u8>) -> Vec<u8> {
    let mut a = Asm::new();
    match skb_arg {
        Some(arg) => a.b(push_arg(arg)),
        None => a.b(&[0x6a, 0x00]), // push 0
    };
    a.b(&[0x68]).u32(id); // push id
    a.b(&[0x50]); // push rax
    a.b(&[0x48, 0xb8]).u64(recorder); // movabs rax, recorder
    a.b(&[0xff, 0xd0]); // call rax
    a.b(&[0x58]); // pop rax
    a.b(&[0x48, 0x8d, 0x64, 0x24, 0x10]); // lea rsp, [rsp+16]
    a.finish()
}

/// Stack offset of each argument register inside [`recorder`] after its pushes.
fn arg_slot(arg: u8) -> u8 {
    // pushed: flags, rcx, rdx, rsi, rdi, r8, r9, r10, r11 (r11 at rsp+0)
    match arg {
        0 => 32, // rdi
        1 => 40, // rsi
        2 => 48, // rdx
        3 => 56, // rcx
        4 => 24, // r8
        _ => 16, // r9
    }
}
/// Stack offsets of the probe's id and skb inside [`recorder`], and of the probed function's
/// return address (the stack pointer at its entry).
const ID_SLOT: u8 = 88;
const SKB_SLOT: u8 = 96;
const ENTRY_RSP: u8 = 104;

/// The in-kernel filter of a recorder: the addresses of translated BPF programs (see `bpf.rs`)
/// for Ethernet frames and for IP packets; `None` selects nothing of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFilter {
    pub ethernet: Option<u64>,
    pub ip: Option<u64>,
}

/// Probe id bits that tell the recorder what the function does with its skb, so that with a
/// filter the probes themselves stop following what the kernel gives back (the tracer reads
/// hits later, and meanwhile the same skb and buffer may carry other packets).
pub const ID_RELEASES_SKB: u32 = 1 << 30;
pub const ID_FREES_HEAD: u32 = 1 << 29;
const ID_MASK: u32 = ID_FREES_HEAD - 1;

/// Takes the address in rax (or rdx) out of the table of followed addresses (uses rcx, r8,
/// r11).
fn follow_remove(a: &mut Asm, ring: &RingLayout, reg_is_rdx: bool) {
    follow_hash(a, ring, reg_is_rdx);
    let top = a.code.len();
    let done = a.label();
    let next = a.label();
    // cmp [r11+rcx*8], rax|rdx; jne next
    a.b(&[0x49, 0x39, if reg_is_rdx { 0x14 } else { 0x04 }, 0xcb])
        .jump(&[0x0f, 0x85], next);
    a.b(&[0x49, 0xc7, 0x04, 0xcb]).u32(TOMBSTONE as u32); // mov qword [r11+rcx*8], 1
    a.jump(&[0xe9], done);
    a.place(next);
    a.b(&[0x49, 0x83, 0x3c, 0xcb, 0x00])
        .jump(&[0x0f, 0x84], done); // empty: not there
    a.b(&[0xff, 0xc1]); // inc ecx
    a.b(&[0x81, 0xe1]).u32((FOLLOW_SLOTS - 1) as u32);
    a.b(&[0x41, 0xff, 0xc8]); // dec r8d
    let back = top as i64 - (a.code.len() as i64 + 6);
    a.b(&[0x0f, 0x85]).u32(back as i32 as u32); // jnz top
    a.place(done);
}

/// `hash(rax)` into ecx and the table base into r11 (rax kept).
fn follow_hash(a: &mut Asm, ring: &RingLayout, reg_is_rdx: bool) {
    a.b(&[0x49, 0xbb]).u64(ring.table()); // movabs r11, table
    if reg_is_rdx {
        a.b(&[0x48, 0x89, 0xd1]); // mov rcx, rdx
    } else {
        a.b(&[0x48, 0x89, 0xc1]); // mov rcx, rax
    }
    a.b(&[0x48, 0x69, 0xc9]).u32(0x61c8_8647); // imul rcx, rcx, golden
    a.b(&[0x48, 0xc1, 0xe9, 0x14]); // shr rcx, 20
    a.b(&[0x81, 0xe1]).u32((FOLLOW_SLOTS - 1) as u32); // and ecx, mask
    a.b(&[0x41, 0xb8]).u32(FOLLOW_PROBES); // mov r8d, tries
}

/// Jumps to `found` when rax is in the table (uses rcx, r8, r11).
fn follow_lookup(a: &mut Asm, ring: &RingLayout, found: usize) {
    follow_hash(a, ring, false);
    let top = a.code.len();
    let missing = a.label();
    a.b(&[0x49, 0x39, 0x04, 0xcb]).jump(&[0x0f, 0x84], found); // cmp [r11+rcx*8], rax; je
    a.b(&[0x49, 0x83, 0x3c, 0xcb, 0x00])
        .jump(&[0x0f, 0x84], missing); // cmp qword [..], 0; je
    a.b(&[0xff, 0xc1]); // inc ecx
    a.b(&[0x81, 0xe1]).u32((FOLLOW_SLOTS - 1) as u32);
    a.b(&[0x41, 0xff, 0xc8]); // dec r8d
    let back = top as i64 - (a.code.len() as i64 + 6);
    a.b(&[0x0f, 0x85]).u32(back as i32 as u32); // jnz top
    a.place(missing);
}

/// Puts rdx into a free (or removed) table entry, if one of the tries has room (uses rax,
/// rcx, r8, r11).
fn follow_insert(a: &mut Asm, ring: &RingLayout) {
    follow_hash(a, ring, true);
    let top = a.code.len();
    let done = a.label();
    let next = a.label();
    a.b(&[0x49, 0x8b, 0x04, 0xcb]); // mov rax, [r11+rcx*8]
    a.b(&[0x48, 0x83, 0xf8, TOMBSTONE as u8])
        .jump(&[0x0f, 0x87], next); // cmp rax, 1; ja next
    a.b(&[0xf0, 0x49, 0x0f, 0xb1, 0x14, 0xcb])
        .jump(&[0x0f, 0x84], done); // lock cmpxchg; je
    a.place(next);
    a.b(&[0xff, 0xc1]); // inc ecx
    a.b(&[0x81, 0xe1]).u32((FOLLOW_SLOTS - 1) as u32);
    a.b(&[0x41, 0xff, 0xc8]); // dec r8d
    let back = top as i64 - (a.code.len() as i64 + 6);
    a.b(&[0x0f, 0x85]).u32(back as i32 as u32); // jnz top
    a.place(done);
}

/// The code every probe calls (see [`probe_prologue`]): records one hit. It keeps every
/// register and the flags and refers to nothing by its own address.
///
/// With `filter`, only some hits are recorded: those whose skb or buffer is in the table of
/// followed addresses, and those whose packet the filter selects (whose addresses then go into
/// the table: the packet is followed whatever later happens to its headers). The tracer takes
/// addresses out of the table when the kernel frees the skb, or when it judges a hit
/// differently (see `filter.rs`). Others only count.
///
/// With a ring that has room for the stack, `stack_range` bounds the frame pointers followed.
pub fn recorder(
    ring: &RingLayout,
    skb: Option<&SkbCopy>,
    filter: Option<&KernelFilter>,
    stack_range: Option<(u64, u64)>,
) -> Vec<u8> {
    let mut a = Asm::new();
    // pushfq; push rcx, rdx, rsi, rdi, r8, r9, r10, r11; cld
    a.b(&[
        0x9c, 0x51, 0x52, 0x56, 0x57, 0x41, 0x50, 0x41, 0x51, 0x41, 0x52, 0x41, 0x53, 0xfc,
    ]);
    a.b(&[0x45, 0x31, 0xd2]); // xor r10d, r10d: extra slot flags
    let out = a.label();
    if let (Some(f), Some(s)) = (filter, skb) {
        let take = a.label();
        let skip = a.label();
        // rsi = skb, in [lo, hi); rdx = head
        a.b(&[0x48, 0x8b, 0x74, 0x24, SKB_SLOT]);
        a.b(&[0x48, 0xb8])
            .u64(s.lo)
            .b(&[0x48, 0x39, 0xc6])
            .jump(&[0x0f, 0x82], skip);
        a.b(&[0x48, 0xb8])
            .u64(s.hi)
            .b(&[0x48, 0x39, 0xc6])
            .jump(&[0x0f, 0x83], skip);
        a.b(&[0x48, 0x8b, 0x96]).u32(s.head_off); // mov rdx, [rsi+head]
        // Followed: the skb, or its buffer (clones share it).
        a.b(&[0x48, 0x89, 0xf0]); // mov rax, rsi
        follow_lookup(&mut a, ring, take);
        a.b(&[0x48, 0x89, 0xd0]); // mov rax, rdx
        follow_lookup(&mut a, ring, take);
        // Not followed: a packet (some length, a header set) that the filter selects?
        a.b(&[0x8b, 0x86]).u32(s.len_off); // mov eax, [rsi+len]
        a.b(&[0x85, 0xc0]).jump(&[0x0f, 0x84], skip); // test eax, eax; jz skip
        a.b(&[0x0f, 0xb7, 0x8e]).u32(s.mac_off); // movzx ecx, word [rsi+mac]
        a.b(&[0x44, 0x0f, 0xb7, 0x86]).u32(s.net_off); // movzx r8d, word [rsi+net]
        // r9 = the program; ecx = the offset of the first byte it reads.
        let l3 = a.label();
        let run = a.label();
        a.b(&[0x81, 0xf9]).u32(0xffff).jump(&[0x0f, 0x84], l3); // cmp ecx, 0xffff; je l3
        a.b(&[0x41, 0x81, 0xf8]).u32(0xffff); // cmp r8d, 0xffff
        let eth = a.label();
        a.jump(&[0x0f, 0x84], eth); // je eth (no network header)
        a.b(&[0x8d, 0x41, 0x0e]); // lea eax, [rcx+14]
        a.b(&[0x41, 0x39, 0xc0]).jump(&[0x0f, 0x82], l3); // cmp r8d, eax; jb l3
        a.place(eth);
        match f.ethernet {
            Some(p) => a.b(&[0x49, 0xb9]).u64(p), // movabs r9, program
            None => a.jump(&[0xe9], skip),
        };
        a.jump(&[0xe9], run);
        a.place(l3);
        a.b(&[0x41, 0x81, 0xf8])
            .u32(0xffff)
            .jump(&[0x0f, 0x84], skip); // no header: skip
        a.b(&[0x44, 0x89, 0xc1]); // mov ecx, r8d
        match f.ip {
            Some(p) => a.b(&[0x49, 0xb9]).u64(p),
            None => a.jump(&[0xe9], skip),
        };
        a.place(run);
        // rsi = tail - start (> 0), rdi = head + start in [lo, hi)
        a.b(&[0x8b, 0xb6]).u32(s.tail_off); // mov esi, [rsi+tail]
        a.b(&[0x39, 0xce]).jump(&[0x0f, 0x86], skip); // cmp esi, ecx; jbe skip
        a.b(&[0x29, 0xce]); // sub esi, ecx
        a.b(&[0x48, 0x8d, 0x3c, 0x0a]); // lea rdi, [rdx+rcx]
        a.b(&[0x48, 0xb8])
            .u64(s.lo)
            .b(&[0x48, 0x39, 0xc7])
            .jump(&[0x0f, 0x82], skip);
        a.b(&[0x48, 0xb8])
            .u64(s.hi)
            .b(&[0x48, 0x39, 0xc7])
            .jump(&[0x0f, 0x83], skip);
        a.b(&[0x41, 0xff, 0xd1]); // call r9
        a.b(&[0x85, 0xc0]).jump(&[0x0f, 0x84], skip); // test eax, eax; jz skip
        // Selected: follow the skb and its buffer from now on.
        a.b(&[0x48, 0x8b, 0x74, 0x24, SKB_SLOT]); // mov rsi, [rsp+SKB]
        a.b(&[0x48, 0x89, 0xf2]); // mov rdx, rsi
        follow_insert(&mut a, ring);
        a.b(&[0x48, 0x8b, 0x74, 0x24, SKB_SLOT]);
        a.b(&[0x48, 0x8b, 0x96]).u32(s.head_off); // mov rdx, [rsi+head]
        follow_insert(&mut a, ring);
        a.b(&[0x41, 0xba]).u32(FLAG_INSERTED); // mov r10d, 2
        a.jump(&[0xe9], take);
        a.place(skip);
        // Counted, not recorded.
        a.b(&[0x48, 0xb8]).u64(ring.base + OFF_FILTERED); // movabs rax, counter
        a.b(&[0x48, 0xff, 0x00]); // inc qword [rax]
        a.jump(&[0xe9], out);
        a.place(take);
    }
    // ticket: movabs r11, head; mov eax, 1; lock xadd [r11], rax; mov r9, rax
    a.b(&[0x49, 0xbb]).u64(ring.base);
    a.b(&[0xb8, 1, 0, 0, 0]);
    a.b(&[0xf0, 0x49, 0x0f, 0xc1, 0x03]);
    a.b(&[0x49, 0x89, 0xc1]);
    // slot: and eax, mask; shl rax, shift; movabs r11, slots; add r11, rax
    a.b(&[0x25]).u32((ring.slots - 1) as u32);
    a.b(&[0x48, 0xc1, 0xe0, ring.slot_shift as u8]);
    a.b(&[0x49, 0xbb]).u64(ring.base + HEADER);
    a.b(&[0x49, 0x01, 0xc3]);
    // id: mov eax, [rsp+ID]; and eax, mask; mov [r11+8], eax; flags = 0
    a.b(&[0x8b, 0x44, 0x24, ID_SLOT]);
    a.b(&[0x25]).u32(ID_MASK);
    a.b(&[0x41, 0x89, 0x43, OFF_ID as u8]);
    a.b(&[0x41, 0xc7, 0x43, OFF_FLAGS as u8]).u32(0);
    // tsc: rdtsc; shl rdx, 32; or rax, rdx; mov [r11+16], rax
    a.b(&[0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0]);
    a.b(&[0x49, 0x89, 0x43, OFF_TSC as u8]);
    if let (true, Some((lo, hi))) = (ring.stack, stack_range) {
        // The return address at the function's entry, then the frame-pointer chain: each
        // frame's saved rbp at [rbp] and its return address at [rbp+8], while rbp stays in
        // kernel memory. The depth goes into the flags' second byte.
        let stack_at = ring.stack_at() as u32;
        a.b(&[0x48, 0x8b, 0x44, 0x24, ENTRY_RSP]); // mov rax, [rsp+ENTRY]
        a.b(&[0x49, 0x89, 0x83]).u32(stack_at); // mov [r11+stack], rax
        a.b(&[0x48, 0x89, 0xea]); // mov rdx, rbp
        a.b(&[0xb9, 1, 0, 0, 0]); // mov ecx, 1
        let done = a.label();
        let top = a.code.len();
        a.b(&[0x48, 0xb8])
            .u64(lo)
            .b(&[0x48, 0x39, 0xc2])
            .jump(&[0x0f, 0x82], done); // cmp rdx, rax; jb
        a.b(&[0x48, 0xb8])
            .u64(hi - 16)
            .b(&[0x48, 0x39, 0xc2])
            .jump(&[0x0f, 0x83], done);
        a.b(&[0xf6, 0xc2, 0x07]).jump(&[0x0f, 0x85], done); // test dl, 7; jnz
        a.b(&[0x48, 0x8b, 0x42, 0x08]); // mov rax, [rdx+8]
        a.b(&[0x49, 0x89, 0x84, 0xcb]).u32(stack_at); // mov [r11+rcx*8+stack], rax
        a.b(&[0x48, 0x8b, 0x12]); // mov rdx, [rdx]
        a.b(&[0xff, 0xc1]); // inc ecx
        a.b(&[0x83, 0xf9, STACK_DEPTH as u8]); // cmp ecx, depth
        let back = top as i64 - (a.code.len() as i64 + 6);
        a.b(&[0x0f, 0x82]).u32(back as i32 as u32); // jb top
        a.place(done);
        a.b(&[0xc1, 0xe1, 0x08]); // shl ecx, 8
        a.b(&[0x41, 0x09, 0xca]); // or r10d, ecx
    }
    // the six argument registers, from the stack
    for (i, arg) in (0u8..6).enumerate() {
        a.b(&[0x48, 0x8b, 0x44, 0x24, arg_slot(arg)]); // mov rax, [rsp+d]
        a.b(&[0x49, 0x89, 0x43, (OFF_ARGS + 8 * i as i8) as u8]); // mov [r11+d], rax
    }
    a.b(&[0x41, 0xc7, 0x43, OFF_COPIED as u8]).u32(0);
    // mov rsi, [rsp+SKB]; mov [r11+24], rsi
    a.b(&[0x48, 0x8b, 0x74, 0x24, SKB_SLOT]);
    a.b(&[0x49, 0x89, 0x73, OFF_SKB as u8]);
    if let Some(s) = skb {
        let skip = a.label();
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
        // mov rsi, [r11+24]; mov rax, [rsi+head]; mov [r11+88], rax
        a.b(&[0x49, 0x8b, 0x73, OFF_SKB as u8]);
        a.b(&[0x48, 0x8b, 0x86]).u32(s.head_off);
        a.b(&[0x49, 0x89, 0x43, OFF_HEAD as u8]);
        // The copy starts at the first header that is set (mac or network), else at data:
        // movzx ecx, word [rsi+mac]; movzx edx, word [rsi+net]; cmp edx, ecx; cmovb ecx, edx
        a.b(&[0x0f, 0xb7, 0x8e]).u32(s.mac_off);
        a.b(&[0x0f, 0xb7, 0x96]).u32(s.net_off);
        a.b(&[0x39, 0xca, 0x0f, 0x42, 0xca]);
        // cmp ecx, 0xffff; jne have; mov rcx, [rsi+data]; sub rcx, rax
        let have = a.label();
        a.b(&[0x81, 0xf9]).u32(0xffff).jump(&[0x0f, 0x85], have);
        a.b(&[0x48, 0x8b, 0x8e]).u32(s.data_off);
        a.b(&[0x48, 0x29, 0xc1]);
        a.place(have);
        // mov [r11+84], ecx; mov edx, [rsi+tail]; cmp edx, ecx; jbe flags; sub edx, ecx
        let flags = a.label();
        a.b(&[0x41, 0x89, 0x4b, OFF_START as u8]);
        a.b(&[0x8b, 0x96]).u32(s.tail_off);
        a.b(&[0x39, 0xca]).jump(&[0x0f, 0x86], flags);
        a.b(&[0x29, 0xca]);
        // edx = min(edx, snaplen)
        let ok = a.label();
        let cap = s.snaplen.min(ring.data_cap() as u32);
        a.b(&[0x81, 0xfa]).u32(cap).jump(&[0x0f, 0x86], ok);
        a.b(&[0xba]).u32(cap);
        a.place(ok);
        // rsi = head + start (rcx zero-extended by the 32-bit ops above); in [lo, hi), else no data
        a.b(&[0x48, 0x8d, 0x34, 0x08]); // lea rsi, [rax+rcx]
        a.b(&[0x48, 0xb8])
            .u64(s.lo)
            .b(&[0x48, 0x39, 0xc6])
            .jump(&[0x0f, 0x82], flags);
        a.b(&[0x48, 0xb8])
            .u64(s.hi)
            .b(&[0x48, 0x39, 0xc6])
            .jump(&[0x0f, 0x83], flags);
        // mov [r11+80], edx; lea rdi, [r11+DATA_AT]; mov ecx, edx; rep movsb
        a.b(&[0x41, 0x89, 0x53, OFF_COPIED as u8]);
        a.b(&[0x49, 0x8d, 0xbb]).u32(DATA_AT as u32);
        a.b(&[0x89, 0xd1]);
        a.b(&[0xf3, 0xa4]);
        a.place(flags);
        a.b(&[0x41, 0xc7, 0x43, OFF_FLAGS as u8]).u32(FLAG_SKB);
        a.place(skip);
    }
    // or [r11+12], r10d (what the filter did)
    a.b(&[0x45, 0x09, 0x53, OFF_FLAGS as u8]);
    // commit: lea rax, [r9+1]; mov [r11], rax
    a.b(&[0x49, 0x8d, 0x41, 0x01, 0x49, 0x89, 0x03]);
    if let (Some(_), Some(s)) = (filter, skb) {
        // The function gives the skb (or its buffer) back: stop following it here and now.
        let kept = a.label();
        a.b(&[0xf7, 0x44, 0x24, ID_SLOT]).u32(ID_RELEASES_SKB); // test dword [rsp+ID], bit
        a.jump(&[0x0f, 0x84], kept);
        a.b(&[0x48, 0x8b, 0x44, 0x24, SKB_SLOT]); // mov rax, [rsp+SKB]
        follow_remove(&mut a, ring, false);
        a.place(kept);
        let head_kept = a.label();
        a.b(&[0xf7, 0x44, 0x24, ID_SLOT]).u32(ID_FREES_HEAD);
        a.jump(&[0x0f, 0x84], head_kept);
        a.b(&[0x48, 0x8b, 0x74, 0x24, SKB_SLOT]); // mov rsi, [rsp+SKB]
        a.b(&[0x48, 0x8b, 0x96]).u32(s.head_off); // mov rdx, [rsi+head]
        follow_remove(&mut a, ring, true);
        a.place(head_kept);
    }
    a.place(out);
    // pop r11, r10, r9, r8, rdi, rsi, rdx, rcx; popfq; ret
    a.b(&[
        0x41, 0x5b, 0x41, 0x5a, 0x41, 0x59, 0x41, 0x58, 0x5f, 0x5e, 0x5a, 0x59, 0x9d, 0xc3,
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
    /// Offset from `head` of the first copied packet byte.
    pub start: u32,
    pub skb_struct: Vec<u8>,
    pub data: Vec<u8>,
    /// The in-kernel filter selected this hit's packet and put its addresses in the table.
    pub inserted: bool,
    /// Return addresses, innermost first (with `--stack`).
    pub stack: Vec<u64>,
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Parses a slot's bytes; `None` when it does not hold `ticket`.
pub fn parse_slot(b: &[u8], ticket: u64, struct_size: usize, ring: &RingLayout) -> Option<RawHit> {
    if b.len() < DATA_AT || u64_at(b, 0) != ticket + 1 {
        return None;
    }
    let flags = u32_at(b, OFF_FLAGS as usize);
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = u64_at(b, OFF_ARGS as usize + 8 * i);
    }
    let copied = u32_at(b, OFF_COPIED as usize) as usize;
    let skb = (flags & FLAG_SKB != 0).then(|| u64_at(b, OFF_SKB as usize));
    let have = b
        .len()
        .saturating_sub(DATA_AT)
        .min(copied)
        .min(ring.data_cap());
    let depth = ((flags >> 8) & 0xff) as usize;
    let stack = if ring.stack {
        (0..depth.min(STACK_DEPTH))
            .filter_map(|i| {
                let at = ring.stack_at() + 8 * i;
                b.get(at..at + 8).map(|_| u64_at(b, at))
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(RawHit {
        ticket,
        probe: u32_at(b, OFF_ID as usize),
        tsc: u64_at(b, OFF_TSC as usize),
        args,
        skb,
        head: u64_at(b, OFF_HEAD as usize),
        start: u32_at(b, OFF_START as usize),
        skb_struct: if skb.is_some() {
            b[STRUCT_AT..STRUCT_AT + struct_size.min(STRUCT_MAX)].to_vec()
        } else {
            Vec::new()
        },
        data: b[DATA_AT..DATA_AT + have].to_vec(),
        inserted: flags & FLAG_INSERTED != 0,
        stack,
    })
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

    /// Hits the in-kernel filter left out so far.
    pub fn filtered(&self) -> Result<u64, RingError> {
        let mut b = [0u8; 8];
        self.read(self.ring.base + OFF_FILTERED, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Takes `addr` out of the table of followed addresses (the kernel freed it, or the
    /// tracer does not follow what the filter selected there).
    pub fn unfollow(&self, addr: u64) -> Result<(), RingError> {
        if addr <= TOMBSTONE {
            return Ok(());
        }
        let mask = FOLLOW_SLOTS - 1;
        let first = (addr.wrapping_mul(0x61c8_8647) >> 20) & mask;
        for i in 0..FOLLOW_PROBES as u64 {
            let at = self.ring.table() + ((first + i) & mask) * 8;
            let mut b = [0u8; 8];
            self.read(at, &mut b)?;
            let v = u64::from_le_bytes(b);
            if v == addr {
                self.write(at, &TOMBSTONE.to_le_bytes())?;
            } else if v == 0 {
                break;
            }
        }
        Ok(())
    }

    /// The table's live entries: (index, address).
    pub fn followed_entries(&self) -> Result<Vec<(u64, u64)>, RingError> {
        let mut b = vec![0u8; (FOLLOW_SLOTS * 8) as usize];
        self.read(self.ring.table(), &mut b)?;
        Ok(b.chunks_exact(8)
            .enumerate()
            .map(|(i, c)| (i as u64, u64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .filter(|(_, a)| *a > TOMBSTONE)
            .collect())
    }

    /// Takes entry `index` out if it still holds `addr`.
    pub fn unfollow_at(&self, index: u64, addr: u64) -> Result<(), RingError> {
        let at = self.ring.table() + (index & (FOLLOW_SLOTS - 1)) * 8;
        let mut b = [0u8; 8];
        self.read(at, &mut b)?;
        if u64::from_le_bytes(b) == addr {
            self.write(at, &TOMBSTONE.to_le_bytes())?;
        }
        Ok(())
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), RingError> {
        let remote = [RemoteIoVec {
            base: addr as usize,
            len: buf.len(),
        }];
        let pid = nix::unistd::Pid::from_raw(self.pid);
        nix::sys::uio::process_vm_writev(pid, &[std::io::IoSlice::new(buf)], &remote)
            .map(|_| ())
            .map_err(|source| RingError {
                pid: self.pid,
                addr,
                source,
            })
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
            let slot = self.ring.slot_bytes() as usize;
            // One process_vm_readv with a remote vector per slot.
            let mut bufs = vec![vec![0u8; slot]; n as usize];
            let remote: Vec<RemoteIoVec> = (0..n)
                .map(|i| RemoteIoVec {
                    base: self.ring.slot_addr(self.next + i) as usize,
                    len: slot,
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
                    // The slot may have been overtaken while we read it.
                    if u64_at(b, 0) == ticket + 1
                        && let Some(h) = parse_slot(b, ticket, self.struct_size, &self.ring)
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

    /// Decodes `code` instruction by instruction; returns the net pushes.
    fn walk(code: &[u8]) -> i32 {
        let mut at = 0;
        let mut pushes = 0i32;
        while at < code.len() {
            let i = crate::ptrace::runctl::decode(&code[at..]).expect("decodes");
            match code[at] {
                0x9c | 0x50..=0x57 => pushes += 1,
                0x9d | 0x58..=0x5f => pushes -= 1,
                0x6a | 0x68 => pushes += 1,
                0x41 if (0x50..=0x57).contains(&code[at + 1]) => pushes += 1,
                0x41 if (0x58..=0x5f).contains(&code[at + 1]) => pushes -= 1,
                _ => {}
            }
            at += i.len;
        }
        assert_eq!(at, code.len());
        pushes
    }

    #[test]
    fn recorder_and_prologue_decode_and_keep_the_stack_balanced() {
        let ring = RingLayout::new(0x3f00_0000_0000, 4096, DEFAULT_SNAPLEN, false);
        let with_stack = RingLayout::new(0x3f00_0000_0000, 4096, DEFAULT_SNAPLEN, true);
        assert_eq!(with_stack.slot_bytes(), 1024);
        assert_eq!(with_stack.stack_at(), DATA_AT + 128);
        assert_eq!(ring.slot_bytes(), 512);
        assert_eq!(ring.data_cap(), 128);
        let skb = SkbCopy {
            len_off: 112,
            size: 216,
            head_off: 200,
            data_off: 208,
            tail_off: 188,
            mac_off: 182,
            net_off: 180,
            snaplen: 128,
            lo: 0x6000_0000,
            hi: 0x8000_0000,
        };
        let f = KernelFilter {
            ethernet: Some(0x5f00_1000),
            ip: None,
        };
        for body in [
            recorder(&ring, None, None, None),
            recorder(&ring, Some(&skb), None, None),
            recorder(&ring, Some(&skb), Some(&f), None),
            recorder(&with_stack, Some(&skb), Some(&f), Some((skb.lo, skb.hi))),
        ] {
            assert_eq!(*body.last().unwrap(), 0xc3);
            // The recorder pops what it pushed before its ret.
            assert_eq!(walk(&body[..body.len() - 1]), 0);
        }
        for arg in [None, Some(0), Some(1), Some(4), Some(5)] {
            let p = probe_prologue(0x5f00_0000, 7, arg);
            // push skb, push id, push rax ... pop rax, then lea rsp, [rsp+16].
            assert_eq!(walk(&p), 2, "{arg:?}");
            assert!(p.ends_with(&[0x48, 0x8d, 0x64, 0x24, 0x10]));
        }
    }

    #[test]
    fn parses_a_committed_slot_only() {
        let mut b = vec![0u8; 512];
        b[0..8].copy_from_slice(&6u64.to_le_bytes());
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[16..24].copy_from_slice(&99u64.to_le_bytes());
        b[24..32].copy_from_slice(&0x6090_0000u64.to_le_bytes());
        b[80..84].copy_from_slice(&4u32.to_le_bytes());
        b[84..88].copy_from_slice(&64u32.to_le_bytes());
        b[DATA_AT..DATA_AT + 4].copy_from_slice(b"abcd");
        let ring = RingLayout::new(0, 16, DEFAULT_SNAPLEN, false);
        let h = parse_slot(&b, 5, 216, &ring).unwrap();
        assert_eq!((h.probe, h.tsc, h.skb), (3, 99, Some(0x6090_0000)));
        assert_eq!((h.data.as_slice(), h.start), (&b"abcd"[..], 64));
        assert_eq!(h.skb_struct.len(), 216);
        assert!(parse_slot(&b, 4, 216, &ring).is_none());
    }
}
