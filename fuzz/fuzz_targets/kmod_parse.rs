//! Fuzz the module parser: any bytes give a `ModuleInfo` or a `KmodError`, never a panic, a
//! hang or an out-of-memory abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = umldbg_codec::kmod::ModuleInfo::parse(data) {
        // Exercise the accessors the CLI uses on whatever came out.
        let _ = info.depends();
        let _ = info.alloc_sections().count();
        let _ = serde_json::to_string(&info);
    }
    let _ = umldbg_codec::kmod::elf_build_id(data);
});
