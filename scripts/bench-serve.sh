#!/usr/bin/env bash
# Benchmark: gdb through `umldbg serve` against gdb attached natively, in one run on one lab.
#   1. Breakpoint hit to gdb's stop: pings from A through R's REJECT rule stop R at reject_tg;
#      the latency of each hit is gdb's stop time (time.time() in the breakpoint's commands)
#      minus the time the echo request crossed lan-a into R (a pcap of the lab's bridge, host
#      clock). Median over the pings.
#   2. Hit rate of a breakpoint gdb continues from at once (`commands; silent; continue`):
#      a UDP flood from A through R's REJECT rule; hits per second over the flood.
#   3. The same breakpoint under 16 parallel pings from A (400 each, 10 ms apart): hits per
#      second, and how many of the 6,400 echo requests reached R's REJECT rule (its counter; the
#      rest R dropped on the way in while stopped). Not the ICMP errors A got back: R sends
#      those rate-limited.
# Both for native gdb (the script of `umldbg ide gdbinit`: attach, UML's signals, every module)
# and for gdb on the server; also the rule's rate with no debugger (iptables counters), and the
# load average before and after (the machine is shared: read the ratios with it).
# Usage: scripts/bench-serve.sh [pings] [flood-seconds] [path/to/umldbg]
set -euo pipefail
cd "$(dirname "$0")/.."
pings=${1:-20}
flood=${2:-5}
U=${3:-target/release/umldbg}
P=bsv-
LAB=${P}article
R=${P}router-uml-R
A=${P}client-uml-A
T=$(mktemp -d "${TMPDIR:-/tmp}/bench-serve.XXXXXX")
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2> /dev/null && wait "$SERVER" 2> /dev/null || true
  "$U" lab down "$LAB" > /dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT

"$U" lab up --prefix "$P" > /dev/null
"$U" exec "$R" --shell 'iptables-legacy -A FORWARD -p icmp -j REJECT && iptables-legacy -A FORWARD -p udp -j REJECT'
linux=$("$U" kernel path)

# A sends UDP to B as fast as it can for N seconds.
flood_cmd() {
  echo "python3 -c \"import socket,time
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
end=time.time()+$1
while time.time()<end:
    s.sendto(b'x',('192.168.20.2',9))
\""
}

# The gdb part common to both ways: the time of every hit, appended to hits.txt as it happens;
# Ctrl-C ends the run and gdb detaches.
cat > "$T/bench.gdb" << GDB
set pagination off
set confirm off
python
import gdb, time
hits = open("$T/hits.txt", "a", buffering=1)
end
break reject_tg
commands
silent
python hits.write("%.6f\\n" % time.time())
continue
end
continue
detach
GDB

# 16 pings at once from A; prints how many echo requests went through R's ICMP REJECT rule.
parallel_pings() {
  "$U" exec "$R" -- iptables-legacy -Z FORWARD > /dev/null
  "$U" exec "$A" --timeout 300 --shell 'for i in $(seq 16); do ping -q -c 400 -i 0.01 -W 1 192.168.20.2 & done; wait' > /dev/null 2>&1 || true
  sleep 1
  "$U" exec "$R" -- iptables-legacy -L FORWARD -v -x -n | awk '$3=="REJECT" && $4=="1" {print $1}'
}

now() { date +%s.%N; }

