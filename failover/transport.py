"""ZeroMQ sockets as failover uses them: every socket option any program sets is set here.

* :func:`configure`: what every socket gets (no linger, a message size cap, IPv6, fast
  reconnects) and, for one that stays connected to a peer, ZMTP heartbeats tied to a
  dead time;
* :func:`harden`: what a listener facing hostile clients adds (queue bounds, a handshake
  deadline; docs/security.md);
* :func:`curve_client`, :func:`curve_server`: CURVE on a socket, with the key pairs
  (:class:`Identity`, :class:`Curve`) that failover/keys.py loads from key files;
* :func:`reconnect`, :func:`bind_with_retry`: connecting and binding that survive a refused
  handshake and a port still in use.
"""

from __future__ import annotations

import time

import attrs
import zmq

from failover.protocol import MAX_MESSAGE

# Hostile clients (docs/security.md): at most SOCKET_HWM messages are queued per
# connection each way (inbound: then TCP flow control holds the sender back; outbound:
# replies to a client that does not read are dropped), so a flood costs at most about
# SOCKET_HWM x 64 KiB per connection; a connection that has not finished the ZeroMQ
# handshake after HANDSHAKE_IVL_MS (slow, silent or not ZeroMQ) is closed.
SOCKET_HWM = 32
HANDSHAKE_IVL_MS = 2000
RECONNECT_IVL_MS = 100       # first reconnect after a lost connection ...
RECONNECT_IVL_MAX_MS = 1000  # ... backing off to at most this


@attrs.frozen
class Identity:
    """A CURVE key pair, Z85-encoded as in the key files (40 bytes each)."""

    public: bytes
    secret: bytes = attrs.field(repr=False)  # never in a log line or a traceback


@attrs.frozen
class Curve:
    """A client's CURVE settings: its own key pair and the public key of the faild it asks."""

    identity: Identity
    server: bytes


def configure(sock: zmq.Socket, deadtime: float | None = None, max_message: int = MAX_MESSAGE) -> None:
    """Options every failover socket gets: no linger, size cap, fast reconnect.

    ``deadtime``: a socket that stays connected to a peer (a poll's DEALER or REQ, a change
    hints SUB) sends ZMTP heartbeats and drops a connection silent for that long, so it
    reconnects after a peer vanished without closing it (power loss, a pulled cable)
    instead of keeping a dead TCP connection for minutes.  ``max_message``: a peer that
    sends a larger message is disconnected (failmon's feed takes larger snapshots)."""
    sock.linger = 0
    sock.ipv6 = True  # tcp://[::1]:N works; '*' binds both families, falls back to IPv4 only
    sock.setsockopt(zmq.MAXMSGSIZE, max_message)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    if deadtime is not None:
        ms = min(max(int(deadtime * 1000), 200), 600_000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, max(ms // 4, 50))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, ms)


def harden(sock: zmq.Socket) -> None:
    """A listener open to anyone: bounded queues per connection, a deadline for the handshake."""
    sock.sndhwm = sock.rcvhwm = SOCKET_HWM
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)


def curve_client(sock: zmq.Socket, me: Identity, server_public: bytes) -> None:
    """Talk CURVE as ``me`` to the server whose public key is ``server_public``."""
    sock.curve_publickey = me.public
    sock.curve_secretkey = me.secret
    sock.curve_serverkey = server_public


def curve_server(sock: zmq.Socket, me: Identity) -> None:
    """Require CURVE of every client; who gets in is ZAP's decision (keys.start_authenticator)."""
    sock.curve_server = True
    sock.curve_publickey = me.public
    sock.curve_secretkey = me.secret


def reconnect(sock: zmq.Socket, endpoint: str) -> None:
    """Connect ``sock`` to ``endpoint`` again.  libzmq gives up a connection for good when
    the handshake is refused (a CURVE key not allowed, plaintext against CURVE), so without
    this a socket would stay deaf after the server's allow-list is fixed."""
    try:
        sock.disconnect(endpoint)
    except zmq.ZMQError:
        pass
    sock.connect(endpoint)


def bind_with_retry(sock: zmq.Socket, endpoint: str, attempts: int = 20) -> None:
    """Bind, retrying briefly: a just-closed endpoint can still be in use (tech notes §4.3)."""
    for attempt in range(attempts):
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or attempt == attempts - 1:
                raise
            time.sleep(0.1)
