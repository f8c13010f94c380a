#!/usr/bin/env bash
# Benchmark of root filesystem images (issue 14): a cold build of kathara/frr (in a scratch cache,
# so nothing cached helps it), the cached lookup `umldbg image path` (median of 20), and the disk
# each machine's COW file uses after a boot (idle, and with FRR started), with the machine's load.
# Goals: cold build under 60 s, cached lookup under 100 ms.
# Usage (as root): scripts/bench-image.sh [path/to/umldbg]
set -euo pipefail
cd "$(dirname "$0")/.."
U=${1:-target/release/umldbg}
[ -x "$U" ] || cargo build --release --locked
work=$(mktemp -d "${UMLDBG_CACHE:-$HOME/.cache/umldbg}/bench-image.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2> /dev/null || true; done
  rm -rf "$work" "$HOME/.uml/bench-image-$$"
}
trap cleanup EXIT
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m}'; }

echo "load before: $(uptime)"
t0=$(date +%s.%N)
"$U" --cache "$work" image build kathara/frr > "$work/build.out" 2> "$work/build.err" || {
  cat "$work/build.err" >&2
  exit 1
}
t1=$(date +%s.%N)
image=$("$U" --cache "$work" image path kathara/frr)
printf 'cold build of kathara/frr: %.1f s (%s)\n' "$(echo "$t1 - $t0" | bc)" "$(cat "$work/build.out")"
grep -E 'mmdebstrap: (running apt-get update|downloading|extracting|installing|success)|ext4' "$work/build.err" | sed 's/^/  /' || true

ms=()
for _ in $(seq 20); do
  a=$(date +%s%N)
  "$U" --cache "$work" image path kathara/frr > /dev/null
  b=$(date +%s%N)
  ms+=("$(echo "($b - $a) / 1000000" | bc -l)")
done
printf 'cached lookup (image path, process start included): median %s ms of 20\n' "$(printf '%s\n' "${ms[@]}" | median)"

linux=$("$U" kernel path)
boot() { # tag, shell lines run in the guest before it powers off
  local tag=$1 lines=$2 cow=$work/$1.cow
  printf '#!/bin/sh\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nmount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t tmpfs tmpfs /run\nip link set lo up\n%s\nsleep 5\nsync\necho o > /proc/sysrq-trigger\nsleep 30\n' "$lines" > "$work/$tag.sh"
  chmod 755 "$work/$tag.sh"
  local a b
  a=$(date +%s.%N)
  setsid "$linux" mem=256M "umid=bench-image-$$" "ubda=$cow,$image" root=/dev/ubda rw \
    init=/usr/local/sbin/umldbg-boot "umldbg.host=$work" "umldbg.init=$work/$tag.sh" \
    con0=fd:0,fd:1 con=null loglevel=2 < /dev/null > "$work/$tag.log" 2>&1 &
  pids+=($!)
  wait $! || true
  b=$(date +%s.%N)
  printf 'COW after a boot (%s): %s KB on disk (file size %s MB), up and down in %.1f s\n' "$tag" \
    "$(du -k "$cow" | cut -f1)" "$(($(stat -c %s "$cow") / 1000000))" "$(echo "$b - $a - 5" | bc)"
  rm -f "$cow"
}
boot idle ':'
boot frr 'systemctl start frr > /dev/null 2>&1'
printf 'image: %s MB on disk, %s MB file system\n' "$(($(du -k "$image" | cut -f1) / 1000))" "$(($(stat -c %s "$image") / 1000000))"
echo "load after: $(uptime)"
