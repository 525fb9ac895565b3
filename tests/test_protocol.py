"""The wire format (failover/protocol.py) and faild's request handler, in-process.

docs/protocol.md is the specification these tests hold the code to.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failover import model, protocol
from failover.faild import community
from failover.faild.server import Faild, changed_by
from failover.faild.store import Store
from failover.listing import ListReader
from failover.model import HostInfo, ServiceRecord, Transition
from failover.states import State

pytestmark = pytest.mark.fast

HOST = HostInfo(name="h1", started=1700000000.5, pid=4242)


def frame(**fields: Any) -> bytes:
    return json.dumps({"v": 1, "id": 7, **fields}).encode()


def make_faild(rules: community.Rules = community.DEFAULT_RULES) -> Faild:
    return Faild(Store(None), rules, HOST, leases=True)


def ask(f: Faild, raw: bytes) -> dict:
    out = f.handle(raw)
    assert len(out) <= protocol.MAX_MESSAGE
    return protocol.decode_reply(out)


# Requests ----------------------------------------------------------------

@pytest.mark.parametrize("request_", [
    protocol.Request(op="ping", id=1),
    protocol.Request(op="get", id="a-1", service="web"),
    protocol.Request(op="list", id=2, community="secret"),
    protocol.Request(op="set", id=3, service="db.main", state=State.RECOVER, reason="maintenance"),
    protocol.Request(op="history", id=4, service="web", limit=5),
    protocol.Request(op="history", id=5),
    protocol.Request(op="loglevel", id=6, facility="server", level="debug"),
    protocol.Request(op="maint", id=7, on=True, reason="kernel update", agent="failctl"),
    protocol.Request(op="maint", id=8, on=False, service="web"),
    protocol.Request(op="prefer", id=9, service="web", host="www2", reason="move", agent="failctl"),
    protocol.Request(op="prefer", id=10, service="web", host=None),
    protocol.Request(op="set", id=11, service="web", state=State.FAIL, agent="hc"),
    protocol.Request(op="list", id=12, after=""),
    protocol.Request(op="list", id=13, after="web", since=0),
    protocol.Request(op="list", id=14, since=2**63 - 1),
])
def test_request_round_trip(request_: protocol.Request) -> None:
    assert protocol.decode_request(protocol.encode(request_.to_wire())) == request_


def test_defaults_and_state_spelling() -> None:
    req = protocol.decode_request(frame(op="set", service="web", state=" up "))
    assert req.state is State.UP
    assert req.community == protocol.DEFAULT_COMMUNITY
    assert req.limit == 100
    assert protocol.decode_request(frame(op="ping", id="x" * 64)).id == "x" * 64


@pytest.mark.parametrize(("raw", "code"), [
    (b"", "BADJSON"),
    (b"\xff\xfe\x00garbage", "BADJSON"),
    (b"{not json", "BADJSON"),
    (b"\xef\xbb\xbf{}", "BADJSON"),                       # a BOM is not UTF-8 JSON text
    (b'{"v":1,"id":' + b"1" * 5000 + b',"op":"ping"}', "BADJSON"),  # int beyond 4300 digits
    (b"[" * 100000 + b"]" * 100000, "TOOBIG"),
    (b"[" * 30000 + b"]" * 30000, "BADJSON"),             # nesting: RecursionError
    (b"[1, 2]", "BADREQUEST"),
    (b'"ping"', "BADREQUEST"),
    (frame(op="ping", v=2), "VERSION"),
    (frame(op="ping", v="1"), "VERSION"),
    (frame(op="ping", v=True), "VERSION"),
    (frame(op="ping", v=None), "VERSION"),
    (json.dumps({"id": 1, "op": "ping"}).encode(), "VERSION"),
    (frame(op="ping", id=None), "BADREQUEST"),
    (frame(op="ping", id=True), "BADREQUEST"),
    (frame(op="ping", id=1.5), "BADREQUEST"),
    (frame(op="ping", id="x" * 65), "BADREQUEST"),
    (frame(op="reboot"), "BADOP"),
    (frame(op=["get"]), "BADOP"),
    (frame(op={"a": 1}), "BADOP"),
    (frame(op=None), "BADOP"),
    (frame(op="get"), "BADREQUEST"),
    (frame(op="get", service=None), "BADREQUEST"),
    (frame(op="get", service=""), "BADREQUEST"),
    (frame(op="get", service="bad name"), "BADREQUEST"),
    (frame(op="get", service="x" * 65), "BADREQUEST"),
    (frame(op="get", service="web/../etc"), "BADREQUEST"),
    (frame(op="get", service=17), "BADREQUEST"),
    (frame(op="set", service="web"), "BADREQUEST"),
    (frame(op="set", service="web", state="DOWN"), "BADSTATE"),
    (frame(op="set", service="web", state=1), "BADREQUEST"),
    (frame(op="set", service="web", state="UP", reason=5), "BADREQUEST"),
    (frame(op="set", service="web", state="UP", reason="r" * 257), "BADREQUEST"),
    (frame(op="list", community=["public"]), "BADREQUEST"),
    (frame(op="history", limit=0), "BADREQUEST"),
    (frame(op="history", limit=1001), "BADREQUEST"),
    (frame(op="history", limit="5"), "BADREQUEST"),
    (frame(op="history", limit=True), "BADREQUEST"),
    (frame(op="loglevel", facility="all", level=""), "BADREQUEST"),
    (frame(op="loglevel", facility="all"), "BADREQUEST"),
    (frame(op="maint"), "BADREQUEST"),
    (frame(op="maint", on=None), "BADREQUEST"),
    (frame(op="maint", on=1), "BADREQUEST"),
    (frame(op="maint", on="true"), "BADREQUEST"),
    (frame(op="maint", on=True, service="bad name"), "BADREQUEST"),
    (frame(op="maint", on=True, reason="r" * 257), "BADREQUEST"),
    (frame(op="prefer", host="www2"), "BADREQUEST"),
    (frame(op="prefer", service="web"), "BADREQUEST"),          # "host" must be there (null clears)
    (frame(op="prefer", service="web", to="www2"), "BADREQUEST"),
    (frame(op="prefer", service="web", host="www 2"), "BADREQUEST"),
    (frame(op="prefer", service="web", host=""), "BADREQUEST"),
    (frame(op="prefer", service="web", host=["www2"]), "BADREQUEST"),
    (frame(op="ping", agent=7), "BADREQUEST"),
    (frame(op="ping", agent="fail ctl"), "BADREQUEST"),
    (frame(op="ping", agent="a" * 33), "BADREQUEST"),
    (frame(op="ping", agent="x\u001b"), "BADREQUEST"),
    (frame(op="list", on="maybe"), "BADREQUEST"),               # type-checked on any op
    (frame(op="list", after="bad name"), "BADREQUEST"),
    (frame(op="list", after="x" * 65), "BADREQUEST"),
    (frame(op="list", after=5), "BADREQUEST"),
    (frame(op="list", after=["web"]), "BADREQUEST"),
    (frame(op="list", since=-1), "BADREQUEST"),
    (frame(op="list", since=2**63), "BADREQUEST"),
    (frame(op="list", since=1.0), "BADREQUEST"),
    (frame(op="list", since="5"), "BADREQUEST"),
    (frame(op="list", since=True), "BADREQUEST"),
    (frame(op="ping", since=False), "BADREQUEST"),              # type-checked on any op
])
def test_decode_rejects(raw: bytes, code: str) -> None:
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_request(raw)
    assert info.value.code == code
    assert len(str(info.value)) < 300


def test_error_keeps_request_id_when_it_is_valid() -> None:
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_request(frame(op="reboot", id="abc"))
    assert info.value.request_id == "abc"
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_request(frame(op="ping", v=9, id=["not", "an", "id"]))
    assert (info.value.code, info.value.request_id) == ("VERSION", None)


# Replies -----------------------------------------------------------------

def test_decode_reply() -> None:
    ok = protocol.decode_reply(protocol.encode(protocol.ok_reply(3, host={"name": "x"})))
    assert ok["ok"] is True and ok["id"] == 3
    err = protocol.decode_reply(protocol.encode(protocol.error_reply(3, "DENIED", "no")))
    assert (err["ok"], err["error"], err["message"]) == (False, "DENIED", "no")
    for bad in (b'{"v":2,"ok":true}', b'{"v":1}', b'{"v":1,"ok":false}', b"[]", b"\xff"):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode_reply(bad)


def test_encode_ok_matches_encode() -> None:
    fields = {"host": {"name": "h", "started": 1.25, "pid": 1, "lease": None}, "services": []}
    fast = protocol.encode_ok("id-1", ",".join(f'"{k}":{protocol.dumps(v)}' for k, v in fields.items()))
    assert fast == protocol.encode(protocol.ok_reply("id-1", **fields))


# The request handler (server.Faild.handle), without sockets ---------------

def test_handler_get_list_set_history() -> None:
    f = make_faild()
    assert ask(f, frame(op="get", service="web"))["error"] == "NOSERVICE"
    r = ask(f, frame(op="set", service="web", state="up", reason="test"))
    assert r["ok"] and r["changed"] and r["services"][0]["state"] == "UP"
    assert r["services"][0]["counter"] == 1
    assert ask(f, frame(op="set", service="web", state="UP"))["changed"] is False
    ask(f, frame(op="set", service="db", state="FAIL"))
    r = ask(f, frame(op="get", service="web"))
    assert r["host"]["name"] == "h1" and r["host"]["lease"] is None
    assert [(s["name"], s["state"], s["counter"]) for s in r["services"]] == [("web", "UP", 1)]
    r = ask(f, frame(op="list"))
    assert [(s["name"], s["state"]) for s in r["services"]] == [("db", "FAIL"), ("web", "UP")]
    ask(f, frame(op="set", service="web", state="RECOVER"))
    # the get/list cache must follow the change
    assert ask(f, frame(op="get", service="web"))["services"][0]["state"] == "RECOVER"
    assert [s["state"] for s in ask(f, frame(op="list"))["services"]] == ["FAIL", "RECOVER"]
    h = ask(f, frame(op="history", service="web"))["history"]
    assert [(t["old"], t["new"], t["counter"]) for t in h] == [(None, "UP", 1), ("UP", "RECOVER", 3)]
    assert h[0]["reason"] == "test"
    assert len(ask(f, frame(op="history", limit=2))["history"]) == 2


def test_handler_fast_path_equals_dict_encoding() -> None:
    f = make_faild()
    ask(f, frame(op="set", service="web", state="UP"))
    rec = f.store.get("web")
    assert rec is not None
    out = f.handle(frame(op="get", service="web", id="q"))
    assert out == protocol.encode(protocol.ok_reply("q", host={**HOST.to_wire(), "lease": None},
                                                    services=[rec.to_wire()]))


def test_handler_loglevel() -> None:
    f = make_faild()
    assert ask(f, frame(op="loglevel", facility="protocol", level="debug"))["ok"]
    r = ask(f, frame(op="loglevel", facility="nonsense", level="debug"))
    assert r["error"] == "BADREQUEST" and "facility" in r["message"]
    ask(f, frame(op="loglevel", facility="protocol", level="info"))


def test_handler_communities() -> None:
    rules = community.parse("""
        *    reader  RO
        *    admin   RW
        web  reader  RW   # a service line beats the '*' line
        db   admin   RO
        app  apponly RO
    """)
    f = make_faild(rules)
    assert ask(f, frame(op="set", service="db", state="UP", community="admin"))["error"] == "DENIED"
    assert ask(f, frame(op="set", service="app", state="UP", community="admin"))["ok"]
    assert ask(f, frame(op="set", service="web", state="UP", community="reader"))["ok"]
    assert ask(f, frame(op="set", service="app", state="FAIL", community="reader"))["error"] == "DENIED"
    assert ask(f, frame(op="get", service="app", community="reader"))["ok"]
    assert ask(f, frame(op="get", service="web", community="apponly"))["error"] == "DENIED"
    names = [s["name"] for s in ask(f, frame(op="list", community="apponly"))["services"]]
    assert names == ["app"]
    for op in ("list", "history"):
        assert ask(f, frame(op=op, community="public"))["error"] == "DENIED"
    assert ask(f, frame(op="get", service="app", community="public"))["error"] == "DENIED"
    assert ask(f, frame(op="loglevel", facility="all", level="info", community="reader"))["error"] == "DENIED"
    assert ask(f, frame(op="ping", community="anything"))["ok"]  # ping is not access-checked


def test_history_reply_is_cut_to_fit() -> None:
    f = make_faild()
    for i in range(500):
        f.store.set(f"s{i % 200}-" + "x" * 58, State.UP if i % 2 else State.FAIL, reason="r" * 256)
    r = ask(f, frame(op="history", limit=1000))
    assert r["truncated"] is True
    assert 50 < len(r["history"]) < 500
    assert r["history"][-1]["counter"] == f.store.counter  # the newest are kept
    assert ask(f, frame(op="history", limit=3))["truncated"] is False


def test_service_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_SERVICES", 300)  # the real one is 100,000
    f = make_faild()
    for i in range(protocol.MAX_SERVICES):
        f.store.set(f"svc{i}-" + "n" * 50, State.RECOVER)
    assert ask(f, frame(op="set", service="one-too-many", state="UP"))["error"] == "LIMIT"
    assert ask(f, frame(op="set", service="svc0-" + "n" * 50, state="UP"))["ok"]  # existing: fine
    assert ask(f, frame(op="list"))["error"] == "TOOBIG"  # more than an un-paged reply carries
    page = ask(f, frame(op="list", after=""))  # a paged read: all 300 fit in one page
    assert (len(page["services"]), page["count"], page["more"]) == (300, 300, False)


class DictStore:
    """The least a store needs for Faild to serve it (server.StateStore): no file, no Store."""

    def __init__(self) -> None:
        self.records: dict[str, ServiceRecord] = {}
        self.history: list[Transition] = []
        self.counter = 0

    def get(self, name: str) -> ServiceRecord | None:
        return self.records.get(name)

    def __len__(self) -> int:
        return len(self.records)

    def all(self) -> list[ServiceRecord]:
        return [self.records[n] for n in sorted(self.records)]

    def set(self, name: str, state: State, reason: str = "", by: str = "") -> tuple[ServiceRecord, bool]:
        old = self.records.get(name)
        if old is not None and old.state is state:
            return old, False
        self.counter += 1
        rec = self.records[name] = ServiceRecord(name, state, 1700000000.0 + self.counter, self.counter)
        self.history.append(Transition(name, old.state if old else None, state, rec.last_change, self.counter, reason))
        return rec, True


# maint and prefer: the handler, without sockets ----------------------------------

def test_handler_maint_of_a_service_and_of_the_host() -> None:
    f = make_faild()
    ask(f, frame(op="set", service="web", state="UP"))
    assert "maintenance" not in ask(f, frame(op="list"))  # none: the member is left out
    r = ask(f, frame(op="maint", on=True, service="web", reason="disk swap", agent="failctl"))
    assert r["ok"] and r["changed"] is True and "services" not in r
    assert set(r["maintenance"]) == {"web"} and r["maintenance"]["web"]["reason"] == "disk swap"
    assert r["maintenance"]["web"]["by"] == "failctl"  # no socket here: no address
    since = r["maintenance"]["web"]["since"]
    again = ask(f, frame(op="maint", on=True, service="web", reason="another reason"))
    assert again["changed"] is False and again["maintenance"]["web"]["since"] == since  # idempotent, kept
    assert again["maintenance"]["web"]["reason"] == "disk swap"
    r = ask(f, frame(op="maint", on=True, reason="kernel"))
    assert r["changed"] and set(r["maintenance"]) == {"*", "web"}
    # every reply of get, list and set carries them; get and set only the service's and the host's
    assert set(ask(f, frame(op="list"))["maintenance"]) == {"*", "web"}
    ask(f, frame(op="set", service="db", state="FAIL"))
    assert set(ask(f, frame(op="get", service="db"))["maintenance"]) == {"*"}
    assert set(ask(f, frame(op="set", service="web", state="UP"))["maintenance"]) == {"*", "web"}
    assert ask(f, frame(op="maint", on=False))["changed"] is True
    assert ask(f, frame(op="maint", on=False))["changed"] is False
    r = ask(f, frame(op="maint", on=False, service="web"))
    assert r["changed"] and "maintenance" not in r and "maintenance" not in ask(f, frame(op="list"))
    # maintenance of a service faild holds no record of (a cluster-wide pause): fine
    assert ask(f, frame(op="maint", on=True, service="mail"))["changed"]
    assert "maintenance" not in ask(f, frame(op="get", service="db")) and f.store.maintenance.keys() == {"mail"}


def test_handler_prefer() -> None:
    f = make_faild()
    r = ask(f, frame(op="prefer", service="web", host="www2", reason="move", agent="failctl"))
    assert r["changed"] is True and r["prefer"] == {"web": {"host": "www2", "since": r["prefer"]["web"]["since"],
                                                            "reason": "move", "by": "failctl"}}
    assert ask(f, frame(op="prefer", service="web", host="www2", reason="x"))["changed"] is False
    assert ask(f, frame(op="prefer", service="db", host="www1"))["changed"]
    assert set(ask(f, frame(op="list"))["prefer"]) == {"db", "web"}
    assert set(ask(f, frame(op="prefer", service="web", host="www3"))["prefer"]) == {"web"}
    assert f.store.prefer["web"].host == "www3"
    ask(f, frame(op="set", service="web", state="RECOVER"))
    assert ask(f, frame(op="get", service="web"))["prefer"]["web"]["host"] == "www3"
    assert ask(f, frame(op="prefer", service="web", host=None))["changed"] is True
    assert ask(f, frame(op="prefer", service="web", host=None))["changed"] is False
    assert "prefer" not in ask(f, frame(op="get", service="web"))


def test_handler_flags_follow_communities() -> None:
    rules = community.parse("""
        *    reader  RO
        *    admin   RW
        web  webops  RW
    """)
    f = make_faild(rules)
    assert ask(f, frame(op="maint", on=True, community="reader"))["error"] == "DENIED"
    assert ask(f, frame(op="maint", on=True, service="web", community="reader"))["error"] == "DENIED"
    assert ask(f, frame(op="prefer", service="web", host="b", community="reader"))["error"] == "DENIED"
    assert ask(f, frame(op="maint", on=True, community="webops"))["error"] == "DENIED"  # the host needs RW on *
    assert ask(f, frame(op="maint", on=True, service="web", community="webops"))["changed"]
    assert ask(f, frame(op="prefer", service="web", host="b", community="webops"))["changed"]
    assert ask(f, frame(op="maint", on=True, service="db", community="admin"))["changed"]
    assert ask(f, frame(op="maint", on=True, community="admin"))["changed"]
    # a community sees the flags of what it may read, and the host's (it pauses its services
    # too): webops reads web only, not db
    assert set(ask(f, frame(op="list", community="webops"))["maintenance"]) == {"*", "web"}
    assert set(ask(f, frame(op="list", community="reader"))["maintenance"]) == {"*", "db", "web"}


def test_changed_by() -> None:
    assert changed_by("failctl", "10.0.0.9") == "failctl from 10.0.0.9"
    assert changed_by("failctl", "?") == "failctl"  # ZeroMQ knows no address (ipc://)
    assert changed_by("", "fe80::1") == "fe80::1"
    assert changed_by("hc", "::ffff:10.0.0.9") == "hc from 10.0.0.9"  # IPv4 on a dual-stack socket
    assert changed_by("", "?") == ""
    assert len(changed_by("a" * 32, "f" * 100)) == 80
    f = make_faild()
    r = ask(f, frame(op="set", service="web", state="UP", agent="failc", reason="by hand"))
    assert (r["services"][0]["reason"], r["services"][0]["by"]) == ("by hand", "failc")
    t = ask(f, frame(op="history"))["history"][-1]
    assert (t["reason"], t["by"]) == ("by hand", "failc")
    r = ask(f, frame(op="set", service="web", state="FAIL"))  # no agent, no address: no "by"
    assert "by" not in r["services"][0] and "reason" not in r["services"][0]


def test_flags_need_a_store_that_holds_them() -> None:
    """Faild over a store without flags (hc's, failsh's are faild's Store; DictStore is not)
    answers maint and prefer as an older faild does."""
    f = Faild(DictStore(), community.DEFAULT_RULES, HOST)
    assert ask(f, frame(op="maint", on=True))["error"] == "BADOP"
    assert ask(f, frame(op="prefer", service="web", host=None))["error"] == "BADOP"


def test_a_server_without_leases_sends_no_lease_member() -> None:
    """hc's monitor and failsh's control port serve the protocol without failsh's lease: no
    "lease" member (absent, not null), so failstat does not call their UP "stale"."""
    f = Faild(Store(None), community.DEFAULT_RULES, HOST)
    f.store.set("web", State.UP)
    for req in (frame(op="ping"), frame(op="list"), frame(op="get", service="web")):
        reply = ask(f, req)
        assert "lease" not in reply["host"] and not model.HostInfo.from_wire(reply["host"]).leases
    assert ask(f, frame(op="lease", ttl=5))["error"] == "BADOP"
    with_leases = ask(make_faild(), frame(op="list"))["host"]
    assert with_leases["lease"] is None and model.HostInfo.from_wire(with_leases).leases


def test_flag_limits() -> None:
    f = make_faild()
    for i in range(model.MAX_MAINT):
        assert ask(f, frame(op="maint", on=True, service=f"s{i}"))["changed"]
    assert ask(f, frame(op="maint", on=True))["error"] == "LIMIT"
    assert ask(f, frame(op="maint", on=True, service="s0"))["changed"] is False  # already: fine
    for i in range(model.MAX_PREFER):
        assert ask(f, frame(op="prefer", service=f"s{i}", host="h"))["changed"]
    assert ask(f, frame(op="prefer", service="one-more", host="h"))["error"] == "LIMIT"
    assert ask(f, frame(op="prefer", service="s0", host="other"))["changed"]  # a new target: fine


def test_largest_replies_fit_in_a_message() -> None:
    """256 services (what an un-paged list carries) with the longest names and reasons that
    JSON escapes most, every maintenance entry and switchover target faild holds: every
    reply still fits, and keeps every state and flag (only reasons and "by" go)."""
    f = make_faild()
    wide = "\U0001f600" * 256  # 12 bytes each as JSON \ud83d\ude00
    names = [f"{i:03d}-" + "n" * 60 for i in range(protocol.LEGACY_LIST)]
    for name in names:
        f.store.set(name, State.RECOVER, reason=wide, by="b" * model.MAX_BY)
    agent = "a" * protocol.MAX_AGENT
    for name in names[:model.MAX_MAINT - 1]:
        assert ask(f, frame(op="maint", on=True, service=name, reason=wide, agent=agent))["ok"]
    assert ask(f, frame(op="maint", on=True, reason=wide, agent=agent))["ok"]
    for name in names[:model.MAX_PREFER]:
        assert ask(f, frame(op="prefer", service=name, host="h" * 64, reason=wide, agent=agent))["ok"]
    for req in (frame(op="list"), frame(op="maint", on=True), frame(op="prefer", service=names[0], host="h" * 64),
                frame(op="get", service=names[0]), frame(op="set", service=names[0], state="UP")):
        reply = model.reply_from_wire(ask(f, req))  # ask: <= MAX_MESSAGE
        assert reply.host is not None
    listed = model.reply_from_wire(ask(f, frame(op="list")))
    assert listed.services is not None and len(listed.services) == protocol.LEGACY_LIST
    assert len(listed.maintenance) == model.MAX_MAINT and len(listed.prefer) == model.MAX_PREFER
    assert all(r.reason == "" for r in listed.services)
    one = model.reply_from_wire(ask(f, frame(op="get", service=names[1])))  # small: everything
    assert one.services is not None and one.services[0].reason == wide


def test_faild_serves_any_store_and_follows_changes_made_behind_its_back() -> None:
    store = DictStore()
    f = Faild(store, community.DEFAULT_RULES, HOST)
    assert ask(f, frame(op="set", service="web", state="UP", reason="r"))["changed"]
    assert [s["state"] for s in ask(f, frame(op="list"))["services"]] == ["UP"]
    store.set("web", State.FAIL)  # not through f (hc's runner, failsh's own transitions)
    store.set("db", State.RECOVER)
    assert [(s["name"], s["state"]) for s in ask(f, frame(op="list"))["services"]] == [("db", "RECOVER"),
                                                                                    ("web", "FAIL")]
    assert ask(f, frame(op="get", service="web"))["services"][0]["state"] == "FAIL"
    assert [t["new"] for t in ask(f, frame(op="history"))["history"]] == ["UP", "FAIL", "RECOVER"]


# Properties ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
field_values = st.one_of(json_values, st.sampled_from(
    ["ping", "get", "list", "set", "history", "loglevel", "lease", "maint", "prefer", "web", "UP", "FAIL",
     "recover", "public", "all", "debug", "", "bad name", 1, 0, -1, 1000, 1001, 3600.0, True, False, None,
     "failctl", "svc1", 2**63, 2**63 - 1]))
requests = st.dictionaries(
    st.sampled_from(["v", "id", "op", "community", "service", "state", "reason", "limit", "facility",
                     "level", "ttl", "on", "host", "agent", "after", "since", "extra"]),
    field_values, max_size=9)


def _only_protocol_errors(raw: bytes) -> None:
    try:
        req = protocol.decode_request(raw)
    except protocol.ProtocolError as exc:
        assert exc.code in {"BADJSON", "BADREQUEST", "VERSION", "BADOP", "BADSTATE", "TOOBIG"}
        return
    assert req.op in protocol.OPS


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decode_request_arbitrary_bytes(raw: bytes) -> None:
    _only_protocol_errors(raw)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_decode_request_arbitrary_json(value: object) -> None:
    _only_protocol_errors(json.dumps(value).encode())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.booleans())
def test_decode_request_near_valid(msg: dict, versioned: bool) -> None:
    if versioned:
        msg = {"v": 1, "id": 1, **msg}
    _only_protocol_errors(json.dumps(msg).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), requests.map(lambda m: json.dumps({"v": 1, "id": 1, **m}).encode())))
def test_handler_always_answers(raw: bytes) -> None:
    """Whatever arrives, faild's handler returns one well-formed reply that fits a message."""
    f = make_faild()
    for name in ("svc0", "svc1", "web"):
        f.store.set(name, State.UP)
    reply = ask(f, raw)
    if reply["ok"] and "more" in reply:  # a page of a list
        model.page_from_wire(reply)
    assert reply["ok"] or reply["error"] != "INTERNAL", reply


# Paged and incremental list (docs/protocol.md) -------------------------------------------

def read_pages(f: Faild, reader: ListReader, community: str = "public",
               between: Callable[[], None] | None = None) -> list[bytes]:
    """Bring ``reader`` up to date from ``f`` as any client does; the raw reply frames.
    ``between``: called after each page that is not the last of a read (changes mid-read)."""
    frames = []
    for _ in range(10000):
        asked = reader.request()
        raw = f.handle(frame(op="list", community=community, **asked))
        assert len(raw) <= protocol.MAX_MESSAGE
        frames.append(raw)
        page = model.page_from_wire(protocol.decode_reply(raw))
        if reader.take(asked, page):
            return frames
        if between is not None and page.more:
            between()
    raise AssertionError("no end")


def full_read(f: Faild, community: str = "public") -> ListReader:
    reader = ListReader()
    read_pages(f, reader, community)
    return reader


def same_view(a: ListReader, b: ListReader) -> None:
    assert a.records == b.records and a.maintenance == b.maintenance and a.prefer == b.prefer


def test_a_paged_read_returns_every_record_exactly() -> None:
    f = make_faild()
    wide = "\u00e9" * 256  # 6 bytes each as JSON
    for i in range(3000):
        f.store.set(f"svc{i:05d}", State.UP if i % 3 else State.FAIL, reason=wide if i % 7 == 0 else "r",
                    by="failsh")
    f.store.maint("*", True, "all")
    f.store.maint("svc00007", True, wide)
    f.store.set_prefer("svc00009", "h2", "move")
    reader = ListReader()
    frames = read_pages(f, reader)
    assert len(frames) > 3 and reader.complete and not reader.legacy
    assert reader.sorted() == f.store.all() and reader.counter == f.store.counter
    assert set(reader.maintenance) == {"*", "svc00007"} and reader.maintenance["svc00007"].reason == wide
    assert reader.prefer["svc00009"].host == "h2"
    replies = [json.loads(raw) for raw in frames]
    assert "maintenance" in replies[0] and all("maintenance" not in r and "prefer" not in r for r in replies[1:])
    assert all(r["count"] == 3000 and r["counter"] == f.store.counter for r in replies)
    assert [r["more"] for r in replies] == [True] * (len(replies) - 1) + [False]
    # an un-paged list of so many is refused, never cut short
    r = ask(f, frame(op="list"))
    assert r["error"] == "TOOBIG"
    assert r["message"] == ("h1 holds 3000 services, more than one reply carries; this client must read them "
                            "in pages (failover >= 0.7)")


def test_an_unchanged_faild_costs_a_few_bytes_and_changes_come_alone() -> None:
    f = make_faild()
    for i in range(5000):
        f.store.set(f"svc{i:05d}", State.UP, reason="start procedure returned UP", by="failsh")
    reader = full_read(f)
    counter = reader.counter
    (raw,) = read_pages(f, reader)
    assert len(raw) < 300, raw
    assert json.loads(raw)["services"] == [] and reader.counter == counter
    f.store.set("svc04711", State.FAIL, "check failed")
    f.store.set("svc00001", State.RECOVER)
    (raw,) = read_pages(f, reader)
    changed = json.loads(raw)
    assert [s["name"] for s in changed["services"]] == ["svc00001", "svc04711"]
    assert "maintenance" not in changed and changed["counter"] == counter + 2 == reader.counter
    assert reader.records["svc04711"].state is State.FAIL
    # maintenance and prefer move the counter: they come (both, whole) on the next read
    f.store.maint("svc00002", True, "disk")
    (raw,) = read_pages(f, reader)
    flagged = json.loads(raw)
    assert flagged["services"] == [] and set(flagged["maintenance"]) == {"svc00002"} and flagged["prefer"] == {}
    f.store.maint("svc00002", False)
    read_pages(f, reader)
    assert reader.maintenance == {}
    same_view(reader, full_read(f))
    # an un-paged list that fits (a failover 0.6 client) is answered whole, as before
    small = make_faild()
    small.store.set("web", State.UP)
    assert [s["name"] for s in ask(small, frame(op="list"))["services"]] == ["web"]


def test_a_restarted_faild_or_a_counter_gone_back_is_read_again_in_full() -> None:
    store = Store(None)
    for i in range(2000):
        store.set(f"svc{i:05d}", State.UP)
    f = Faild(store, community.DEFAULT_RULES, HOST, leases=True)
    reader = full_read(f)
    # the same state file under a new process: a full read, even though nothing changed
    again = Faild(store, community.DEFAULT_RULES, attrs.evolve(HOST, started=HOST.started + 60), leases=True)
    frames = read_pages(again, reader)
    assert reader.resyncs == 1 and len(frames) > 2 and json.loads(frames[1])["count"] == 2000
    # a state file from a backup: fewer services, a lower counter (and a new process)
    old = Store(None)
    for i in range(10):
        old.set(f"svc{i:05d}", State.FAIL)
    replaced_ = Faild(old, community.DEFAULT_RULES, attrs.evolve(HOST, started=HOST.started + 120), leases=True)
    read_pages(replaced_, reader)
    assert reader.resyncs == 2 and reader.sorted() == old.all()
    # a counter below the reader's without a new start time: read again all the same
    reader.counter = old.counter + 5
    read_pages(replaced_, reader)
    assert reader.resyncs == 3 and reader.sorted() == old.all()


@pytest.mark.parametrize("seed", range(6))
def test_incremental_reads_stay_identical_to_a_full_read(seed: int) -> None:
    """Random sets, removals, maintenance and switchovers, some of them between the pages
    of a read: after every read the incremental view is exactly a full read's."""
    rng = random.Random(seed)
    store = Store(None)
    names = [f"svc{i:04d}" + "x" * rng.randrange(40) for i in range(rng.choice([50, 1500, 2500]))]
    # "partial" may read every third service only
    f = Faild(store, community.Rules({("*", "public"): community.RW,
                                      **{(n, "partial"): community.RO for n in names[::3]}}), HOST, leases=True)

    def change() -> None:
        for _ in range(rng.randrange(1, 30)):
            name = rng.choice(names)
            roll = rng.random()
            if roll < 0.8:
                store.set(name, rng.choice(list(State)), "r" * rng.randrange(200))
            elif roll < 0.85:
                store.remove(name)
            elif roll < 0.95:
                store.maint(rng.choice([name, "*"]), rng.random() < 0.6, "m")
            else:
                store.set_prefer(name, rng.choice([None, "h2"]))

    change()
    readers = {c: ListReader() for c in ("public", "partial")}
    for _ in range(25):
        for c, reader in readers.items():
            read_pages(f, reader, c, between=change if rng.random() < 0.3 else None)
            read_pages(f, reader, c)  # changes made during the read come now, if any
            same_view(reader, full_read(f, c))
        change()
    assert len(readers["public"].records) >= len(readers["partial"].records)
