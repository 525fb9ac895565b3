"""Heartbeats between failsh processes: small authenticated UDP datagrams (docs/security.md,
"Heartbeats"; the sender and receiver are failover/shell/heartbeats.py).

A failsh sends one to each host it serves with, several per dead time, saying "this
failsh runs, its faild (started at S) answered it ``age`` s ago, has record counter C and
holds a lease with L s left".  A receiver counts a peer alive while heartbeats or poll
answers arrive, and polls at once when the counter, the faild's start time or the lease
moved.  A lost TCP segment of a poll then no longer costs a whole dead time.

Datagram (big-endian)::

    magic "FOHB" | version u8 | node length u8 | node (UTF-8) | seq u64 | started f64 |
    lease f32 (-1: none) | age f32 | counter u64 | HMAC-SHA256(key, everything before)[:16]

``seq`` grows with every datagram of a sender, across its restarts too (it starts from the
wall clock in nanoseconds), so a receiver drops what it has seen, replays included.
``age``: how long before sending the sender's own faild last answered it, so a failsh
whose faild died vouches for nothing newer than that faild's last answer.

The key is 32 random bytes per cluster in a file that only its owner may read
(:func:`write_key`, ``failkey --heartbeat-key FILE``; :func:`load_key`, ``failsh
--heartbeat-key FILE``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
import time
from pathlib import Path

import attrs

from failover import protocol
from failover.files import KeyFileError, private_problem, read_key_file

MAGIC = b"FOHB"
VERSION = 1
TAG = 16          # bytes of the HMAC kept
KEY_BYTES = 32    # a cluster key: 32 random bytes (failkey --heartbeat-key)
MAX_SKEW = 300.0  # s: a seq (wall clock ns) further from ours than this is not believed
MAX_LEASE = 1e7   # s: a lease or an age beyond this is not a heartbeat of ours
_BODY = struct.Struct("!QdffQ")
MAX_SIZE = len(MAGIC) + 2 + 255 + _BODY.size + TAG  # no heartbeat is longer


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
    counter: int            # the sender's faild record counter (the highest of its records)
    age: float = 0.0        # seconds between the sender's faild's last answer and this datagram


def encode(key: bytes, hb: Heartbeat) -> bytes:
    node = hb.node.encode()
    head = MAGIC + bytes([VERSION, len(node)]) + node
    lease = -1.0 if hb.lease is None else min(max(hb.lease, 0.0), MAX_LEASE)
    body = head + _BODY.pack(hb.seq, hb.started, lease, min(max(hb.age, 0.0), MAX_LEASE), hb.counter)
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
    seq, started, lease, age, counter = _BODY.unpack_from(data, 6 + n)
    if not protocol.valid_name(node) or not (0 <= started < 4.2e9) or not (-1 <= lease <= MAX_LEASE) \
            or not (0 <= age <= MAX_LEASE):  # NaN fails every comparison
        raise BadHeartbeat("bad field")
    return Heartbeat(node, seq, started, None if lease < 0 else lease, counter, age)


class Sequence:
    """A sender's seq: the wall clock in ns, but never the same or lower twice."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns())
        return self._last


class ReplayGuard:
    """A receiver's memory, per sender: the highest seq accepted and the seqs of the last
    LATE seconds.  A seq seen before is a replay (or a duplicate), and so is one more than
    LATE older than the highest; a new one below the highest is late (the network reordered
    it: a link that comes back delivers what it queued after newer datagrams); one further
    than MAX_SKEW from our clock is not believed.  Only a new seq above the highest is
    accepted.  Keep it to the senders you know (the memory grows with each node name)."""

    LATE = 5.0         # s: how far below the highest seq a datagram still counts as late (a link
    # that was down delivers what it queued once ARP has answered again: up to a second or two)
    MAX_RECENT = 2048  # seqs remembered per sender (LATE s of heartbeats at 200/s, twice)

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._recent: dict[str, set[int]] = {}

    def verdict(self, hb: Heartbeat, now_ns: int | None = None) -> str | None:
        """None if ``hb`` is new (and remember it), else why not: "replay", "late" or "clock"."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        if abs(hb.seq - now_ns) > MAX_SKEW * 1e9:
            return "clock"
        top = self._seen.get(hb.node, 0)
        recent = self._recent.setdefault(hb.node, set())
        floor = top - int(self.LATE * 1e9)
        if hb.seq in recent or hb.seq <= floor:
            return "replay"
        recent.add(hb.seq)
        if len(recent) > self.MAX_RECENT:  # rarely: down to half, so the next time is far
            kept = sorted(q for q in recent if q > floor)
            self._recent[hb.node] = set(kept[-self.MAX_RECENT // 2:])
        if hb.seq < top:
            return "late"
        self._seen[hb.node] = hb.seq
        return None

    def accept(self, hb: Heartbeat, now_ns: int | None = None) -> bool:
        return self.verdict(hb, now_ns) is None

    def forget(self, keep: set[str]) -> None:
        """Forget every sender not in ``keep`` (the hosts no longer served with)."""
        self._seen = {n: s for n, s in self._seen.items() if n in keep}
        self._recent = {n: s for n, s in self._recent.items() if n in keep}


# The key file -----------------------------------------------------------------------------
MAX_KEY_FILE = 4096
_HEADER = "# failover heartbeat key (failkey --heartbeat-key): the same file on every host of the cluster, mode 0600\n"


def write_key(path: Path) -> None:
    """A new random key in ``path``, mode 0600; refuses to overwrite (KeyFileError), OSError
    if it cannot be written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; remove it first to make a new key") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (_HEADER + secrets.token_bytes(KEY_BYTES).hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def load_key(path: Path) -> bytes:
    """The key in ``path``: 64 hex digits (lines starting with # are comments), in a regular
    file that only its owner may read; KeyFileError (naming the fix) otherwise."""
    problem = private_problem(path, "heartbeat key file")
    if problem:
        raise KeyFileError(problem)
    text = read_key_file(path, MAX_KEY_FILE, "heartbeat key file")
    digits = "".join(line.strip() for line in text.decode(errors="replace").splitlines()
                     if not line.lstrip().startswith("#"))
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path} is not a heartbeat key ({2 * KEY_BYTES} hex digits): make one with "
                           f"failkey --heartbeat-key FILE")
    return key
