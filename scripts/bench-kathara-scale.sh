#!/usr/bin/env bash
# Benchmark (issue: Kathara labs): a generated Kathara lab of N machines (default 250: a chain of
# routers, each forwarding between its two collision domains, addresses set by its startup file)
# from `umldbg lab up` to every machine ready and its startup run, and the host memory the
# machines use; side by side with the article's lab in the same run.
# Usage: scripts/bench-kathara-scale.sh [machines] [path/to/umldbg]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-250}
U=${2:-target/release/umldbg}
work=$(mktemp -d "${UMLDBG_CACHE:-$HOME/.cache/umldbg}/bench-scale.XXXXXX")
lab=bscale
cleanup() {
  "$U" lab down "$lab" > /dev/null 2>&1 || true
  "$U" lab down bsa-article > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# r1 .. rN in a chain: ri has eth0 on domain d(i-1) (10.x.y.2) and eth1 on d(i) (10.x.y.1).
dir=$work/$lab
mkdir -p "$dir"
addr() { printf '10.%d.%d' $(( $1 / 250 + 100 )) $(( $1 % 250 )); }
{
  echo 'LAB_DESCRIPTION="generated chain for the scale benchmark"'
  for i in $(seq 1 "$n"); do
    printf 'r%d[0]="d%d"\nr%d[1]="d%d"\nr%d[mem]=32\n' "$i" $((i - 1)) "$i" "$i" "$i"
  done
} > "$dir/lab.conf"
for i in $(seq 1 "$n"); do
  {
    echo "ip address add $(addr $((i - 1))).2/24 dev eth0"
    echo "ip address add $(addr "$i").1/24 dev eth1"
    [ "$i" -gt 1 ] && echo "ip route add default via $(addr $((i - 1))).1"
    true
  } > "$dir/r$i.startup"
done

# RSS of every process in each machine's process group (the sandbox, the kernel, its helpers).
rss_mib() {
  local total=0 kb
  for pid in $("$U" --json lab status | python3 -c "import json,sys; [print(m['pid']) for l in json.load(sys.stdin) if l['name']=='$1' for m in l['machines']]"); do
    kb=$(ps -eo pgid=,rss= | awk -v g="$pid" '$1 == g {s += $2} END {print s + 0}')
    total=$((total + kb))
  done
  echo $((total / 1024))
}

run() { # label, lab name, lab up arguments...
  local label=$1 name=$2; shift 2
  local t0 t1 alive
  t0=$(date +%s.%N)
  "$U" lab up "$@" > /dev/null 2> "$work/err" || { cat "$work/err"; exit 1; }
  t1=$(date +%s.%N)
  alive=$("$U" --json lab status | python3 -c "import json,sys; print(sum(m['alive'] for l in json.load(sys.stdin) if l['name']=='$name' for m in l['machines']))")
  printf '%-34s up in %6.2f s, %s machines alive, %s MiB RSS in all\n' "$label" \
    "$(echo "$t1 - $t0" | bc)" "$alive" "$(rss_mib "$name")"
  "$U" lab down "$name" > /dev/null
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run "article lab (3 machines)" bsa-article --prefix bsa-
run "Kathara chain ($n machines)" "$lab" "$dir"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
