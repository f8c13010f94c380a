#!/usr/bin/env python3
"""Benchmark: one sk_buff decoded at a stop by umldbg (DWARF offsets + process_vm_readv) against
the same fields fetched as gdb expressions over GDB/MI, in one run on one stop.

Starts its own lab (prefix bsk-), stops R at reject_tg on a ping from A, measures both paths
through the session socket, prints medians and the ratio, and cleans up.
Usage: scripts/bench-skb.py [path/to/umldbg]
"""
import json, os, socket, statistics, subprocess, sys, time

U = sys.argv[1] if len(sys.argv) > 1 else "target/release/umldbg"
P = "bsk-"
R = P + "router-uml-R"
A = P + "client-uml-A"
IPH = "((struct iphdr *)(skb->head + skb->network_header))"
ICMPH = "((struct icmphdr *)(skb->head + skb->transport_header))"
# The fields the skb view shows, as a gdb user would fetch them one by one.
EXPRS = [
    "skb->len", "skb->data_len", "skb->protocol", "skb->pkt_type", "skb->mark", "skb->dev->name",
    "skb->head", "skb->data", "skb->tail", "skb->end", "skb->mac_header", "skb->network_header",
    "skb->transport_header", IPH + "->saddr", IPH + "->daddr", IPH + "->ttl", IPH + "->id",
    IPH + "->protocol", IPH + "->tot_len", IPH + "->check", ICMPH + "->type", ICMPH + "->code",
    ICMPH + "->un.echo.id", ICMPH + "->un.echo.sequence",
]


def run(*args, check=True):
    return subprocess.run([U, *args], check=check, capture_output=True, text=True)


class Session:
    def __init__(self, umid):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(os.path.expanduser(f"~/.uml/{umid}/umldbg.sock"))
        self.f = self.s.makefile("rw")

    def req(self, **r):
        self.f.write(json.dumps(r) + "\n")
        self.f.flush()
        resp = json.loads(self.f.readline())
        if not resp["ok"]:
            raise RuntimeError(resp.get("error"))
        return resp


def main():
    run("lab", "up", "--prefix", P)
    try:
        run("exec", R, "--", "iptables-legacy", "-A", "FORWARD", "-p", "icmp", "-j", "REJECT")
        run("attach", R)
        s = Session(R)
        s.req(op="break", location="reject_tg")
        ping = subprocess.Popen([U, "exec", A, "--", "ping", "-c", "1", "-W", "20", "192.168.20.2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        s.req(op="wait", timeout=60)
        for _ in range(5):  # warm both paths
            s.req(op="skb")
            s.req(op="print", expr=EXPRS[0])
        skb_t = []
        for _ in range(200):
            t = time.perf_counter()
            s.req(op="skb")
            skb_t.append(time.perf_counter() - t)
        gdb_t = []
        for _ in range(20):
            t = time.perf_counter()
            for e in EXPRS:
                s.req(op="print", expr=e)
            gdb_t.append(time.perf_counter() - t)
        a, b = statistics.median(skb_t) * 1e3, statistics.median(gdb_t) * 1e3
        print(f"skb decode at a stop (umldbg, 1 request): median {a:.3f} ms over {len(skb_t)} runs")
        print(f"same {len(EXPRS)} fields as gdb expressions over GDB/MI: median {b:.3f} ms over {len(gdb_t)} runs")
        print(f"ratio gdb/umldbg: {b / a:.1f}x")
        s.req(op="detach")
        ping.wait(timeout=30)
    finally:
        run("--umid", R, "detach", check=False)
        run("lab", "down", P + "article", check=False)


if __name__ == "__main__":
    main()
