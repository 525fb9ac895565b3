"""The probes: one function per check kind (failover/hc/kinds.py calls them), each
returning ``(ok, detail)`` within its timeout.

Every socket a check opens is armed on a watchdog that shuts it down at the check's
deadline, so a server that trickles bytes cannot hold a check longer than its
timeout (plus scheduling noise); per-operation socket timeouts catch the plain
hang earlier.  Commands run in their own process group, killed as a group on
timeout.  A probe may raise: kinds.run_check turns every exception into
``(False, "why")`` with :func:`describe`.
"""

from __future__ import annotations

import heapq
import http.client
import ipaddress
import itertools
import logging
import os
import random
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

log = logging.getLogger("failover.hc.checks")
Result = tuple[bool, str]
MAX_BODY = 256 * 1024
USER_AGENT = "failover-hc/0.6"


class CheckTimeout(Exception):
    pass


class Deadline:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.at = time.monotonic() + timeout

    def left(self) -> float:
        """Seconds left; raise CheckTimeout once the deadline has passed."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise CheckTimeout(f"timed out after {self.timeout:g} s")
        return left

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at


class _Watchdog:
    """One thread that runs callbacks at deadlines (shuts sockets of overdue checks)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._active: dict[int, Callable[[], None]] = {}
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, at: float, callback: Callable[[], None]) -> int:
        token = next(self._ids)
        with self._cond:
            heapq.heappush(self._heap, (at, token))
            self._active[token] = callback
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hc-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._active.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(5.0)
                    if not self._heap:
                        self._thread = None  # idle: let the thread end, arm() starts another
                        return
                    continue
                at, token = self._heap[0]
                if at > time.monotonic():
                    self._cond.wait(at - time.monotonic())
                    continue
                heapq.heappop(self._heap)
                callback = self._active.pop(token)
            try:
                callback()
            except Exception:  # a watchdog callback must never kill the watchdog
                log.debug("watchdog callback failed", exc_info=True)


WATCHDOG = _Watchdog()


@contextmanager
def guarded(sock: socket.socket, deadline: Deadline) -> Iterator[None]:
    """Shut ``sock`` down when ``deadline`` passes, whatever the check is blocked in."""
    def cut() -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    token = WATCHDOG.arm(deadline.at, cut)
    try:
        yield
    finally:
        WATCHDOG.disarm(token)


def _ms(start: float) -> str:
    return f"{(time.monotonic() - start) * 1000:.0f} ms"


def _preview(data: bytes | str, limit: int = 60) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


# --- tcp ---------------------------------------------------------------------------

def check_tcp(host: str, port: int, timeout: float, expect: str | None = None) -> Result:
    """Connect; with ``expect``, also read until that text arrives (a banner, say)."""
    dl, start = Deadline(timeout), time.monotonic()
    with socket.create_connection((host, port), timeout=dl.left()) as sock, guarded(sock, dl):
        if expect is None:
            return True, f"connected to {host}:{port} in {_ms(start)}"
        want, buf = expect.encode(), b""
        while want not in buf:
            sock.settimeout(dl.left())
            chunk = sock.recv(4096)
            if not chunk:
                dl.left()
                return False, f"connection closed before {expect!r} arrived (got {_preview(buf)})"
            buf = (buf + chunk)[-MAX_BODY:]
        return True, f"got {expect!r} from {host}:{port} in {_ms(start)}"


# --- http / https --------------------------------------------------------------------

def status_text(ranges: tuple[tuple[int, int], ...]) -> str:
    """Status ranges as the Hcfile writes them: 200,204-206."""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def check_http(url: str, timeout: float, status: tuple[tuple[int, int], ...] = ((200, 399),),
               body: str | None = None, insecure: bool = False) -> Result:
    """GET ``url`` (no redirects followed); check the status and optionally the body."""
    dl, start = Deadline(timeout), time.monotonic()
    u = urlsplit(url)
    if not u.hostname:  # kinds.Http.parse lets no such URL through
        raise ValueError(f"no host in URL {url!r}")
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        ctx = ssl.create_default_context()
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=dl.left(), context=ctx)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=dl.left())
    try:
        conn.connect()
        with guarded(conn.sock, dl):
            conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Connection": "close"})
            resp = conn.getresponse()
            data = resp.read(MAX_BODY) if body is not None else b""
    except OSError:
        dl.left()  # a cut by the watchdog reads as a timeout
        raise
    finally:
        conn.close()
    if dl.expired:  # the watchdog cut a slow reply short: what arrived is not the answer
        raise CheckTimeout(f"timed out after {timeout:g} s")
    if not any(lo <= resp.status <= hi for lo, hi in status):
        return False, f"HTTP {resp.status} {resp.reason} (expected {status_text(status)})"
    if body is not None and body not in data.decode("utf-8", "replace"):
        return False, f"HTTP {resp.status} but body lacks {body!r} (starts {_preview(data)})"
    return True, f"HTTP {resp.status} {resp.reason} in {_ms(start)}"


# --- dns -----------------------------------------------------------------------------

DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def dns_query(qid: int, name: str, qtype: int) -> bytes:
    """A standard query with recursion desired, one question of class IN."""
    qname = b"".join(bytes([len(label)]) + label.encode("ascii")
                     for label in name.rstrip(".").split(".") if label) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)


def _skip_name(data: bytes, pos: int) -> int:
    for _ in range(128):
        if pos >= len(data):
            raise ValueError("truncated name")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length
    raise ValueError("name too long")


def dns_parse(data: bytes, qtype: int) -> tuple[int, int, int, list[str]]:
    """Return (id, rcode, answer count, addresses of type ``qtype``) of a reply."""
    if len(data) < 12:
        raise ValueError("reply shorter than a DNS header")
    qid, flags, qdcount, ancount = struct.unpack(">HHHH", data[:8])
    if not flags & 0x8000:
        raise ValueError("not a DNS reply (QR bit clear)")
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(data, pos) + 4
    addresses = []
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        if pos + 10 > len(data):
            raise ValueError("truncated answer")
        rtype, _cls, _ttl, rdlength = struct.unpack(">HHIH", data[pos:pos + 10])
        rdata = data[pos + 10:pos + 10 + rdlength]
        if len(rdata) != rdlength:
            raise ValueError("truncated answer data")
        if rtype == qtype and rtype in (1, 28) and rdlength in (4, 16):
            addresses.append(str(ipaddress.ip_address(rdata)))
        pos += 10 + rdlength
    return qid, flags & 0xF, ancount, addresses


def check_dns(server: str, port: int, name: str, timeout: float, qtype: str = "A",
              expect: str | None = None) -> Result:
    """Ask ``server`` over UDP; healthy means NOERROR with at least one answer (and ``expect``)."""
    dl, start = Deadline(timeout), time.monotonic()
    family, _, _, _, addr = socket.getaddrinfo(server, port, type=socket.SOCK_DGRAM)[0]
    qid, qnum = random.randrange(65536), DNS_TYPES[qtype]
    packet = dns_query(qid, name, qnum)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)  # connected: replies from elsewhere are dropped, ICMP errors reported
        sock.send(packet)
        resend = time.monotonic() + timeout / 2
        while True:
            now = time.monotonic()
            if resend and now >= resend:  # one retransmission: UDP may lose the first
                sock.send(packet)
                resend = 0
            sock.settimeout(max(0.001, min(dl.left(), resend - now if resend else dl.left())))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                return False, f"nothing listens on {server}:{port}/udp (ICMP port unreachable)"
            try:
                rid, rcode, ancount, addresses = dns_parse(data, qnum)
            except ValueError as exc:
                return False, f"malformed reply from {server}: {exc}"
            if rid != qid:
                continue
            break
    rname = RCODES.get(rcode, f"RCODE {rcode}")
    if rcode != 0:
        return False, f"{name} {qtype}: {rname}"
    if ancount == 0:
        return False, f"{name} {qtype}: NOERROR but no answer"
    if expect is not None and expect not in addresses:
        return False, f"{name} {qtype}: {', '.join(addresses) or 'no address'} (expected {expect})"
    shown = ", ".join(addresses) if addresses else f"{ancount} answer{'s' if ancount > 1 else ''}"
    return True, f"{name} {qtype}: {shown} in {_ms(start)}"


# --- smtp ----------------------------------------------------------------------------

class _GuardedSMTP(smtplib.SMTP):
    def __init__(self, deadline: Deadline, local_hostname: str) -> None:
        self._deadline = deadline
        self._token: int | None = None
        super().__init__(local_hostname=local_hostname, timeout=deadline.left())

    def _get_socket(self, host, port, timeout):  # noqa: ANN001 - smtplib's signature
        sock = super()._get_socket(host, port, self._deadline.left())

        def cut() -> None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._token = WATCHDOG.arm(self._deadline.at, cut)
        return sock

    def disarm(self) -> None:
        if self._token is not None:
            WATCHDOG.disarm(self._token)


def check_smtp(host: str, port: int, timeout: float, helo: str = "", starttls: bool = False,
               insecure: bool = False) -> Result:
    """Read the 220 banner, say EHLO (expect 250), optionally STARTTLS and EHLO again, QUIT."""
    dl, start = Deadline(timeout), time.monotonic()
    smtp = _GuardedSMTP(dl, helo or socket.gethostname())
    try:
        code, msg = smtp.connect(host, port)
        if code != 220:
            return False, f"banner {code} {_preview(msg)}"
        code, msg = smtp.ehlo()
        if code != 250:
            return False, f"EHLO answered {code} {_preview(msg)}"
        if starttls:
            if not smtp.has_extn("starttls"):
                return False, "server does not offer STARTTLS"
            ctx = ssl.create_default_context()
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            smtp.starttls(context=ctx)
            code, msg = smtp.ehlo()
            if code != 250:
                return False, f"EHLO after STARTTLS answered {code} {_preview(msg)}"
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        return True, f"220 banner and 250 EHLO{' over TLS' if starttls else ''} in {_ms(start)}"
    except (smtplib.SMTPException, OSError):
        dl.left()
        raise
    finally:
        smtp.disarm()
        smtp.close()


# --- ldap ----------------------------------------------------------------------------

