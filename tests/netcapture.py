"""Capture address announcements on a test-bed interface, and decode them independently.

Run inside a namespace of the bed (it only listens; it sends nothing)::

    ip netns exec NS python tests/netcapture.py --out FILE [--iface eth0] [--count N] [--timeout S]

It opens an AF_PACKET socket for every protocol on the interface, writes ``{"ready": true}``
to FILE once it listens, then one JSON line per received ARP frame or ICMPv6 neighbour
advertisement (``{"t": monotonic seconds, "kt": the kernel's receive time, "frame": hex}``;
"kt" is wall-clock time taken when the frame arrived, so spacings measured with it do not
depend on when this process got to run), and exits after `count` of them or `timeout`
seconds, whichever comes first.  Frames this namespace sends itself are left out.

The decoders (``decode_arp``, ``decode_na``) are written from the RFCs, not from
failover.announce, so the tests do not check the sender against itself.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMP = 29  # Linux (asm-generic); not exported by Python's socket module


def _kind(frame: bytes) -> str | None:
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == 0x0806:
        return "arp"
    # IPv6 whose next header is ICMPv6 (58), type 136 (neighbour advertisement)
    if ethertype == 0x86DD and len(frame) >= 14 + 40 + 1 and frame[14 + 6] == 58 and frame[14 + 40] == 136:
        return "na"
    return None


def capture(iface: str, out: Path, count: int, timeout: float) -> int:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
    got = 0
    end = time.monotonic() + timeout
    with s, open(out, "w") as f:
        f.write(json.dumps({"ready": True}) + "\n")
        f.flush()
        for _ in range(100_000):  # bounded in count as well as in time
            left = end - time.monotonic()
            if got >= count or left <= 0:
                break
            s.settimeout(left)
            try:
                frame, ancillary, _, addr = s.recvmsg(65535, 64)
            except TimeoutError:
                break
            t = time.monotonic()
            if addr[2] == PACKET_OUTGOING or _kind(frame) is None:
                continue
            kt = None
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP and len(data) >= 16:
                    sec, usec = struct.unpack("@qq", data[:16])
                    kt = sec + usec / 1e6
            f.write(json.dumps({"t": t, "kt": kt, "frame": frame.hex()}) + "\n")
            f.flush()
            got += 1
    return 0


def read(out: Path) -> tuple[bool, list[tuple[float, float, bytes]]]:
    """(ready, [(monotonic time, kernel receive time, frame), ...]) from a capture's output
    file so far (the kernel's time is the monotonic one if the kernel gave none)."""
    ready, frames = False, []
    try:
        lines = out.read_text().splitlines()
    except FileNotFoundError:
        return False, []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if rec.get("ready"):
            ready = True
        elif "frame" in rec:
            frames.append((rec["t"], rec.get("kt") or rec["t"], bytes.fromhex(rec["frame"])))
    return ready, frames


def mac_str(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def decode_arp(frame: bytes) -> dict[str, Any]:
    """An Ethernet + ARP frame (RFC 826) as a dict; ValueError if it is not one."""
    if len(frame) < 42:
        raise ValueError(f"frame too short for ARP: {len(frame)} bytes")
    dst, src, ethertype = frame[0:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    if ethertype != 0x0806:
        raise ValueError(f"ethertype {ethertype:#06x}, not ARP")
    htype, ptype, hlen, plen, oper = struct.unpack("!HHBBH", frame[14:22])
    sha, spa, tha, tpa = frame[22:28], frame[28:32], frame[32:38], frame[38:42]
    return {"eth_dst": mac_str(dst), "eth_src": mac_str(src), "htype": htype, "ptype": ptype,
            "hlen": hlen, "plen": plen, "oper": oper, "sha": mac_str(sha), "spa": str(ipaddress.IPv4Address(spa)),
            "tha": mac_str(tha), "tpa": str(ipaddress.IPv4Address(tpa))}


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _options(data: bytes) -> Iterator[tuple[int, bytes]]:
    """RFC 4861 section 4.6: (type, value) of each option; ValueError on a malformed one."""
    i = 0
    for _ in range(len(data) // 8 + 1):
        if i >= len(data):
            return
        if i + 2 > len(data) or data[i + 1] == 0 or i + 8 * data[i + 1] > len(data):
            raise ValueError(f"malformed option at offset {i}")
        yield data[i], data[i + 2:i + 8 * data[i + 1]]
        i += 8 * data[i + 1]


def decode_na(frame: bytes) -> dict[str, Any]:
    """An Ethernet + IPv6 + ICMPv6 neighbour advertisement (RFC 4861 section 4.4) as a dict,
    with ``checksum_ok`` computed over the RFC 8200 pseudo-header; ValueError if it is not one."""
    if len(frame) < 14 + 40 + 24:
        raise ValueError(f"frame too short for a neighbour advertisement: {len(frame)} bytes")
    dst, src, ethertype = frame[0:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    if ethertype != 0x86DD:
        raise ValueError(f"ethertype {ethertype:#06x}, not IPv6")
    ip6 = frame[14:54]
    version = ip6[0] >> 4
    payload_len, next_header, hop_limit = struct.unpack("!HBB", ip6[4:8])
    ip_src, ip_dst = ip6[8:24], ip6[24:40]
    icmp = frame[54:54 + payload_len]
    if len(icmp) != payload_len:
        raise ValueError(f"payload length {payload_len}, but {len(frame) - 54} bytes follow the header")
    pseudo = ip_src + ip_dst + struct.pack("!I", payload_len) + b"\0\0\0" + bytes([next_header])
    icmp_type, code, checksum, flags = struct.unpack("!BBHI", icmp[0:8])
    target = icmp[8:24]
    opts = list(_options(icmp[24:]))
    return {"eth_dst": mac_str(dst), "eth_src": mac_str(src), "version": version, "next_header": next_header,
            "hop_limit": hop_limit, "src": str(ipaddress.IPv6Address(ip_src)),
            "dst": str(ipaddress.IPv6Address(ip_dst)), "type": icmp_type, "code": code, "checksum": checksum,
            "checksum_ok": _ones_complement_sum(pseudo + icmp) == 0xFFFF,
            "router": bool(flags & 0x80000000), "solicited": bool(flags & 0x40000000),
            "override": bool(flags & 0x20000000), "reserved": flags & 0x1FFFFFFF,
            "target": str(ipaddress.IPv6Address(target)),
            "options": [(t, mac_str(v) if t in (1, 2) and len(v) == 6 else v.hex()) for t, v in opts]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args(argv)
    return capture(args.iface, args.out, args.count, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
