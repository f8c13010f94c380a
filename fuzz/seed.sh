#!/usr/bin/env bash
# Fill fuzz/corpus/<target>/ with seed inputs from fixtures/kmod (real and broken modules, the
# layouts.elf DWARF fixture) and a kallsyms sample, then run one target:
#
#   fuzz/seed.sh kmod_parse -max_total_time=600
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 lets it
# pass the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")"
target="${1:?usage: fuzz/seed.sh TARGET [libfuzzer options]}"
shift
corpus="corpus/$target"
mkdir -p "$corpus"
case "$target" in
    kmod_parse | dwarf_layouts)
        for f in ../fixtures/kmod/*.ko ../fixtures/kmod/*.o ../fixtures/kmod/*.elf ../fixtures/kmod/*.txt; do
            [ -f "$f" ] && cp "$f" "$corpus/seed-$(basename "$f")"
        done
        ;;
    kallsyms_symfile)
        printf '0000000060000000 T _stext\n0000000060000010 t helper\n0000000060100000 D jiffies\n0000000060200000 b buf\n0000000000000000 A zero\n0000000070000000 t reject_tg\t[ipt_REJECT]\n' >"$corpus/seed-kallsyms"
        ;;
esac
RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" "$corpus" -- "$@"