LDAP_RESULTS = {0: "success", 1: "operationsError", 2: "protocolError", 7: "authMethodNotSupported",
                8: "strongerAuthRequired", 32: "noSuchObject", 34: "invalidDNSyntax",
                48: "inappropriateAuthentication", 49: "invalidCredentials",
                50: "insufficientAccessRights", 51: "busy", 52: "unavailable", 53: "unwillingToPerform"}


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _ber(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _ber_length(len(payload)) + payload


def ldap_bind_request(message_id: int, dn: str = "", password: str = "") -> bytes:
    """LDAPMessage { messageID, BindRequest { version 3, name, simple password } } in BER."""
    bind = _ber(0x02, bytes([3])) + _ber(0x04, dn.encode()) + _ber(0x80, password.encode())
    return _ber(0x30, _ber(0x02, bytes([message_id])) + _ber(0x60, bind))


LDAP_UNBIND = _ber(0x30, _ber(0x02, bytes([2])) + bytes([0x42, 0x00]))


def _ber_read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, next position) of the element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated BER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 0 < count <= 4 or pos + count > len(data):
            raise ValueError("bad BER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(data):
        raise ValueError("truncated BER value")
    return tag, data[pos:pos + length], pos + length


def ldap_bind_result(message: bytes) -> tuple[int, str]:
    """resultCode and diagnosticMessage of a BindResponse LDAPMessage."""
    tag, seq, _ = _ber_read(message, 0)
    if tag != 0x30:
        raise ValueError("not an LDAPMessage")
    tag, _mid, pos = _ber_read(seq, 0)
    tag, op, _ = _ber_read(seq, pos)
    if tag != 0x61:
        raise ValueError(f"expected a BindResponse, got tag 0x{tag:02x}")
    tag, code, pos = _ber_read(op, 0)
    if tag != 0x0A or not code:
        raise ValueError("BindResponse lacks a resultCode")
    diagnostic = ""
    try:
        _, _matched, pos = _ber_read(op, pos)
        _, diag, _ = _ber_read(op, pos)
        diagnostic = diag.decode("utf-8", "replace")
    except ValueError:
        pass
    return int.from_bytes(code, "big"), diagnostic


def _read_ber_message(sock: socket.socket, dl: Deadline) -> bytes:
    buf = b""
    while True:
        if buf and buf[0] != 0x30:
            raise ValueError(f"not an LDAPMessage (starts {_preview(buf[:20])})")
        if len(buf) >= 2:
            first = buf[1]
            head = 2 + (first & 0x7F if first & 0x80 else 0)
            if len(buf) >= head:
                length = int.from_bytes(buf[2:head], "big") if first & 0x80 else first
                if length > MAX_BODY:
                    raise ValueError("LDAP reply too large")
                if len(buf) >= head + length:
                    return buf[:head + length]
        sock.settimeout(dl.left())
        chunk = sock.recv(4096)
        if not chunk:
            dl.left()
            raise ConnectionError("connection closed before a complete LDAP reply")
        buf += chunk


def check_ldap(host: str, port: int, timeout: float, dn: str = "", password: str = "") -> Result:
    """A simple bind (anonymous unless dn/password); healthy means resultCode 0."""
    dl, start = Deadline(timeout), time.monotonic()
    with socket.create_connection((host, port), timeout=dl.left()) as sock, guarded(sock, dl):
        sock.sendall(ldap_bind_request(1, dn, password))
        try:
            code, diagnostic = ldap_bind_result(_read_ber_message(sock, dl))
        except ValueError as exc:
            return False, f"bad LDAP reply: {exc}"
        try:
            sock.sendall(LDAP_UNBIND)
        except OSError:
            pass
    who = f"bind as {dn!r}" if dn else "anonymous bind"
    if code != 0:
        name = LDAP_RESULTS.get(code, "error")
        return False, f"{who}: resultCode {code} ({name}){': ' + diagnostic if diagnostic else ''}"
    return True, f"{who} succeeded in {_ms(start)}"


# --- command -------------------------------------------------------------------------

def run_command(command: str, timeout: float, args: tuple[str, ...] = (),
                env: dict[str, str] | None = None) -> Result:
    """Run a shell command in its own process group; kill the group on timeout."""
    start = time.monotonic()
    proc = subprocess.Popen(["/bin/sh", "-c", command, "hc", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = proc.poll() is None  # it may have exited with a child holding the pipe
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
    lines = [line for line in out.decode("utf-8", "replace").splitlines() if line.strip()]
    last = f": {lines[-1].strip()}" if lines else ""
    if timed_out:
        return False, f"killed after {timeout:g} s{last}"
    if proc.returncode != 0:
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        return False, f"{how}{last}"
    return True, f"exit status 0 in {_ms(start)}{last}"


# --- why a check failed ------------------------------------------------------------

def describe(exc: BaseException, timeout: float) -> str:
    """A short human reason for a failed check."""
    if isinstance(exc, CheckTimeout | TimeoutError | socket.timeout):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"server disconnected: {exc}" if str(exc) else "server disconnected"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "server closed the connection without a reply"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP reply: {type(exc).__name__} {exc}".strip()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
