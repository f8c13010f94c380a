#!/usr/bin/env bash
# Benchmark: attach-to-ready (pid found, gdb attached, kernel and every module's symbols loaded)
# with `umldbg attach`, against the manual path on the same lab (gdb, `source vmlinux-gdb.py`,
# `lx-symbols`), and `umldbg load` of a module the guest has not loaded yet. Medians of N runs.
# Usage: scripts/bench-attach.sh [runs] [path/to/umldbg]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
U=${2:-target/release/umldbg}
P=batt-
R=${P}router-uml-R
cleanup() { "$U" --umid "$R" detach > /dev/null 2>&1 || true; "$U" lab down ${P}article > /dev/null 2>&1 || true; }
trap cleanup EXIT
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }
now() { date +%s.%N; }

"$U" lab up --prefix "$P" > /dev/null
"$U" exec "$R" -- iptables-legacy -A FORWARD -p icmp -j REJECT
nmods=$("$U" exec "$R" --shell 'ls -d /sys/module/*/sections | wc -l')
linux=$("$U" kernel path)
build=$("$U" --json kernel path | python3 -c 'import json,sys; print(json.load(sys.stdin)["build_dir"])')
mods=$("$U" --json kernel path | python3 -c 'import json,sys; print(json.load(sys.stdin)["modules_dir"])')
pid=$(cat ~/.uml/$R/pid)

ours=(); manual=(); loads=()
for _ in $(seq "$runs"); do
  t0=$(now); "$U" attach "$R" > /dev/null; t1=$(now)
  ours+=("$(echo "$t1 - $t0" | bc)")
  "$U" --umid "$R" detach > /dev/null
  t0=$(now)
  (cd "$build" && gdb -q -nx -batch \
    -ex 'set pagination off' -ex 'set confirm off' \
    -ex 'handle SIGSEGV nostop noprint pass' -ex 'handle SIGUSR1 nostop noprint pass' \
    -ex 'handle SIGALRM nostop noprint pass' -ex 'handle SIGIO nostop noprint pass' \
    -ex 'handle SIGCHLD nostop noprint pass' -ex 'handle SIGWINCH nostop noprint pass' \
    -ex "file $linux" -ex "attach $pid" -ex "source $build/vmlinux-gdb.py" -ex "lx-symbols $mods" \
    -ex 'detach') > "${TMPDIR:-/tmp}/bench-attach-gdb.log" 2>&1
  t1=$(now)
  manual+=("$(echo "$t1 - $t0" | bc)")
done
grep -c '^loading @' "${TMPDIR:-/tmp}/bench-attach-gdb.log" > /dev/null || { echo "manual path loaded no module:"; tail -5 "${TMPDIR:-/tmp}/bench-attach-gdb.log"; }

"$U" exec "$R" -- iptables-legacy -F
"$U" attach "$R" > /dev/null
for _ in $(seq "$runs"); do
  "$U" exec "$R" --shell 'rmmod ipt_REJECT 2>/dev/null; rmmod nf_reject_ipv4 2>/dev/null; true'
  t0=$(now); "$U" --umid "$R" load ipt_REJECT.ko > /dev/null; t1=$(now)
  loads+=("$(echo "$t1 - $t0" | bc)")
done

a=$(printf '%s\n' "${ours[@]}" | median); m=$(printf '%s\n' "${manual[@]}" | median)
l=$(printf '%s\n' "${loads[@]}" | median)
echo "modules loaded in the guest: $nmods"
echo "umldbg attach to ready:           median ${a}s ($(printf '%s ' "${ours[@]}"))"
echo "manual gdb + lx-symbols:          median ${m}s ($(printf '%s ' "${manual[@]}"))"
echo "ratio manual/umldbg:              $(echo "scale=2; $m / $a" | bc)"
echo "umldbg load ipt_REJECT.ko (not loaded before): median ${l}s ($(printf '%s ' "${loads[@]}"))"
