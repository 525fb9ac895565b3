"""faild as a real process: requests over ZeroMQ, persistence, communities, signals, bad input."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import zmq
from conftest import FaildProcess, free_port, wait_for

from failover import protocol
from failover.client import RequestFailed, Unreachable
from failover.faild.lease import process_start
from failover.states import State

pytestmark = pytest.mark.process

COMMUNITIES = """\
# service  community  access
*          reader     RO
*          admin      RW
web        reader     RW     # a service line beats the '*' line
db         admin      RO
"""


def raw_request(ctx: zmq.Context, endpoint: str, payload: bytes, timeout_ms: int = 2000) -> dict | None:
    """One request on a fresh REQ socket; the decoded reply, or None if none came in time."""
    s = ctx.socket(zmq.REQ)
    s.linger = 0
    s.connect(endpoint)
    try:
        s.send(payload)
        if not s.poll(timeout_ms, zmq.POLLIN):
            return None
        return protocol.decode_reply(s.recv())
    finally:
        s.close(linger=0)


def assert_serving(f: FaildProcess) -> None:
    """faild is alive and answers.  With retries: right after a garbage ZMTP/1.0 connection
    libzmq's REP can route one reply to the wrong peer (seen with a bare pyzmq REP too);
    the client's re-send on the same socket is answered."""
    assert f.running(), f.log()
    with f.client(timeout=1.0, retries=2) as c:
        assert c.ping().name == "testnode"


# Basic operations --------------------------------------------------------

def test_set_get_list_history(faild: FaildProcess) -> None:
    with faild.client() as c:
        info = c.ping()
        assert info.pid == faild.proc.pid
        with pytest.raises(RequestFailed) as exc:
            c.get("web")
        assert exc.value.code == "NOSERVICE"
        before = time.time()
        rec = c.set("web", "UP", "first start")
        assert (rec.name, rec.state, rec.counter) == ("web", "UP", 1)
        assert before - 1 <= rec.last_change <= time.time() + 1
        c.set("db", "recover")
        c.set("web", "FAIL", "disk full")
        assert c.get("web").state == "FAIL"
        info, recs = c.list()
        assert info.name == "testnode"
        assert [(r.name, r.state, r.counter) for r in recs] == [("db", "RECOVER", 2), ("web", "FAIL", 3)]
        hist = c.history()
        assert [(t.service, t.old, t.new, t.counter) for t in hist] == [
            ("web", None, "UP", 1), ("db", None, "RECOVER", 2), ("web", "UP", "FAIL", 3)]
        assert hist[2].reason == "disk full"
        assert [t.counter for t in c.history("web", limit=1)] == [3]
        same = c.call("set", service="web", state=State.FAIL)
        assert same["changed"] is False and same["services"][0]["counter"] == 3


def test_loglevel_op(faild: FaildProcess) -> None:
    with faild.client() as c:
        assert c.call("loglevel", facility="protocol", level="debug")["ok"]
        with pytest.raises(RequestFailed) as exc:
            c.call("loglevel", facility="nonsense", level="debug")
        assert exc.value.code == "BADREQUEST"
    raw_request(zmq.Context.instance(), faild.endpoint, b"garbage")
    wait_for(lambda: "rejected request" in faild.log(), what="a debug line for the rejected request")


# The lease ----------------------------------------------------------------

def _lease(c, holder: subprocess.Popen[bytes] | None = None, start: int | None = None) -> float | None:
    fields = {"pid": holder.pid, "pidstart": start} if holder is not None else {}
    return c.call("lease", ttl=60, **fields)["host"]["lease"]


def holder_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_lease_of_a_named_holder_ends_when_the_holder_dies(faild: FaildProcess) -> None:
    """failsh names itself in its lease: once it is killed, faild reports no lease at the
    next poll, instead of for the rest of the ttl."""
    holder = subprocess.Popen(["sleep", "60"])
    try:
        with faild.client() as c:
            assert _lease(c, holder, process_start(holder.pid)) == 60
            assert 55 < c.call("ping")["host"]["lease"] <= 60   # alive: the lease runs
            holder.kill()
            wait_for(lambda: holder_state(holder.pid) == "Z", 5, "the holder to exit")
            assert c.call("ping")["host"]["lease"] is None  # dead, even before its parent reaped it
            holder.wait()
            assert "is gone: its lease ends now" in faild.log()
    finally:
        holder.kill()


def test_lease_of_an_unverifiable_holder_runs_its_ttl(faild: FaildProcess) -> None:
    """A start time that does not match (another pid namespace, a reused pid): not watched."""
    holder = subprocess.Popen(["sleep", "60"])
    try:
        with faild.client() as c:
            assert _lease(c, holder, (process_start(holder.pid) or 0) + 1) == 60
            holder.kill()
            holder.wait()
            assert c.call("ping")["host"]["lease"] > 55
    finally:
        holder.kill()


