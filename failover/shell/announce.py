"""Tell the link that this host now holds an address: gratuitous ARP (IPv4) and unsolicited
neighbour advertisements (IPv6), built here and sent on an AF_PACKET socket (needs root or
CAP_NET_RAW; no arping of either flavour, no new dependency).

    python -m failover.shell.announce IFACE ADDRESS[/PREFIX] [--count N] [--delay S] [--wait W]

sends N announcements (default 2) S seconds apart (default 1), the first after W seconds
(default 0: at once; fo::ipup sends the first from failsh itself and the rest with --wait S).  keepalived
sends 5 at its takeover and again 5 s later (garp_master_repeat / garp_master_delay); failover
sends fewer because a service's ``announce`` script (fo::garp) re-announces after every
overlap, and fo::ipdown kills a run still going so that no announcement leaves after the
address was given up.

The frames:

- ARP announcement (RFC 5227 section 2.3): broadcast, ARP request, sender = target = the
  address, target hardware address zero.  Linux updates an existing neighbour entry from it.
- Unsolicited NA (RFC 4861 section 4.4, 7.2.6): to ff02::1 (33:33:00:00:00:01), hop limit 255,
  source the address itself (as keepalived), flags O (override) only, with the target
  link-layer address option.

Only an address the interface holds is announced (``ip -j addr show``, checked before every
announcement; an IPv6 address whose duplicate address detection failed does not count): an
announcement of someone else's address would send its clients here.  Every error (unknown
interface, not an address, address not held, no permission for the raw socket) is one line on
stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import subprocess
import sys
import time

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
ICMPV6_NA = 136
NA_OVERRIDE = 0x20000000
MAX_COUNT = 100
MAX_DELAY = 60.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AnnounceError(Exception):
    """An address, interface or socket problem, as one line for the user."""


def parse_address(text: str) -> IPAddress:
    """``ADDRESS`` or ``ADDRESS/PREFIX`` (IPv4 or IPv6) -> the address."""
    if "%" in text:
        raise AnnounceError(f"not an IP address: {text!r} (no %scope: the interface says where)")
    try:
        return ipaddress.ip_interface(text).ip
    except ValueError:
        raise AnnounceError(f"not an IP address: {text!r}") from None


def _mac_bytes(mac: bytes) -> bytes:
    if len(mac) != 6:
        raise AnnounceError(f"expected a 6-byte Ethernet address, got {len(mac)} bytes")
    return mac


def garp_frame(mac: bytes, addr: ipaddress.IPv4Address) -> bytes:
    """An Ethernet frame carrying an ARP announcement of `addr` from `mac`."""
    mac = _mac_bytes(mac)
    ip = addr.packed
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    # htype Ethernet, ptype IPv4, hlen 6, plen 4, oper 1 (request), sha, spa, tha, tpa
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
    return eth + arp


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def na_frame(mac: bytes, addr: ipaddress.IPv6Address) -> bytes:
    """An Ethernet frame carrying an unsolicited neighbour advertisement of `addr` from `mac`."""
    mac = _mac_bytes(mac)
    # option 2 (target link-layer address), length 1 (8 octets)
    body = struct.pack("!I", NA_OVERRIDE) + addr.packed + bytes([2, 1]) + mac
    pseudo = addr.packed + ALL_NODES.packed + struct.pack("!I3xB", 4 + len(body), socket.IPPROTO_ICMPV6)
    csum = _checksum(pseudo + struct.pack("!BBH", ICMPV6_NA, 0, 0) + body)
    icmp = struct.pack("!BBH", ICMPV6_NA, 0, csum) + body
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), socket.IPPROTO_ICMPV6, 255) + addr.packed + ALL_NODES.packed
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ip6 + icmp


def frame_for(mac: bytes, addr: IPAddress) -> bytes:
    return garp_frame(mac, addr) if addr.version == 4 else na_frame(mac, addr)


def held(iface: str, addr: IPAddress) -> bool:
    """Whether `iface` holds `addr` (``ip -j addr show dev IFACE``; not if its DAD failed)."""
    try:
        r = subprocess.run(["ip", "-j", "addr", "show", "dev", iface], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        raise AnnounceError(f"cannot list the addresses of {iface!r}: ip: {e}") from None
    if r.returncode != 0:
        raise AnnounceError(f"interface {iface!r}: {r.stderr.strip() or 'ip addr show failed'}")
    try:
        infos = [a for link in json.loads(r.stdout or "[]") for a in link.get("addr_info", [])]
        return any(ipaddress.ip_address(a["local"]) == addr and not a.get("dadfailed")
                   for a in infos if "local" in a)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise AnnounceError(f"unexpected output of ip -j addr show dev {iface}: {e}") from None


def open_socket(iface: str) -> tuple[socket.socket, bytes]:
    """A raw packet socket bound to `iface`, and the interface's hardware address."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    except PermissionError:
        raise AnnounceError("raw packet socket not permitted (needs root or CAP_NET_RAW)") from None
    except OSError as e:
        raise AnnounceError(f"no raw packet socket: {e.strerror or e}") from None
    try:
        s.bind((iface, 0))
    except OSError as e:
        s.close()
        raise AnnounceError(f"interface {iface!r}: {e.strerror or e}") from None
    mac = s.getsockname()[4]
    if len(mac) != 6:
        s.close()
        raise AnnounceError(f"interface {iface!r} is not Ethernet-like (hardware address {mac.hex()!r})")
    return s, mac


