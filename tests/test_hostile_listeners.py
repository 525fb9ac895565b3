"""Every listener of a running cluster gets every class of hostile input (issue 11).

A real two-host cluster on loopback (www1 master, www2 slave, each a faild and a failsh
with its monitor feed and control port), an hc with its monitor port, and a hostile
"faild" that www1's failsh polls as its slave www3 and that answers with malformed
records.  Each listener gets multi-frame, malformed, wrongly typed, oversized, deeply
nested and unknown-version messages and raw TCP garbage.  Afterwards every process still
runs and serves, no service changed state and no log holds a traceback.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from cluster import Cluster
from support import HcProcess, free_port, wait_for

from failover import client, protocol
from failover.observe import feed

pytestmark = pytest.mark.process

POLICY = """
failsvc web interval 0.3
failsvc web start {svc_start web}
failsvc web stop {svc_stop web}
if {$env(FO_NODE) eq "www1"} { failsvc web slaves {www2 www3} } else { failsvc web masters {www1} }
"""

PING = b'{"v":1,"id":1,"op":"ping"}'
BAD_REQUESTS: dict[str, list[bytes]] = {
    "two frames": [PING, b"x"],
    "three empty frames": [b"", b"", b""],
    "not UTF-8 JSON": [b"\xff\xfe garbage"],
    "JSON but not an object": [b"[1,2,3]"],
    "wrong types": [b'{"v":1,"id":[1],"op":{"x":1},"service":5,"state":7}'],
    "a set with a NaN ttl": [b'{"v":1,"id":1,"op":"lease","ttl":NaN}'],
    "unknown version": [b'{"v":99,"id":1,"op":"ping"}'],
    "version as text": [b'{"v":"1","id":1,"op":"ping"}'],
    "deep nesting": [b"[" * 50_000],
    "a 5000-digit number": [b'{"v":1,"id":' + b"9" * 5000 + b',"op":"ping"}'],
    "oversized": [b"x" * (protocol.MAX_MESSAGE + 10)],
}
RAW_TCP = [b"GET / HTTP/1.0\r\n\r\n", b"\x00" * 64, b"\xff" * 11 + b"\x7f" + b"\x00" * 100, bytes(range(256)) * 40]

# What a hostile peer answers to failsh's polls: one well-formed reply, then broken ones.
RECORD = {"name": "web", "state": "RECOVER", "last_change": 1.7e9, "counter": 3}
HOST = {"name": "www3", "started": 1.7e9, "pid": 42, "lease": 5.0}
BAD_REPLIES: list[dict] = [
    {"services": [{**RECORD, "state": "BOGUS"}]},
    {"services": [{k: v for k, v in RECORD.items() if k != "name"}]},
    {"services": [{**RECORD, "last_change": "yesterday"}]},
    {"services": {"web": RECORD}},
    {"services": [RECORD], "host": ["www3"]},
    {"services": [RECORD, RECORD]},
    {"services": [{**RECORD, "counter": 1e300}]},
    {"services": [{**RECORD, "name": 123}]},
    {"services": [RECORD], "host": {**HOST, "lease": "forever"}},
    {"services": [RECORD], "host": {**HOST, "started": None}},
    {"services": [None, 7, "web"]},
]


class HostilePeer:
    """A REP socket posing as www3's faild: every poll gets the next malformed reply."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.port = free_port()
        self.sock = ctx.socket(zmq.REP)
        self.sock.linger = 0
        self.sock.bind(f"tcp://127.0.0.1:{self.port}")
        self.answered = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i in range(10_000):  # bounded: a few polls per second for the test's length
            while not self.sock.poll(100):
                if self.stop.is_set():
                    return
            try:
                request = json.loads(self.sock.recv())
            except ValueError:
                request = {}
            body = {"host": HOST, **BAD_REPLIES[i % len(BAD_REPLIES)]}
            self.sock.send(json.dumps({"v": 1, "id": request.get("id"), "ok": True, **body}).encode())
            self.answered += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)  # closes what a failed assertion left open