# Persistence -------------------------------------------------------------

def test_state_survives_kill9_and_counter_keeps_increasing(faild: FaildProcess) -> None:
    with faild.client() as c:
        c.set("web", "UP")
        c.set("db", "RECOVER")
        last = c.set("web", "FAIL", "before the crash")
    faild.kill9()
    data = json.loads(faild.statefile.read_text())
    assert data["format"] == 1 and data["counter"] == 3
    assert not list(faild.directory.glob(".faild.state.*")), "temporary files left behind"
    faild.restart()
    with faild.client() as c:
        rec = c.get("web")
        assert (rec.state, rec.counter, rec.last_change) == ("FAIL", 3, last.last_change)
        assert c.get("db").state == "RECOVER"
        assert [t.counter for t in c.history()] == [1, 2, 3]
        assert c.history()[-1].reason == "before the crash"
        assert c.set("db", "UP").counter == 4
    assert faild.stop() == 0
    faild.restart()
    with faild.client() as c:
        assert c.set("web", "UP").counter == 5


def test_sigterm_exits_0_and_removes_pidfile(faild: FaildProcess) -> None:
    assert faild.pidfile.read_text().strip() == str(faild.proc.pid)
    started = time.monotonic()
    assert faild.stop() == 0
    assert time.monotonic() - started < 3
    assert not faild.pidfile.exists()
    assert "Traceback" not in faild.log()


@pytest.mark.parametrize("content", [
    "{ this is not json",
    "",
    '{"format": 99, "counter": 0, "services": []}',
    '{"format": 1, "counter": 1, "services": [{"name": "web", "state": "SIDEWAYS", "last_change": 0, "counter": 1}]}',
    '[1, 2, 3]',
])
def test_refuses_corrupt_state_file(faild_factory, content: str) -> None:
    f = faild_factory(start=False)
    f.statefile.write_text(content)
    proc = f.spawn()
    assert proc.wait(10) == 5
    lines = f.log().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faild: invalid state file"), lines
    assert str(f.statefile) in lines[0]
    assert f.statefile.read_text() == content, "faild must not overwrite a state file it could not read"
    assert not f.pidfile.exists()


@pytest.mark.parametrize(("content", "needle"), [
    ("web public\n", "expected 'SERVICE COMMUNITY RO|RW'"),
    ("web public RX\n", "access must be RO or RW"),
    ("bad/name public RO\n", "invalid service name"),
])
def test_refuses_bad_community_file(faild_factory, tmp_path: Path, content: str, needle: str) -> None:
    cfile = tmp_path / "communities"
    cfile.write_text(content)
    f = faild_factory(start=False, communities=cfile)
    assert f.spawn().wait(10) == 5
    lines = f.log().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faild: ") and needle in lines[0], lines
    assert f"{cfile}:1" in lines[0]


def test_refuses_missing_community_file(faild_factory, tmp_path: Path) -> None:
    f = faild_factory(start=False, communities=tmp_path / "absent")
    assert f.spawn().wait(10) == 5
    assert f.log().strip() == f"faild: cannot read community file {tmp_path / 'absent'}: No such file or directory"


def test_port_in_use_is_one_line_exit_5(faild: FaildProcess, faild_factory) -> None:
    other = faild_factory(start=False, port=faild.port)
    assert other.spawn().wait(20) == 5
    log = other.log()
    assert "cannot serve on 127.0.0.1 port" in log and "Traceback" not in log
    assert_serving(faild)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.parametrize("by", ["name", "uid"])
