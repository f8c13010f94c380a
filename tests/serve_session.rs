//! The gdb session layer of `umldbg serve` over a fake machine: recorded packet exchanges, and
//! stock gdb (batch mode) against the server, with no UML kernel involved.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use umldbg::ptrace::runctl::StopEvent;
use umldbg::stub::libraries::ModuleOffsets;
use umldbg::stub::server::{self, Phase, Session, packet};
use umldbg::stub::target::fake::{FakeMachine, zero_regs};
use umldbg::stub::target::{Hook, MachineInfo, ModuleTracking, UmlTarget};

const OFFS: ModuleOffsets = ModuleOffsets {
    list: 8,
    name: 24,
    name_len: 56,
    sect_attrs: 0x300,
    bin_attrs: 0x18,
    attr_name: 0,
    private: 0x30,
};
const HEAD: u64 = 0x6100_0000;
const LOAD_HOOK: u64 = 0x6000_0400;
const FREE_HOOK: u64 = 0x6000_0500;
const PID: i32 = 4242;

fn put_u64(m: &FakeMachine, a: u64, v: u64) {
    m.put(a, &v.to_le_bytes());
}

/// One fake module: its `struct module` address, name and sections.
type FakeModule<'a> = (u64, &'a str, &'a [(&'a str, u64)]);

/// Link `struct module`s at `at` with these sections into the list at HEAD.
fn set_modules(m: &FakeMachine, mods: &[FakeModule<'_>]) {
    let mut prev = HEAD;
    for (at, name, secs) in mods {
        put_u64(m, prev, at + OFFS.list);
        prev = at + OFFS.list;
        let mut n = name.as_bytes().to_vec();
        n.resize(56, 0);
        m.put(at + OFFS.name, &n);
        let attrs = at + 0x1000;
        put_u64(m, at + OFFS.sect_attrs, attrs);
        let array = at + 0x2000;
        put_u64(m, attrs + OFFS.bin_attrs, array);
        for (i, (sec, addr)) in secs.iter().enumerate() {
            let attr = at + 0x3000 + 0x100 * i as u64;
            let sname = at + 0x8000 + 0x40 * i as u64;
            let mut s = sec.as_bytes().to_vec();
            s.push(0);
            m.put(sname, &s);
            put_u64(m, attr + OFFS.attr_name, sname);
            put_u64(m, attr + OFFS.private, *addr);
            put_u64(m, array + 8 * i as u64, attr);
        }
        put_u64(m, array + 8 * secs.len() as u64, 0);
    }
    put_u64(m, prev, HEAD);
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/kmod")
}

const TEST_TEXT: u64 = 0x6300_0000;
const TEST_SECTIONS: &[(&str, u64)] = &[
    (".note.gnu.build-id", 0x6300_3000),
    (".note.Linux", 0x6300_3040),
    ("__ksymtab", 0x6300_3080),
    ("__kflagstab", 0x6300_30a0),
    (".text", TEST_TEXT),
    (".init.text", 0x6300_1000),
    (".exit.text", 0x6300_0100),
    (".bss", 0x6300_2400),
    (".data", 0x6300_2000),
    (".exit.data", 0x6300_2040),
    (".init.data", 0x6300_2080),
    (".gnu.linkonce.this_module", 0x6300_2100),
    (".rodata", 0x6300_3100),
    ("__param", 0x6300_3200),
    (".eh_frame", 0x6300_3300),
    ("__ksymtab_strings", 0x6300_3400),
];

/// A stopped machine with kernel text, a stack and one module (the fixture umldbg_test.ko).
fn machine() -> (FakeMachine, MachineInfo) {
    let m = FakeMachine::new(PID);
    m.put(0x6000_0000, &[0x90; 0x1000]);
    m.put(0x6ff0_0000, &[0; 0x2000]);
    m.put(TEST_TEXT, &[0x90; 0x200]);
    m.put(0x6300_1000, &[0x90; 0x100]);
    {
        let mut s = m.state();
        let mut r = zero_regs();
        r.rip = 0x6000_0100;
        r.rsp = 0x6ff0_1000;
        r.rdi = 0x1111;
        r.cs = 0x33;
        s.regs.insert(PID, r);
    }
    put_u64(&m, HEAD, HEAD);
    set_modules(&m, &[(0x6200_0000, "umldbg_test", TEST_SECTIONS)]);
    let info = MachineInfo {
        umid: None,
        image: PathBuf::from("/nonexistent/linux"),
        cache: std::env::temp_dir(),
        module_paths: vec![fixtures()],
        modules_dir: None,
        tracking: Some(ModuleTracking {
            head: HEAD,
            offsets: OFFS,
            hooks: vec![(LOAD_HOOK, Hook::ModuleLoad), (FREE_HOOK, Hook::ModuleFree)],
        }),
        maps: String::new(),
    };
    (m, info)
}

/// A shared byte sink for a session's replies.
#[derive(Clone, Default)]
struct Out(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Out {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Out {
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().unwrap())).into_owned()
    }
}

