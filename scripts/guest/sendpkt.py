#!/usr/bin/env python3
"""Send exactly one IPv4 packet whose every header field the caller chose.

Runs as root inside a UML guest (standard library only) so that ground-truth tests can compare
what umldbg decodes at a breakpoint with what was sent. The IP header is built here and sent on
an IPPROTO_RAW socket (IP_HDRINCL), so the kernel keeps the chosen IP id, ttl, tos and flags; it
would rewrite a zero id or source address, so neither is allowed to be zero here. All checksums
are computed here, correctly, so the printed values are the ones on the wire.

    sendpkt.py icmp    --dst IP --id N --seq N --payload P [common options]
    sendpkt.py udp     --dst IP --sport N --dport N --payload P [common options]
    sendpkt.py tcp-syn --dst IP --sport N --dport N --seq N [--window N] [common options]

common options: --ttl N (64), --ip-id N (random 1..65535), --tos N (0), --df, --src IP (the
address the routing table picks for --dst).

A payload P is hex when it starts with "0x" or "hex:", text when it starts with "text:", and
otherwise the text as given. One JSON line on stdout says what was sent, every field included.
"""

import argparse
import ipaddress
import json
import random
import socket
import struct
import sys

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def parse_payload(text: str) -> bytes:
    if text.startswith("0x") or text.startswith("hex:"):
        digits = text.split(":", 1)[1] if text.startswith("hex:") else text[2:]
        try:
            return bytes.fromhex(digits)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"bad hex payload: {e}") from None
    if text.startswith("text:"):
        text = text[5:]
    return text.encode()


def ranged(lo: int, hi: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: not a number: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what}: {value} is outside {lo}..{hi}")
        return value

    return parse


def ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None


def route_source(dst: str) -> str:
    """The source address the kernel would choose for dst; connecting UDP sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))
        return s.getsockname()[0]


def ip_header(args, protocol: int, payload_len: int, src: str) -> bytes:
    tot_len = 20 + payload_len
    flags = 0x4000 if args.df else 0
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        args.tos,
        tot_len,
        args.ip_id,
        flags,
        args.ttl,
        protocol,
        0,
        socket.inet_aton(src),
        socket.inet_aton(args.dst),
    )
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]


def pseudo_header(src: str, dst: str, protocol: int, length: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, protocol, length)


def build_icmp(args, src):
    body = struct.pack("!BBHHH", 8, 0, 0, args.id, args.seq) + args.payload
    csum = checksum(body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    fields = {"icmp_type": 8, "icmp_code": 0, "id": args.id, "seq": args.seq, "icmp_checksum": csum}
    return IPPROTO_ICMP, body, fields


def build_udp(args, src):
    length = 8 + len(args.payload)
    body = struct.pack("!HHHH", args.sport, args.dport, length, 0) + args.payload
    csum = checksum(pseudo_header(src, args.dst, IPPROTO_UDP, length) + body)
    # A computed 0 is sent as all ones: 0 means "no checksum" in UDP over IPv4.
    csum = csum or 0xFFFF
    body = body[:6] + struct.pack("!H", csum) + body[8:]
    fields = {"sport": args.sport, "dport": args.dport, "udp_len": length, "udp_checksum": csum}
    return IPPROTO_UDP, body, fields


def build_tcp_syn(args, src):
    flags = 0x02
    body = struct.pack(
        "!HHIIBBHHH", args.sport, args.dport, args.seq, 0, 5 << 4, flags, args.window, 0, 0
    )
    csum = checksum(pseudo_header(src, args.dst, IPPROTO_TCP, len(body)) + body)
    body = body[:16] + struct.pack("!H", csum) + body[18:]
    fields = {
        "sport": args.sport,
        "dport": args.dport,
        "seq": args.seq,
        "ack": 0,
        "tcp_flags": ["SYN"],
        "window": args.window,
        "data_offset": 5,
        "tcp_checksum": csum,
    }
    return IPPROTO_TCP, body, fields


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dst", type=ipv4, required=True)
    common.add_argument("--src", type=ipv4, help="source address (default: the routed one)")
    common.add_argument("--ttl", type=ranged(0, 255, "ttl"), default=64)
    common.add_argument(
        "--ip-id", type=ranged(1, 0xFFFF, "ip id"), default=None,
        help="IPv4 identification, 1..65535 (0 would be replaced by the kernel); default random",
    )
    common.add_argument("--tos", type=ranged(0, 255, "tos"), default=0)
    common.add_argument("--df", action="store_true", help="set Don't Fragment")

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    port = ranged(0, 0xFFFF, "port")

    icmp = sub.add_parser("icmp", parents=[common], help="ICMP echo request")
    icmp.add_argument("--id", type=ranged(0, 0xFFFF, "id"), required=True)
    icmp.add_argument("--seq", type=ranged(0, 0xFFFF, "seq"), required=True)
    icmp.add_argument("--payload", type=parse_payload, default=b"")

    udp = sub.add_parser("udp", parents=[common], help="UDP datagram")
    udp.add_argument("--sport", type=port, required=True)
    udp.add_argument("--dport", type=port, required=True)
    udp.add_argument("--payload", type=parse_payload, default=b"")

    syn = sub.add_parser("tcp-syn", parents=[common], help="TCP SYN without options")
    syn.add_argument("--sport", type=port, required=True)
    syn.add_argument("--dport", type=port, required=True)
    syn.add_argument("--seq", type=ranged(0, 0xFFFFFFFF, "seq"), required=True)
    syn.add_argument("--window", type=port, default=64240)

    args = p.parse_args(argv)
    if args.ip_id is None:
        args.ip_id = random.randint(1, 0xFFFF)
    return args


def main(argv) -> int:
    args = parse_args(argv)
    src = args.src or route_source(args.dst)
    if src == "0.0.0.0":
        print("sendpkt: no usable source address for --dst", file=sys.stderr)
        return 1
    transport_len = {"icmp": 8, "udp": 8, "tcp-syn": 20}[args.kind]
    size = 20 + transport_len + len(getattr(args, "payload", b""))
    if size > 0xFFFF:
        print(f"sendpkt: a packet of {size} bytes does not fit IPv4's 65535", file=sys.stderr)
        return 1
    build = {"icmp": build_icmp, "udp": build_udp, "tcp-syn": build_tcp_syn}[args.kind]
    protocol, body, fields = build(args, src)
    header = ip_header(args, protocol, len(body), src)
    packet = header + body
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            sent = s.sendto(packet, (args.dst, 0))
    except OSError as e:
        print(f"sendpkt: send to {args.dst} failed: {e}", file=sys.stderr)
        return 1
    if sent != len(packet):
        print(f"sendpkt: sent {sent} of {len(packet)} bytes", file=sys.stderr)
        return 1
    record = {
        "kind": args.kind,
        "src": src,
        "dst": args.dst,
        "ttl": args.ttl,
        "ip_id": args.ip_id,
        "tos": args.tos,
        "df": args.df,
        "protocol": protocol,
        "tot_len": len(packet),
        "ip_checksum": struct.unpack("!H", header[10:12])[0],
        **fields,
        "payload_hex": getattr(args, "payload", b"").hex(),
        "packet_hex": packet.hex(),
    }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
