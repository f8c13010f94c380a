#!/usr/bin/env bash
# Benchmark: time from `umldbg lab up` to every machine ready, for the article's lab (3 machines)
# and a chain of 12 routers; median of several runs, and the memory the machines use (RSS of each
# machine's process group: the kernel and its guest processes).
# Usage: scripts/bench-lab.sh [runs] [path/to/umldbg]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
U=${2:-target/release/umldbg}
work=$(mktemp -d "${UMLDBG_CACHE:-$HOME/.cache/umldbg}/bench-lab.XXXXXX")
cleanup() { "$U" lab down bench-article > /dev/null 2>&1 || true; "$U" lab down bench-chain12 > /dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# A chain: d0 - r1 - d1 - r2 - ... - r12 - d12, each router forwarding between its two subnets.
chain=$work/chain12.toml
{
  echo 'name = "bench-chain12"'
  for i in $(seq 0 12); do printf '[[domain]]\nname = "d%d"\n' "$i"; done
  for i in $(seq 1 12); do
    printf '[[machine]]\numid = "bench-r%d"\nmemory = 64\nsysctls = { "net.ipv4.ip_forward" = "1" }\n' "$i"
    printf '[[machine.interface]]\nname = "eth0"\ndomain = "d%d"\naddresses = ["10.77.%d.2/24"]\n' $((i-1)) $((i-1))
    printf '[[machine.interface]]\nname = "eth1"\ndomain = "d%d"\naddresses = ["10.77.%d.1/24"]\n' "$i" "$i"
  done
} > "$chain"

median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }

measure() { # name, lab name, lab up arguments...
  local label=$1 lab=$2; shift 2
  local times=() rss=0
  for r in $(seq "$runs"); do
    local t0 t1
    t0=$(date +%s.%N)
    "$U" lab up "$@" > /dev/null
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc)")
    if [ "$r" = 1 ]; then
      rss=0
      for pid in $("$U" --json lab status | python3 -c "import json,sys; [print(m['pid']) for l in json.load(sys.stdin) if l['name']=='$lab' for m in l['machines']]"); do
        kb=$(ps -o rss= -p "$pid" --ppid "$pid" 2>/dev/null | awk '{s+=$1} END {print s+0}' || true)
        rss=$((rss + kb))
      done
    fi
    "$U" lab down "$lab" > /dev/null
  done
  printf '%-28s median %ss over %d runs (%s); machines use %d MiB RSS\n' "$label" \
    "$(printf '%s\n' "${times[@]}" | median)" "$runs" "$(printf '%s ' "${times[@]}" | sed 's/ $//')" $((rss / 1024))
}

measure "article lab (3 machines)" bench-article --prefix bench-
measure "chain of 12 routers" bench-chain12 "$chain"
