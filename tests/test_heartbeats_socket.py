"""failsh's heartbeat socket in-process (failover/shell/heartbeats.py): two of them on
127.0.0.1 and 127.0.0.2 (the same port, as on a cluster), the liveness rule on a PeerLink,
change announcements, and every kind of bad datagram dropped and counted, never raised.
The same with real failsh processes: tests/test_heartbeats_bed.py."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import attrs
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from support import free_port, wait_for

from failover import heartbeat
from failover.heartbeat import Heartbeat
from failover.model import ServiceRecord
from failover.observe import metrics
from failover.shell import heartbeats
from failover.shell.heartbeats import Heartbeats
from failover.shell.peerlink import PeerLink, PeerSpec
from failover.shell.view import DOWN, UP
from failover.states import State

pytestmark = pytest.mark.fast

KEY = os.urandom(heartbeat.KEY_BYTES)
DEAD = 1.0


def dropped(reason: str) -> float:
    return metrics.FAILSH.get_sample_value("failover_heartbeats_dropped_total", {"reason": reason}) or 0.0


def polls(host: str) -> float:
    return metrics.FAILSH.get_sample_value("failover_heartbeat_polls_total", {"host": host}) or 0.0


@attrs.define
class Pair:
    """Host a (127.0.0.1) sends to host b (127.0.0.2); b's PeerLink of a; a's local faild."""

    a: Heartbeats
    b: Heartbeats
    link: PeerLink        # b's view of a
    local: PeerLink       # a's view of its own faild
    port: int

    def beat(self, **kw: object) -> list[str]:
        """a sends now (every target due); what b reads, after it arrived."""
        for t in self.a._targets.values():
            t.next = 0.0
        self.a.send(time.monotonic(), self.local, **kw)  # type: ignore[arg-type]
        return self.read()

    def read(self) -> list[str]:
        wait_for(lambda: _readable(self.b), 2, "a datagram for b")
        return self.b.receive({"a": self.link}, time.monotonic())

    def raw(self, data: bytes) -> list[str]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, ("127.0.0.2", self.port))
        return self.read()


def _readable(hb: Heartbeats) -> bool:
    import select
    assert hb.sock is not None
    return bool(select.select([hb.sock], [], [], 0.05)[0])


def _spec(name: str, addr: str) -> PeerSpec:
    return PeerSpec(name, f"tcp://{addr}:{free_port()}", DEAD / 2.5, DEAD)


@pytest.fixture
def pair() -> Iterator[Pair]:
    port = free_port()
    a, b = Heartbeats(KEY, "a", port, "127.0.0.1"), Heartbeats(KEY, "b", port, "127.0.0.2")
    ctx = zmq.Context()
    poller = zmq.Poller()
    try:
        a.open()
        b.open()
    except OSError as exc:
        ctx.destroy(linger=0)
        pytest.skip(f"no second loopback address here: {exc}")
    now = time.monotonic()
    a.sync([_spec("b", "127.0.0.2")])
    b.sync([_spec("a", "127.0.0.1")])
    local = PeerLink(_spec("a", "127.0.0.1"), ctx, poller, now)
    local.last_ok = now
    local.view = attrs.evolve(local.view, status=UP, started=1.7e9, lease=2.0,
                              services={"web": ServiceRecord("web", State.UP, 1.7e9, 7)})
    link = PeerLink(_spec("a", "127.0.0.1"), ctx, poller, now)
    try:
        yield Pair(a, b, link, local, port)
    finally:
        a.close()
        b.close()
        for p in (link, local):
            p.close(poller)
        ctx.destroy(linger=0)


def _answered(link: PeerLink, like: PeerLink) -> None:
    """b's poll of a was answered just now, showing what a's own faild shows."""
    now = time.monotonic()
    link.last_ok = link.answered = now
    link.view = attrs.evolve(like.view)


def test_a_heartbeat_makes_a_silent_peer_polled_not_up(pair: Pair) -> None:
    assert pair.beat() == ["a"]  # never answered a poll yet: poll it now
    assert pair.link.view.status != UP  # a heartbeat alone never makes it UP
    assert pair.link.heard > 0


def test_heartbeats_keep_a_peer_alive_while_its_polls_are_lost(pair: Pair) -> None:
    _answered(pair.link, pair.local)
    pair.link.last_ok = time.monotonic() - 3 * DEAD  # polls lost for three dead times
    pair.local.last_ok = time.monotonic()             # a's own faild answers a
    assert pair.beat() == []  # nothing changed: no poll needed
    assert not pair.link.expire(time.monotonic())
    assert pair.link.view.status == UP
    time.sleep(DEAD + 0.1)  # then no heartbeat either: FAIL
    assert pair.link.expire(time.monotonic())
    assert pair.link.view.status == DOWN


def test_a_heartbeat_vouches_only_for_its_faild_s_last_answer(pair: Pair) -> None:
    """a's faild died: a's failsh still sends, but says its faild answered long ago."""
    _answered(pair.link, pair.local)
    pair.link.last_ok = pair.local.last_ok = time.monotonic() - 2 * DEAD
    pair.beat()
    assert pair.link.expire(time.monotonic())


def test_a_change_asks_for_polls_until_one_sent_after_it_is_answered(pair: Pair) -> None:
    _answered(pair.link, pair.local)
    before = polls("a")
    assert pair.beat() == []   # b's view is as new as the heartbeat
    record = ServiceRecord("web", State.FAIL, 1.7e9, 8)
    pair.local.view = attrs.evolve(pair.local.view, services={"web": record})
    assert pair.beat() == ["a"]  # counter 7 -> 8: poll now
    assert pair.beat() == ["a"]  # still not read: again
    assert polls("a") == before + 2
    _answered(pair.link, pair.local)
    assert pair.beat() == []
    for change in ({"lease": None}, {"started": 1.8e9}):  # the lease gone, a new faild
        pair.local.view = attrs.evolve(pair.local.view, **change)
        assert pair.beat() == ["a"], change
        _answered(pair.link, pair.local)
        assert pair.beat() == []


def test_a_second_change_is_polled_even_if_the_first_one_s_poll_was_answered(pair: Pair) -> None:
    """Two changes within one heartbeat period: the answer to the poll the first one asked
    for says nothing of the second."""
    _answered(pair.link, pair.local)
    pair.beat()
    for counter in (8, 9):
        record = ServiceRecord("web", State.UP, 1.7e9, counter)
        pair.local.view = attrs.evolve(pair.local.view, services={"web": record})
        assert pair.beat() == ["a"], counter
        time.sleep(0.01)
        _answered(pair.link, pair.local)  # the poll's answer: sent after the change, before the next
    assert pair.beat() == []


def test_a_change_that_cannot_be_read_counts_fail_after_a_dead_time(pair: Pair) -> None:
    _answered(pair.link, pair.local)
    pair.beat()
    pair.local.view = attrs.evolve(pair.local.view, lease=None)  # a gave up its lease ...
    assert pair.beat() == ["a"]
    deadline = time.monotonic() + DEAD + 0.3
    while time.monotonic() < deadline:  # ... and b's polls of a get lost, heartbeats pass
        pair.local.last_ok = time.monotonic()
        pair.beat()
        time.sleep(0.05)
    assert pair.link.expire(time.monotonic())


def test_giving_up_the_lease_is_sent_at_once(pair: Pair) -> None:
    _answered(pair.link, pair.local)
    pair.beat()
    for t in pair.a._targets.values():
        t.next = time.monotonic() + 60  # not due
    pair.a.send(time.monotonic(), pair.local, lease_off=True)
    assert pair.read() == ["a"]


def test_nothing_is_sent_before_the_local_faild_answered(pair: Pair) -> None:
    pair.local.last_ok = None
    now = time.monotonic()
    pair.a.send(now, pair.local)
    assert not _readable(pair.b)
    assert pair.a.next_due() > now  # and the network thread does not spin meanwhile


def test_bad_datagrams_are_dropped_and_counted(pair: Pair) -> None:
    good = Heartbeat("a", time.time_ns(), 1.7e9, 2.0, 7)
    before = {r: dropped(r) for r in ("malformed", "signature", "replay", "clock", "unknown-host")}
    cases = [
        (b"", "malformed"), (b"GET / HTTP/1.0\r\n\r\n", "malformed"), (os.urandom(60000), "malformed"),
        (heartbeat.encode(os.urandom(heartbeat.KEY_BYTES), good), "signature"),  # another key: forged
        (heartbeat.encode(KEY, good)[:-1] + b"x", "signature"),
        (heartbeat.encode(KEY, attrs.evolve(good, node="zz")), "unknown-host"),  # a host b does not serve with
        (heartbeat.encode(KEY, attrs.evolve(good, node="b")), "unknown-host"),   # b itself
        (heartbeat.encode(KEY, attrs.evolve(good, seq=1)), "clock"),
    ]
    for data, reason in cases:
        heard = pair.link.heard
        assert pair.raw(data) == [], reason
        assert dropped(reason) > before[reason], reason
        assert pair.link.heard == heard, reason  # no sign of life from any of them
        before[reason] = dropped(reason)
    data = heartbeat.encode(KEY, good)
    pair.raw(data)
    heard = pair.link.heard
    assert pair.raw(data) == []  # the same datagram again: replayed
    assert dropped("replay") == before["replay"] + 1
    assert pair.link.heard == heard


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_no_datagram_raises(data: bytes) -> None:
    port = free_port()
    hb = Heartbeats(KEY, "b", port, "127.0.0.1")
    hb.open()
    try:
        hb.sync([_spec("a", "127.0.0.2")])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, ("127.0.0.1", port))
        wait_for(lambda: _readable(hb), 2, "the datagram")
        assert hb.receive({}, time.monotonic()) == []
    finally:
        hb.close()


def test_periods_and_names() -> None:
    assert heartbeats.period_for(2.5) == 0.25
    assert heartbeats.period_for(0.05) == heartbeats.MIN_PERIOD
    assert heartbeats.period_for(3600) == heartbeats.MAX_PERIOD
    hb = Heartbeats(KEY, "b", free_port(), "127.0.0.1")
    hb.open()
    try:
        hb.sync([PeerSpec("a", "tcp://localhost:1847", 1, 2.5), PeerSpec("c", "ipc:///tmp/x", 1, 2.5),
                 PeerSpec("b", "tcp://127.0.0.1:1847", 1, 2.5)])
        assert set(hb._targets) == {"a"}  # not itself, not a non-TCP endpoint
        wait_for(lambda: hb.addresses("localhost"), 5, "localhost resolved in the background")
    finally:
        hb.close()
