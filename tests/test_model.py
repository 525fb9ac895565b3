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
from failover.listing import ListReader
from failover.model import HostInfo, LeaseEnd, MaintEntry, PreferEntry, ServiceRecord, Transition
from failover.observe import feed
from failover.states import State

pytestmark = pytest.mark.fast

NOW = 1.7e9
RECORD = {"name": "web", "state": "UP", "last_change": NOW, "counter": 3, "reason": "started", "by": "failsh"}
HOST = {"name": "www1", "started": NOW - 100, "pid": 4242, "lease": 2.5, "lease_end": {"why": "exited", "at": NOW}}
TRANSITION = {"service": "web", "old": "RECOVER", "new": "UP", "time": NOW, "counter": 3, "reason": "started",
              "by": "failc from 10.0.0.9"}
MAINTENANCE = {"*": {"since": NOW, "reason": "kernel update", "by": "failctl from 10.0.0.9"},
               "web": {"since": NOW - 5, "reason": "", "by": "failctl"}}
PREFER = {"web": {"host": "www2", "since": NOW, "reason": "move", "by": "failctl from 10.0.0.9"}}
LIST = {"v": 1, "id": 1, "ok": True, "host": HOST, "services": [RECORD, {**RECORD, "name": "db", "state": "FAIL"}],
        "maintenance": MAINTENANCE, "prefer": PREFER}


def test_valid_list_reply() -> None:
    host, records = model.list_from_wire(json.loads(json.dumps(LIST)))
    assert host == HostInfo(name="www1", started=NOW - 100, pid=4242, lease=2.5, lease_end=LeaseEnd("exited", NOW))
    assert records == [ServiceRecord("web", State.UP, NOW, 3, "started", "failsh"),
                       ServiceRecord("db", State.FAIL, NOW, 3, "started", "failsh")]
    assert model.list_from_wire({**LIST, "host": {**HOST, "lease": None}})[0].lease is None
    assert model.list_from_wire({**LIST, "services": []})[1] == []
    # unknown members are ignored (hc's monitor adds "hc" to each record)
    assert model.list_from_wire({**LIST, "services": [{**RECORD, "hc": {"x": 1}}], "new": 1})[1][0].name == "web"


def test_round_trip() -> None:
    rec = ServiceRecord("web", State.RECOVER, NOW, 7)
    assert ServiceRecord.from_wire(rec.to_wire()) == rec
    assert set(rec.to_wire()) == {"name", "state", "last_change", "counter"}  # "" reason and by left out
    rec = ServiceRecord("web", State.RECOVER, NOW, 7, "stopped by hand", "failc from 10.0.0.9")
    assert ServiceRecord.from_wire(rec.to_wire()) == rec
    t = Transition("web", None, State.UP, NOW, 1, "first")
    assert Transition.from_wire(t.to_wire()) == t and "by" not in t.to_wire()
    t = Transition("web", None, State.UP, NOW, 1, "first", "hc")
    assert Transition.from_wire(t.to_wire()) == t
    h = HostInfo("www1", NOW, 1)
    assert HostInfo.from_wire(h.to_wire()) == h and h.to_wire()["lease"] is None and "lease_end" not in h.to_wire()
    # a server without leases (hc's monitor, failsh's control port) sends no "lease" member
    h = HostInfo("www1", NOW, 1, leases=False)
    assert HostInfo.from_wire(h.to_wire()) == h and "lease" not in h.to_wire()
    h = HostInfo("www1", NOW, 1, None, LeaseEnd("released", NOW))
    assert HostInfo.from_wire(h.to_wire()) == h
    m = MaintEntry(NOW, "disk", "failctl")
    assert MaintEntry.from_wire(m.to_wire()) == m
    p = PreferEntry("www2", NOW, "move", "failctl")
    assert PreferEntry.from_wire(p.to_wire()) == p


