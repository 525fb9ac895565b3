"""Heartbeats between failsh processes: small authenticated UDP datagrams (docs/protocol.md,
"Heartbeats").

A failsh sends one to each host it serves with, several per dead time, saying "this
failsh is deciding, its faild (started at S) has change counter C, its lease has L s
left".  A receiver counts a peer alive while heartbeats or poll answers arrive, and polls
at once when the counter or the faild's start time moved.  A lost TCP segment of a poll
then no longer costs a whole dead time.

Datagram (big-endian)::

    magic "FOHB" | version u8 | node length u8 | node (UTF-8) | seq u64 | started f64 |
    lease f32 (-1: none) | counter u64 | HMAC-SHA256(key, everything before)[:16]

``seq`` grows with every datagram of a sender, across its restarts too (it starts from the
wall clock in nanoseconds), so a receiver drops what it has seen, replays included.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time

import attrs

from failover import protocol

MAGIC = b"FOHB"
VERSION = 1
TAG = 16          # bytes of the HMAC kept
KEY_BYTES = 32    # a cluster key: 32 random bytes (failkey --heartbeat-key)
MAX_SKEW = 300.0  # s: a seq (wall clock ns) further from ours than this is not believed
_BODY = struct.Struct("!QdfQ")


class BadHeartbeat(ValueError):
    """A datagram that is not a heartbeat of this cluster; ``reason`` for the counters."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class Heartbeat:
    node: str
    seq: int
    started: float          # the sender's faild start time (as its polls report it)
    lease: float | None     # seconds left of the sender's lease; None: it holds none
    counter: int            # the sender's faild change counter


def encode(key: bytes, hb: Heartbeat) -> bytes:
    node = hb.node.encode()
    head = MAGIC + bytes([VERSION, len(node)]) + node
    body = head + _BODY.pack(hb.seq, hb.started, -1.0 if hb.lease is None else hb.lease, hb.counter)
    return body + hmac.new(key, body, hashlib.sha256).digest()[:TAG]


def decode(key: bytes, data: bytes) -> Heartbeat:
    """The heartbeat in ``data``; BadHeartbeat if it is malformed or not signed with ``key``."""
    if len(data) < len(MAGIC) + 2 + _BODY.size + TAG or data[:4] != MAGIC:
        raise BadHeartbeat("not a heartbeat")
    if data[4] != VERSION:
        raise BadHeartbeat(f"version {data[4]}")
    n = data[5]
    body_end = 6 + n + _BODY.size
    if len(data) != body_end + TAG:
        raise BadHeartbeat("wrong length")
    if not hmac.compare_digest(hmac.new(key, data[:body_end], hashlib.sha256).digest()[:TAG], data[body_end:]):
        raise BadHeartbeat("bad signature")
    try:
        node = data[6:6 + n].decode()
    except UnicodeDecodeError:
        raise BadHeartbeat("node not UTF-8") from None
    seq, started, lease, counter = _BODY.unpack_from(data, 6 + n)
    if not protocol.valid_name(node) or not (0 <= started < 4.2e9) or lease != lease or lease > 3600:
        raise BadHeartbeat("bad field")
    return Heartbeat(node, seq, started, None if lease < 0 else lease, counter)


class Sequence:
    """A sender's seq: the wall clock in ns, but never the same or lower twice."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns())
        return self._last


class ReplayGuard:
    """A receiver's memory: per sender, the highest seq accepted.  A seq at or below it is
    a replay (or a duplicate); one further than MAX_SKEW from our clock is not believed."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def accept(self, hb: Heartbeat, now_ns: int | None = None) -> bool:
        now_ns = time.time_ns() if now_ns is None else now_ns
        if abs(hb.seq - now_ns) > MAX_SKEW * 1e9:
            return False
        if hb.seq <= self._seen.get(hb.node, 0):
            return False
        self._seen[hb.node] = hb.seq
        return True
