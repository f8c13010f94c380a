//! Fuzz the layout builder: any bytes give layouts or a `DwarfError`, never a panic or a hang.
//! The seed corpus (fuzz/seed.sh) is small ELF files with DWARF from fixtures/kmod, so mutations
//! land in real `.debug_info` and `.debug_abbrev` data.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Names defined in the seeds, plus one that is never there (the suggestion path).
    for names in [
        &["sk_buff", "iphdr", "s", "inner"][..],
        &["no_such_struct"][..],
    ] {
        if let Ok(layouts) = umldbg_codec::dwarf::build_layouts(data, names) {
            for l in layouts.values() {
                let _ = l.to_string();
            }
        }
    }
    if let Ok(net) = umldbg_codec::dwarf::build_net_layouts(data) {
        let _ = umldbg_codec::dwarf::skb_layout(&net);
    }
});