# Run gdb (arguments before the bench script), then the pings, then the flood, then the
# parallel pings; results in $T (hit times, phase start times).
measure() {
  local name=$1; shift
  rm -f "$T/hits.txt"
  gdb -nx -batch "$@" -x "$T/bench.gdb" > "$T/$name.gdb.log" 2>&1 &
  local gdbpid=$!
  for _ in $(seq 600); do grep -q "Breakpoint 1 at" "$T/$name.gdb.log" && break; sleep 0.1; done
  sleep 1
  "$U" capture lan-a --lab "$LAB" -w "$T/$name.pcap" --duration $((pings / 4 + 8)) > /dev/null 2>&1 &
  local cap=$!
  sleep 1
  "$U" exec "$A" --timeout 120 --shell "ping -c $pings -i 0.25 -W 1 192.168.20.2" > /dev/null 2>&1 || true
  wait "$cap" || true
  sleep 2
  now > "$T/$name.flood_start"
  "$U" exec "$A" --timeout 120 --shell "$(flood_cmd "$flood")" > /dev/null 2>&1 || true
  sleep 3
  now > "$T/$name.par_start"
  # R's counters can only be read once gdb lets R run: the pings end with R still running.
  parallel_pings > "$T/$name.par_answered" || echo 0 > "$T/$name.par_answered"
  # gdb may still be working through the packets R queued; a Ctrl-C that lands while it runs
  # a breakpoint's commands is lost, so ask again until it has detached.
  for _ in $(seq 60); do
    kill -INT "$gdbpid" 2> /dev/null || break
    for _ in $(seq 20); do kill -0 "$gdbpid" 2> /dev/null || break 2; sleep 0.1; done
  done
  if kill -0 "$gdbpid" 2> /dev/null; then
    echo "$name: gdb did not detach after Ctrl-C; killed (the lab goes down at the end)" >&2
    kill -KILL "$gdbpid" 2> /dev/null || true
  fi
  wait "$gdbpid" || true
  mv "$T/hits.txt" "$T/$name.hits"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# No debugger: the rule's counter over a flood.
"$U" exec "$R" -- iptables-legacy -Z FORWARD
"$U" exec "$A" --timeout 120 --shell "$(flood_cmd "$flood")" > /dev/null
nodbg=$("$U" exec "$R" -- iptables-legacy -L FORWARD -v -x -n | awk '$3=="REJECT" && $4=="17" {print $1}')
nodbg_par=$(parallel_pings)

# Native gdb.
"$U" --umid "$R" ide gdbinit -o "$T/native.gdbinit" > /dev/null
measure native -x "$T/native.gdbinit"

# gdb on the server.
"$U" serve "$R" --listen 127.0.0.1:0 --once > "$T/serve.out" 2> "$T/serve.err" &
SERVER=$!
for _ in $(seq 600); do grep -q "listening on" "$T/serve.out" && break; sleep 0.1; done
addr=$(grep -o 'target remote [^ ]*' "$T/serve.out" | cut -d' ' -f3)
measure serve -ex "file $linux" -ex "target remote $addr"
wait "$SERVER" || true
SERVER=""

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$T" "$pings" "$flood" "$nodbg" "$nodbg_par" "$load_before" "$load_after" << 'PY'
import statistics, struct, sys
T, pings, flood, nodbg = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4] or 0)
nodbg_par, load_before, load_after = int(sys.argv[5] or 0), sys.argv[6], sys.argv[7]

def echo_requests(path):
    """Host times of ICMP echo requests from A to B seen on lan-a, by sequence number."""
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    nano = magic == 0xA1B23C4D
    off, out = 24, {}
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        pkt = data[off + 16: off + 16 + incl]
        off += 16 + incl
        if len(pkt) < 42 or pkt[12:14] != b"\x08\x00" or pkt[23] != 1:
            continue
        ihl = (pkt[14] & 15) * 4
        icmp = pkt[14 + ihl:]
        if icmp[0] == 8 and pkt[26:30] == bytes([192, 168, 10, 2]):
            seq = struct.unpack(">H", icmp[6:8])[0]
            out.setdefault(seq, sec + frac / (1e9 if nano else 1e6))
    return out

def rate_of(hits):
    return (len(hits) - 1) / (hits[-1] - hits[0]) if len(hits) > 1 else 0.0

def result(name):
    hits = [float(x) for x in open(f"{T}/{name}.hits").read().split()]
    flood_start = float(open(f"{T}/{name}.flood_start").read())
    par_start = float(open(f"{T}/{name}.par_start").read())
    answered = int(open(f"{T}/{name}.par_answered").read().strip() or 0)
    req = echo_requests(f"{T}/{name}.pcap")
    ping_hits = [h for h in hits if h < flood_start]
    lat = []
    for t_req, t_hit in zip(sorted(req.values()), ping_hits):
        if 0 <= t_hit - t_req < 2:
            lat.append((t_hit - t_req) * 1000)
    flood_hits = [h for h in hits if flood_start <= h < par_start]
    par_hits = [h for h in hits if h >= par_start]
    return (statistics.median(lat) if lat else float("nan"), len(lat), rate_of(flood_hits),
            len(flood_hits), rate_of(par_hits), len(par_hits), answered)

n = result("native")
s = result("serve")
print(f"breakpoint hit -> gdb stop, median ms     native {n[0]:8.3f} ({n[1]} hits)   serve {s[0]:8.3f} ({s[1]} hits)   serve/native {s[0] / n[0]:5.2f}")
print(f"continue-at-once breakpoint, hits/s       native {n[2]:8.1f} ({n[3]} hits)   serve {s[2]:8.1f} ({s[3]} hits)   serve/native {s[2] / n[2]:5.2f}")
print(f"16 parallel pings, hits/s                 native {n[4]:8.1f} ({n[5]} hits)   serve {s[4]:8.1f} ({s[5]} hits)   serve/native {s[4] / n[4]:5.2f}")
print(f"16 parallel pings, reached REJECT of 6400  native {n[6]:8d}   serve {s[6]:8d}   no debugger {nodbg_par}")
print(f"the REJECT rule with no debugger: {nodbg / flood:.0f} packets/s ({nodbg} in {flood:g} s)")
print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
PY
