//! The mconsole codec on byte fixtures laid out as UML's structs (see fixtures/mconsole/README.md).
#![cfg(target_endian = "little")]

use std::path::Path;

use umldbg_codec::mconsole::{
    CodecError, Reassembler, Reply, decode_reply, decode_request, encode_reply, encode_request,
};

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/mconsole")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn whole(parts: &[&str]) -> Reply {
    let mut asm = Reassembler::default();
    let mut done = None;
    for (i, p) in parts.iter().enumerate() {
        let r = asm.push(decode_reply(&fixture(p)).unwrap());
        assert_eq!(r.is_some(), i + 1 == parts.len(), "part {p}");
        done = r;
    }
    done.unwrap()
}

#[test]
fn requests_match_the_fixtures() {
    for (cmd, file) in [
        ("version", "request_version.bin"),
        ("config ssl0", "request_config_ssl0.bin"),
    ] {
        assert_eq!(encode_request(cmd).unwrap(), fixture(file), "{cmd}");
        assert_eq!(decode_request(&fixture(file)).unwrap(), (2, cmd.to_owned()));
    }
}

#[test]
fn single_part_replies() {
    let r = whole(&["reply_config_ssl0.bin"]);
    assert_eq!(
        r,
        Reply {
            err: 0,
            text: "pts:/dev/pts/3".into()
        }
    );
    let r = whole(&["reply_version.bin"]);
    assert!(r.is_ok());
    assert!(r.text.starts_with("Linux MachineR 7.2.0 "), "{}", r.text);
    let r = whole(&["reply_halt_empty.bin"]);
    assert_eq!(
        r,
        Reply {
            err: 0,
            text: String::new()
        }
    );
}

#[test]
fn error_reply() {
    let r = whole(&["reply_unknown_command.bin"]);
    assert_eq!(
        r,
        Reply {
            err: 1,
            text: "Unknown command".into()
        }
    );
    assert!(!r.is_ok());
}

#[test]
fn multi_part_reply() {
    let first = decode_reply(&fixture("reply_long.part1.bin")).unwrap();
    assert!(first.more);
    assert_eq!(first.data.len(), 511);
    let r = whole(&["reply_long.part1.bin", "reply_long.part2.bin"]);
    let expect = String::from_utf8(fixture("reply_long.txt")).unwrap();
    assert_eq!(r.text, expect);
}

#[test]
fn encoder_reproduces_the_kernels_packets() {
    let text = fixture("reply_long.txt");
    let parts = encode_reply(&text, 0);
    assert_eq!(
        parts,
        [
            fixture("reply_long.part1.bin"),
            fixture("reply_long.part2.bin")
        ]
    );
    assert_eq!(
        encode_reply(b"Unknown command", 1),
        [fixture("reply_unknown_command.bin")]
    );
    assert_eq!(encode_reply(b"", 0), [fixture("reply_halt_empty.bin")]);
}

#[test]
fn padded_reply_is_read_like_a_short_one() {
    let mut b = fixture("reply_config_ssl0.bin");
    b.resize(12 + 512, 0);
    assert_eq!(decode_reply(&b).unwrap().data, b"pts:/dev/pts/3");
}

#[test]
fn truncated_and_lying_packets_are_errors() {
    let b = fixture("reply_version.bin");
    assert_eq!(decode_reply(&b[..7]), Err(CodecError::Short { len: 7 }));
    assert!(matches!(
        decode_reply(&b[..30]),
        Err(CodecError::BadLength { .. })
    ));
    let mut huge = b.clone();
    huge[8..12].copy_from_slice(&4096u32.to_ne_bytes());
    assert!(matches!(
        decode_reply(&huge),
        Err(CodecError::BadLength { declared: 4096, .. })
    ));
    let mut bad = fixture("request_version.bin");
    bad[0] = 0;
    assert!(matches!(decode_request(&bad), Err(CodecError::BadMagic(_))));
    let mut long = fixture("request_version.bin");
    long[8..12].copy_from_slice(&512u32.to_ne_bytes());
    assert!(matches!(
        decode_request(&long),
        Err(CodecError::BadLength { .. })
    ));
}