fn session() -> (Session<FakeMachine, Out>, FakeMachine, Out) {
    let (m, info) = machine();
    session_on(m, info)
}

fn session_on(m: FakeMachine, info: MachineInfo) -> (Session<FakeMachine, Out>, FakeMachine, Out) {
    let out = Out::default();
    let t = UmlTarget::new(m.clone(), info);
    (Session::new(t, out.clone()).unwrap(), m, out)
}

/// Undo gdb's run-length encoding (`X*n`: X repeated n - 29 more times) in replies.
fn unrle(s: &str) -> String {
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'*' && i + 1 < b.len() && !out.is_empty() {
            let last = *out.last().unwrap();
            for _ in 0..(b[i + 1] - 29) {
                out.push(last);
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Send one packet and return everything the server wrote back.
fn ask(s: &mut Session<FakeMachine, Out>, out: &Out, body: &str) -> String {
    s.feed(&packet(body.as_bytes()));
    out.take()
}

#[test]
fn module_hooks_are_inserted_and_the_library_list_has_every_alloc_section() {
    let (mut s, m, out) = session();
    assert_eq!(
        m.state().breakpoints.keys().copied().collect::<Vec<_>>(),
        [LOAD_HOOK, FREE_HOOK]
    );
    let r = unrle(&ask(&mut s, &out, "qXfer:libraries:read::0,fff"));
    assert!(r.starts_with("+$m<library-list"), "{r}");
    let ko = fixtures().join("umldbg_test.ko");
    assert!(
        r.contains(&format!("<library name=\"{}\">", ko.display())),
        "{r}"
    );
    // 17 SHF_ALLOC sections in the file, in file order; .modinfo gets .text's address.
    assert_eq!(r.matches("<section ").count(), 17, "{r}");
    assert!(r.contains("<section address=\"0x63003080\"/><section address=\"0x630030a0\"/><section address=\"0x63000000\"/>"), "{r}");
}

#[test]
fn memory_reads_show_the_text_under_our_breakpoints() {
    let (mut s, m, out) = session();
    assert_eq!(m.state().mem[&LOAD_HOOK], 0xcc);
    let r = ask(&mut s, &out, &format!("m{:x},2", LOAD_HOOK));
    assert!(r.contains("$9090#"), "{r}");
}

#[test]
fn continue_reports_a_breakpoint_and_ctrl_c_an_interrupt() {
    let (mut s, m, out) = session();
    let r = ask(&mut s, &out, &format!("Z0,{:x},1", TEST_TEXT + 4));
    assert!(r.contains("$OK#"), "{r}");
    m.state().script.push_back(StopEvent::Breakpoint {
        tid: PID,
        addr: TEST_TEXT + 4,
    });
    let r = ask(&mut s, &out, "vCont;c");
    assert_eq!(r, "+", "the ack goes out at once, the stop later");
    assert_eq!(s.phase(), Phase::Running);
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(
        r.starts_with("$T05thread:") && r.contains("swbreak:"),
        "{r}"
    );
    assert_eq!(s.phase(), Phase::Stopped);

    // Running with nothing scripted: Ctrl-C stops it with SIGINT.
    ask(&mut s, &out, "vCont;c");
    s.poll(Duration::from_millis(10));
    assert_eq!(s.phase(), Phase::Running);
    s.feed(&[0x03]);
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(r.starts_with("$T02thread:"), "{r}");
}

/// The running fake machine stops with `ev` at its next wait.
fn fire(m: &FakeMachine, ev: StopEvent) {
    let mut st = m.state();
    assert!(st.running);
    st.next = Some(ev);
}

#[test]
fn a_module_load_hook_becomes_a_library_stop_and_an_unchanged_one_is_silent() {
    let (m, info) = machine();
    set_modules(&m, &[]);
    let (mut s, m, out) = session_on(m, info);
    assert!(!unrle(&ask(&mut s, &out, "qXfer:libraries:read::0,fff")).contains("umldbg_test"));
    ask(&mut s, &out, "vCont;c");
    // The hook fires but the list is the same: the machine is resumed with no report.
    fire(
        &m,
        StopEvent::Breakpoint {
            tid: PID,
            addr: LOAD_HOOK,
        },
    );
    s.poll(Duration::from_millis(10));
    assert_eq!(out.take(), "");
    assert_eq!(m.state().resumes, 2);
    assert_eq!(s.phase(), Phase::Running);
    // A second module appears: library stop.
    set_modules(&m, &[(0x6200_0000, "umldbg_test", TEST_SECTIONS)]);
    fire(
        &m,
        StopEvent::Breakpoint {
            tid: PID,
            addr: LOAD_HOOK,
        },
    );
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(r.contains("library:;"), "{r}");
    assert_eq!(s.target().library_events, 1);
}

#[test]
fn breakpoints_in_a_module_that_goes_are_removed_before_it_is_freed() {
    let (mut s, m, out) = session();
    ask(&mut s, &out, &format!("Z0,{:x},1", TEST_TEXT + 8));
    ask(&mut s, &out, "vCont;c");
    // free_module(mod) with mod = the module's struct: it is left out of the list.
    m.state().regs.get_mut(&PID).unwrap().rdi = 0x6200_0000;
    fire(
        &m,
        StopEvent::Breakpoint {
            tid: PID,
            addr: FREE_HOOK,
        },
    );
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(r.contains("library:;"), "{r}");
    assert_eq!(m.state().mem[&(TEST_TEXT + 8)], 0x90);
    assert!(!m.state().breakpoints.contains_key(&(TEST_TEXT + 8)));
    let r = unrle(&ask(&mut s, &out, "qXfer:libraries:read::0,fff"));
    assert!(!r.contains("umldbg_test.ko"), "{r}");
    // gdb's later z0 for it is fine.
    let r = ask(&mut s, &out, &format!("z0,{:x},1", TEST_TEXT + 8));
    assert!(r.contains("$OK#"), "{r}");
}

#[test]
fn detach_removes_every_byte_and_leaves_the_machine_attached_to_nobody() {
    let (mut s, m, out) = session();
    ask(&mut s, &out, &format!("Z0,{:x},1", TEST_TEXT + 4));
    let before: BTreeMap<u64, u8> = m.state().breakpoints.clone();
    assert_eq!(before.len(), 3);
    let r = ask(&mut s, &out, "D");
    assert!(r.contains("$OK#"), "{r}");
    assert_eq!(s.phase(), Phase::Over);
    let (end, removed) = s.finish();
    assert_eq!(end, server::End::Detached);
    // gdb's one breakpoint; the two module hooks are the server's and not counted.
    assert!(matches!(removed, Ok(1)), "{removed:?}");
    let st = m.state();
    assert!(st.breakpoints.is_empty() && st.detached);
    assert_eq!(st.mem[&LOAD_HOOK], 0x90);
    assert_eq!(st.mem[&(TEST_TEXT + 4)], 0x90);
}

#[test]
fn malformed_packets_get_errors_and_the_session_goes_on() {
    let (mut s, _m, out) = session();
    // Bad checksum: a NACK, gdb resends.
    s.feed(b"$g#00");
    assert_eq!(out.take(), "-");
    // A command gdbstub cannot parse: an E. reply, then business as usual.
    let r = ask(&mut s, &out, "mzz,zz");
    assert!(r.contains("$E."), "{r}");
    let r = ask(&mut s, &out, "qXfer:libraries:read::0,10");
    assert!(r.contains("$m<library-list"), "{r}");
    // A NACK from gdb: the last packet again.
    s.feed(b"-");
    assert!(out.take().contains("$m<library-list"));
    assert_eq!(s.phase(), Phase::Stopped);
}

#[test]
fn monitor_commands_answer_in_console_packets() {
    let (mut s, _m, out) = session();
    let hex = |t: &str| t.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let r = ask(&mut s, &out, &format!("qRcmd,{}", hex("lsmod")));
    assert!(r.contains(&format!("$O{}", hex("module"))), "{r}");
    assert!(r.contains(&hex("umldbg_test")), "{r}");
    let r = ask(&mut s, &out, &format!("qRcmd,{}", hex("frob")));
    assert!(r.contains(&hex("unknown monitor command")), "{r}");
    // A failure ends in an error, after its text: gdb scripts stop, MI says ^error.
    assert!(
        r.ends_with(&String::from_utf8(packet(b"E01")).unwrap()),
        "{r}"
    );
    let r = ask(&mut s, &out, &format!("qRcmd,{}", hex("info version")));
    assert!(
        r.ends_with("$E01#a6"),
        "the kernel's scripts must not take us for QEMU: {r}"
    );
    let r = ask(&mut s, &out, &format!("qRcmd,{}", hex("help")));
    assert!(r.ends_with("$OK#9a"), "{r}");
}

/// The per-hit exchange of a breakpoint gdb continues from: the stop carries the thread's
/// registers (no `g`), `z0`/`Z0` around the step leave the int3 (and its journal entry) in
/// place, and a breakpoint gdb really deletes goes when the machine runs again.
#[test]
fn a_hit_needs_no_register_packet_and_the_int3_stays_while_gdb_steps_over_it() {
    let (mut s, m, out) = session();
    m.state().trap_steps_safe = true;
    let bp = TEST_TEXT + 4;
    ask(&mut s, &out, &format!("Z0,{bp:x},1"));
    let inserted = m.state().breakpoints.clone();
    ask(&mut s, &out, "vCont;c");
    m.state().regs.get_mut(&PID).unwrap().rip = bp;
    fire(&m, StopEvent::Breakpoint { tid: PID, addr: bp });
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(
        r.starts_with("$T05thread:") && r.contains("swbreak:;"),
        "{r}"
    );
    // rip (register 16) and rsp (7) are in the stop reply, little-endian.
    assert!(r.contains(&format!("10:{};", le_hex(bp))), "{r}");
    assert!(r.contains(&format!("07:{};", le_hex(0x6ff0_1000))), "{r}");
    // gdb steps over it: z0, vCont;s, Z0. The int3 never leaves.
    assert!(ask(&mut s, &out, &format!("z0,{bp:x},1")).contains("$OK#"));
    assert_eq!(m.state().breakpoints, inserted);
    let r = ask(&mut s, &out, &format!("m{bp:x},1"));
    assert!(r.contains("$90#"), "gdb still sees the text as it is: {r}");
    ask(&mut s, &out, &format!("vCont;s:p{PID:x}.{PID:x}"));
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(r.starts_with("$T05thread:") && r.contains("10:"), "{r}");
    assert_eq!(m.state().steps, 1, "a trap-flag step");
    assert!(ask(&mut s, &out, &format!("Z0,{bp:x},1")).contains("$OK#"));
    assert_eq!(m.state().breakpoints, inserted);
    // Deleted for real: out when the machine continues.
    ask(&mut s, &out, &format!("z0,{bp:x},1"));
    assert!(m.state().breakpoints.contains_key(&bp));
    ask(&mut s, &out, "vCont;c");
    assert!(!m.state().breakpoints.contains_key(&bp));
    assert_eq!(m.state().mem[&bp], 0x90);
}

fn le_hex(v: u64) -> String {
    v.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn no_ack_mode_survives_a_malformed_packet() {
    let (mut s, _m, out) = session();
    let r = ask(&mut s, &out, "qSupported:multiprocess+;swbreak+");
    assert!(
        r.contains("QStartNoAckMode+") && r.contains("qXfer:threads:read+"),
        "{r}"
    );
    assert!(r.contains("qXfer:libraries-svr4:read+"), "{r}");
    assert_eq!(ask(&mut s, &out, "QStartNoAckMode"), "+$OK#9a");
    assert!(ask(&mut s, &out, "qXfer:threads:read::0,fff").starts_with('$'));
    let r = ask(&mut s, &out, "mzz,zz");
    assert!(r.starts_with("$E."), "{r}");
    // Still no acks after the restart of the protocol state.
    let r = ask(&mut s, &out, "qXfer:libraries:read::0,10");
    assert!(r.starts_with("$m<library-list"), "{r}");
    // A bad checksum is answered (nobody resends without acks).
    s.feed(b"$g#00");
    assert!(out.take().starts_with("$E."));
}

#[test]
fn the_thread_list_is_one_packet() {
    let (mut s, m, out) = session();
    m.state().threads = vec![PID, PID + 1];
    ask(&mut s, &out, "qSupported:multiprocess+");
    let r = ask(&mut s, &out, "qXfer:threads:read::0,fff");
    assert!(r.starts_with("+$l<?xml"), "{r}");
    assert!(
        r.contains(&format!("<thread id=\"p1.{PID:x}\""))
            && r.contains(&format!("p1.{:x}", PID + 1)),
        "{r}"
    );
    // In pieces.
    let r = ask(&mut s, &out, "qXfer:threads:read::0,10");
    assert!(r.starts_with("+$m<?xml version=\""), "{r}");
}

/// Interrupted while another host thread (UML's helpers sleep in libc) was first to stop: the
/// stop names the kernel's thread.
#[test]
fn an_interrupt_stops_in_the_kernel_thread() {
    let (mut s, m, out) = session();
    m.state().threads = vec![PID, PID + 1];
    ask(&mut s, &out, "vCont;c");
    fire(&m, StopEvent::Interrupted { tid: PID + 1 });
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(
        r.starts_with(&format!("$T02thread:p01.{PID:x};"))
            || r.starts_with(&format!("$T02thread:{PID:x};")),
        "{r}"
    );
}

#[test]
fn lldb_gets_registers_and_an_svr4_library_list() {
    let (mut s, _m, out) = session();
    let r = ask(&mut s, &out, "qRegisterInfo0");
    assert!(
        r.contains("name:rax;bitsize:64;offset:0;encoding:uint;format:hex;"),
        "{r}"
    );
    let r = ask(&mut s, &out, "qRegisterInfo10");
    assert!(r.contains("name:rip;") && r.contains("generic:pc;"), "{r}");
    let r = ask(&mut s, &out, "qRegisterInfo38");
    assert!(r.contains("name:mxcsr;bitsize:32;offset:532;"), "{r}");
    assert!(ask(&mut s, &out, "qRegisterInfo39").contains("$E45#"));
    let r = unrle(&ask(&mut s, &out, "qXfer:features:read:target.xml:0,3fff"));
    assert!(
        r.contains("<reg name=\"rax\" bitsize=\"64\"") && r.contains("<osabi>none</osabi>"),
        "{r}"
    );
    let r = unrle(&ask(&mut s, &out, "qXfer:libraries-svr4:read::0,3fff"));
    let ko = fixtures().join("umldbg_test.ko");
    assert!(
        r.contains(&format!(
            "<library name=\"{}\" lm=\"0x1\" l_addr=\"0x",
            ko.display()
        )),
        "{r}"
    );
}

/// LLDB allocates memory for expression results; without it, it makes the kernel's thread call
/// the host's mmap, which kills the machine. The memory stays in the server.
#[test]
fn client_memory_is_served_and_never_run() {
    let (mut s, m, out) = session();
    let r = ask(&mut s, &out, "_M100,rwx");
    let addr = r
        .trim_start_matches("+$")
        .split('#')
        .next()
        .unwrap()
        .to_owned();
    let a = u64::from_str_radix(&addr, 16).unwrap_or_else(|_| panic!("{r}"));
    assert!(ask(&mut s, &out, &format!("M{a:x},4:01020304")).contains("$OK#"));
    assert!(ask(&mut s, &out, &format!("m{a:x},4")).contains("$01020304#"));
    assert!(
        !m.state().mem.contains_key(&a),
        "nothing written in the machine"
    );
    // A register write that would run code there is refused.
    let regs = format!(
        "{}{}{}",
        "00".repeat(128),
        le_hex(a),
        "00".repeat(0x218 - 136)
    );
    assert!(
        ask(&mut s, &out, &format!("G{regs}")).contains("$E"),
        "refused"
    );
    assert!(ask(&mut s, &out, &format!("_m{a:x}")).contains("$OK#"));
    assert!(ask(&mut s, &out, &format!("m{a:x},4")).contains("$E"));
}

/// gdb's own breakpoint on the server's module hook (lx-symbols sets one on do_init_module):
/// gdb gets its breakpoint stop, then the library change when it continues; detach is clean.
#[test]
fn a_client_breakpoint_on_the_module_hook_gets_both_stops() {
    let (m, info) = machine();
    set_modules(&m, &[]);
    let (mut s, m, out) = session_on(m, info);
    assert!(ask(&mut s, &out, &format!("Z0,{LOAD_HOOK:x},1")).contains("$OK#"));
    ask(&mut s, &out, "vCont;c");
    set_modules(&m, &[(0x6200_0000, "umldbg_test", TEST_SECTIONS)]);
    fire(
        &m,
        StopEvent::Breakpoint {
            tid: PID,
            addr: LOAD_HOOK,
        },
    );
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(r.contains("swbreak:;") && !r.contains("library:;"), "{r}");
    let resumes = m.state().resumes;
    ask(&mut s, &out, "vCont;c");
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(r.contains("library:;"), "{r}");
    assert_eq!(m.state().resumes, resumes, "reported without running");
    assert!(unrle(&ask(&mut s, &out, "qXfer:libraries:read::0,fff")).contains("umldbg_test"));
    // gdb removes its breakpoint; the hook stays.
    ask(&mut s, &out, &format!("z0,{LOAD_HOOK:x},1"));
    ask(&mut s, &out, "vCont;c");
    assert!(m.state().breakpoints.contains_key(&LOAD_HOOK));
    s.feed(&[0x03]);
    s.poll(Duration::from_millis(10));
    out.take();
    ask(&mut s, &out, "D");
    let (_, removed) = s.finish();
    assert!(
        matches!(removed, Ok(0)),
        "no error about a breakpoint removed twice: {removed:?}"
    );
    assert!(m.state().breakpoints.is_empty());
}

/// The cached kernel image, when a kernel is built (for gdb's `file`).
fn kernel_image() -> Option<PathBuf> {
    let o = Command::new(env!("CARGO_BIN_EXE_umldbg"))
        .args(["kernel", "path", "--json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["linux"].as_str().map(PathBuf::from)
}

/// Stock gdb in batch mode against the server over TCP.
fn gdb_against_fake(pre: &[&str], cmds: &[&str]) -> String {
    let listener =
        server::Listener::bind(&server::Listen::Tcp("127.0.0.1:0".parse().unwrap()), false)
            .unwrap();
    let addr = listener.address();
    let th = std::thread::spawn(move || {
        let mut make = || {
            let (m, info) = machine();
            Ok(UmlTarget::new(m, info))
        };
        let ctl = std::sync::Arc::new(server::Control::default());
        let _ = server::serve(
            listener,
            true,
            ctl,
            &mut make,
            |w| format!("busy with {w}"),
            |l| eprintln!("server: {l}"),
        );
    });
    let mut args: Vec<String> = vec!["-nx".into(), "-batch".into()];
    for c in pre {
        args.push("-ex".into());
        args.push(c.to_string());
    }
    args.push("-ex".into());
    args.push(format!("target remote {addr}"));
    for c in cmds {
        args.push("-ex".into());
        args.push(c.to_string());
    }
    let o = Command::new("gdb").args(&args).output().expect("run gdb");
    th.join().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// The finding behind the target description: with the `linux` executable loaded and no
/// setting, gdb 13 takes the description's OS ABI "none" and lists the modules from
/// qXfer:libraries (with the file's GNU/Linux ABI it would ask the dynamic linker instead).
#[test]
fn stock_gdb_with_the_kernel_image_lists_the_module_with_no_settings() {
    let Some(k) = kernel_image() else {
        panic!("no cached kernel: run `umldbg kernel build` (scripts/setup.sh)");
    };
    let file = format!("file {}", k.display());
    let out = gdb_against_fake(&[&file], &["info sharedlibrary", "show osabi", "detach"]);
    let ko = fixtures().join("umldbg_test.ko");
    let line = out
        .lines()
        .find(|l| l.contains("umldbg_test.ko"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.starts_with("0x0000000063000000")
            && line.contains("Yes")
            && line.ends_with(&ko.display().to_string()),
        "{out}"
    );
    assert!(out.contains("currently \"none\""), "{out}");
    assert!(!out.contains("ld-linux"), "{out}");
}

/// The fake machine with its module file at a fixed path, so that recorded replies (which
/// carry the path, also hex-encoded and inside checksums) do not depend on the checkout.
fn golden_machine() -> (FakeMachine, MachineInfo) {
    let dir = std::env::temp_dir().join("umldbg-stub-golden");
    std::fs::create_dir_all(&dir).unwrap();
    let ko = dir.join("umldbg_test.ko");
    let bytes = std::fs::read(fixtures().join("umldbg_test.ko")).unwrap();
    if std::fs::read(&ko).ok().as_deref() != Some(&bytes[..]) {
        let tmp = dir.join(format!("umldbg_test.ko.{}", std::process::id()));
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, &ko).unwrap();
    }
    let (m, mut info) = machine();
    info.module_paths = vec![dir];
    (m, info)
}

/// Run gdb against the fake server through a recording proxy; returns what gdb sent.
fn record_gdb(cmds: &[&str]) -> Vec<u8> {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    let listener =
        server::Listener::bind(&server::Listen::Tcp("127.0.0.1:0".parse().unwrap()), false)
            .unwrap();
    let server_addr = listener.address();
    let th = std::thread::spawn(move || {
        let mut make = || {
            let (m, info) = golden_machine();
            Ok(UmlTarget::new(m, info))
        };
        let ctl = std::sync::Arc::new(server::Control::default());
        let _ = server::serve(
            listener,
            true,
            ctl,
            &mut make,
            |w| format!("busy with {w}"),
            |_| {},
        );
    });
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let rec = std::thread::spawn(move || {
        let (mut c, _) = proxy.accept().unwrap();
        let mut s = TcpStream::connect(&server_addr).unwrap();
        let mut c2 = c.try_clone().unwrap();
        let mut s2 = s.try_clone().unwrap();
        let back = std::thread::spawn(move || {
            let _ = std::io::copy(&mut s2, &mut c2);
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    s.write_all(&buf[..n]).unwrap();
                }
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = back.join();
        got
    });
    let mut args: Vec<String> = vec![
        "-nx".into(),
        "-batch".into(),
        "-ex".into(),
        format!("target remote {proxy_addr}"),
    ];
    for c in cmds {
        args.push("-ex".into());
        args.push(c.to_string());
    }
    let o = Command::new("gdb").args(&args).output().expect("run gdb");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = rec.join().unwrap();
    th.join().unwrap();
    got
}

/// Replay what gdb 13 sent in a recorded session (connect, libraries, registers, memory, a
/// monitor command, a breakpoint set and removed, detach) and compare the server's replies with
/// the recorded ones. UMLDBG_BLESS=1 records both again with the gdb on this machine.
#[test]
fn golden_gdb13_transcript_replays_byte_for_byte() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/stub");
    let cin = dir.join("gdb13-session.client");
    let sout = dir.join("gdb13-session.server");
    if std::env::var_os("UMLDBG_BLESS").is_some() {
        let got = record_gdb(&[
            "info sharedlibrary",
            "x/2xb 0x60000100",
            "info registers rip",
            "monitor lsmod",
            "break *0x63000004",
            "delete",
            "detach",
        ]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&cin, &got).unwrap();
    }
    let client = std::fs::read(&cin)
        .expect("fixtures/stub/gdb13-session.client (UMLDBG_BLESS=1 records it)");
    let (m, info) = golden_machine();
    let (mut s, _m, out) = session_on(m, info);
    s.feed(&client);
    let replies = out.take();
    if std::env::var_os("UMLDBG_BLESS").is_some() {
        std::fs::write(&sout, &replies).unwrap();
    }
    let want = std::fs::read_to_string(&sout).unwrap();
    assert_eq!(s.phase(), Phase::Over, "the transcript ends with a detach");
    assert_eq!(replies, want);
}

#[test]
fn a_step_is_done_with_a_temporary_breakpoint_and_a_disconnect_mid_step_leaves_nothing() {
    let (mut s, m, out) = session();
    // rip = 0x60000100 holds nops: the step's successor is rip + 1.
    let r = ask(&mut s, &out, &format!("vCont;s:p{PID:x}.{PID:x}"));
    assert_eq!(r, "+");
    assert!(
        m.state().breakpoints.contains_key(&0x6000_0101),
        "{:?}",
        m.state().breakpoints
    );
    assert_eq!(m.state().steps, 0, "no trap-flag step");
    fire(
        &m,
        StopEvent::Breakpoint {
            tid: PID,
            addr: 0x6000_0101,
        },
    );
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(
        r.starts_with("$T05thread:") && !r.contains("swbreak"),
        "{r}"
    );
    assert!(!m.state().breakpoints.contains_key(&0x6000_0101));
    assert_eq!(s.target().breakpoint_steps, 1);
    // Step again and let the client vanish before it ends.
    ask(&mut s, &out, &format!("vCont;s:p{PID:x}.{PID:x}"));
    s.client_gone();
    let (end, removed) = s.finish();
    assert_eq!(end, server::End::ClientGone);
    assert!(removed.is_ok(), "{removed:?}");
    let st = m.state();
    assert!(
        st.breakpoints.is_empty() && st.detached && !st.running,
        "{:?}",
        st.breakpoints
    );
}

#[test]
fn the_machine_exiting_ends_the_session_with_its_status() {
    let (mut s, m, out) = session();
    ask(&mut s, &out, "vCont;c");
    fire(
        &m,
        StopEvent::Exited {
            code: None,
            signal: Some(9),
        },
    );
    s.poll(Duration::from_millis(10));
    let r = out.take();
    assert!(r.starts_with("$X09"), "{r}");
    assert_eq!(s.phase(), Phase::Over);
    let (end, removed) = s.finish();
    assert_eq!(end, server::End::MachineExited("signal 9".into()));
    assert!(matches!(removed, Ok(0)), "{removed:?}");
}

#[test]
fn stock_gdb_connects_over_a_unix_socket_and_a_second_client_is_refused() {
    let path = std::env::temp_dir().join(format!("umldbg-serve-{}.sock", std::process::id()));
    let listener = server::Listener::bind(&server::Listen::Unix(path.clone()), false).unwrap();
    let ctl = std::sync::Arc::new(server::Control::default());
    let ctl2 = ctl.clone();
    let th = std::thread::spawn(move || {
        let mut make = || {
            let (m, info) = machine();
            Ok(UmlTarget::new(m, info))
        };
        server::serve(
            listener,
            false,
            ctl2,
            &mut make,
            |w| format!("umldbg serve: busy with {w}; one client at a time"),
            |_| {},
        )
    });
    // The first client holds the session.
    let mut first = std::os::unix::net::UnixStream::connect(&path).unwrap();
    first.write_all(&packet(b"qSupported")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let o = Command::new("gdb")
        .args([
            "-nx",
            "-batch",
            "-ex",
            &format!("target remote {}", path.display()),
            "-ex",
            "info threads",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("one client at a time"), "{text}");
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    // Now gdb gets in.
    let o = Command::new("gdb")
        .args([
            "-nx",
            "-batch",
            "-ex",
            &format!("target remote {}", path.display()),
            "-ex",
            "info sharedlibrary",
            "-ex",
            "detach",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        text.contains("umldbg_test.ko") && text.contains("detached"),
        "{text}"
    );
    ctl.stop();
    let served = th.join().unwrap();
    assert!(served.is_ok(), "{served:?}");
    assert!(!path.exists(), "the socket file is removed");
}
