"""A small etcd v3 client over etcd's JSON/HTTP gateway, from the standard library.

Only what the arbiter needs (docs/arbiter.md): grant, keep alive and revoke a lease; put a
key only if it is absent, bound to that lease (a transaction); read a key; delete a key
only if it still holds our value.  Patroni's etcd3 support talks to the same gateway; a
gRPC client would add a heavy dependency for five calls.

Every call tries the members in turn (the last one that answered first), each with a
timeout, so one dead member costs one timeout; a member that answers but cannot serve
(no leader: the minority side of a partition) counts as not answering.  When no member
serves, :class:`Unavailable` says so in one line naming them.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.parse
from typing import Any

import attrs

API = "/v3"  # etcd 3.4 and later (3.3 used /v3beta)


class EtcdError(Exception):
    """A request etcd refused, or an answer that makes no sense; one line for the user."""


class Unavailable(EtcdError):
    """No member of the cluster served the request."""


@attrs.frozen
class Holder:
    """Who holds a key: the value written there (a node name), the key's creation
    revision (the fencing token: it grows with every new holder), its lease."""

    owner: str
    revision: int
    lease: int


@attrs.frozen
class TLS:
    ca: str | None = None      # CA file that signed the members' certificates
    cert: str | None = None    # client certificate and key, if the members ask for one
    key: str | None = None
    insecure: bool = False     # do not verify the members' certificates (tests only)

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


def parse_endpoint(text: str) -> tuple[str, str, int]:
    """``http://host:port`` or ``https://...`` (``host:port`` means http) -> (scheme, host, port)."""
    url = urllib.parse.urlsplit(text if "://" in text else f"http://{text}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise EtcdError(f"arbiter etcd: not an endpoint: {text!r} (want http://HOST:PORT or https://HOST:PORT)")
    try:
        port = url.port or 2379
    except ValueError:
        raise EtcdError(f"arbiter etcd: bad port in {text!r}") from None
    return url.scheme, url.hostname, port


class Etcd:
    """One cluster: ``endpoints`` are its members' client URLs."""

    def __init__(self, endpoints: list[str], timeout: float = 1.0, tls: TLS | None = None,
                 user: str | None = None, password: str | None = None) -> None:
        if not endpoints:
            raise EtcdError("arbiter etcd: no endpoint given")
        self.endpoints = [parse_endpoint(e) for e in endpoints]
        self.names = [e if "://" in e else f"http://{e}" for e in endpoints]
        self.timeout = timeout
        self.tls = tls
        self._ssl = tls.context() if tls is not None else None
        self.user, self.password = user, password
        self._token: str | None = None
        self._good = 0  # index of the member that answered last

    # Transport -----------------------------------------------------------
    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/path`` on the first member that serves it."""
        errors = []
        n = len(self.endpoints)
        for i in range(n):
            index = (self._good + i) % n
            try:
                reply = self._post(index, path, body)
            except _MemberDown as exc:
                errors.append(f"{self.names[index]}: {exc}")
                continue
            self._good = index
            return reply
        raise Unavailable(f"arbiter etcd: no member of {', '.join(self.names)} answered ({'; '.join(errors)})")

    def _post(self, index: int, path: str, body: dict[str, Any], auth: bool = True) -> dict[str, Any]:
        scheme, host, port = self.endpoints[index]
        headers = {"Content-Type": "application/json"}
        if auth and self.user is not None:
            headers["Authorization"] = self._token or self._authenticate(index)
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            conn.request("POST", f"{API}/{path}", json.dumps(body), headers)
            resp = conn.getresponse()
            data = resp.read(1 << 20)
        except (OSError, http.client.HTTPException) as exc:
            raise _MemberDown(str(exc) or type(exc).__name__) from None
        finally:
            conn.close()
        # the gateway streams some answers (keepalive): the first JSON line is the answer
        first = data.split(b"\n", 1)[0]
        try:
            reply = json.loads(first) if first.strip() else {}
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise _MemberDown(f"HTTP {resp.status}: not JSON") from None
        if not isinstance(reply, dict):
            raise _MemberDown(f"HTTP {resp.status}: not a JSON object")
        if "result" in reply and isinstance(reply["result"], dict):
            reply = reply["result"]
        error = reply.get("error")
        if isinstance(error, dict):  # streamed errors are wrapped once more
            error = error.get("message")
        if resp.status != 200 or error:
            message = str(error or reply.get("message") or f"HTTP {resp.status}")
            if resp.status in (401, 403) or any(w in message for w in ("token", "permission", "authentication")):
                self._token = None
                raise EtcdError(f"arbiter etcd: {self.names[index]} refused: {message}")
            raise _MemberDown(message)  # no leader, timeouts: another member may serve
        return reply

    def _authenticate(self, index: int) -> str:
        reply = self._post(index, "auth/authenticate", {"name": self.user, "password": self.password}, auth=False)
        token = reply.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdError(f"arbiter etcd: {self.names[index]} gave no token for user {self.user!r}")
        self._token = token
        return token

    # The calls the arbiter needs -------------------------------------------
    def grant(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds (rounded up: etcd counts whole seconds); its id."""
        reply = self.call("lease/grant", {"TTL": max(1, int(-(-ttl // 1)))})
        return _int(reply, "ID")

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``; the seconds it has left now (0: it is gone, a new one is needed)."""
        reply = self.call("lease/keepalive", {"ID": str(lease)})
        return _int(reply, "TTL") if reply.get("TTL") else 0

    def revoke(self, lease: int) -> None:
        """End ``lease`` now; its keys are deleted (a graceful release)."""
        try:
            self.call("lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise

    def acquire(self, key: str, owner: str, lease: int) -> Holder:
        """Create ``key`` = ``owner`` bound to ``lease`` if the key is absent (one
        transaction); return whoever holds it afterwards (us, or the one before us)."""
        k = _b64(key)
        reply = self.call("kv/txn", {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": _b64(owner), "lease": str(lease)}},
                        {"request_range": {"key": k}}],
            "failure": [{"request_range": {"key": k}}],
        })
        try:
            ranges = [r["response_range"] for r in reply.get("responses", []) if "response_range" in r]
        except (KeyError, TypeError, AttributeError):  # a hostile or broken member
            raise EtcdError(f"arbiter etcd: a transaction answer without its ranges: {str(reply)[:120]}") from None
        holder = _holder(ranges[-1] if ranges else {})
        if holder is None:
            raise EtcdError(f"arbiter etcd: {key} vanished during its transaction")
        return holder

    def get(self, key: str) -> Holder | None:
        return _holder(self.call("kv/range", {"key": _b64(key)}))

    def release(self, key: str, owner: str) -> bool:
        """Delete ``key`` if it still holds ``owner``; True if it did."""
        k = _b64(key)
        reply = self.call("kv/txn", {
            "compare": [{"key": k, "target": "VALUE", "result": "EQUAL", "value": _b64(owner)}],
            "success": [{"request_delete_range": {"key": k}}], "failure": []})
        return bool(reply.get("succeeded"))


class _MemberDown(Exception):
    """This member did not serve the request; try the next one."""


def _int(reply: dict[str, Any], key: str) -> int:
    try:
        return int(reply[key])
    except (KeyError, TypeError, ValueError):
        raise EtcdError(f"arbiter etcd: answer without a valid {key!r}: {str(reply)[:120]}") from None


def _holder(range_reply: Any) -> Holder | None:
    try:
        kvs = range_reply.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return Holder(owner=_unb64(kv.get("value", "")), revision=int(kv["create_revision"]),
                      lease=int(kv.get("lease", 0) or 0))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):  # a hostile or broken member
        raise EtcdError(f"arbiter etcd: a key without a valid revision: {str(range_reply)[:120]}") from None
