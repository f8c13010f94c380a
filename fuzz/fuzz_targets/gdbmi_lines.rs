//! Fuzz the GDB/MI framer and parser: any bytes from gdb give lines and records or errors, never
//! a panic, and a parsed record written back as MI parses to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use umldbg_codec::gdbmi::{LineFramer, parse_line, parse_str};

fuzz_target!(|data: &[u8]| {
    let mut framer = LineFramer::with_max_line(4096);
    framer.push(data);
    while let Some(line) = framer.next_line() {
        let Ok(line) = line else { continue };
        if let Ok(record) = parse_line(line) {
            let text = record.to_string();
            let again = parse_str(&text).expect("a record written back parses");
            assert_eq!(again, record, "{text}");
        }
    }
    let _ = framer.take_partial();
});