def send_once(iface: str, addr: IPAddress) -> None:
    """One announcement of `addr` on `iface`, now, by a caller that knows `iface` holds it."""
    s, mac = open_socket(iface)
    with s:
        try:
            s.send(frame_for(mac, addr))
        except OSError as e:
            raise AnnounceError(f"sending on {iface!r}: {e.strerror or e}") from None


def announce(iface: str, addr: IPAddress, count: int = 2, delay: float = 1.0, wait: float = 0.0) -> int:
    """Send `count` announcements of `addr` on `iface`, `delay` s apart, the first after
    `wait` s; returns how many left.

    Each one only while `iface` still holds `addr` (AnnounceError otherwise, none sent after)."""
    s, mac = open_socket(iface)
    frame = frame_for(mac, addr)
    sent = 0
    with s:
        for i in range(count):
            time.sleep(delay if i else wait)
            if not held(iface, addr):
                what = "is not" if not sent else f"is no longer (after {sent} of {count} announcements)"
                raise AnnounceError(f"{addr} {what} on {iface}: not announcing an address this host does not hold")
            try:
                s.send(frame)
            except OSError as e:
                raise AnnounceError(f"sending on {iface!r}: {e.strerror or e}") from None
            sent += 1
    return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m failover.shell.announce",
                                 description="Send gratuitous ARP (IPv4) or unsolicited neighbour "
                                             "advertisements (IPv6) for an address this host holds.")
    ap.add_argument("iface", help="interface, e.g. eth0")
    ap.add_argument("address", help="ADDRESS or ADDRESS/PREFIX, IPv4 or IPv6")
    ap.add_argument("--count", type=int, default=2, help="announcements to send (default 2)")
    ap.add_argument("--delay", type=float, default=1.0, help="seconds between them (default 1)")
    ap.add_argument("--wait", type=float, default=0.0, help="seconds before the first (default 0: at once)")
    args = ap.parse_args(argv)
    try:
        if not 1 <= args.count <= MAX_COUNT:
            raise AnnounceError(f"--count must be 1..{MAX_COUNT}, not {args.count}")
        if not 0 <= args.delay <= MAX_DELAY:
            raise AnnounceError(f"--delay must be 0..{MAX_DELAY:g} seconds, not {args.delay:g}")
        if not 0 <= args.wait <= MAX_DELAY:
            raise AnnounceError(f"--wait must be 0..{MAX_DELAY:g} seconds, not {args.wait:g}")
        announce(args.iface, parse_address(args.address), args.count, args.delay, args.wait)
    except AnnounceError as e:
        print(f"announce: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
