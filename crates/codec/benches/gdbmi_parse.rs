//! Throughput of the GDB/MI framer and parser, and a check that the cost grows linearly with the
//! size of a line. A measurement, not a timed test:
//!
//! ```text
//! cargo bench -p umldbg-codec --bench gdbmi_parse
//! ```

use std::time::{Duration, Instant};

use umldbg_codec::gdbmi::{LineFramer, parse_line};

fn fixture_text() -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gdbmi");
    let mut text = std::fs::read(dir.join("run.mi")).unwrap();
    text.extend(std::fs::read(dir.join("attach.mi")).unwrap());
    text
}

/// Frame and parse `text` fed in 64 KiB reads (what the process shell does); returns the time
/// and the number of records.
fn run(text: &[u8]) -> (Duration, usize) {
    let start = Instant::now();
    let mut framer = LineFramer::new();
    let mut records = 0;
    for chunk in text.chunks(64 * 1024) {
        framer.push(chunk);
        while let Some(line) = framer.next_line() {
            let line = line.unwrap();
            if !line.is_empty() {
                parse_line(line).expect("fixture lines parse");
                records += 1;
            }
        }
    }
    (start.elapsed(), records)
}

fn best_of(n: usize, text: &[u8]) -> (Duration, usize) {
    (0..n).map(|_| run(text)).min_by_key(|(d, _)| *d).unwrap()
}

fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

/// One `-stack-list-frames` answer with `frames` frames: a single long line.
fn long_line(frames: usize) -> Vec<u8> {
    let mut line = b"6^done,stack=[".to_vec();
    for i in 0..frames {
        if i > 0 {
            line.push(b',');
        }
        line.extend_from_slice(
            format!(
                "frame={{level=\"{i}\",addr=\"0x00005555555551f7\",func=\"ip_forward\",file=\"net/ipv4/ip_forward.c\",fullname=\"/usr/src/linux/net/ipv4/ip_forward.c\",line=\"{i}\",arch=\"i386:x86-64\",args=[{{name=\"skb\",value=\"0xffff88800a1b2c00 \\\"x\\\\n\\\"\"}}]}}"
            )
            .as_bytes(),
        );
    }
    line.extend_from_slice(b"]\n");
    line
}

fn parser_throughput_and_linearity() {
    let unit = fixture_text();
    let mut text = Vec::new();
    while text.len() < 64 << 20 {
        text.extend_from_slice(&unit);
    }
    let (time, records) = best_of(3, &text);
    println!(
        "transcript mix: {:.1} MB, {records} records, {:.3} s, {:.0} MB/s, {:.2} M records/s",
        text.len() as f64 / 1e6,
        time.as_secs_f64(),
        mb_per_s(text.len(), time),
        records as f64 / 1e6 / time.as_secs_f64()
    );

    let mut rates = Vec::new();
    for frames in [10_000, 40_000, 160_000] {
        let line = long_line(frames);
        let (time, _) = best_of(3, &line);
        let rate = mb_per_s(line.len(), time);
        println!(
            "one line of {frames} frames: {:.1} MB, {:.3} s, {rate:.0} MB/s",
            line.len() as f64 / 1e6,
            time.as_secs_f64()
        );
        rates.push(rate);
    }
    // Linear time means the rate does not fall as the line grows 16-fold. A quadratic step would
    // divide it by about 16; allow a factor 3 for caches and a busy machine.
    let (first, last) = (rates[0], rates[rates.len() - 1]);
    assert!(
        last > first / 3.0,
        "rate fell from {first:.0} to {last:.0} MB/s"
    );
}

fn main() {
    parser_throughput_and_linearity();
}