def test_flags_of_a_reply() -> None:
    reply = model.reply_from_wire(json.loads(json.dumps(LIST)))
    assert reply.maintenance == {"*": MaintEntry(NOW, "kernel update", "failctl from 10.0.0.9"),
                                 "web": MaintEntry(NOW - 5, "", "failctl")}
    assert reply.prefer == {"web": PreferEntry("www2", NOW, "move", "failctl from 10.0.0.9")}
    # absent or null: none (an older faild, or nothing set); entries' reason and by are optional
    for bare in ({k: v for k, v in LIST.items() if k not in ("maintenance", "prefer")},
                 {**LIST, "maintenance": None, "prefer": None}):
        parsed = model.reply_from_wire(bare)
        assert parsed.maintenance == {} and parsed.prefer == {}
    parsed = model.reply_from_wire({"maintenance": {"web": {"since": NOW}}, "prefer": {"web": {"host": "a",
                                                                                           "since": NOW}}})
    assert parsed.maintenance["web"] == MaintEntry(NOW) and parsed.prefer["web"] == PreferEntry("a", NOW)
    # text from outside loses its control characters
    dirty = {"since": NOW, "reason": "a\nb\x1b[2J", "by": "x\ry"}
    parsed = model.reply_from_wire({"maintenance": {"web": dirty}, "prefer": {"web": {**dirty, "host": "h"}}})
    assert parsed.maintenance["web"] == MaintEntry(NOW, "a b[2J", "x y")
    assert parsed.prefer["web"].reason == "a b[2J"


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
    (("services",), [RECORD] * (protocol.MAX_PAGE + 1), "services: not a list of at most 2048"),
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
    (("services", 0, "reason"), 5, "services[0].reason"),
    (("services", 0, "reason"), "r" * 257, "services[0].reason"),
    (("services", 0, "by"), ["failc"], "services[0].by"),
    (("services", 0, "by"), "b" * 81, "services[0].by"),
    (("host", "lease_end"), "released", "host.lease_end: expected an object"),
    (("host", "lease_end", "why"), "killed", "host.lease_end.why"),
    (("host", "lease_end", "why"), ..., "host.lease_end: no 'why'"),
    (("host", "lease_end", "at"), math.nan, "host.lease_end.at"),
    (("host", "lease_end", "at"), "now", "host.lease_end.at"),
    (("maintenance",), [], "maintenance: expected an object"),
    (("maintenance",), {"bad name": {"since": NOW}}, "maintenance: not '*' or a service name"),
    (("maintenance",), {f"s{i}": {"since": NOW} for i in range(model.MAX_MAINT + 1)}, "maintenance: more than"),
    (("maintenance", "*"), "on", "maintenance[*]: expected an object"),
    (("maintenance", "*", "since"), ..., "maintenance[*]: no 'since'"),
    (("maintenance", "*", "since"), -5, "maintenance[*].since"),
    (("maintenance", "web", "reason"), 1, "maintenance[web].reason"),
    (("maintenance", "web", "by"), "x" * 81, "maintenance[web].by"),
    (("prefer",), "www2", "prefer: expected an object"),
    (("prefer",), {"*": {"host": "www2", "since": NOW}}, "prefer: not a service name"),
    (("prefer",), {f"s{i}": {"host": "h", "since": NOW} for i in range(model.MAX_PREFER + 1)},
     "prefer: more than"),
    (("prefer", "web", "host"), None, "prefer[web].host"),
    (("prefer", "web", "host"), "www 2", "prefer[web].host"),
    (("prefer", "web", "since"), True, "prefer[web].since"),
    (("prefer", "web", "reason"), "r" * 257, "prefer[web].reason"),
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


PAGE = {**LIST, "services": [{**RECORD, "name": "db"}, RECORD], "counter": 12, "count": 40, "more": True}
BAD_PAGE = [
    (("counter",), -1, "reply.counter"),
    (("counter",), 1.0, "reply.counter"),
    (("counter",), True, "reply.counter"),
    (("counter",), 2**63, "reply.counter"),
    (("count",), protocol.MAX_SERVICES + 1, "reply.count"),
    (("count",), "40", "reply.count"),
    (("more",), 1, "reply.more"),
    (("more",), "false", "reply.more"),
    (("more",), ..., "a page needs all of"),
    (("counter",), ..., "" if False else "a page needs all of"),  # count and more without counter
    (("services",), [RECORD, {**RECORD, "name": "db"}], "reply.services[1].name: 'db' not after 'web'"),
    (("prefer",), ..., "both 'maintenance' and 'prefer' or neither"),
    (("maintenance",), ..., "both 'maintenance' and 'prefer' or neither"),
]


@pytest.mark.parametrize(("path", "value", "where"), BAD_PAGE, ids=[f"{'.'.join(map(str, p))}={v!r}"[:60]
                                                                      for p, v, _ in BAD_PAGE])
