"""hc's monitor (``hc -m``): the check results over faild's own wire protocol.

Every node of the Hcfile is a *service* of a read-only faild: UP when healthy,
FAIL when failed, RECOVER while not known yet.  Requests are answered by
:class:`failover.faild.server.Faild` itself over hc's in-memory store, so ping, get,
list and history behave exactly as they do on faild, and ``failstat host:1850``
or failsh's ``healthy`` work unchanged.  ``set`` is refused.  ``get`` and ``list``
replies carry one extra key per service, ``hc``, with the check's details (kind,
target, last result, recent results ...); faild clients ignore it, hcmon shows it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import zmq

from failover import ports, protocol, transport
from failover.client import Client, ClientError, RequestFailed, endpoint_for
from failover.faild import community
from failover.faild.server import REFUSED, REJECTED, Faild, serve_one
from failover.hc.runner import Runner
from failover.model import HostInfo
from failover.states import State

log = logging.getLogger("failover.hc.monitor")
READ_ONLY = community.Rules({("*", protocol.DEFAULT_COMMUNITY): community.RO})


class Monitor:
    def __init__(self, runner: Runner, host: HostInfo, rules: community.Rules = READ_ONLY) -> None:
        self.runner = runner
        self.host, self.rules = host, rules
        self._faild = Faild(runner.store, rules, host)  # it notices the runner's changes by the store's counter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def handle(self, frame: bytes, meta: zmq.Frame | None = None) -> bytes:
        """One request frame in, one reply frame out; ``meta`` names the peer in the log."""
        try:
            req: protocol.Request | None = protocol.decode_request(frame)
        except protocol.ProtocolError:
            req = None  # Faild.handle produces the proper error reply
        if req is not None and req.op == "set":
            return protocol.encode(protocol.error_reply(
                req.id, "DENIED", "hc computes its states from checks; set service states in faild"))
        with self.runner.lock:
            reply = self._faild.handle(frame, meta)
            if req is None or req.op not in ("get", "list"):
                return reply
            details = self.runner.snapshot()
        msg = json.loads(reply)
        if not msg.get("ok"):
            return reply
        for service in msg.get("services", []):
            info = details.get(service.get("name"))
            if info is not None:
                service["hc"] = {k: v for k, v in info.items() if k != "state"}
        extended = protocol.encode(msg)
        return extended if len(extended) <= protocol.MAX_MESSAGE else reply

    def start(self, endpoint: str, ready: Callable[[], None] | None = None) -> None:
        """Bind now (errors reach the caller), then serve on a thread of its own."""
        sock: zmq.Socket = zmq.Context.instance().socket(zmq.REP)
        transport.configure(sock)
        try:
            transport.bind_with_retry(sock, endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        log.info("monitor serving %s", endpoint)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="hc-monitor", daemon=True)
        self._thread.start()
        if ready:
            ready()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _serve(self, sock: zmq.Socket) -> None:
        try:
            while not self._stop.is_set():
                if sock.poll(200, zmq.POLLIN):
                    serve_one(sock, self.handle, zmq.NOBLOCK)
                else:
                    REFUSED.flush()
                    REJECTED.flush()
        finally:
            sock.close(linger=0)


def healthy(endpoint: str, check: str, community: str = protocol.DEFAULT_COMMUNITY,
            timeout: float = 1.0, retries: int = 0, unreachable: bool = False) -> bool:
    """True if hc at ``endpoint`` (``host``, ``host:port`` or ``tcp://...``) has ``check`` UP.

    An hc that cannot be reached (or an unknown host) gives ``unreachable`` (False by
    default); an unknown check name or a refused community raises
    :class:`failover.client.RequestFailed`, since that is a mistake in the caller's
    configuration rather than a health result.
    """
    try:
        with Client(endpoint_for(endpoint, ports.HC_MONITOR), community, timeout, retries) as c:
            return c.get(check).state is State.UP
    except RequestFailed:
        raise
    except ClientError as exc:
        log.debug("healthy(%s, %s): %s", endpoint, check, exc)
        return unreachable
