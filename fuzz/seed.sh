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
    stub_packets)
        # A recorded gdb session, and the packets LLDB and gdb's fast paths use (0xff separates
        # chunks between which the fake machine may stop).
        cp ../fixtures/stub/gdb13-session.client "$corpus/seed-gdb13-session"
        pkt() { printf '$%s#%02x' "$1" "$(printf '%s' "$1" | od -An -tu1 | tr -s ' ' '\n' | awk '{s += $1} END {print s % 256}')"; }
        {
            for p in 'qSupported:multiprocess+;swbreak+;xmlRegisters=i386' QStartNoAckMode \
                'qXfer:threads:read::0,fff' 'qRegisterInfo0' 'qRegisterInfo38' 'qRegisterInfo39' \
                'qXfer:libraries-svr4:read::0,fff' 'qXfer:features:read:target.xml:0,fff' \
                '_M1000,rwx' 'M500000000000,4:01020304' 'm500000000000,4' '_m500000000000' \
                'qRcmd,6c736d6f64' 'qRcmd,626f677573' 'Z0,60000020,1' 'vCont;c'; do
                pkt "$p"
            done
            printf '\377'
            for p in 'z0,60000020,1' 'vCont;s:p64.64' 'Z0,60000020,1' 'vCont;c'; do pkt "$p"; done
            printf '\377\003\377'
            pkt D
        } >"$corpus/seed-fast-paths"
        ;;
    kallsyms_symfile)
        printf '0000000060000000 T _stext\n0000000060000010 t helper\n0000000060100000 D jiffies\n0000000060200000 b buf\n0000000000000000 A zero\n0000000070000000 t reject_tg\t[ipt_REJECT]\n' >"$corpus/seed-kallsyms"
        ;;
esac
RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" "$corpus" -- "$@"
