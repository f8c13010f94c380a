//! Unit tests of the GDB/MI syntax, one element at a time, of malformed input (which must give
//! an error naming the line, never a panic), of the line framer, and of the typed views on
//! shapes the recorded transcripts do not contain.

use umldbg_codec::gdbmi::parse::{MAX_DEPTH, ParseErrorKind};
use umldbg_codec::gdbmi::types::{ELIDED_VALUE, parse_exit_code};
use umldbg_codec::gdbmi::{
    AsyncKind, AsyncRecord, Backtrace, Breakpoint, FrameError, FunctionSymbol, LineFramer, List,
    Record, ResultClass, ResultRecord, Results, StopEvent, StopReason, StreamKind, StreamRecord,
    Token, Value, parse_line, parse_str,
};

fn c(s: &str) -> Value {
    Value::Const(s.to_owned())
}

fn results(pairs: Vec<(&str, Value)>) -> Results {
    Results(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn result(line: &str) -> ResultRecord {
    match parse_str(line) {
        Ok(Record::Result(r)) => r,
        other => panic!("{line}: {other:?}"),
    }
}

fn async_record(line: &str) -> AsyncRecord {
    match parse_str(line) {
        Ok(Record::Async(a)) => a,
        other => panic!("{line}: {other:?}"),
    }
}

fn error_kind(line: &[u8]) -> ParseErrorKind {
    match parse_line(line) {
        Err(e) => e.kind,
        Ok(r) => panic!("{:?} parsed as {r:?}", String::from_utf8_lossy(line)),
    }
}

// ---- records ----

#[test]
fn result_classes_with_and_without_token() {
    for (line, class) in [
        ("^done", ResultClass::Done),
        ("^running", ResultClass::Running),
        ("^connected", ResultClass::Connected),
        ("^error,msg=\"x\"", ResultClass::Error),
        ("^exit", ResultClass::Exit),
    ] {
        let r = result(line);
        assert_eq!((r.token, r.class), (None, class), "{line}");
    }
    let r = result("18446744073709551615^done");
    assert_eq!(r.token, Some(Token(u64::MAX)));
    assert!(r.results.is_empty());
}

#[test]
fn error_record_with_mi3_code() {
    let r = result(r#"12^error,msg="Undefined MI command: nosuch",code="undefined-command""#);
    assert_eq!(r.token, Some(Token(12)));
    assert_eq!(r.class, ResultClass::Error);
    assert_eq!(
        r.results.get_str("msg"),
        Some("Undefined MI command: nosuch")
    );
    assert_eq!(r.results.get_str("code"), Some("undefined-command"));
}

#[test]
fn async_kinds() {
    let a = async_record(r#"*running,thread-id="all""#);
    assert_eq!((a.kind, a.class.as_str()), (AsyncKind::Exec, "running"));
    let a = async_record(
        r#"+download,{section=".text",section-size="1000"}"#
            .replace(",{", ",x={")
            .as_str(),
    );
    assert_eq!(a.kind, AsyncKind::Status);
    let a = async_record(r#"=thread-group-exited,id="i1",exit-code="0""#);
    assert_eq!(
        (a.kind, a.class.as_str()),
        (AsyncKind::Notify, "thread-group-exited")
    );
    assert_eq!(a.results.get_str("exit-code"), Some("0"));
    let a = async_record("7*stopped");
    assert_eq!(a.token, Some(Token(7)));
    assert!(a.results.is_empty());
}

#[test]
fn stream_records_unescape() {
    for (line, kind, text) in [
        (
            r#"~"20\t\tint total = 0;\n""#,
            StreamKind::Console,
            "20\t\tint total = 0;\n",
        ),
        (r#"@"target \"out\"""#, StreamKind::Target, "target \"out\""),
        (r#"&"back\\slash\r\n""#, StreamKind::Log, "back\\slash\r\n"),
        (r#"~"""#, StreamKind::Console, ""),
    ] {
        assert_eq!(
            parse_str(line).unwrap(),
            Record::Stream(StreamRecord {
                kind,
                text: text.to_owned()
            }),
            "{line}"
        );
    }
}

#[test]
fn octal_escapes_are_bytes_decoded_as_utf8() {
    let Record::Stream(s) = parse_str(r#"~"caf\303\251 \001 \e[0m""#).unwrap() else {
        panic!()
    };
    assert_eq!(s.text, "café \u{1} \u{1b}[0m");
    // A byte that is not UTF-8 becomes U+FFFD instead of failing the record.
    let Record::Stream(s) = parse_str(r#"~"\377x""#).unwrap() else {
        panic!()
    };
    assert_eq!(s.text, "\u{fffd}x");
    // Raw UTF-8 (gdb with a UTF-8 host charset) passes through.
    let Record::Stream(s) = parse_str("~\"café\"").unwrap() else {
        panic!()
    };
    assert_eq!(s.text, "café");
}

#[test]
fn prompt_with_and_without_blank_and_crlf() {
    for line in ["(gdb) ", "(gdb)", "(gdb) \r\n", "(gdb)\n"] {
        assert_eq!(parse_str(line).unwrap(), Record::Prompt, "{line:?}");
    }
    assert!(parse_str("(gdb) x").is_err());
}

#[test]
fn line_endings_are_stripped() {
    assert_eq!(result("1^done\r\n").token, Some(Token(1)));
    assert_eq!(result("1^done\n").token, Some(Token(1)));
}

// ---- values ----

#[test]
fn tuples_lists_and_empty_ones() {
    let r = result(r#"^done,a={},b=[],c={x="1",y={z="2"}},d=["1","2"],e=[{p="1"},{p="2"}]"#);
    assert_eq!(r.results.get("a"), Some(&Value::Tuple(Results::new())));
    assert_eq!(r.results.get("b"), Some(&Value::List(List::Values(vec![]))));
    assert_eq!(
        r.results.get("c").unwrap().get("y").unwrap().get_str("z"),
        Some("2")
    );
    assert_eq!(
        r.results.get("d"),
        Some(&Value::List(List::Values(vec![c("1"), c("2")])))
    );
    let e = r.results.get("e").unwrap().as_list().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e.values().nth(1).unwrap().get_str("p"), Some("2"));
}

#[test]
fn list_of_results_with_repeated_names() {
    let r = result(r#"^done,stack-args=[frame={level="0",args=[name="argc",name="argv"]}]"#);
    let frames = r.results.get("stack-args").unwrap().as_list().unwrap();
    let List::Results(frames) = frames else {
        panic!("{frames:?}")
    };
    let args = frames.get("frame").unwrap().get("args").unwrap();
    assert_eq!(
        args,
        &Value::List(List::Results(results(vec![
            ("name", c("argc")),
            ("name", c("argv"))
        ])))
    );
    let List::Results(args) = args.as_list().unwrap() else {
        panic!()
    };
    let names: Vec<&str> = args.get_all("name").filter_map(Value::as_str).collect();
    assert_eq!(names, ["argc", "argv"]);
}

#[test]
fn duplicate_keys_in_results_are_kept_in_order() {
    let r = result(r#"^done,a="1",a="2",b="3""#);
    assert_eq!(r.results.len(), 3);
    assert_eq!(r.results.get_str("a"), Some("1"));
    let all: Vec<_> = r.results.get_all("a").collect();
    assert_eq!(all, [&c("1"), &c("2")]);
}

#[test]
fn nested_lists_of_lists() {
    let r = result(r#"^done,m=[["1",["2"]],[]]"#);
    assert_eq!(
        r.results.get("m"),
        Some(&Value::List(List::Values(vec![
            Value::List(List::Values(vec![
                c("1"),
                Value::List(List::Values(vec![c("2")]))
            ])),
            Value::List(List::Values(vec![])),
        ])))
    );
}

#[test]
fn records_write_back_as_mi() {
    for line in [
        r#"5^done,bkpt={number="1",thread-groups=["i1"],cond="i == 2"}"#,
        r#"*stopped,frame={args=[{name="p",value="0x1"}]},x=[a="1",a="2"]"#,
        r#"~"tab\there \"q\" \303\251\n""#,
        "=thread-group-added,id=\"i1\"",
        "(gdb) ",
    ] {
        assert_eq!(parse_str(line).unwrap().to_string(), line);
    }
}

// ---- malformed input ----

#[test]
fn truncated_strings() {
    for line in [
        r#"~"abc"#,
        r#"~"abc\"#,
        r#"^done,a="x"#,
        r#"^done,a={b="x}"#,
    ] {
        let err = parse_str(line).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::UnterminatedString, "{line}");
        assert!(
            err.to_string().contains(&line[..3]),
            "error names the line: {err}"
        );
    }
}

#[test]
fn unbalanced_brackets() {
    for line in [
        r#"^done,a={b="1""#,
        r#"^done,a=[b="1""#,
        r#"^done,a={b="1"]"#,
        r#"^done,a=[b="1"}"#,
        r#"^done,a={b="1"}}"#,
        r#"^done,a="1"]"#,
        r#"^done,a={"#,
        r#"^done,a=["#,
    ] {
        let kind = error_kind(line.as_bytes());
        assert!(
            matches!(kind, ParseErrorKind::Expected { .. }),
            "{line}: {kind:?}"
        );
    }
}

#[test]
fn bad_escapes() {
    for line in [r#"~"\q""#, r#"~"\x""#, r#"^done,a="\z""#] {
        let kind = error_kind(line.as_bytes());
        assert!(
            matches!(kind, ParseErrorKind::BadEscape(_)),
            "{line}: {kind:?}"
        );
    }
}

#[test]
fn structural_errors() {
    assert_eq!(error_kind(b""), ParseErrorKind::Empty);
    assert_eq!(error_kind(b"^"), ParseErrorKind::MissingClass);
    assert_eq!(error_kind(b"*"), ParseErrorKind::MissingClass);
    assert_eq!(
        error_kind(b"^finished"),
        ParseErrorKind::UnknownResultClass("finished".into())
    );
    assert!(matches!(
        error_kind(b"hello world"),
        ParseErrorKind::UnknownRecordType(_)
    ));
    assert!(matches!(error_kind(b"12"), ParseErrorKind::Expected { .. }));
    assert_eq!(
        error_kind(b"99999999999999999999^done"),
        ParseErrorKind::TokenTooLarge
    );
    assert_eq!(error_kind(b"3~\"x\""), ParseErrorKind::TokenOnStream);
    assert_eq!(error_kind(b"^done,=\"x\""), ParseErrorKind::EmptyVariable);
    assert!(matches!(
        error_kind(b"^done,a"),
        ParseErrorKind::Expected { .. }
    ));
    assert!(matches!(
        error_kind(b"^done,a=b"),
        ParseErrorKind::Expected { .. }
    ));
    assert!(matches!(
        error_kind(b"^done a=\"b\""),
        ParseErrorKind::Expected { .. }
    ));
    assert!(matches!(
        error_kind(b"~\"x\" trailing"),
        ParseErrorKind::Expected { .. }
    ));
    assert_eq!(
        error_kind(b"^done,a=[\"1\",b=\"2\"]"),
        ParseErrorKind::MixedList
    );
    assert_eq!(
        error_kind(b"^done,a=[b=\"2\",\"1\"]"),
        ParseErrorKind::MixedList
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut line = b"^done,a=".to_vec();
    line.extend(std::iter::repeat_n(b'[', 200_000));
    assert_eq!(error_kind(&line), ParseErrorKind::TooDeep);
    // Exactly at the limit is fine.
    let mut ok = b"^done,a=".to_vec();
    ok.extend(std::iter::repeat_n(b'[', MAX_DEPTH));
    ok.extend(std::iter::repeat_n(b']', MAX_DEPTH));
    assert!(parse_line(&ok).is_ok());
}

#[test]
fn binary_garbage_and_long_lines_give_short_errors() {
    let garbage: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let err = parse_line(&garbage).unwrap_err();
    assert_eq!(err.line_len, 10_000);
    assert!(err.to_string().len() < 1_000, "the message stays readable");
    assert!(err.excerpt.ends_with("..."));
    let err = parse_line(b"\x00\xff\xfe^done").unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::UnknownRecordType(_)));
}

/// A small deterministic generator; enough to throw varied bytes at the parser without a
/// dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn no_panic_on_mutated_real_lines() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gdbmi");
    let mut lines = Vec::new();
    for name in ["run.mi", "attach.mi"] {
        let bytes = std::fs::read(fixtures.join(name)).unwrap();
        lines.extend(bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec));
    }
    let alphabet = b"\"\\{}[],=^*+~@&0123456789abcxyz \t\x00\xc3\xff";
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0usize;
    for line in &lines {
        // Every prefix: a line cut anywhere (a short read, a gdb crash mid-line).
        for cut in 0..line.len().min(400) {
            let _ = parse_line(&line[..cut]);
            parsed += 1;
        }
        // Random byte substitutions, insertions and deletions.
        for _ in 0..50 {
            let mut m = line.clone();
            for _ in 0..1 + rng.next() % 4 {
                let pos = if m.is_empty() {
                    0
                } else {
                    (rng.next() as usize) % m.len()
                };
                let byte = alphabet[(rng.next() as usize) % alphabet.len()];
                match rng.next() % 3 {
                    0 if !m.is_empty() => m[pos] = byte,
                    1 => m.insert(pos, byte),
                    _ if !m.is_empty() => {
                        m.remove(pos);
                    }
                    _ => {}
                }
            }
            let _ = parse_line(&m);
            parsed += 1;
        }
    }
    // Pure noise.
    for _ in 0..5_000 {
        let len = (rng.next() % 64) as usize;
        let noise: Vec<u8> = (0..len)
            .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
            .collect();
        let _ = parse_line(&noise);
        parsed += 1;
    }
    assert!(parsed > 10_000, "{parsed}");
}

// ---- framer ----

#[test]
fn framer_joins_lines_split_across_reads() {
    let mut f = LineFramer::new();
    f.push(b"1^do");
    assert!(f.next_line().is_none());
    f.push(b"ne\n(gdb) \n~\"a");
    assert_eq!(f.next_line().unwrap().unwrap(), b"1^done");
    assert_eq!(f.next_line().unwrap().unwrap(), b"(gdb) ");
    assert!(f.next_line().is_none());
    assert_eq!(f.pending_len(), 3);
    f.push(b"\"\r\n");
    assert_eq!(f.next_line().unwrap().unwrap(), b"~\"a\"\r");
    assert!(f.next_line().is_none());
    assert_eq!(f.take_partial(), None);
}

#[test]
fn framer_byte_by_byte_equals_one_chunk() {
    let text = b"=a,b=\"1\"\n\n2^done\n(gdb) \n*stopped\nrest";
    let mut one = LineFramer::new();
    one.push(text);
    let mut whole = Vec::new();
    while let Some(l) = one.next_line() {
        whole.push(l.unwrap().to_vec());
    }
    let mut bytes = LineFramer::new();
    let mut split = Vec::new();
    for b in text {
        bytes.push(std::slice::from_ref(b));
        while let Some(l) = bytes.next_line() {
            split.push(l.unwrap().to_vec());
        }
    }
    assert_eq!(whole, split);
    assert_eq!(whole.len(), 5);
    assert_eq!(whole[1], b"");
    assert_eq!(bytes.take_partial().as_deref(), Some(&b"rest"[..]));
}

#[test]
fn framer_skips_over_long_line_and_recovers() {
    let mut f = LineFramer::with_max_line(8);
    f.push(b"0123456789");
    assert_eq!(
        f.next_line(),
        Some(Err(FrameError::LineTooLong { limit: 8 }))
    );
    f.push(b"abc");
    assert!(f.next_line().is_none());
    f.push(b"def\n1^done\n");
    assert_eq!(f.next_line().unwrap().unwrap(), b"1^done");
    assert!(f.next_line().is_none());
}

// ---- typed views on shapes the transcripts lack ----

#[test]
fn exit_codes_are_octal() {
    assert_eq!(parse_exit_code("011"), Some(9));
    assert_eq!(parse_exit_code("06"), Some(6));
    assert_eq!(parse_exit_code("0"), Some(0));
    assert_eq!(parse_exit_code("0377"), Some(255));
    assert_eq!(parse_exit_code("09"), None);
    assert_eq!(parse_exit_code("x"), None);
    let stop = StopEvent::from_results(
        &async_record(r#"*stopped,reason="exited",exit-code="011""#).results,
    )
    .unwrap();
    assert_eq!(stop.exit_code, Some(9));
    assert!(stop.reason.as_ref().unwrap().is_exit());
}

#[test]
fn stop_on_signal_and_json_shape() {
    let a = async_record(
        r#"*stopped,reason="signal-received",signal-name="SIGSEGV",signal-meaning="Segmentation fault",frame={addr="0x0000000000401136",func="reject_tg",args=[{name="skb",value="0xffff8880"},{name="par"}],file="net/ipv4/netfilter/ipt_REJECT.c",line="34"},thread-id="1""#,
    );
    let stop = StopEvent::from_results(&a.results).unwrap();
    assert_eq!(stop.reason, Some(StopReason::SignalReceived));
    assert_eq!(stop.signal_name.as_deref(), Some("SIGSEGV"));
    let frame = stop.frame.as_ref().unwrap();
    assert_eq!(frame.address(), Some(0x401136));
    assert_eq!(frame.args[1], ("par".to_owned(), ELIDED_VALUE.to_owned()));
    let json = serde_json::to_value(&stop).unwrap();
    assert_eq!(json["reason"], "signal-received");
    assert_eq!(json["function"], "reject_tg");
    assert_eq!(json["file"], "net/ipv4/netfilter/ipt_REJECT.c");
    assert_eq!(json["line"], 34);
    assert_eq!(json["args"]["skb"], "0xffff8880");
    assert_eq!(json["addr"], "0x0000000000401136");
}

#[test]
fn stop_without_reason_or_frame() {
    let stop = StopEvent::from_results(&async_record(r#"*stopped,thread-id="1""#).results).unwrap();
    assert_eq!(stop.reason, None);
    assert!(stop.frame.is_none());
    let json = serde_json::to_value(&stop).unwrap();
    assert!(json["reason"].is_null());
    assert_eq!(json.get("function"), None);
    let unknown =
        StopEvent::from_results(&async_record(r#"*stopped,reason="new-thing""#).results).unwrap();
    assert_eq!(unknown.reason, Some(StopReason::Other("new-thing".into())));
}

#[test]
fn malformed_fields_are_typed_errors() {
    let a = async_record(r#"*stopped,frame={line="twelve"}"#);
    let err = StopEvent::from_results(&a.results).unwrap_err();
    assert!(err.to_string().contains("twelve"), "{err}");
    let a = async_record(r#"*stopped,frame="not a tuple""#);
    assert!(StopEvent::from_results(&a.results).is_err());
    let r = result(r#"^done,bkpt={type="breakpoint"}"#);
    assert!(
        Breakpoint::from_results(&r.results)
            .unwrap_err()
            .to_string()
            .contains("number")
    );
    let r = result(r#"^done,stack=[frame="x"]"#);
    assert!(Backtrace::from_results(&r.results, None).is_err());
}

#[test]
fn multi_location_breakpoint_mi3() {
    let r = result(
        r#"^done,bkpt={number="1",type="breakpoint",disp="keep",enabled="y",addr="<MULTIPLE>",times="0",original-location="inl",locations=[{number="1.1",enabled="y",addr="0x0000000000001139",func="inl",file="a.c",fullname="/a.c",line="3",thread-groups=["i1"]},{number="1.2",enabled="n",addr="0x0000000000001150",func="inl",file="a.c",fullname="/a.c",line="3",thread-groups=["i1"]}]}"#,
    );
    let bp = Breakpoint::from_results(&r.results).unwrap();
    assert_eq!(bp.addr.as_deref(), Some("<MULTIPLE>"));
    assert_eq!(bp.locations.len(), 2);
    assert_eq!(bp.locations[1].number, "1.2");
    assert!(!bp.locations[1].enabled);
}

#[test]
fn empty_breakpoint_table() {
    let r = result(
        r#"^done,BreakpointTable={nr_rows="0",nr_cols="6",hdr=[{width="7",alignment="-1",col_name="number",colhdr="Num"}],body=[]}"#,
    );
    assert!(
        Breakpoint::list_from_results(&r.results)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn nondebug_symbols() {
    let r = result(
        r#"^done,symbols={debug=[{filename="a.c",fullname="/a.c",symbols=[{line="3",name="f",type="int (void)",description="int f(void);"}]}],nondebug=[{address="0x0000000000001000",name="_init"}]}"#,
    );
    let syms = FunctionSymbol::list_from_results(&r.results).unwrap();
    assert_eq!(syms.len(), 2);
    assert_eq!((syms[0].name.as_str(), syms[0].line), ("f", Some(3)));
    assert_eq!(syms[1].addr.as_deref(), Some("0x0000000000001000"));
    let none = FunctionSymbol::list_from_results(&result("^done,symbols={}").results).unwrap();
    assert!(none.is_empty());
}
