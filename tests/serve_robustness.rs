//! The gdb session layer of `umldbg serve` over a fake machine, fed byte streams from a fixed
//! seed: the seed corpus (`fixtures/stub/corpus/`, the recorded gdb 13 session, the packets LLDB
//! and gdb's fast paths use), and random bytes. Every stream gives replies,
//! never a panic or a hang, and the session can always be finished with every breakpoint byte put
//! back. (This was a fuzz target; fuzz targets now depend on the codec crate alone.)

use std::path::PathBuf;
use std::time::Duration;

use umldbg::ptrace::runctl::StopEvent;
use umldbg::stub::server::Session;
use umldbg::stub::target::fake::{FakeMachine, zero_regs};
use umldbg::stub::target::{MachineInfo, UmlTarget};

/// One stream through a fresh session; 0xff (never in gdb's protocol text) separates chunks
/// between which the machine gets a chance to stop.
fn drive(data: &[u8]) {
    let m = FakeMachine::new(100);
    m.put(0x6000_0000, &[0x90; 0x400]);
    {
        let mut s = m.state();
        let mut r = zero_regs();
        r.rip = 0x6000_0010;
        s.regs.insert(100, r);
        s.threads.push(101);
        s.regs.insert(101, r);
        s.script.push_back(StopEvent::Breakpoint {
            tid: 100,
            addr: 0x6000_0020,
        });
        s.script.push_back(StopEvent::Interrupted { tid: 101 });
    }
    let target = UmlTarget::new(m.clone(), MachineInfo::default());
    let Ok(mut session) = Session::new(target, std::io::sink()) else {
        return;
    };
    for chunk in data.split(|&b| b == 0xff) {
        session.feed(chunk);
        session.poll(Duration::ZERO);
    }
    let _ = session.finish();
    let st = m.state();
    if !st.running {
        assert!(
            st.breakpoints.is_empty(),
            "breakpoints left after {:?}: {:?}",
            String::from_utf8_lossy(data),
            st.breakpoints
        );
    }
}

fn packet(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/stub");
    let mut seeds = vec![std::fs::read(dir.join("gdb13-session.client")).unwrap()];
    for e in std::fs::read_dir(dir.join("corpus")).unwrap() {
        seeds.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    let mut fast = Vec::new();
    for p in [
        "qSupported:multiprocess+;swbreak+;xmlRegisters=i386",
        "QStartNoAckMode",
        "qXfer:threads:read::0,fff",
        "qRegisterInfo0",
        "qRegisterInfo38",
        "qRegisterInfo39",
        "qXfer:libraries-svr4:read::0,fff",
        "qXfer:features:read:target.xml:0,fff",
        "_M1000,rwx",
        "M500000000000,4:01020304",
        "m500000000000,4",
        "_m500000000000",
        "qRcmd,6c736d6f64",
        "qRcmd,626f677573",
        "Z0,60000020,1",
        "vCont;c",
    ] {
        fast.extend(packet(p));
    }
    fast.push(0xff);
    for p in [
        "z0,60000020,1",
        "vCont;s:p64.64",
        "Z0,60000020,1",
        "vCont;c",
    ] {
        fast.extend(packet(p));
    }
    fast.extend([0xff, 0x03, 0xff]);
    fast.extend(packet("D"));
    seeds.push(fast);
    seeds
}

/// xorshift64: the same streams on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn seed_corpus_streams_finish_with_every_breakpoint_restored() {
    for seed in seeds() {
        drive(&seed);
    }
}

#[test]
fn random_byte_streams_never_panic_and_leave_no_breakpoint() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..300 {
        let len = rng.below(512);
        let s: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        drive(&s);
    }
}

/// Regression: `finish` returned on a failed stop before taking the breakpoints out, so a client
/// that set one, stepped into a machine that would not stop and left, left the int3 in the text.
#[test]
fn finish_after_a_failed_stop_still_removes_the_breakpoints() {
    let mut data = packet("Z0,60000020,1");
    data.extend(packet("vCont;c"));
    data.push(0xff);
    data.extend(packet("vCont;s:p64.64"));
    drive(&data);
}
