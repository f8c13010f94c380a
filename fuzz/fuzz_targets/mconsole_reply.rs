//! Fuzz the mconsole codec: any datagram gives a reply part or a `CodecError`, never a panic; the
//! parts a reply is split into decode and join back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use umldbg_codec::mconsole::{Reassembler, decode_reply, decode_request, encode_reply};

fuzz_target!(|data: &[u8]| {
    let mut asm = Reassembler::default();
    for datagram in data.chunks(524) {
        if let Ok(part) = decode_reply(datagram) {
            let _ = asm.push(part);
        }
        let _ = decode_request(datagram);
    }
    let mut asm = Reassembler::default();
    let mut whole = None;
    for part in encode_reply(data, 1) {
        whole = asm.push(decode_reply(&part).expect("our own part decodes"));
    }
    let whole = whole.expect("the last part ends the reply");
    // NULs end a part's text, so only text without them comes back whole.
    if !data.contains(&0) {
        assert_eq!(whole.text, String::from_utf8_lossy(data));
    }
    assert_eq!(whole.err, 1);
});
