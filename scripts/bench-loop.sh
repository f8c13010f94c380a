#!/usr/bin/env bash
# The developer's loop, timed (issue 15): from an edit to the next stop at a breakpoint in the
# changed code, for a module and for a one-line change under net/, beside the path without the
# loop commands.
#
#   module, umldbg:   edit; `umldbg load --build DIR`; a ping from A stops in reject_tg
#   module, by hand:  edit; make M=DIR; detach gdb; iptables-legacy-save; flush; rmmod; insmod;
#                     iptables-legacy-restore; attach gdb again (every module's symbols);
#                     break reject_tg; a ping stops in it (one command per step, no typing time)
#   kernel, umldbg:   edit net/ipv4/icmp.c; `umldbg kernel build --source TREE`;
#                     `umldbg lab restart LAB R --kernel TREE`; attach; break icmp_echo; a ping
#                     to R stops in it
#   kernel, before:   the copy-and-rebuild of `kernel build --source` before issue 15 was a
#                     full build for every change: the time of a full build of the same tree
#                     (from its build log, not rebuilt here: pass FULL_BUILD_S=... to print it)
#
# usage: scripts/bench-loop.sh [ROUNDS]   (default 3; needs root, the cached kernel and the test
# tree that scripts/setup.sh --tests prepares). The load average is printed before and after:
# on a shared 2-core machine it decides most of the spread.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
U="${UMLDBG:-$root/target/release/umldbg}"
cache="${UMLDBG_CACHE:-$HOME/.cache/umldbg}"
prefix="bl$$-"
lab="${prefix}article"
A="${prefix}client-uml-A"; R="${prefix}router-uml-R"
work="$(mktemp -d /tmp/umldbg-bench-loop.XXXXXX)"
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

cleanup() {
  "$U" --umid "$R" detach >/dev/null 2>&1 || true
  "$U" lab down "$lab" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
build_dir="$("$U" kernel path --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["build_dir"])')"

# Wait for the next stop (in the background a ping from A goes through R's REJECT rule).
ping_and_wait() {
  ( "$U" exec "$A" -- ping -c 1 -W 5 "$1" >/dev/null 2>&1 & )
  "$U" --umid "$R" --json wait --timeout 60 | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["function"], s["breakpoint"])'
}
drop_and_go() {
  "$U" --umid "$R" delete "$1" >/dev/null
  "$U" --umid "$R" continue >/dev/null
}

# ---- module ----
"$U" lab up --prefix "$prefix" >/dev/null
mod="$work/mod"; mkdir -p "$mod"
cp "$build_dir/net/ipv4/netfilter/ipt_REJECT.c" "$mod/"
echo 'obj-m += ipt_REJECT.o' > "$mod/Makefile"
"$U" attach "$R" >/dev/null
"$U" --umid "$R" load --build "$mod" >/dev/null
"$U" exec "$R" -- iptables-legacy -A FORWARD -p icmp -j REJECT
# A first ping warms the neighbour caches up (not counted).
"$U" exec "$A" -- ping -c 1 -W 5 192.168.20.2 >/dev/null 2>&1 || true
edit() { sed -i "s|^/\* bench-loop .* \*/$||; 29a /* bench-loop $1 */" "$mod/ipt_REJECT.c"; }