def test_user_option_drops_uid_gid_and_groups(by: str) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    directory = Path(tempfile.mkdtemp(prefix="faild-user-"))  # pytest's tmp dirs are 0700
    try:
        directory.chmod(0o777)
        user = "nobody" if by == "name" else str(nobody.pw_uid)
        f = FaildProcess(directory, extra=["-u", user]).start()
        try:
            status = Path(f"/proc/{f.proc.pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines())
            assert fields["Uid"].split() == [str(nobody.pw_uid)] * 4
            assert fields["Gid"].split() == [str(nobody.pw_gid)] * 4
            assert "0" not in fields["Groups"].split()
            with f.client() as c:
                c.set("web", "UP")  # the state file is written as nobody
            assert f.statefile.stat().st_uid == nobody.pw_uid
            assert f.stop() == 0
            assert not f.pidfile.exists()
        finally:
            if f.running():
                f.kill9()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_unknown_user_is_refused_before_start(faild_factory) -> None:
    f = faild_factory(start=False, extra=["-u", "no-such-user-here"])
    assert f.spawn().wait(10) == 5
    assert f.log().strip() == "faild: unknown user 'no-such-user-here'"


# Communities -------------------------------------------------------------

@pytest.fixture
def guarded(faild_factory, tmp_path: Path) -> FaildProcess:
    cfile = tmp_path / "communities"
    cfile.write_text(COMMUNITIES)
    f = faild_factory(communities=cfile)
    with f.client("admin") as c:
        c.set("web", "UP")
        c.set("app", "RECOVER")
    # db is RO for admin; nobody can create it, so write it through a second faild run
    return f


def denied(f: FaildProcess, community: str, op: str, **fields: object) -> bool:
    with f.client(community) as c:
        try:
            c.call(op, **fields)
        except RequestFailed as exc:
            assert exc.code == "DENIED", exc
            return True
    return False


def test_ro_community_reads_but_cannot_write(guarded: FaildProcess) -> None:
    with guarded.client("reader") as c:
        assert c.get("app").state == "RECOVER"
        assert [r.name for r in c.list()[1]] == ["app", "web"]
        assert len(c.history()) == 2
    assert denied(guarded, "reader", "set", service="app", state=State.UP)
    assert denied(guarded, "reader", "set", service="new", state=State.UP)
    assert denied(guarded, "reader", "loglevel", facility="all", level="debug")


def test_unknown_community_is_refused(guarded: FaildProcess) -> None:
    for op, fields in (("get", {"service": "web"}), ("list", {}), ("history", {}),
                       ("set", {"service": "web", "state": State.FAIL})):
        assert denied(guarded, "public", op, **fields), op
        assert denied(guarded, "Reader", op, **fields), op  # case-sensitive
    with guarded.client("reader") as c:
        assert c.get("web").state == "UP"  # nothing changed


def test_service_rule_beats_star(guarded: FaildProcess) -> None:
    with guarded.client("reader") as c:  # '* reader RO' but 'web reader RW'
        assert c.set("web", "FAIL", "reader may write web").state == "FAIL"
    assert denied(guarded, "admin", "set", service="db", state=State.UP)  # '* admin RW' but 'db admin RO'
    with guarded.client("admin") as c:
        assert c.set("app", "UP").state == "UP"


def test_sighup_reloads_community_file(guarded: FaildProcess) -> None:
    assert denied(guarded, "ops", "list")
    guarded.communities.write_text(COMMUNITIES + "*  ops  RW\n")
    guarded.send(signal.SIGHUP)

    def ops_may_list() -> bool:
        return not denied(guarded, "ops", "list")

    wait_for(ops_may_list, timeout=5, what="the new rule after SIGHUP")
    with guarded.client("ops") as c:
        c.set("app", "FAIL")

    # a broken file on reload: faild logs it and keeps the previous rules
    guarded.communities.write_text("this line is broken\n")
    guarded.send(signal.SIGHUP)
    wait_for(lambda: "keeping the previous rules" in guarded.log(), timeout=5, what="the reload error")
    assert guarded.running()
    assert ops_may_list()
    assert denied(guarded, "reader", "set", service="app", state=State.UP)
    assert "communities:1: expected" in guarded.log()


# Bad input over the wire ---------------------------------------------------

@pytest.mark.parametrize(("payload", "code"), [
    (b"\x00\x01\x02 garbage \xff", "BADJSON"),
    (b"{\"v\": 1, \"id\": 1, \"op\": ", "BADJSON"),
    (b"[]", "BADREQUEST"),
    (json.dumps({"v": 2, "id": 1, "op": "ping"}).encode(), "VERSION"),
    (json.dumps({"v": 1, "id": 1, "op": "shutdown"}).encode(), "BADOP"),
    (json.dumps({"v": 1, "id": 1, "op": "get", "service": "no such/name"}).encode(), "BADREQUEST"),
    (json.dumps({"v": 1, "id": 1, "op": "get", "service": "x" * 100}).encode(), "BADREQUEST"),
    (json.dumps({"v": 1, "id": 1, "op": "set", "service": "web", "state": "SIDEWAYS"}).encode(), "BADSTATE"),
    (json.dumps({"v": 1, "id": 1, "op": "set", "service": None, "state": "UP"}).encode(), "BADREQUEST"),
    (b'{"v":1,"id":1,"op":"ping","x":' + b"9" * 5000 + b"}", "BADJSON"),
    (json.dumps({"v": 1, "id": 1, "op": "lease", "ttl": 5, "pid": "1", "pidstart": 1}).encode(), "BADREQUEST"),
    (json.dumps({"v": 1, "id": 1, "op": "lease", "ttl": 5, "pid": 0, "pidstart": 1}).encode(), "BADREQUEST"),
    (json.dumps({"v": 1, "id": 1, "op": "lease", "ttl": 5, "pid": 2**31, "pidstart": 1}).encode(), "BADREQUEST"),
    (json.dumps({"v": 1, "id": 1, "op": "lease", "ttl": 5, "pid": 7, "pidstart": -1}).encode(), "BADREQUEST"),
    (json.dumps({"v": 1, "id": 1, "op": "lease", "ttl": 5, "pid": 7, "pidstart": True}).encode(), "BADREQUEST"),
])
def test_bad_requests_get_error_replies(faild: FaildProcess, zctx: zmq.Context, payload: bytes, code: str) -> None:
    reply = raw_request(zctx, faild.endpoint, payload)
    assert reply is not None, "no reply to a malformed request"
    assert reply["ok"] is False and reply["error"] == code, reply
    assert reply["message"]
    assert_serving(faild)


def test_many_bad_requests_on_one_socket(faild: FaildProcess, zctx: zmq.Context) -> None:
    s = zctx.socket(zmq.REQ)
    s.linger = 0
    s.connect(faild.endpoint)
    try:
        for i in range(200):
            s.send(os.urandom(i % 50 + 1))
            assert s.poll(2000), f"no reply to garbage #{i}"
            assert protocol.decode_reply(s.recv())["ok"] is False
        s.send(protocol.encode({"v": 1, "id": 1, "op": "ping"}))
        assert s.poll(2000)
        assert protocol.decode_reply(s.recv())["ok"] is True
    finally:
        s.close(linger=0)


def test_multi_frame_request_is_refused(faild: FaildProcess, zctx: zmq.Context) -> None:
    s = zctx.socket(zmq.REQ)
    s.linger = 0
    s.connect(faild.endpoint)
    try:
        s.send_multipart([protocol.encode({"v": 1, "id": 1, "op": "ping"}), b"a second frame"])
        assert s.poll(2000), "no reply to a two-frame request"
        reply = protocol.decode_reply(s.recv())
        assert (reply["ok"], reply["error"]) == (False, "BADREQUEST")
        assert "one frame" in reply["message"]
    finally:
        s.close(linger=0)
    assert_serving(faild)


def test_oversized_message_is_dropped_and_faild_keeps_serving(faild: FaildProcess, zctx: zmq.Context) -> None:
    big = b'{"v":1,"id":1,"op":"ping","pad":"' + b"x" * (protocol.MAX_MESSAGE + 10) + b'"}'
    assert raw_request(zctx, faild.endpoint, big, timeout_ms=500) is None
    assert_serving(faild)
    with faild.client() as c:
        c.set("web", "UP")
        assert c.get("web").state == "UP"


def test_raw_tcp_garbage(faild: FaildProcess) -> None:
    """Not even ZeroMQ: a bad greeting, HTTP, random bytes, a half-open connection."""
    held = socket.create_connection(("127.0.0.1", faild.port), timeout=2)
    held.sendall(b"GET / HTTP/1.0\r\n\r\n")  # libzmq may keep this one open (tech notes 4.4)
    try:
        for payload in (b"\xff" + os.urandom(200), os.urandom(1000), b"\x00" * 64, b"hello\n"):
            with socket.create_connection(("127.0.0.1", faild.port), timeout=2) as s:
                s.sendall(payload)
                s.settimeout(0.5)
                try:
                    s.recv(100)
                except (TimeoutError, ConnectionResetError):
                    pass
            assert_serving(faild)
        with socket.create_connection(("127.0.0.1", faild.port), timeout=2):
            pass  # connect and go away
        assert_serving(faild)
    finally:
        held.close()
    assert_serving(faild)


def test_stopped_faild_times_out_within_bound(faild: FaildProcess) -> None:
    assert faild.stop() == 0
    with faild.client(timeout=0.3, retries=2) as c:
        started = time.monotonic()
        with pytest.raises(Unreachable):
            c.ping()
        assert time.monotonic() - started < 3


def test_two_faild_instances_are_independent(faild_factory) -> None:
    a, b = faild_factory("a"), faild_factory("b")
    assert a.port != b.port
    with a.client() as ca, b.client() as cb:
        ca.set("web", "UP")
        cb.set("web", "FAIL")
        assert (ca.get("web").state, cb.get("web").state) == ("UP", "FAIL")


def test_restart_on_same_port_right_after_stop(faild: FaildProcess) -> None:
    """bind_with_retry: the port may still be busy for a moment after the old faild exits."""
    port = faild.port
    for _ in range(3):
        faild.kill9()
        faild.restart()
        assert faild.port == port
        assert_serving(faild)


def test_free_port_helper_gives_distinct_ports() -> None:
    ports = {free_port() for _ in range(5)}
    assert len(ports) >= 4
