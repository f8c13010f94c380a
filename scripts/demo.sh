#!/usr/bin/env bash
# The article's scenario end to end, one umldbg command per step of "Reconnaissance of a Linux
# Network Stack": three UML machines, REJECT on the router, gdb on the router's kernel with the
# module's symbols, a breakpoint on reject_tg, a ping, and the sk_buff it stopped on; then the
# same function traced at line rate with every packet decoded.
# Sets the machine up first (packages, umldbg, the kernel) when that has not been done.
# KEEP=1 leaves the lab and the session up at the end for you to explore.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
U=target/release/umldbg

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

if [ -d /run/umldbg/labs/article ]; then
  echo "demo: a lab named 'article' is already up; take it down first: $U lab down article" >&2
  exit 1
fi
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    $U --umid router-uml-R detach >/dev/null 2>&1 || true
    $U lab down article >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

step $U lab up
step $U exec client-uml-A -- ping -c 1 192.168.20.2
step $U exec router-uml-R -- iptables-legacy -A FORWARD -p icmp -j REJECT
step $U attach router-uml-R
step $U load ipt_REJECT.ko
step $U break reject_tg
printf '\n\033[1m$ %s\033[0m\n' "$U exec client-uml-A -- ping -c 1 192.168.20.2 &"
$U exec client-uml-A --timeout 60 -- ping -c 1 -W 30 192.168.20.2 > /dev/null 2>&1 &
step $U wait --timeout 60
step $U print 'skb->len'
step $U skb --hex
step $U step
step $U list
step $U detach
step $U exec client-uml-A -- ping -c 1 -W 2 192.168.20.2 || true
# Past the article: every packet that reaches reject_tg, decoded, without stopping R per hit.
printf '\n\033[1m$ %s\033[0m\n' "$U exec client-uml-A -- ping -c 5 -i 0.2 192.168.20.2 &"
(sleep 2; $U exec client-uml-A --timeout 30 -- ping -c 5 -i 0.2 -W 1 192.168.20.2 > /dev/null 2>&1) &
step $U trace router-uml-R reject_tg --skb --count 5 --duration 30
wait
echo
echo "demo: done. The REJECT rule answered from 192.168.10.1, as in the article."
