#!/usr/bin/env bash
# Benchmark: the layout of a struct (default sk_buff) from the UML kernel image's DWARF.
#
#   umldbg cold    `umldbg ptype S --kernel K` with an empty layout cache (reads the DWARF)
#   umldbg cached  the same with the cache filled by a previous run (reads the JSON)
#   pahole         `pahole -C S K`
#   gdb            `gdb -batch -ex 'ptype /o struct S' K`
#
# Every tool reads the same file, with the file in the page cache (one warm-up run each), so
# the figures compare work done, not disk speed. Prints the median of RUNS runs and ratios.
#
# usage: scripts/bench-ptype.sh [--kernel PATH] [--struct NAME] [--runs N]
# env:   UMLDBG=path/to/umldbg (default: target/release/umldbg, built if missing)
set -euo pipefail

cd "$(dirname "$0")/.."

kernel=""
struct="sk_buff"
runs=7
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel="$2"; shift 2 ;;
        --struct) struct="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        *) echo "usage: $0 [--kernel PATH] [--struct NAME] [--runs N]" >&2; exit 2 ;;
    esac
done

umldbg="${UMLDBG:-target/release/umldbg}"
if [ ! -x "$umldbg" ]; then
    cargo build --release --bin umldbg >&2
fi

if [ -z "$kernel" ]; then
    # The newest kernel built by `umldbg kernel build`.
    cache="${UMLDBG_CACHE:-$HOME/.cache/umldbg}"
    manifest="$(ls -t "$cache"/kernels/*/manifest.json 2>/dev/null | head -n1 || true)"
    if [ -z "$manifest" ]; then
        echo "no kernel: pass --kernel PATH or run \`umldbg kernel build\`" >&2
        exit 1
    fi
    kernel="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["linux"])' "$manifest")"
fi
for tool in pahole gdb python3; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done

bench_cache="$(mktemp -d)"
trap 'rm -rf "$bench_cache"' EXIT

# Median wall time in milliseconds of running "$@" $runs times; $prep runs before each one.
median_ms() {
    local prep="$1"; shift
    local times=()
    local i t0 t1
    for ((i = 0; i < runs; i++)); do
        eval "$prep"
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
        t1=$(date +%s%N)
        times+=($(( (t1 - t0) / 1000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'
}

cold_prep='rm -rf "$bench_cache/layouts"'
export UMLDBG_CACHE="$bench_cache"

# Warm the page cache and check that every tool knows the struct.
cat "$kernel" >/dev/null
"$umldbg" ptype "$struct" --kernel "$kernel" >/dev/null
pahole -C "$struct" "$kernel" >"$bench_cache/pahole.txt"
grep -q "struct $struct" "$bench_cache/pahole.txt" || { echo "pahole does not find struct $struct" >&2; exit 1; }

echo "kernel: $kernel ($(du -m "$kernel" | cut -f1) MB), struct $struct, median of $runs runs"
cold=$(median_ms "$cold_prep" "$umldbg" ptype "$struct" --kernel "$kernel")
"$umldbg" ptype "$struct" --kernel "$kernel" >/dev/null
cached=$(median_ms ':' "$umldbg" ptype "$struct" --kernel "$kernel")
pahole_ms=$(median_ms ':' pahole -C "$struct" "$kernel")
gdb_ms=$(median_ms ':' gdb -nx -batch -ex "ptype /o struct $struct" "$kernel")

printf '%-16s %10s ms\n' "umldbg cold" "$cold" "umldbg cached" "$cached" "pahole" "$pahole_ms" "gdb ptype /o" "$gdb_ms"
python3 - "$cold" "$cached" "$pahole_ms" "$gdb_ms" <<'EOF'
import sys
cold, cached, pahole, gdb = map(float, sys.argv[1:])
print(f"pahole / umldbg cold : {pahole / cold:8.2f}x")
print(f"gdb    / umldbg cold : {gdb / cold:8.2f}x")
print(f"umldbg cold / cached : {cold / cached:8.2f}x")
print(f"goals: cold < 1000 ms: {'yes' if cold < 1000 else 'NO'}; cached < 20 ms: {'yes' if cached < 20 else 'NO'}; "
      f"cold faster than pahole and gdb: {'yes' if cold < pahole and cold < gdb else 'NO'}")
EOF