def test_bad_page_names_the_field(path: tuple, value: object, where: str) -> None:
    with pytest.raises(protocol.ProtocolError) as err:
        model.page_from_wire(replaced(PAGE, path, value))
    assert err.value.code == "BADREPLY"
    assert where in str(err.value), str(err.value)


def test_valid_pages() -> None:
    page = model.page_from_wire(json.loads(json.dumps(PAGE)))
    assert (page.counter, page.count, page.more, [r.name for r in page.services]) == (12, 40, True, ["db", "web"])
    assert page.maintenance is not None and set(page.maintenance) == {"*", "web"}
    bare = {k: v for k, v in PAGE.items() if k not in ("maintenance", "prefer")}
    assert model.page_from_wire(bare).maintenance is None  # unchanged: not in this page
    assert model.page_from_wire({**bare, "maintenance": {}, "prefer": {}}).maintenance == {}
    legacy = {k: v for k, v in LIST.items() if k not in ("maintenance", "prefer")}
    page = model.page_from_wire(legacy)  # an un-paged list: no flags means none
    assert page.counter is None and page.maintenance == {} and page.prefer == {} and len(page.services) == 2


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
                         math.nan, math.inf, NOW, True, None, [], {}, RECORD, HOST, TRANSITION, "*", "released",
                         "expired", "r\x1b" * 100, MAINTENANCE, PREFER])


FULL = {**LIST, "history": [TRANSITION], "changed": True, "truncated": False, "counter": 9, "count": 2,
        "more": True}
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
    _page_or_badreply(reply)
    try:
        parsed = model.reply_from_wire(reply)
    except protocol.ProtocolError as exc:
        assert exc.code == "BADREPLY"
    else:
        assert parsed.counter is None or type(parsed.counter) is int and 0 <= parsed.counter <= model.MAX_COUNTER
        assert parsed.count is None or type(parsed.count) is int and 0 <= parsed.count <= protocol.MAX_SERVICES
        assert parsed.more in (None, True, False)
        for t in parsed.history or []:
            assert protocol.clean_text(t.reason) == t.reason and math.isfinite(t.time)
            assert protocol.clean_text(t.by) == t.by and len(t.by) <= model.MAX_BY
        for r in parsed.services or []:
            assert protocol.clean_text(r.reason) == r.reason and len(r.reason) <= model.MAX_REASON
            assert protocol.clean_text(r.by) == r.by and len(r.by) <= model.MAX_BY
        if parsed.host is not None and parsed.host.lease_end is not None:
            assert parsed.host.lease_end.why in model.LEASE_END_WHY and math.isfinite(parsed.host.lease_end.at)
        assert len(parsed.maintenance) <= model.MAX_MAINT and len(parsed.prefer) <= model.MAX_PREFER
        for key, m in parsed.maintenance.items():
            assert key == protocol.HOST_WIDE or protocol.valid_name(key)
            assert math.isfinite(m.since) and protocol.clean_text(m.reason) == m.reason and len(m.by) <= model.MAX_BY
        for key, pe in parsed.prefer.items():
            assert protocol.valid_name(key) and protocol.valid_name(pe.host) and math.isfinite(pe.since)
        json.dumps({k: m.to_wire() for k, m in parsed.maintenance.items()}, allow_nan=False)


def _page_or_badreply(reply: object) -> None:
    """page_from_wire, and a ListReader taking the page as the answer to each request it may send."""
    try:
        page = model.page_from_wire(reply)
    except protocol.ProtocolError as exc:
        assert exc.code == "BADREPLY" and len(str(exc)) < 300
        return
    names = [r.name for r in page.services]
    assert len(set(names)) == len(names) <= protocol.MAX_PAGE
    if page.counter is None:
        assert page.maintenance is not None and page.prefer is not None and not page.more
    else:
        assert names == sorted(names) and page.count is not None
        assert (page.maintenance is None) == (page.prefer is None)
    for asked in ({"after": ""}, {"since": 3}, {"after": "db"}):
        reader = ListReader()
        reader.counter = asked.get("since")  # type: ignore[assignment]
        try:
            done = reader.take(asked if "after" not in asked or asked["after"] == "" else {"after": ""}, page)
        except protocol.ProtocolError as exc:
            assert exc.code == "BADREPLY"
            continue
        if done:
            assert reader.complete and set(reader.records) >= set(names) - {""} or reader.counter is not None


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
