"""A broken or hostile etcd member: whatever it answers, the client raises EtcdError with
a message (the arbiter thread logs it and counts the renewal as failed), never another
exception, and a good member after it is still used."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from failover.arbiter.etcd import Etcd, EtcdError

pytestmark = pytest.mark.fast

ANSWERS = [
    b"", b"not json", b"[1, 2]", b"\"text\"", b"[" * 100000, json.dumps({"ID": "x"}).encode(),
    json.dumps({"result": {"TTL": "many"}}).encode(), json.dumps({"TTL": [1]}).encode(),
    json.dumps({"responses": 5}).encode(), json.dumps({"responses": [1, "x"]}).encode(),
    json.dumps({"responses": [{"response_range": {"kvs": {"a": 1}}}]}).encode(),
    json.dumps({"responses": [{"response_range": {"kvs": [{"value": "!!", "create_revision": "1"}]}}]}).encode(),
    json.dumps({"responses": [{"response_range": ["x"]}]}).encode(),
    json.dumps({"kvs": [5]}).encode(), json.dumps({"kvs": "abc"}).encode(),
    json.dumps({"kvs": [{"create_revision": None}]}).encode(), json.dumps({"error": {"x": 1}}).encode(),
]


@pytest.fixture
def member() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP server that answers every POST with the next body of its list."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = bodies.pop(0) if bodies else b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("answer", ANSWERS, ids=range(len(ANSWERS)))
def test_every_call_turns_nonsense_into_an_etcd_error(member: tuple[str, list[bytes]], answer: bytes) -> None:
    url, bodies = member
    client = Etcd([url], timeout=2)
    calls = (lambda: client.grant(3), lambda: client.keepalive(7), lambda: client.acquire("/failover/web", "a", 7),
             lambda: client.get("/failover/web"))
    for call in calls:
        bodies[:] = [answer]
        try:
            call()
        except EtcdError as exc:
            assert str(exc).startswith("arbiter etcd: "), exc


def test_the_next_answer_is_read_normally(member: tuple[str, list[bytes]]) -> None:
    url, bodies = member
    client = Etcd([url], timeout=2)
    bodies[:] = [b"[" * 100000, json.dumps({"ID": "42"}).encode()]
    with pytest.raises(EtcdError):
        client.grant(3)
    assert client.grant(3) == 42
