"""Small local servers that misbehave on request, for hc's tests and demos.

Each server listens on 127.0.0.1 (port 0 picks a free one) in daemon threads and has
a ``mode`` that can be changed while it runs:

* ``"ok"``     answers correctly;
* ``"error"``  answers with an error (HTTP 500, SERVFAIL, SMTP 554, LDAP unavailable);
* ``"hang"``   accepts and never answers (until the server is stopped);
* a string of ``+`` and ``-`` (``"++-"``): flaps, each request taking the next
  character in turn, ``+`` answering as "ok" and ``-`` as "error".

Use them as context managers: ``with FakeHTTP() as web: ... web.port ...``.
"""

from __future__ import annotations

import http.server
import itertools
import socket
import socketserver
import ssl
import struct
import threading
from typing import Any

HANG_LIMIT = 30.0  # a hanging handler gives up after this, whatever happens


class _Base:
    def __init__(self, mode: str = "ok") -> None:
        self._mode = mode
        self._cycle: Any = None
        self._lock = threading.Lock()
        self.release = threading.Event()  # set on stop: hanging handlers return
        self.requests = 0

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        with self._lock:
            self._mode, self._cycle = value, None

    def next_mode(self) -> str:
        """"ok", "error" or "hang" for the next request (flap patterns advance)."""
        with self._lock:
            self.requests += 1
            mode = self._mode
            if mode and set(mode) <= {"+", "-"}:
                if self._cycle is None:
                    self._cycle = itertools.cycle(mode)
                return "ok" if next(self._cycle) == "+" else "error"
            return mode

    def hang(self) -> None:
        self.release.wait(HANG_LIMIT)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _StreamFake(_Base):
    """A threaded TCP server whose handler is ``self.session(sock)``."""

    def __init__(self, mode: str = "ok", port: int = 0) -> None:
        super().__init__(mode)
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(HANG_LIMIT)
                try:
                    fake.session(self.request)
                except OSError:
                    pass

        self._server = _TCPServer(("127.0.0.1", port), Handler, bind_and_activate=True)
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def session(self, sock: socket.socket) -> None:
        raise NotImplementedError


def _readline(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = sock.recv(1024)
        if not chunk:
            return b""
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.rstrip(b"\r")


class FakeTCP(_StreamFake):
    """Sends a banner line ("ok"), closes at once ("error"), or says nothing ("hang")."""

    banner = b"SSH-2.0-fake\r\n"

    def session(self, sock: socket.socket) -> None:
        mode = self.next_mode()
        if mode == "ok":
            sock.sendall(self.banner)
            self.release.wait(0.5)
        elif mode == "hang":
            self.hang()


class FakeSMTP(_StreamFake):
    def session(self, sock: socket.socket) -> None:
        mode = self.next_mode()
        if mode == "hang":
            self.hang()
            return
        if mode == "error":
            sock.sendall(b"554 fake.test no service here\r\n")
            return
        sock.sendall(b"220 fake.test ESMTP fake\r\n")
        buf = bytearray()
        while True:
            line = _readline(sock, buf)
            if not line:
                return
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                sock.sendall(b"250-fake.test hello\r\n250-PIPELINING\r\n250 HELP\r\n")
            elif verb == b"QUIT":
                sock.sendall(b"221 bye\r\n")
                return
            else:
                sock.sendall(b"502 not implemented\r\n")


class FakeLDAP(_StreamFake):
    """Answers a simple bind: success for anonymous or the right dn/password, else 49."""

    def __init__(self, mode: str = "ok", port: int = 0, dn: str = "cn=admin,dc=test",
                 password: str = "secret") -> None:
        super().__init__(mode, port)
        self.dn, self.password = dn, password

    def session(self, sock: socket.socket) -> None:
        data = b""
        while len(data) < 2 or len(data) < 2 + data[1]:  # short-form lengths only: fine for binds
            chunk = sock.recv(4096)
            if not chunk:
                return
            data += chunk
        mode = self.next_mode()
        if mode == "hang":
            self.hang()
            return
        dn, password = _parse_bind(data)
        if mode == "error":
            code = 52  # unavailable
        elif (dn, password) in (("", ""), (self.dn, self.password)):
            code = 0
        else:
            code = 49  # invalidCredentials
        diag = b"" if code == 0 else b"fake says no"
        op = bytes([0x0A, 1, code, 0x04, 0, 0x04, len(diag)]) + diag
        body = bytes([0x02, 1, 1, 0x61, len(op)]) + op
        sock.sendall(bytes([0x30, len(body)]) + body)
        sock.recv(64)  # the unbind, or EOF


def _parse_bind(data: bytes) -> tuple[str, str]:
    # 30 L 02 01 id 60 L 02 01 03 04 L dn 80 L password
    pos = 2
    pos += 2 + data[pos + 1]  # messageID
    pos += 2                  # [APPLICATION 0] header
    pos += 2 + data[pos + 1]  # version
    dn_len = data[pos + 1]
    dn = data[pos + 2:pos + 2 + dn_len].decode()
    pos += 2 + dn_len
    pw_len = data[pos + 1]
    return dn, data[pos + 2:pos + 2 + pw_len].decode()


class FakeHTTP(_Base):
    """GET anything: 200 "all ok" ("ok"), 500 "broken" ("error"), nothing ("hang"),
    or, in mode "trickle", a 200 whose body arrives one byte every 0.2 s."""

    def __init__(self, mode: str = "ok", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(mode)
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                mode = fake.next_mode()
                if mode == "hang":
                    fake.hang()
                    return
                if mode == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", "50")
                    self.end_headers()
                    for _ in range(50):
                        if fake.release.wait(0.2):
                            return
                        try:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                        except OSError:  # the client gave up: that is the point
                            return
                    return
                code, body = (200, b"all ok\n") if mode == "ok" else (500, b"broken\n")
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that time out and hang up are what these servers are for

        self._server = Server(("127.0.0.1", port), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/"

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


class FakeDNS(_Base):
    """UDP responder: NAME -> ADDRESS records; "error" is SERVFAIL, "hang" drops the query.
    Names it does not know get NXDOMAIN."""

    def __init__(self, records: dict[str, str] | None = None, mode: str = "ok", port: int = 0) -> None:
        super().__init__(mode)
        self.records = records if records is not None else {"ok.test": "127.0.0.1"}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", port))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        if self._thread:
            self._thread.join(2)
        self._sock.close()

    def _serve(self) -> None:
        while not self.release.is_set():
            try:
                data, peer = self._sock.recvfrom(512)
            except (TimeoutError, OSError):
                continue
            try:
                reply = self.answer(data)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue
            if reply is not None:
                self._sock.sendto(reply, peer)

    def answer(self, query: bytes) -> bytes | None:
        qid, flags = struct.unpack(">HH", query[:4])
        pos, labels = 12, []
        while query[pos]:
            labels.append(query[pos + 1:pos + 1 + query[pos]].decode())
            pos += 1 + query[pos]
        question = query[12:pos + 5]
        name, qtype = ".".join(labels).lower(), struct.unpack(">H", query[pos + 1:pos + 3])[0]
        mode = self.next_mode()
        if mode == "hang":
            return None
        rflags = 0x8180 | (flags & 0x0100)
        answers = b""
        count = 0
        if mode == "error":
            rflags |= 2  # SERVFAIL
        elif name not in self.records:
            rflags |= 3  # NXDOMAIN
        elif qtype == 1:
            addr = socket.inet_aton(self.records[name])
            answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + addr
            count = 1
        return struct.pack(">HHHHHH", qid, rflags, 1, count, 0, 0) + question + answers