@pytest.fixture
def site(tmp_path: Path, ctx: zmq.Context) -> Iterator[tuple[Cluster, HostilePeer, HcProcess]]:
    peer = HostilePeer(ctx)
    c = Cluster(tmp_path, ["www1", "www2"], POLICY + f"failhost www3 address 127.0.0.1\nfailhost www3 port {peer.port}"
                "\nfailhost www3 monitor 0\n")
    hcfile = tmp_path / "Hcfile"
    hcfile.write_text("one:\n    check command true\n    rise 1\n")
    hc = HcProcess(tmp_path, hcfile).start()
    try:
        c.start_master_then_slave()
        yield c, peer, hc
    finally:
        c.close()
        peer.close()
        hc.kill9()


def _send_requests(ctx: zmq.Context, endpoint: str) -> dict[str, bool]:
    """Each bad request on a fresh DEALER; which ones got an answer within a second."""
    answered = {}
    for what, frames in BAD_REQUESTS.items():
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(endpoint)
        s.send_multipart([b"", *frames])
        answered[what] = bool(s.poll(1000))
        if answered[what]:
            reply = protocol.decode_reply(s.recv_multipart()[-1])
            assert reply["ok"] is False, (what, reply)
        s.close()
    return answered


def _raw_tcp(port: int) -> None:
    for payload in RAW_TCP:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            try:
                s.sendall(payload)
                s.recv(64)
            except OSError:
                pass  # dropped by ZeroMQ: fine


def _hostile_subscriber(ctx: zmq.Context, port: int) -> None:
    """An XSUB may send anything to a feed: (un)subscriptions of any size, other frames."""
    s = ctx.socket(zmq.XSUB)
    s.linger = 0
    s.connect(f"tcp://127.0.0.1:{port}")
    for frame in (b"\x01", b"\x01" + b"a" * 60_000, b"\x00nothing", b"\x02what", b"", b"\xff" * 1000):
        s.send(frame)
    s.send_multipart([b"\x01x", b"second frame"])
    time.sleep(0.3)
    s.close()


def _feed_works(ctx: zmq.Context, port: int) -> dict:
    s = ctx.socket(zmq.SUB)
    s.linger = 0
    s.setsockopt(zmq.SUBSCRIBE, feed.SNAPSHOT_TOPIC)
    s.connect(f"tcp://127.0.0.1:{port}")
    try:
        assert s.poll(5000), "no snapshot on the feed"
        return feed.decode(s.recv())
    finally:
        s.close()


def test_every_listener_survives_every_class_of_hostile_input(site, ctx: zmq.Context) -> None:
    c, peer, hc = site
    www1 = c.failsh["www1"]
    wait_for(lambda: peer.answered > len(BAD_REPLIES), 15, "www1 to poll the hostile peer through its replies")
    before = c.states("web")
    assert before == {"www1": "UP", "www2": "RECOVER"}
    targets = {"faild www1": c.failds["www1"].port, "failsh www1 control port": www1.control_port,
               "failsh www2 control port": c.failsh["www2"].control_port, "hc monitor": hc.port}
    answers = {}
    for name, port in targets.items():
        answers[name] = _send_requests(ctx, f"tcp://127.0.0.1:{port}")
        _raw_tcp(port)
    for port in c.monitor_ports.values():
        _hostile_subscriber(ctx, port)
        _raw_tcp(port)
    # every request was answered with an error but the one too large to read
    for name, got in answers.items():
        assert [w for w, ok in got.items() if not ok] == ["oversized"], (name, got)
    # everyone still runs and serves, and nothing moved
    for name, port in targets.items():
        with client.Client(f"tcp://127.0.0.1:{port}", timeout=1, retries=1) as cl:
            assert cl.ping().name in ("www1", "www2", "hcd"), name
    for port in c.monitor_ports.values():
        _feed_works(ctx, port)
    answered = peer.answered
    wait_for(lambda: peer.answered > answered + 3, 10, "www1 to go on polling the hostile peer")
    assert all(p.running() for p in c.failsh.values()) and hc.running()
    assert c.states("web") == before and c.markers("www1", "web") == ["start"]
    snap = _feed_works(ctx, c.monitor_ports["www1"])
    www3 = next(h for h in snap["hosts"] if h["name"] == "www3")
    assert www3["status"] != "up", "a peer answering garbage counts as not answering"
    logs = "".join(p.log() for p in c.failsh.values()) + "".join(f.log() for f in c.failds.values())
    assert "Traceback" not in logs and "Traceback" not in hc.log()
    assert "bad reply from www3" in www1.log()
    assert "\x1b" not in logs
