"""The administrators' ops (maint, prefer), ``agent``/``by``, and ``host.lease_end``, through
a real faild process and failover.client (docs/protocol.md, "Operations for administrators")."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import Cluster
from support import FaildProcess, wait_for

from failover import protocol
from failover.client import Client, RequestFailed, TooOld
from failover.faild.lease import process_start
from failover.model import LeaseEnd
from failover.states import State

pytestmark = pytest.mark.process

COMMUNITIES = """\
*    reader  RO
*    admin   RW
"""


def client(f: FaildProcess, agent: str = "failctl", community: str = "public") -> Client:
    return Client(f.endpoint, community=community, timeout=2.0, retries=0, agent=agent)


def test_maint_and_prefer_through_faild(faild: FaildProcess) -> None:
    with client(faild) as c:
        c.set("web", "UP", "started by hand")
        r = c.maint(True, "web", "disk swap")
        assert r.changed is True and list(r.maintenance) == ["web"]
        entry = r.maintenance["web"]
        assert entry.reason == "disk swap" and entry.by == "failctl from 127.0.0.1"
        assert c.maint(True, "web", "again").changed is False  # idempotent: the first entry stays
        assert c.maint(True, reason="kernel update").changed is True
        r = c.prefer("web", "www2", "move to the new box")
        assert r.changed is True and r.prefer["web"].host == "www2" and r.prefer["web"].by.startswith("failctl")
        assert c.prefer("web", "www2").changed is False
        # get, list and set replies carry them
        for reply in (c.ask("get", service="web"), c.ask("list"), c.ask("set", service="web", state=State.UP)):
            assert set(reply.maintenance) == {"*", "web"} and reply.maintenance["web"] == entry
            assert reply.prefer["web"].host == "www2"
    log = faild.log()
    assert "maintenance on for web by failctl from 127.0.0.1: disk swap" in log
    assert "maintenance on for the whole host by failctl from 127.0.0.1: kernel update" in log
    assert "switchover target of web: www2 by failctl from 127.0.0.1: move to the new box" in log


def test_flags_persist_across_kill9_and_old_files_load(faild: FaildProcess) -> None:
    with client(faild) as c:
        c.maint(True, "web", "disk swap")
        c.maint(True)
        c.prefer("web", "www2")
        c.prefer("db", "www1")
        c.prefer("db", None)
    data = json.loads(faild.statefile.read_text())
    assert set(data["maintenance"]) == {"*", "web"} and set(data["prefer"]) == {"web"}
    faild.kill9()
    faild.start()
    with client(faild) as c:
        reply = c.ask("list")
        assert set(reply.maintenance) == {"*", "web"} and reply.maintenance["web"].reason == "disk swap"
        assert reply.prefer["web"].host == "www2" and "db" not in reply.prefer
        c.maint(False)
        c.maint(False, "web")
        c.prefer("web", None)
    data = json.loads(faild.statefile.read_text())
    assert "maintenance" not in data and "prefer" not in data  # as a file written before failctl
    faild.stop()
    faild.start()
    with client(faild) as c:
        reply = c.ask("list")
        assert reply.maintenance == {} and reply.prefer == {}


def test_a_state_file_without_the_new_members_loads(faild_factory: Callable[..., FaildProcess]) -> None:
    f = faild_factory(start=False)
    f.statefile.write_text(json.dumps({"format": 1, "counter": 1, "services": [
        {"name": "web", "state": "UP", "last_change": 1.7e9, "counter": 1}], "history": [
        {"service": "web", "old": None, "new": "UP", "time": 1.7e9, "counter": 1, "reason": "old faild"}]}))
    f.start()
    with client(f) as c:
        rec = c.get("web")
        assert (rec.state.value, rec.reason, rec.by) == ("UP", "", "")
        assert c.history()[0].by == ""
        assert c.ask("list").maintenance == {}


def test_set_records_reason_and_by(faild: FaildProcess) -> None:
    with client(faild, agent="failc") as c:
        rec = c.set("web", "FAIL", "stopped for the backup")
        assert (rec.reason, rec.by) == ("stopped for the backup", "failc from 127.0.0.1")
        t = c.history("web")[-1]
        assert (t.reason, t.by) == ("stopped for the backup", "failc from 127.0.0.1")
    with client(faild, agent="") as c:  # no agent (an older client): the address alone
        assert c.set("web", "UP").by == "127.0.0.1"
    faild.kill9()
    faild.start()
    with client(faild) as c:  # persisted with the record and the history
        assert c.get("web").by == "127.0.0.1"
        assert [t.by for t in c.history("web")] == ["failc from 127.0.0.1", "127.0.0.1"]
    assert "web -> FAIL (stopped for the backup) by failc from 127.0.0.1" in faild.log()


def test_access_to_the_new_ops(faild_factory: Callable[..., FaildProcess], tmp_path: Path) -> None:
    cfile = tmp_path / "communities"
    cfile.write_text(COMMUNITIES)
    f = faild_factory(communities=cfile)
    with client(f, community="reader") as c:
        for call in (lambda: c.maint(True), lambda: c.maint(True, "web"), lambda: c.prefer("web", "b")):
            with pytest.raises(RequestFailed) as err:
                call()
            assert err.value.code == "DENIED"
    with client(f, community="admin") as c:
        assert c.maint(True, "web").changed
    with client(f, community="reader") as c:
        assert list(c.ask("list").maintenance) == ["web"]


def test_bad_agent_is_refused_by_the_client() -> None:
    for agent in ("fail ctl", "a" * 33, "x\x1b"):
        with pytest.raises(ValueError):
            Client("tcp://127.0.0.1:1", agent=agent)


def test_too_old_for_maintenance(tmp_path: Path) -> None:
    """A server that speaks version 1 without the new ops (failsh's control port here, an
    older faild in the field) answers BADOP: the client says what that means."""
    c = Cluster(tmp_path, names=("solo",), policy="failsvc web interval 1\n")
    try:
        c.start()
        port = c.failsh["solo"].control_port
        with Client(f"tcp://127.0.0.1:{port}", timeout=2.0, retries=5, agent="failctl") as old:
            wait_for(lambda: old.ping(), 10, "failsh's control port", ignore=(Exception,))
            with pytest.raises(TooOld) as err:
                old.maint(True, "web")
            assert str(err.value) == (f"faild on 127.0.0.1:{port} is too old for maintenance "
                                      "(it does not know the op 'maint')")
            assert err.value.code == "BADOP"
            with pytest.raises(TooOld, match="too old for switchover"):
                old.prefer("web", "www2")
    finally:
        c.close()


# host.lease_end -----------------------------------------------------------------------------

def test_lease_end_released(faild: FaildProcess) -> None:
    with client(faild, agent="failsh") as c:
        assert c.ping().lease_end is None  # no lease ever: nothing ended
        c.call("lease", ttl=60)
        assert c.ping().lease_end is None
        before = time.time()
        host = c.ask("lease", ttl=0).host
        assert host is not None and host.lease is None and host.lease_end is not None
        assert host.lease_end.why == "released" and host.lease_end.at >= before - 1
        assert c.list()[0].lease_end == host.lease_end  # on the polling path too
        c.call("lease", ttl=0)  # giving up no lease changes nothing
        assert c.ping().lease_end == host.lease_end
        c.call("lease", ttl=60)  # a new lease: no lease_end
        assert c.list()[0].lease_end is None


def test_lease_end_exited(faild: FaildProcess) -> None:
    holder = subprocess.Popen(["sleep", "60"])
    try:
        with client(faild, agent="failsh") as c:
            c.call("lease", ttl=60, pid=holder.pid, pidstart=process_start(holder.pid))
            holder.kill()
            holder.wait()
            info, _ = c.list()
            assert info.lease is None and info.lease_end is not None and info.lease_end.why == "exited"
            assert c.ping().lease_end == info.lease_end  # stays until a new lease
    finally:
        holder.kill()


def test_lease_end_expired(faild: FaildProcess) -> None:
    with client(faild, agent="failsh") as c:
        c.call("lease", ttl=0.2)
        taken = time.time()
        end = wait_for(lambda: c.ping().lease_end, 10, "the lease to run out")
        assert end.why == "expired" and end.at >= taken
        # the time it ran out, not when faild noticed: asked later, the same
        time.sleep(0.3)
        assert c.list()[0].lease_end == end
        assert isinstance(end, LeaseEnd)


def test_reply_members_on_the_wire(faild: FaildProcess) -> None:
    """The member names of docs/protocol.md, as JSON on the wire."""
    with client(faild) as c:
        c.set("web", "UP", "r")
        c.maint(True, "web", "m")
        c.prefer("web", "www2", "p")
        c.call("lease", ttl=60)
        c.call("lease", ttl=0)
        raw = c.call("get", service="web")
    assert set(raw) >= {"host", "services", "maintenance", "prefer"}
    assert set(raw["host"]) == {"name", "started", "pid", "lease", "lease_end"}
    assert set(raw["host"]["lease_end"]) == {"why", "at"}
    assert set(raw["services"][0]) == {"name", "state", "last_change", "counter", "reason", "by"}
    assert set(raw["maintenance"]["web"]) == {"since", "reason", "by"}
    assert set(raw["prefer"]["web"]) == {"host", "since", "reason", "by"}
    assert protocol.HOST_WIDE == "*"
