"""The heartbeat datagram: signed, replay-protected, and nothing else gets through; the
cluster key file (failkey --heartbeat-key, failsh --heartbeat-key)."""

from __future__ import annotations

import os
import stat
import struct
import time
from pathlib import Path

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
    for hb in (beat(), beat(lease=None), beat(node="a" * 64, counter=2**63), beat(age=0.125)):
        assert heartbeat.decode(KEY, heartbeat.encode(KEY, hb)) == hb
    assert len(heartbeat.encode(KEY, beat(node="a" * 64))) <= heartbeat.MAX_SIZE


def test_out_of_range_values_are_clamped_when_sent() -> None:
    """A lease or age a datagram cannot carry is sent at its bound, never refused by the peer."""
    hb = heartbeat.decode(KEY, heartbeat.encode(KEY, beat(lease=1e12, age=-3.0)))
    assert hb.lease == heartbeat.MAX_LEASE and hb.age == 0.0


def _signed(fields: tuple) -> bytes:
    import hashlib
    import hmac
    body = heartbeat.MAGIC + bytes([heartbeat.VERSION, 4]) + b"www1" + struct.pack("!QdffQ", *fields)
    return body + hmac.new(KEY, body, hashlib.sha256).digest()[:heartbeat.TAG]


@pytest.mark.parametrize("fields", [
    (1, float("nan"), 1.0, 0.0, 1), (1, -1.0, 1.0, 0.0, 1), (1, 1.7e9, float("nan"), 0.0, 1),
    (1, 1.7e9, -2.0, 0.0, 1), (1, 1.7e9, 1.0, float("nan"), 1), (1, 1.7e9, 1.0, -1.0, 1),
    (1, 1.7e9, 1.0, float("inf"), 1)])
def test_signed_but_impossible_fields_are_refused(fields: tuple) -> None:
    with pytest.raises(BadHeartbeat, match="bad field"):
        heartbeat.decode(KEY, _signed(fields))


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


def test_verdict_names_the_reason() -> None:
    guard = ReplayGuard()
    hb = beat()
    assert guard.verdict(hb) is None
    assert guard.verdict(hb) == "replay"
    assert guard.verdict(beat(time.time_ns() - int(heartbeat.MAX_SKEW * 2e9), node="www2")) == "clock"
    guard.forget({"www2"})
    assert guard.verdict(hb) is None  # www1 forgotten: its memory does not grow with departed hosts


def test_reordered_is_late_and_old_or_seen_is_replayed() -> None:
    """A link that comes back delivers what it queued after newer datagrams: late, not an
    attack; but the same datagram twice, or one older than LATE, is a replay."""
    guard, now = ReplayGuard(), time.time_ns()
    older, newer = beat(now - 100_000_000), beat(now)
    assert guard.verdict(newer, now) is None
    assert guard.verdict(older, now) == "late"
    assert guard.verdict(older, now) == "replay"  # and again: seen
    assert guard.verdict(newer, now) == "replay"
    assert guard.verdict(beat(now - int(ReplayGuard.LATE * 1e9) - 1), now) == "replay"
    assert guard.verdict(beat(now + 1), now) is None


def test_the_memory_stays_bounded() -> None:
    guard, now = ReplayGuard(), time.time_ns()
    for i in range(5000):
        assert guard.verdict(beat(now + i * 1000), now) is None
    assert len(guard._recent["www1"]) <= ReplayGuard.MAX_RECENT
    assert guard.verdict(beat(now + 4999 * 1000), now) == "replay"


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


# The key file ------------------------------------------------------------------------------
def test_a_written_key_is_private_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "hb.key"
    old = os.umask(0)
    try:
        heartbeat.write_key(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = heartbeat.load_key(path)
    assert len(key) == heartbeat.KEY_BYTES
    other = tmp_path / "other.key"
    heartbeat.write_key(other)
    assert heartbeat.load_key(other) != key
    with pytest.raises(heartbeat.KeyFileError, match="exists"):
        heartbeat.write_key(path)
    assert heartbeat.load_key(path) == key  # left alone


def test_bad_key_files_are_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "hb.key"
    heartbeat.write_key(path)
    for mode in (0o644, 0o640, 0o604):
        path.chmod(mode)
        with pytest.raises(heartbeat.KeyFileError, match=f"open to group or others .*chmod 600 {path}"):
            heartbeat.load_key(path)
    for text in ("", "# only a comment\n", "abcd\n", "zz" * 32 + "\n", "ab" * 33 + "\n", "\x00" * 64):
        path.write_text(text)
        path.chmod(0o600)
        with pytest.raises(heartbeat.KeyFileError, match="not a heartbeat key .*failkey --heartbeat-key"):
            heartbeat.load_key(path)
    path.write_text("ab" * 4000)
    with pytest.raises(heartbeat.KeyFileError, match="larger than"):
        heartbeat.load_key(path)
    with pytest.raises(heartbeat.KeyFileError, match="cannot read"):
        heartbeat.load_key(tmp_path / "missing.key")
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(heartbeat.KeyFileError, match="FIFO"):
        heartbeat.load_key(fifo)  # refused, never waited on
    path.write_text("# comment\n" + "0f" * 16 + "\n" + "1e" * 16 + "\n")
    assert heartbeat.load_key(path) == bytes.fromhex("0f" * 16 + "1e" * 16)
