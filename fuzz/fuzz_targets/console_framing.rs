//! Fuzz the console framing: any bytes from a guest's console give events, never a panic, and a
//! command's result is exactly the output events of its frame. The pty exchange over the same
//! bytes agrees with the framer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use umldbg_codec::console::{ConsoleEvent, ConsoleFramer, Exchange, Nonce, Progress};

const IDS: [(u64, Nonce); 3] = [(1, Nonce(0)), (2, Nonce(0xfeed)), (7, Nonce(u64::MAX))];

fuzz_target!(|data: &[u8]| {
    let mut f = ConsoleFramer::default();
    for (id, nonce) in IDS {
        f.expect(id, nonce);
    }
    // 0xfe separates the reads the guest's bytes arrive in (the framer must not care).
    let mut outputs: Vec<(u64, Vec<u8>, Option<i32>)> = Vec::new();
    for chunk in data.split(|&b| b == 0xfe) {
        for e in f.push(chunk) {
            match e {
                ConsoleEvent::Output(id, d) => {
                    assert!(IDS.iter().any(|(i, _)| *i == id), "output of unknown {id}");
                    match outputs.iter_mut().find(|o| o.0 == id) {
                        Some(o) => {
                            assert!(o.2.is_none(), "output of {id} after its end");
                            o.1.extend(d);
                        }
                        None => outputs.push((id, d, None)),
                    }
                }
                ConsoleEvent::Done(id, rc) => match outputs.iter_mut().find(|o| o.0 == id) {
                    Some(o) => assert!(o.2.replace(rc).is_none(), "{id} ended twice"),
                    None => outputs.push((id, Vec::new(), Some(rc))),
                },
                ConsoleEvent::Ready | ConsoleEvent::Stray(_) => {}
            }
        }
    }
    let (id, nonce) = IDS[1];
    let Ok(mut ex) = Exchange::new("true", id, nonce) else {
        return;
    };
    let mut done = None;
    for chunk in data.split(|&b| b == 0xfe) {
        if let Progress::Done(out) = ex.push(chunk) {
            done.get_or_insert(out);
        }
    }
    if let (Some(out), Some(o)) = (done, outputs.iter().find(|o| o.0 == id)) {
        assert_eq!(Some(out.status), o.2);
        assert_eq!(out.output, String::from_utf8_lossy(&o.1));
    }
});
