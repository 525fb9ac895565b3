"""Wire-to-model conversion (failover/model.py): every from_wire is strict, and the whole
'list' reply decoder is fuzzed like the request decoder (tests/test_protocol.py): any JSON
in, either a valid result or ProtocolError (BADREPLY), nothing else."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import json_paths, replaced

from failover import model, protocol
from failover.model import HostInfo, ServiceRecord, Transition
from failover.observe import feed
from failover.states import State

pytestmark = pytest.mark.fast

NOW = 1.7e9
RECORD = {"name": "web", "state": "UP", "last_change": NOW, "counter": 3}
HOST = {"name": "www1", "started": NOW - 100, "pid": 4242, "lease": 2.5}
TRANSITION = {"service": "web", "old": "RECOVER", "new": "UP", "time": NOW, "counter": 3, "reason": "started"}
LIST = {"v": 1, "id": 1, "ok": True, "host": HOST, "services": [RECORD, {**RECORD, "name": "db", "state": "FAIL"}]}


def test_valid_list_reply() -> None:
    host, records = model.list_from_wire(json.loads(json.dumps(LIST)))
    assert host == HostInfo(name="www1", started=NOW - 100, pid=4242, lease=2.5)
    assert records == [ServiceRecord("web", State.UP, NOW, 3), ServiceRecord("db", State.FAIL, NOW, 3)]
    assert model.list_from_wire({**LIST, "host": {**HOST, "lease": None}})[0].lease is None
    assert model.list_from_wire({**LIST, "services": []})[1] == []
    # unknown members are ignored (hc's monitor adds "hc" to each record)
    assert model.list_from_wire({**LIST, "services": [{**RECORD, "hc": {"x": 1}}], "new": 1})[1][0].name == "web"


def test_round_trip() -> None:
    rec = ServiceRecord("web", State.RECOVER, NOW, 7)
    assert ServiceRecord.from_wire(rec.to_wire()) == rec
    t = Transition("web", None, State.UP, NOW, 1, "first")
    assert Transition.from_wire(t.to_wire()) == t
    h = HostInfo("www1", NOW, 1)
    assert HostInfo.from_wire(h.to_wire()) == h and "lease" not in h.to_wire()


BAD_LIST = [
    (("services", 0, "name"), 123, "services[0].name"),
    (("services", 0, "name"), "", "services[0].name"),
    (("services", 0, "name"), "bad name", "services[0].name"),
    (("services", 0, "name"), "x" * 65, "services[0].name"),
    (("services", 0, "name"), ..., "services[0]: no 'name'"),
    (("services", 1, "name"), "web", "services[1].name: service 'web' twice"),
    (("services", 0, "state"), "BOGUS", "services[0].state"),
    (("services", 0, "state"), 1, "services[0].state"),
    (("services", 0, "last_change"), "yesterday", "services[0].last_change"),
    (("services", 0, "last_change"), math.nan, "services[0].last_change"),
    (("services", 0, "last_change"), math.inf, "services[0].last_change"),
    (("services", 0, "last_change"), 1e300, "services[0].last_change"),
    (("services", 0, "last_change"), -1, "services[0].last_change"),
    (("services", 0, "last_change"), 4102444801, "services[0].last_change"),
    (("services", 0, "last_change"), True, "services[0].last_change"),
    (("services", 0, "counter"), 1.5, "services[0].counter"),
    (("services", 0, "counter"), -1, "services[0].counter"),
    (("services", 0, "counter"), 2**63, "services[0].counter"),
    (("services", 0, "counter"), False, "services[0].counter"),
    (("services", 0), "web", "services[0]: expected an object"),
    (("services",), {"web": RECORD}, "reply.services: not a list"),
    (("services",), [RECORD] * 257, "services: not a list of at most 256"),
    (("services",), ..., "reply.services: not a list"),
    (("host",), [HOST], "reply.host: not an object"),
    (("host",), ..., "reply.host: not an object"),
    (("host", "name"), 7, "host.name"),
    (("host", "started"), math.nan, "host.started"),
    (("host", "pid"), 0, "host.pid"),
    (("host", "pid"), "1", "host.pid"),
    (("host", "lease"), -1, "host.lease"),
    (("host", "lease"), 1e9, "host.lease"),
    (("host", "lease"), "2", "host.lease"),
    (("changed",), "yes", "reply.changed"),
    (("history",), {}, "history: not a list"),
]


@pytest.mark.parametrize(("path", "value", "where"), BAD_LIST, ids=[f"{'.'.join(map(str, p))}={v!r}"[:60]
                                                                      for p, v, _ in BAD_LIST])
def test_bad_list_reply_names_the_field(path: tuple, value: object, where: str) -> None:
    reply = replaced(LIST, path, value)
    with pytest.raises(protocol.ProtocolError) as err:
        model.list_from_wire(reply)
    assert err.value.code == "BADREPLY"
    assert where in str(err.value), str(err.value)
    assert len(str(err.value)) < 300  # a bad value is shown cut short


BAD_TRANSITIONS = [
    ("time", math.nan), ("time", "now"), ("old", "SIDEWAYS"), ("old", ""), ("new", None), ("service", 5),
    ("reason", 5), ("reason", "x" * 257), ("counter", None),
]


@pytest.mark.parametrize(("key", "value"), BAD_TRANSITIONS)
def test_bad_transition(key: str, value: object) -> None:
    with pytest.raises(protocol.ProtocolError, match=rf"history\[0\]\.{key}|history\[0\]: no"):
        model.reply_from_wire({"history": [{**TRANSITION, key: value}]})


def test_reason_loses_control_characters() -> None:
    t = Transition.from_wire({**TRANSITION, "reason": "a\nfaild INFO forged\x1b[31m\x7f\x9b\u202e\ud800end"})
    assert t.reason == "a faild INFO forged[31m\ufffdend"
    assert Transition.from_wire({k: v for k, v in TRANSITION.items() if k != "reason"}).reason == ""


def test_request_reason_loses_control_characters() -> None:
    raw = json.dumps({"v": 1, "id": 1, "op": "set", "service": "web", "state": "UP",
                      "reason": "line1\r\nline2\x1b]0;title\x07\u2028x"}).encode()
    assert protocol.decode_request(raw).reason == "line1  line2]0;title x"


@pytest.mark.parametrize("text", ["", "plain text: ok", "\u00e9t\u00e9 \u4e2d\u6587 \U0001f600"])
def test_clean_text_keeps_printable_text(text: str) -> None:
    assert protocol.clean_text(text) == text


# Fuzz ---------------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4),
                    max_leaves=20)
WORDS = st.sampled_from(["web", "UP", "up ", "FAIL", "RECOVER", "", "bad name", "x" * 65, 0, 1, -1, 2**63, 1e300,
                         math.nan, math.inf, NOW, True, None, [], {}, RECORD, HOST, TRANSITION])


FULL = {**LIST, "history": [TRANSITION], "changed": True, "truncated": False}
PATHS = json_paths(FULL)


def _valid_or_badreply(reply: object) -> None:
    try:
        host, records = model.list_from_wire(reply)
    except protocol.ProtocolError as exc:
        assert exc.code == "BADREPLY" and len(str(exc)) < 300
    else:
        assert protocol.valid_name(host.name) and 0 < host.pid < 2**31
        assert len({r.name for r in records}) == len(records) <= protocol.MAX_SERVICES
        for r in records:
            assert protocol.valid_name(r.name) and isinstance(r.state, State)
            assert math.isfinite(r.last_change) and 0 <= r.last_change <= model.LATEST_TIME
            assert type(r.counter) is int and r.counter >= 0
        json.dumps([r.to_wire() for r in records], allow_nan=False)  # and it can be written out again
    try:
        parsed = model.reply_from_wire(reply)
    except protocol.ProtocolError as exc:
        assert exc.code == "BADREPLY"
    else:
        for t in parsed.history or []:
            assert protocol.clean_text(t.reason) == t.reason and math.isfinite(t.time)


@settings(max_examples=500, deadline=None)
@given(JSON)
def test_list_from_any_json(value: object) -> None:
    _valid_or_badreply(json.loads(json.dumps(value)))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), st.one_of(JSON, WORDS))
def test_list_with_any_member_replaced(path: tuple, value: object) -> None:
    _valid_or_badreply(replaced(FULL, path, value))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "type", "node", "x"]),
                       st.one_of(JSON, st.sampled_from([1, "change", "www1", True, 1.0])), max_size=4))
def test_change_hint_decoder(msg: dict) -> None:
    try:
        node = feed.decode_change(json.dumps(msg).encode())
    except ValueError:
        return
    assert protocol.valid_name(node)


@pytest.mark.parametrize("frame", [feed.CHANGE_TOPIC + b',"x":' + b"[" * 100000, b"\xff", b"[]",
                                   b'{"v":true,"type":"change","node":"a"}', b'{"v":1,"type":"change","node":"a b"}'])
def test_change_hint_decoder_rejects(frame: bytes) -> None:
    with pytest.raises(ValueError):
        feed.decode_change(frame)
