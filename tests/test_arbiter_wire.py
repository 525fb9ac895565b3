"""The failsafe's word on the wire (docs/protocol.md, docs/arbiter.md "Etcd entirely down"):
failsh's ``lease`` carries ``arbiter`` ("ok" | "unreachable"), faild returns it as
``host.arbiter`` while that lease lives, and both ends refuse anything else.  The real
faild handler (no socket: Faild.handle), the real parser of failsh's peer link."""

from __future__ import annotations

import json
from typing import Any

import pytest

from failover import protocol
from failover.faild import community
from failover.faild.server import Faild
from failover.faild.store import Store
from failover.model import HostInfo

pytestmark = pytest.mark.fast

HOST = HostInfo("www1", 1764079200.25, 812)


def frame(**fields: Any) -> bytes:
    return json.dumps({"v": 1, "id": 7, **fields}).encode()


def ask(f: Faild, raw: bytes) -> dict:
    return protocol.decode_reply(f.handle(raw))


def host_of(reply: dict) -> HostInfo:
    return HostInfo.from_wire(reply["host"])


def test_the_lease_carries_the_word_and_list_shows_it_while_it_lives() -> None:
    f = Faild(Store(None), community.DEFAULT_RULES, HOST, leases=True)
    reply = ask(f, protocol.encode(protocol.Request(op="lease", id=1, ttl=5, arbiter="unreachable").to_wire()))
    assert reply["host"]["arbiter"] == "unreachable"
    for op in ("list", "ping"):
        assert host_of(ask(f, frame(op=op))).arbiter == "unreachable"
    ask(f, frame(op="lease", ttl=5, arbiter="ok"))
    assert host_of(ask(f, frame(op="list"))).arbiter == "ok"
    ask(f, frame(op="lease", ttl=5))  # a failsh without an arbiter: nothing to say
    assert "arbiter" not in ask(f, frame(op="list"))["host"]
    ask(f, frame(op="lease", ttl=5, arbiter="ok"))
    ask(f, frame(op="lease", ttl=0))  # given up: its word goes with it
    listed = ask(f, frame(op="list"))["host"]
    assert listed["lease"] is None and "arbiter" not in listed


@pytest.mark.parametrize("fields", [
    {"op": "lease", "ttl": 5, "arbiter": "maybe"},
    {"op": "lease", "ttl": 5, "arbiter": True},
    {"op": "lease", "ttl": 5, "arbiter": ""},
    {"op": "ping", "arbiter": "ok"},  # only a lease says it
])
def test_faild_refuses_a_bad_word(fields: dict) -> None:
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.decode_request(frame(**fields))
    assert exc.value.code == "BADREQUEST" and "arbiter" in str(exc.value)


@pytest.mark.parametrize("host", [
    {"name": "www1", "started": 1.0, "pid": 5, "lease": 3.0, "arbiter": "down"},
    {"name": "www1", "started": 1.0, "pid": 5, "lease": 3.0, "arbiter": 1},
    {"name": "www1", "started": 1.0, "pid": 5, "lease": None, "arbiter": "ok"},  # no live lease, no word
])
def test_clients_refuse_a_bad_word(host: dict) -> None:
    with pytest.raises(protocol.ProtocolError, match=r"host\.arbiter"):
        HostInfo.from_wire(host)


def test_round_trip() -> None:
    info = HostInfo("www1", 1.0, 5, lease=3.0, arbiter="unreachable")
    assert HostInfo.from_wire(info.to_wire()) == info
    assert "arbiter" not in HostInfo("www1", 1.0, 5, lease=3.0).to_wire()
