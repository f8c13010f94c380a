#!/usr/bin/env bash
# The benchmarks of issues 8 and 16, in one go on the built-in lab. First, how often R runs
# reject_tg while A sends UDP to B through R's REJECT rule,
#   1. untraced,
#   2. traced by `umldbg trace reject_tg --skb` (every hit decoded),
#   3. traced by gdb attached by hand to R's kernel with a `commands; silent; continue; end`
#      breakpoint on reject_tg (module symbols from /sys/module/ipt_REJECT/sections/.text),
#      and, for a like-for-like figure, with a `printf` of the packet's length and addresses
#      in the commands (umldbg decodes every packet),
# and prints the rates and the ratios (traced/untraced, traced/gdb). Then (issue 16) R forwarding
# a UDP flood from A to B,
#   4. untraced,
#   5. traced by `umldbg trace --all-skb` (every function that takes an sk_buff, more than a
#      thousand probes, with a filter that selects only a ping running beside the flood),
# with the flood's rate through R and whether every hit of the selected packets was recorded
# (no hit lost, every echo request and reply a selected packet with its forwarding hits).
#
# Rates 1 and 2 come from R's REJECT rule counter over a fixed window while A sends as fast as
# it can (umldbg's own hit count is printed beside it as a check). Rate 3 is gdb's own hit count
# over the same kind of window: reading the counter needs a command on R, and any guest process
# on R is a vfork of its kernel process, from which gdb detaches taking its breakpoints out of
# the shared text.
# The machine's load moves these numbers: run it on a quiet machine and compare within one run.
#
# It ends with issue 16's two figures side by side, their ratios against the goals, whether
# every traced round of the flood recorded every hit of the selected packets, and the load
# average before and after.
#
# Environment: UMLDBG (the binary; default $CARGO_TARGET_DIR/release/umldbg, else
# target/release/umldbg, else umldbg on PATH), UMLDBG_TRACE (the binary whose `trace` runs;
# default $UMLDBG), PREFIX (lab prefix, default bench-trace-), WINDOW (seconds per measurement,
# default 10), ROUNDS (rounds of 1, 2, 4 and 5, the best is kept; default 3), GDB (default gdb),
# NO_GDB=1 (skip part 3), ONLY_FLOOD=1 (parts 4 and 5 only).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
UMLDBG=${UMLDBG:-}
if [ -z "$UMLDBG" ]; then
    if [ -n "${CARGO_TARGET_DIR:-}" ] && [ -x "$CARGO_TARGET_DIR/release/umldbg" ]; then
        UMLDBG=$CARGO_TARGET_DIR/release/umldbg
    elif [ -x "$here/target/release/umldbg" ]; then UMLDBG=$here/target/release/umldbg
    else UMLDBG=umldbg; fi
fi
UMLDBG_TRACE=${UMLDBG_TRACE:-$UMLDBG}
PREFIX=${PREFIX:-bench-trace-}
WINDOW=${WINDOW:-10}
ROUNDS=${ROUNDS:-3}
GDB=${GDB:-gdb}
LAB=${PREFIX}article
A=${PREFIX}client-uml-A
R=${PREFIX}router-uml-R
work=$(mktemp -d)

