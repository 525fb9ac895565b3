"""No client program prints a traceback for what a user (or a hostile peer) gives it:
hostile failmon feeds, hostile faild replies, odd names and paths, through the real
console scripts; and a hypothesis fuzz of the snapshot decoder."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from support import FaildProcess, free_port, json_paths, replaced, run_cli

from failover.cli import failmon
from failover.observe import feed

pytestmark = pytest.mark.process

NOW = 1.7e9
GOOD = {"v": 1, "type": "snapshot", "node": "goodnode", "time": NOW, "seq": 7,
        "services": [{"name": "web", "state": "UP", "role": "master", "masters": [], "slaves": ["www2"],
                      "interval": 1.0, "last_change": NOW - 5, "last_check": NOW - 1, "decision": "stay UP",
                      "peers": {"www2": {"role": "slave", "state": "RECOVER", "status": "up"}},
                      "paused": {"scope": "service", "reason": "db migration", "since": NOW - 3,
                                 "by": "failctl from 10.0.0.9"},
                      "prefer": "www2"}],
        "hosts": [{"name": "www2", "endpoint": "tcp://127.0.0.1:1", "status": "up", "last_seen": NOW - 1,
                   "last_call": NOW - 1, "rtt": 0.001, "failsh": True, "paused": False}],
        "history": [{"service": "web", "old": None, "new": "UP", "time": NOW - 5, "counter": 1,
                     "reason": "start procedure returned UP"}]}


def bad(path: tuple, value: object) -> bytes:
    """GOOD with the field at ``path`` set to ``value`` (``...`` deletes it)."""
    return json.dumps(replaced(GOOD, path, value)).encode()  # NaN and 1e300 as Python writes them


TOPIC = b'{"v": 1, "type": "snapshot"'  # json.dumps' spacing; failmon subscribes without spaces
MALFORMED = {
    "not JSON": feed.SNAPSHOT_TOPIC + b",",
    "nested too deep": feed.SNAPSHOT_TOPIC + b',"x":' + b"[" * 100000,
    "node a number": bad(("node",), 123),
    "time NaN": bad(("time",), math.nan),
    "time 1e300": bad(("time",), 1e300),
    "services an object": bad(("services",), {"web": {}}),
    "service a string": bad(("services", 0), "web"),
    "service name a number": bad(("services", 0, "name"), 123),
    "service without peers": bad(("services", 0, "peers"), ...),
    "peer a list": bad(("services", 0, "peers", "www2"), ["slave"]),
    "last change negative": bad(("services", 0, "last_change"), -1),
    "rtt a string": bad(("hosts", 0, "rtt"), "1 ms"),
    "failsh a number": bad(("hosts", 0, "failsh"), 1),
    "history time a word": bad(("history", 0, "time"), "yesterday"),
    "paused a string": bad(("services", 0, "paused"), "yes"),
    "paused scope unknown": bad(("services", 0, "paused", "scope"), "cluster"),
    "paused since NaN": bad(("services", 0, "paused", "since"), math.nan),
    "prefer not a name": bad(("services", 0, "prefer"), "www 2"),
    "host paused a number": bad(("hosts", 0, "paused"), 1),
}


def compact(frame: bytes) -> bytes:
    """The frame with failsh's separators, so that it matches the feed's subscription."""
    return feed.SNAPSHOT_TOPIC + frame[len(TOPIC):] if frame.startswith(TOPIC) else frame


class Publisher:
    """A hostile failsh feed: once failmon subscribes, ``bad`` every 50 ms for 0.5 s, then
    ``good`` (if any) every 50 ms until closed.  An XPUB sees the subscription, so the bad
    frames are sent while failmon listens."""

    def __init__(self, ctx: zmq.Context, bad_frame: bytes, good: bytes | None) -> None:
        self.port = free_port()
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.linger = 0
        self.sock.bind(f"tcp://127.0.0.1:{self.port}")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(compact(bad_frame), good), daemon=True)
        self.thread.start()

    def _run(self, bad_frame: bytes, good: bytes | None) -> None:
        if not self.sock.poll(20000):  # bounded: failmon subscribes within ms of starting
            return
        self.sock.recv()
        start = time.monotonic()
        while not self.stop.is_set() and time.monotonic() - start < 30:
            frame = bad_frame if time.monotonic() - start < 0.5 or good is None else good
            self.sock.send(frame)
            self.stop.wait(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def hostile_feed(zctx: zmq.Context) -> Iterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(bad_frame: bytes, good: bytes | None = feed.encode(GOOD)) -> Publisher:
        made.append(Publisher(zctx, bad_frame, good))
        return made[-1]
    yield make
    for p in made:
        p.close()


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_failmon_shows_the_good_snapshot_and_a_line_for_the_bad(hostile_feed: Callable[..., Publisher],
                                                                frame: bytes) -> None:
    target = f"127.0.0.1:{hostile_feed(frame).port}"
    r = run_cli("failmon", "-1", "-t", "15", target)
    assert r.returncode == 0, r.stderr
    assert "goodnode  web" in r.stdout and "www2=RECOVER(up)" in r.stdout
    errors = [line for line in r.stdout.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: bad snapshot from {target}: "), r.stdout
    assert r.stderr.strip() == f"failmon: {errors[0][len('error: '):]}"
    assert "Traceback" not in r.stdout + r.stderr


def test_failmon_html_shows_the_bad_snapshot(hostile_feed: Callable[..., Publisher]) -> None:
    target = f"127.0.0.1:{hostile_feed(MALFORMED['time NaN']).port}"
    r = run_cli("failmon", "-h", "-t", "15", target)
    assert r.returncode == 0, r.stderr
    assert f'<p class="error">bad snapshot from {target}: snapshot.time: not a number' in r.stdout
    assert "<td>goodnode</td>" in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_failmon_with_only_bad_snapshots_says_why(hostile_feed: Callable[..., Publisher]) -> None:
    target = f"127.0.0.1:{hostile_feed(MALFORMED['rtt a string'], good=None).port}"
    r = run_cli("failmon", "-1", "-t", "3", target)
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.strip() == (f"failmon: bad snapshot from {target}: hosts[0].rtt: not a number in [0, 1e+06]; "
                                "no good snapshot within 3 s")


# The decoder itself --------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4),
                    max_leaves=20)


PATHS = json_paths(GOOD)  # every field, so the fuzz reaches each


def _accepted_or_bad_snapshot(frame: bytes) -> None:
    try:
        snap = feed.decode(frame)
    except feed.BadSnapshot:
        return
    failmon.text([snap], [])  # what decode accepts, every view can show
    failmon.html_page([snap])
    feed.text(snap)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PATHS), JSON)
def test_decode_of_a_snapshot_with_any_field_replaced(path: tuple, value: object) -> None:
    _accepted_or_bad_snapshot(bad(path, value))


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_decode_of_any_json(value: object) -> None:
    _accepted_or_bad_snapshot(json.dumps(value).encode())


# failkey --------------------------------------------------------------------------------------
def test_failkey_directory_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("not a directory\n")
    r = run_cli("failkey", "-d", str(f), "www1")
    assert r.returncode == 5
    # ENOTDIR, not EEXIST: "File exists" would read as "the key files exist already"
    assert r.stderr.strip() == f"failkey: cannot write the key pair in {f}: Not a directory"
    assert f.read_text() == "not a directory\n" and "Traceback" not in r.stderr


# failc / failstat ------------------------------------------------------------------------------
def test_numeric_service_name_held_by_faild(faild: FaildProcess) -> None:
    with faild.client() as c:
        c.call("lease", ttl=600)  # a live failsh: 123 UP is not stale (failstat would exit 6)
    assert run_cli("failc", "-h", faild.address, "123", "UP").returncode == 0
    assert run_cli("failc", "-h", faild.address, "web", "FAIL").returncode == 0
    r = run_cli("failc", "-h", faild.address, "123")
    assert r.returncode == 0 and r.stdout.startswith("123 UP since ")
    r = run_cli("failstat", "--history", faild.address)
    assert r.returncode == 0, r.stderr
    names = [line.split()[1] for line in r.stdout.splitlines()[1:3]]
    assert names == ["123", "web"] and "123 - -> UP" in r.stdout
    r = run_cli("failstat", "--json", faild.address)
    assert [s["name"] for s in json.loads(r.stdout)[0]["services"]] == ["123", "web"]


class HostileFaild:
    """A REP socket that answers every request with ``fields`` as an ok reply."""

    def __init__(self, ctx: zmq.Context, fields: dict) -> None:
        self.port = free_port()
        self.sock = ctx.socket(zmq.REP)
        self.sock.linger = 0
        self.sock.bind(f"tcp://127.0.0.1:{self.port}")
        self.fields = fields
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for _ in range(100):  # bounded: each test sends a few requests
            while not self.sock.poll(100):
                if self.stop.is_set():
                    return
            request = json.loads(self.sock.recv())
            self.sock.send(json.dumps({"v": 1, "id": request.get("id"), "ok": True, **self.fields}).encode())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


RECORD = {"name": "web", "state": "UP", "last_change": NOW, "counter": 1}
HOST = {"name": "evil", "started": NOW, "pid": 1}
HOSTILE_REPLIES = {
    "numeric service name": {"host": HOST, "services": [{**RECORD, "name": 123}, RECORD], "history": []},
    "last change NaN": {"host": HOST, "services": [{**RECORD, "last_change": math.nan}], "history": []},
    "last change 1e300": {"host": HOST, "services": [{**RECORD, "last_change": 1e300}], "history": []},
    "history time NaN": {"host": HOST, "services": [RECORD],
                         "history": [{"service": "web", "old": None, "new": "UP", "time": math.nan,
                                      "counter": 1, "reason": "x"}]},
}


@pytest.mark.parametrize("fields", HOSTILE_REPLIES.values(), ids=HOSTILE_REPLIES.keys())
@pytest.mark.parametrize("prog", ["failc", "failstat"])
def test_hostile_faild_reply_is_one_line(zctx: zmq.Context, prog: str, fields: dict) -> None:
    faild = HostileFaild(zctx, fields)
    try:
        address = f"127.0.0.1:{faild.port}"
        args = ["-h", address, "web"] if prog == "failc" else ["--history", address]
        r = run_cli(prog, *args)
    finally:
        faild.close()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), r.stderr


HOSTILE_HC = {
    "details of every wrong type": {"host": HOST, "services": [{**RECORD, "hc": {
        "last_check": "now", "latency": "fast", "ok": "yes", "detail": ["x"], "fall": "2", "rise": None,
        "interval": math.nan, "deps": [1, 2], "recent": "+-x", "kind": {"a": 1}, "reason": 5}}], "history": []},
    "details a list": {"host": HOST, "services": [{**RECORD, "hc": ["tcp"]}], "history": []},
    "details with escapes": {"host": HOST, "services": [{**RECORD, "hc": {
        "kind": "tcp", "last_check": NOW, "latency": 1e300, "ok": True, "detail": "\x1b[2Jok\nforged",
        "fall": 2, "rise": 2, "interval": 1e300}}], "history": []},
    "numeric service name": HOSTILE_REPLIES["numeric service name"],
    "history time NaN": HOSTILE_REPLIES["history time NaN"],
}


@pytest.mark.parametrize("fields", HOSTILE_HC.values(), ids=HOSTILE_HC.keys())
def test_hcmon_on_a_hostile_hc(zctx: zmq.Context, fields: dict) -> None:
    hc = HostileFaild(zctx, fields)
    try:
        r = run_cli("hcmon", "--history", "5", f"127.0.0.1:{hc.port}")
    finally:
        hc.close()
    assert "Traceback" not in r.stdout + r.stderr and "\x1b" not in r.stdout
    assert r.stdout.startswith("<!DOCTYPE html>") and r.stdout.rstrip().endswith("</html>")
    if "hc" in fields["services"][0]:  # bad details: left out, the rest shown
        assert r.returncode == 0, r.stderr
        assert "<td>web" in r.stdout
    else:
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert 'class="error">bad reply from' in r.stdout


@pytest.mark.parametrize(("args", "status"), [
    (["-1", "-t", "nan", "127.0.0.1:1"], 2), (["-1", "-t", "1e300", "127.0.0.1:1"], 2),
    (["-1", "-t", "0", "127.0.0.1:1"], 2), (["-l", "--every", "nan", "127.0.0.1:1"], 2),
    (["-l", "--count", "-1", "127.0.0.1:1"], 2), (["-h", "--refresh", "x", "127.0.0.1:1"], 2),
    (["-1", "-t", "0.2", "tcp://"], 4), (["-1", "-t", "0.2", "nosuch://x"], 4), (["-1", "-t", "0.2", "[::1"], 4),
])
def test_failmon_odd_arguments(args: list[str], status: int) -> None:
    r = run_cli("failmon", *args)
    assert r.returncode == status, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip()
    if status != 2:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize(("prog", "args"), [
    ("failstat", ["-t", "0.2", "\udcff"]), ("failc", ["-t", "0.2", "-h", "\udcff", "web"]),
    ("failmon", ["-1", "-t", "0.2", "\udcff"]), ("hcmon", ["-t", "0.2", "\udcff"]),
    ("failkey", ["--show", "/nonexistent/\udcff.key"]), ("faildebug", ["-t", "0.2", "-h", "\udcff", "all", "info"]),
])
def test_argument_that_is_not_utf8(prog: str, args: list[str], tmp_path: Path) -> None:
    """A byte string that is not UTF-8 (here b'\\xff') comes back in messages as a lone
    surrogate; a strict UTF-8 stdout/stderr (as in an en_US.UTF-8 locale) must not turn
    that into a traceback."""
    r = run_cli(prog, *args, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert "Traceback" not in r.stderr and r.returncode in (1, 3, 4, 5), (r.returncode, r.stderr)
    assert "\\udcff" in r.stdout + r.stderr
