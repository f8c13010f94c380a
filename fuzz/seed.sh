#!/usr/bin/env bash
# Fill fuzz/corpus/<target>/ with seed inputs (fixtures/kmod's real and broken modules and the
# layouts.elf DWARF fixture, a kallsyms sample, console transcripts, GDB/MI output, mconsole
# datagrams), then run one target:
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
    console_framing)
        # Recorded console transcripts, and frames of the commands the target expects (0xfe
        # separates the reads the bytes arrive in).
        cp ../fixtures/console/*.transcript "$corpus/"
        printf 'boot\n\001READY\n\001B2\naGkK\n\376\001E2 000000000000feed 0\n# ' >"$corpus/seed-frame"
        printf '\001A2 0\r\n\001B2\r\nYQFiDQo=\r\n\001E2 000000000000feed 4\r\n' >"$corpus/seed-pty"
        ;;
    gdbmi_lines)
        for f in ../fixtures/gdbmi/*.mi; do cp "$f" "$corpus/seed-$(basename "$f")"; done
        ;;
    mconsole_reply)
        for f in ../fixtures/mconsole/*.bin; do cp "$f" "$corpus/seed-$(basename "$f")"; done
        ;;
    kallsyms_symfile)
        printf '0000000060000000 T _stext\n0000000060000010 t helper\n0000000060100000 D jiffies\n0000000060200000 b buf\n0000000000000000 A zero\n0000000070000000 t reject_tg\t[ipt_REJECT]\n' >"$corpus/seed-kallsyms"
        ;;
esac
RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" "$corpus" -- "$@"
