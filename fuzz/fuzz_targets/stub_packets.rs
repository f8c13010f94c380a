//! Fuzz the gdb session layer of `umldbg serve`: any byte stream from a client (framed or not,
//! good checksums or bad, known packets with garbage arguments, Ctrl-C at any time) over a fake
//! machine gives replies, never a panic or a hang, and the session can always be finished with
//! every breakpoint byte put back.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use umldbg::ptrace::runctl::StopEvent;
use umldbg::stub::server::Session;
use umldbg::stub::target::fake::{FakeMachine, zero_regs};
use umldbg::stub::target::{MachineInfo, UmlTarget};

fuzz_target!(|data: &[u8]| {
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
    // 0xff never occurs in gdb's protocol text: here it separates chunks, between which the
    // machine gets a chance to stop.
    for chunk in data.split(|&b| b == 0xff) {
        session.feed(chunk);
        session.poll(Duration::ZERO);
    }
    let _ = session.finish();
    let st = m.state();
    if !st.running {
        assert!(
            st.breakpoints.is_empty(),
            "breakpoints left: {:?}",
            st.breakpoints
        );
    }
});
