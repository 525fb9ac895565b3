"""The heartbeat datagram: signed, replay-protected, and nothing else gets through."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover import heartbeat
from failover.heartbeat import BadHeartbeat, Heartbeat, ReplayGuard, Sequence

pytestmark = pytest.mark.fast

KEY = os.urandom(heartbeat.KEY_BYTES)


def beat(seq: int | None = None, **kw: object) -> Heartbeat:
    fields = {"node": "www1", "seq": seq or time.time_ns(), "started": 1.7e9, "lease": 2.5, "counter": 42, **kw}
    return Heartbeat(**fields)  # type: ignore[arg-type]


def test_round_trip_and_no_lease() -> None:
    for hb in (beat(), beat(lease=None), beat(node="a" * 64, counter=2**63)):
        assert heartbeat.decode(KEY, heartbeat.encode(KEY, hb)) == hb


def test_another_key_or_a_changed_byte_is_refused() -> None:
    data = heartbeat.encode(KEY, beat())
    with pytest.raises(BadHeartbeat, match="bad signature"):
        heartbeat.decode(os.urandom(heartbeat.KEY_BYTES), data)
    for i in range(len(data)):
        forged = bytearray(data)
        forged[i] ^= 0x01
        with pytest.raises(BadHeartbeat):
            heartbeat.decode(KEY, bytes(forged))
    with pytest.raises(BadHeartbeat):
        heartbeat.decode(KEY, data[:-1])
    with pytest.raises(BadHeartbeat):
        heartbeat.decode(KEY, data + b"x")


def test_replays_duplicates_and_far_clocks_are_dropped() -> None:
    guard, seq = ReplayGuard(), Sequence()
    first, second = beat(seq.next()), beat(seq.next())
    assert second.seq > first.seq
    assert guard.accept(first) and guard.accept(second)
    assert not guard.accept(first)     # replayed
    assert not guard.accept(second)    # duplicated
    assert guard.accept(beat(seq.next(), node="www2"))  # each sender on its own
    assert not guard.accept(beat(time.time_ns() + int(heartbeat.MAX_SKEW * 2e9)))
    assert not guard.accept(beat(time.time_ns() - int(heartbeat.MAX_SKEW * 2e9), node="www3"))


def test_sequence_never_repeats_even_if_the_clock_stands_still() -> None:
    seq = Sequence()
    values = [seq.next() for _ in range(1000)]
    assert values == sorted(set(values))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_heartbeat_or_refused(data: bytes) -> None:
    try:
        heartbeat.decode(KEY, data)
    except BadHeartbeat:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(0, 120))
def test_signed_garbage_fields_are_refused_not_raised(tail: bytes, n: int) -> None:
    import hashlib
    import hmac
    body = heartbeat.MAGIC + bytes([heartbeat.VERSION, min(n, 255)]) + tail
    data = body + hmac.new(KEY, body, hashlib.sha256).digest()[:heartbeat.TAG]
    try:
        heartbeat.decode(KEY, data)
    except BadHeartbeat:
        pass