ours=(); manual=()
for i in $(seq "$rounds"); do
  bp=$("$U" --umid "$R" break reject_tg | awk '{print $2}')
  t0=$(now); edit "u$i"
  "$U" --umid "$R" load --build "$mod" >/dev/null
  read -r fn nbp < <(ping_and_wait 192.168.20.2)
  t1=$(now); [ "$fn" = reject_tg ] || { echo "bench-loop: stopped in $fn" >&2; exit 1; }
  drop_and_go "$nbp"; ours+=("$(secs "$t0" "$t1")")
  sleep 1

  # By hand: the same swap, one command per step, gdb attached again afterwards.
  t0=$(now); edit "m$i"
  make -s -C "$build_dir" M="$mod" ARCH=um modules >/dev/null
  "$U" --umid "$R" detach >/dev/null
  stage="$cache/stage/$lab/$R"; mkdir -p "$stage"; cp "$mod/ipt_REJECT.ko" "$stage/bench.ko"
  "$U" exec "$R" --shell "iptables-legacy-save -c > /tmp/rules"
  "$U" exec "$R" --shell "printf '*filter\nCOMMIT\n*nat\nCOMMIT\n' | iptables-legacy-restore"
  "$U" exec "$R" -- rmmod ipt_REJECT
  "$U" exec "$R" -- insmod "$stage/bench.ko"
  "$U" exec "$R" --shell "iptables-legacy-restore -c < /tmp/rules"
  "$U" attach "$R" --module-path "$mod" >/dev/null
  "$U" --umid "$R" break reject_tg >/dev/null
  read -r fn nbp < <(ping_and_wait 192.168.20.2)
  t1=$(now); [ "$fn" = reject_tg ] || { echo "bench-loop: stopped in $fn" >&2; exit 1; }
  drop_and_go "$nbp"; manual+=("$(secs "$t0" "$t1")")
  sleep 1
done
echo "module change, edit to breakpoint:   load --build $(printf '%s\n' "${ours[@]}" | median) s (rounds: ${ours[*]})"
echo "                                     by hand      $(printf '%s\n' "${manual[@]}" | median) s (rounds: ${manual[*]})"
"$U" --umid "$R" detach >/dev/null
"$U" lab down "$lab" >/dev/null

# ---- kernel ----
exec 9>"$cache/test-tree.lock"; flock 9
tree="$(UMLDBG_CACHE="$cache" "$root/scripts/test-tree.sh")"
"$U" kernel build --source "$tree" >/dev/null 2>&1
"$U" lab up --prefix "$prefix" --kernel "$tree" >/dev/null
"$U" exec "$A" -- ping -c 1 -W 5 192.168.10.1 >/dev/null 2>&1 || true
marker() {
  python3 - "$tree/net/ipv4/icmp.c" "$1" <<'PY'
import sys
p, nonce = sys.argv[1], sys.argv[2]
tag = "/* umldbg kernel loop test */"
t = "".join(l for l in open(p).read().splitlines(True) if tag not in l)
f = t.index("icmp_echo(struct sk_buff *skb)\n{\n")
a = "\tnet = skb_dst_dev_net_rcu(skb);\n"
i = t.index(a, f) + len(a)
open(p, "w").write(t[:i] + '\tpr_info("umldbg-loop %%s\\n", "%s"); %s\n' % (nonce, tag) + t[i:])
PY
}
kern=(); builds=()
for i in $(seq "$rounds"); do
  t0=$(now); marker "bench-$$-$i"
  tb=$(now); "$U" kernel build --source "$tree" >/dev/null 2>&1; tb1=$(now)
  "$U" lab restart "$lab" "$R" --kernel "$tree" >/dev/null
  "$U" attach "$R" >/dev/null
  "$U" --umid "$R" break icmp_echo >/dev/null
  read -r fn nbp < <(ping_and_wait 192.168.10.1)
  t1=$(now); [ "$fn" = icmp_echo ] || { echo "bench-loop: stopped in $fn" >&2; exit 1; }
  drop_and_go "$nbp"; "$U" --umid "$R" detach >/dev/null
  kern+=("$(secs "$t0" "$t1")"); builds+=("$(secs "$tb" "$tb1")")
done
echo "kernel one-line change under net/:   edit to breakpoint $(printf '%s\n' "${kern[@]}" | median) s (rounds: ${kern[*]}); of which the build $(printf '%s\n' "${builds[@]}" | median) s"
if [ -n "${FULL_BUILD_S:-}" ]; then
  echo "                                     a full build of the tree (the copy-and-rebuild before): ${FULL_BUILD_S} s"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
