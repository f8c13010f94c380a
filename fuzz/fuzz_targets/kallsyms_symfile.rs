//! Fuzz the kallsyms parser and the symbol-file writer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(entries) = umldbg_codec::kmod::kallsyms::parse(text) {
        let _ = umldbg_codec::kmod::symfile::write_symfile(&entries);
    }
});
