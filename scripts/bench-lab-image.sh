#!/usr/bin/env bash
# Benchmark (issue: machine images): `lab up` of the article's lab in image mode (kathara/base)
# beside hostfs mode, in one run, several rounds alternating; and the disk each machine's COW file
# uses once it is up. The image is built first if the cache has none (not timed).
# Usage: scripts/bench-lab-image.sh [rounds] [path/to/umldbg]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
U=${2:-target/release/umldbg}
cleanup() {
  "$U" lab down bli-article > /dev/null 2>&1 || true
  "$U" lab down blh-article > /dev/null 2>&1 || true
}
trap cleanup EXIT
"$U" image build kathara/base > /dev/null
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
host=() img=() cow=0
for r in $(seq "$rounds"); do
  a=$(date +%s.%N); "$U" lab up --prefix blh- > /dev/null; b=$(date +%s.%N)
  host+=("$(echo "$b - $a" | bc)"); "$U" lab down blh-article > /dev/null
  a=$(date +%s.%N); "$U" lab up --prefix bli- --image kathara/base > /dev/null; b=$(date +%s.%N)
  img+=("$(echo "$b - $a" | bc)")
  if [ "$r" = 1 ]; then
    cow=$(du -sk "${UMLDBG_RUN_DIR:-/run/umldbg}/labs/bli-article/cow" | cut -f1)
  fi
  "$U" lab down bli-article > /dev/null
done
h=$(printf '%s\n' "${host[@]}" | median); i=$(printf '%s\n' "${img[@]}" | median)
printf 'article lab, host root:   median %s s (%s)\n' "$h" "${host[*]}"
printf 'article lab, kathara/base: median %s s (%s)\n' "$i" "${img[*]}"
printf 'image/host ratio: %.2f (goal <= 1.5); COW files of the 3 machines after lab up: %s KB in all\n' \
  "$(echo "$i / $h" | bc -l)" "$cow"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