cleanup() {
    [ -n "${tracer_pid:-}" ] && kill -INT "$tracer_pid" 2>/dev/null || true
    [ -n "${gdb_pid:-}" ] && kill -INT "$gdb_pid" 2>/dev/null || true
    sleep 1
    "$UMLDBG" lab down "$LAB" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$UMLDBG" lab up --prefix "$PREFIX" >/dev/null
"$UMLDBG" exec "$R" -- iptables-legacy -A FORWARD -p udp -j REJECT

# Packets R's FORWARD rule with target $TARGET (REJECT, then ACCEPT for the flood) counted.
TARGET=REJECT
count() {
    "$UMLDBG" exec "$R" --shell "iptables-legacy -L FORWARD -v -x -n" | awk -v t="$TARGET" '$3 == t {print $1; exit}'
}

# A sends UDP to B for $1 seconds, as fast as python in the guest goes (in the background).
send_for() {
    "$UMLDBG" exec "$A" --timeout $(( $1 + 30 )) --shell "python3 -c \"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + $1
while time.time() < end:
    s.sendto(b'bench-trace-payload-0123456789', ('192.168.20.2', 9999))
\"" >/dev/null 2>&1 &
    sender_pid=$!
}

# Rejects per second over WINDOW seconds while A sends.
measure() {
    send_for $(( WINDOW + 3 ))
    sleep 1.5
    local c0 c1 t0 t1
    c0=$(count); t0=$(date +%s.%N)
    sleep "$WINDOW"
    c1=$(count); t1=$(date +%s.%N)
    wait "$sender_pid" || true
    echo "$c0 $c1 $t0 $t1" | awk '{printf "%.1f\n", ($2 - $1) / ($4 - $3)}'
}

best() { sort -g | tail -1; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average: $load_before  ($(nproc) cores)"

if [ -z "${ONLY_FLOOD:-}" ]; then
# 1. untraced
untraced=$(for _ in $(seq "$ROUNDS"); do measure; done | best)
echo "untraced:           $untraced rejects/s"

# 2. traced by umldbg with --skb
umldbg_rates=()
for _ in $(seq "$ROUNDS"); do
    "$UMLDBG_TRACE" trace "$R" reject_tg --skb --quiet --json >"$work/trace.out" 2>"$work/trace.err" &
    tracer_pid=$!
    for _ in $(seq 300); do grep -q tracing "$work/trace.err" 2>/dev/null && break; sleep 0.1; done
    grep -q tracing "$work/trace.err" || { cat "$work/trace.err"; exit 1; }
    umldbg_rates+=("$(measure)")
    kill -INT "$tracer_pid"; wait "$tracer_pid" || true; tracer_pid=
    hits=$(grep -o '"hits":[0-9]*' "$work/trace.out" | head -1 | cut -d: -f2)
    lost=$(grep -o '"lost":[0-9]*' "$work/trace.out" | head -1 | cut -d: -f2)
    echo "  (umldbg round: ${umldbg_rates[-1]} rejects/s; umldbg saw $hits hits, lost $lost)"
done
traced=$(printf '%s\n' "${umldbg_rates[@]}" | best)
echo "traced by umldbg:   $traced rejects/s (--skb, every hit decoded)"

if [ -z "${NO_GDB:-}" ]; then
# 3. traced by gdb: attached by hand, module symbols placed by hand, a breakpoint that continues
text=$("$UMLDBG" exec "$R" -- cat /sys/module/ipt_REJECT/sections/.text | tr -d '\r\n')
pid=$(cat "$HOME/.uml/$R/pid")
modules_dir=$("$UMLDBG" kernel path --json | sed -n 's/.*"modules_dir": *"\([^"]*\)".*/\1/p')
ko=$(find "$modules_dir" -name ipt_REJECT.ko | head -1)

# gdb_rate BODY: hits per second of a reject_tg breakpoint whose commands are `silent`, BODY,
# `continue`; prints the rate and the hit count.
gdb_rate() {
    cat >"$work/gdb.cmds" <<EOF
set pagination off
set confirm off
handle SIGSEGV nostop noprint pass
handle SIGUSR1 nostop noprint pass
handle SIGALRM nostop noprint pass
handle SIGVTALRM nostop noprint pass
handle SIGIO nostop noprint pass
handle SIGCHLD nostop noprint pass
handle SIGWINCH nostop noprint pass
handle SIGPROF nostop noprint pass
add-symbol-file $ko -s .text $text
break reject_tg
commands
silent
$1
continue
end
echo GDB-READY\n
continue
info breakpoints
detach
quit
EOF
    "$GDB" -nx -q -batch -p "$pid" -x "$work/gdb.cmds" >"$work/gdb.out" 2>&1 &
    gdb_pid=$!
    for _ in $(seq 600); do grep -q GDB-READY "$work/gdb.out" 2>/dev/null && break; sleep 0.1; done
    grep -q GDB-READY "$work/gdb.out" || { cat "$work/gdb.out" >&2; exit 1; }
    # No command may run on R while gdb holds it: a guest process is a vfork of R's kernel
    # process, and gdb detaching from that child takes its breakpoints out of the shared text.
    # So gdb's own hit count is the measure, from the start of the sending to the interrupt.
    local t0 t1 hits
    t0=$(date +%s.%N)
    send_for $(( WINDOW + 5 ))
    sleep "$WINDOW"
    t1=$(date +%s.%N)
    if ! kill -INT "$gdb_pid" 2>/dev/null; then
        echo "bench-trace: gdb ended before the window did; the end of its log:" >&2
        tail -20 "$work/gdb.out" >&2
    fi
    wait "$gdb_pid" || true; gdb_pid=
    wait "$sender_pid" || true
    hits=$(sed -n 's/.*breakpoint already hit \([0-9]*\) time.*/\1/p' "$work/gdb.out" | tail -1)
    # An interrupt that lands inside the commands ends the script before `info breakpoints`:
    # then the printed lines are the count.
    [ -z "$hits" ] && hits=$(grep -c '^HIT ' "$work/gdb.out" || true)
    # Half a second of the window goes to starting python in the guest.
    awk -v h="${hits:-0}" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f %d\n", h / (b - a - 0.5), h }'
}

read -r gdb_bare gdb_bare_hits < <(gdb_rate "")
echo "traced by gdb:      $gdb_bare hits/s ($gdb_bare_hits hits; commands: silent, continue)"
read -r gdb_print gdb_print_hits < <(gdb_rate 'printf "HIT %u %u %u\n", skb->len, ((struct iphdr *)(skb->head + skb->network_header))->saddr, ((struct iphdr *)(skb->head + skb->network_header))->daddr')
echo "  gdb printing the packet: $gdb_print hits/s ($gdb_print_hits hits; commands: silent, printf of len and addresses, continue)"

awk -v t="$traced" -v g="$gdb_bare" -v p="$gdb_print" 'BEGIN {
    if (g > 0) printf "traced / gdb:      %.0f   (goal >= 100)\n", t / g
    else print "traced / gdb:      gdb saw no hit in the window"
    if (p > 0) printf "  traced / gdb printing the packet: %.0f\n", t / p
}'
fi
awk -v u="$untraced" -v t="$traced" 'BEGIN { printf "traced / untraced: %.2f   (goal >= 0.9)\n", t / u }'

fi

# 4 and 5: R forwards a UDP flood from A to B (counted by an ACCEPT rule), untraced and traced
# with every skb function probed and a filter that selects only a ping beside it.
"$UMLDBG" exec "$R" -- iptables-legacy -F FORWARD
"$UMLDBG" exec "$R" -- iptables-legacy -A FORWARD -p udp -j ACCEPT
TARGET=ACCEPT
# The ping's packets only (B's port-unreachable answers to the flood are ICMP too).
PING_FILTER='icmp[icmptype] == icmp-echo or icmp[icmptype] == icmp-echoreply'
# Forwarded packets per second over WINDOW seconds while A floods B and, in the same command
# (commands on one machine run one at a time), pings B four times a second; the ping's summary
# goes to $work/ping.out.
measure_with_ping() {
    local pings=$(( WINDOW * 4 + 8 ))
    "$UMLDBG" exec "$A" --timeout $(( WINDOW + 40 )) --shell "ping -q -c $pings -i 0.25 -W 2 192.168.20.2 > /tmp/bench-ping.out 2>&1 &
python3 -c \"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + $(( WINDOW + 3 ))
while time.time() < end:
    s.sendto(b'bench-trace-payload-0123456789', ('192.168.20.2', 9999))
\"
wait; cat /tmp/bench-ping.out" >"$work/ping.out" 2>&1 &
    sender_pid=$!
    sleep 1.5
    local c0 c1 t0 t1
    c0=$(count); t0=$(date +%s.%N)
    sleep "$WINDOW"
    c1=$(count); t1=$(date +%s.%N)
    wait "$sender_pid" || true
    echo "$c0 $c1 $t0 $t1" | awk '{printf "%.1f\n", ($2 - $1) / ($4 - $3)}'
}

flood=$(for _ in $(seq "$ROUNDS"); do measure_with_ping; done | best)
echo "flood untraced:     $flood packets/s forwarded by R (with the ping beside it)"
flood_rates=()
complete_rounds=0
lost_total=0
for _ in $(seq "$ROUNDS"); do
    "$UMLDBG_TRACE" trace "$R" --all-skb --json "$PING_FILTER" >"$work/flood.out" 2>"$work/flood.err" &
    tracer_pid=$!
    for _ in $(seq 600); do grep -q "Ctrl-C" "$work/flood.err" 2>/dev/null && break; sleep 0.1; done
    grep -q "Ctrl-C" "$work/flood.err" || { cat "$work/flood.err"; exit 1; }
    flood_rates+=("$(measure_with_ping)")
    sleep 1
    kill -INT "$tracer_pid"; wait "$tracer_pid" || true; tracer_pid=
    received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$work/ping.out")
    python3 - "$work/flood.out" "${received:-0}" "${flood_rates[-1]}" "$work/verdict" <<'PY'
import json, sys
hits, summary = [], None
for line in open(sys.argv[1]):
    v = json.loads(line)
    if "summary" in v:
        summary = v["summary"]
    elif "function" in v:
        hits.append(v)
received = int(sys.argv[2])
stories = {}
for h in hits:
    stories.setdefault(h.get("packet"), []).append(h["function"])
forwarded = sum(1 for f in stories.values() if "ip_forward" in f)
print(f"  (traced round: {sys.argv[3]} packets/s; {summary['functions']} functions probed; "
      f"{summary['packets']} packets selected for {received} pings answered "
      f"({2 * received} expected: request and reply), {forwarded} of them with ip_forward; "
      f"{summary['hits']} hits recorded, {summary['lost']} lost, "
      f"{summary['unselected_hits']} hits of other packets counted in the kernel)")
# Complete: no hit lost, and every echo request and reply the ping saw answered is a selected
# packet forwarded by R (its ip_forward hit recorded); nothing but the ping selected.
complete = (summary["lost"] == 0 and received > 0 and forwarded >= 2 * received
            and all(h["skb"].get("icmp", {}).get("type") in (0, 8) for h in hits if "skb" in h))
open(sys.argv[4], "w").write(f"{int(complete)} {summary['lost']}\n")
PY
    read -r complete lost_round <"$work/verdict"
    complete_rounds=$(( complete_rounds + complete ))
    lost_total=$(( lost_total + lost_round ))
done
flood_traced=$(printf '%s\n' "${flood_rates[@]}" | best)
echo "flood traced:       $flood_traced packets/s (--all-skb '$PING_FILTER')"
awk -v u="$flood" -v t="$flood_traced" 'BEGIN { printf "flood traced / untraced: %.2f   (goal >= 0.5)\n", t / u }'
echo "selected hits: every one recorded in $complete_rounds of $ROUNDS traced rounds; $lost_total lost in all"

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "== issue 16 (load average before: $load_before, after: $load_after; $(nproc) cores) =="
if [ -z "${ONLY_FLOOD:-}" ]; then
    awk -v u="$untraced" -v t="$traced" 'BEGIN {
        printf "(1) reject_tg: %.0f/s untraced, %.0f/s traced with --skb: %.2f (goal >= 0.9)\n", u, t, t / u }'
fi
awk -v u="$flood" -v t="$flood_traced" -v c="$complete_rounds" -v r="$ROUNDS" -v l="$lost_total" 'BEGIN {
    printf "(2) UDP flood through R: %.0f/s untraced, %.0f/s traced with --all-skb and a ping filter: %.2f (goal >= 0.5); every selected hit recorded in %d of %d rounds, %d lost\n", u, t, t / u, c, r, l }'
