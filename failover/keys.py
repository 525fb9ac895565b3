"""CURVE keys: authentication and encryption between failover hosts (docs/security.md).

Key files are ZeroMQ certificates (zmq.auth's format, shared with other ZeroMQ tools):
``NAME.key`` holds the public key and may be copied anywhere; ``NAME.key_secret``
holds both keys and stays on its host (mode 0600).  A faild with a secret key
accepts only clients whose public key file is in its allow-list directory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import attrs
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from failover.files import KeyFileError, make_dir, private_problem, read_key_file
from failover.transport import Curve, Identity, curve_client

log = logging.getLogger("failover.security")


@attrs.frozen
class ServerKeys:
    """faild's CURVE settings: its key pair and the allow-list directory of client keys."""

    identity: Identity
    allow_dir: Path
    allowed: frozenset[bytes]


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """Create NAME.key and NAME.key_secret in ``directory``; refuse to overwrite."""
    make_dir(directory, 0o755)  # public keys are copied from here; the secret one is 0600
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise KeyFileError(f"{path} exists; remove it first to make a new key")
    old = os.umask(0o077)
    try:
        zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(old)
    public.chmod(0o644)
    secret.chmod(0o600)
    return public, secret


def load_identity(path: Path) -> Identity:
    """Our own keys, from a NAME.key_secret file, which only its owner may read."""
    problem = private_problem(path, "secret key file", unreadable_as="key file")
    if problem:
        raise KeyFileError(problem)
    public, secret = _load(path)
    if not secret:
        raise KeyFileError(f"{path} holds no secret key: give the .key_secret file")
    return Identity(public, secret)


def load_public(path: Path) -> bytes:
    return _load(path)[0]


MAX_KEY_FILE = 64 * 1024  # a certificate is a few hundred bytes


def _load(path: Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a ZeroMQ certificate file (zmq.auth's format, read as
    zmq.auth.load_certificate does).  The file is read bounded (a FIFO or a device is
    refused, never waited on) and each key must be 40 characters of Z85 (32 bytes)."""
    text = read_key_file(path, MAX_KEY_FILE, "key file")
    found: dict[bytes, bytes] = {}
    for line in text.splitlines():
        line = line.strip()
        for name in (b"public-key", b"secret-key"):
            if line.startswith(name) and b"=" in line and name not in found:
                found[name] = line.split(b"=", 1)[1].strip(b" \t'\"")
    public, secret = found.get(b"public-key"), found.get(b"secret-key")
    if not public:
        raise KeyFileError(f"{path} is not a ZeroMQ certificate (no public-key)")
    for key in (public, secret):
        if key is not None and not _z85_key(key):
            raise KeyFileError(f"{path} holds a key that is not 40 characters of Z85 (a 32-byte CURVE key)")
    return public, secret


def _z85_key(key: bytes) -> bool:
    if len(key) != 40:
        return False
    try:
        zmq.utils.z85.decode(key)
    except (ValueError, KeyError, TypeError, IndexError):
        return False
    return True


def load_allowed(directory: Path) -> set[bytes]:
    """Public keys of every *.key file in ``directory`` (the peers allowed in)."""
    if not directory.is_dir():
        raise KeyFileError(f"allow-list {directory} is not a directory")
    return {load_public(p) for p in sorted(directory.glob("*.key"))}


def load_curve(secret: Path, server_key: Path) -> Curve:
    """A client's settings from its .key_secret file and the server's NAME.key file."""
    return Curve(load_identity(secret), load_public(server_key))


def load_server(secret: Path, allow_dir: Path) -> ServerKeys:
    """faild's settings from its .key_secret file and its allow-list directory."""
    return ServerKeys(load_identity(secret), allow_dir, frozenset(load_allowed(allow_dir)))


# failsh's peers.py still calls keys.client_socket; the CURVE options are set in failover.transport
client_socket = curve_client


class AllowList:
    """ZAP credentials provider: lets in listed keys, logs every refusal once per key."""

    def __init__(self, allowed: set[bytes] | frozenset[bytes]) -> None:
        self.allowed = frozenset(allowed)  # replaced as a whole (SIGHUP), never mutated
        self._refused: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            return self._check(key)
        except Exception:  # fail closed: an exception would end the ZAP thread (see serve)
            log.exception("allow-list check failed; refusing the connection")
            return False

    def _check(self, key: bytes) -> bool:
        z85 = zmq.utils.z85.encode(key) if len(key) == 32 else key
        if z85 in self.allowed:
            return True
        if z85 not in self._refused:
            self._refused.add(z85)
            log.warning("refused a connection: client key %s is not in the allow-list",
                        z85.decode(errors="replace"))
        return False


def start_authenticator(ctx: zmq.Context, allowed: set[bytes] | AllowList) -> ThreadAuthenticator:
    """Start ZAP for ``ctx``: only keys in ``allowed`` complete the CURVE handshake.

    Start it before binding, and keep it alive: libzmq lets every CURVE client in when
    no ZAP handler is running (encryption without authentication).
    """
    provider = allowed if isinstance(allowed, AllowList) else AllowList(allowed)
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("failover.security.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=provider)
    return auth


# Handshake failures seen by a server socket's monitor -> what to tell the operator
_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH | \
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
_PROTOCOL_ERRORS: dict[int, str] = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        "the client and this faild disagree on CURVE (a plaintext client of a CURVE faild, or the reverse)",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        "CURVE handshake failed (the client has the wrong public key for this faild?)",
}


class HandshakeLog(threading.Thread):
    """Logs the refused or failed handshakes of a server socket, from its socket monitor.

    One line per kind of failure at most every ``every`` seconds, with the number of
    similar ones left out since the last line; the rest is counted in ``counts``.
    Stop it with :meth:`stop` before closing the socket.
    """

    def __init__(self, sock: zmq.Socket, every: float = 60.0) -> None:
        super().__init__(name="faild-handshakes", daemon=True)
        self.sock = sock
        self.every = every
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}
        self._mon = sock.get_monitor_socket(_EVENTS)

    def run(self) -> None:
        try:
            while True:
                event = recv_monitor_message(self._mon)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                self._note(event["event"], event["value"], event["endpoint"].decode(errors="replace"))
        except zmq.ZMQError:  # the context is being terminated
            return
        finally:
            self._mon.close(linger=0)

    def stop(self, timeout: float = 1.0) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            return
        self.join(timeout)

    def _note(self, kind: int, value: int, endpoint: str) -> None:
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            key, level, why = "auth", logging.WARNING, f"client key not in the allow-list (ZAP status {value})"
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            key, level = f"protocol-{value:x}", logging.WARNING
            why = _PROTOCOL_ERRORS.get(value, f"ZeroMQ protocol error 0x{value:x}")
        else:
            key, level = "other", logging.INFO
            why = "handshake not completed (not ZeroMQ, too slow, or the client went away)"
        self.counts[key] = self.counts.get(key, 0) + 1
        now = time.monotonic()
        if now - self._last.get(key, -self.every) < self.every:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return
        self._last[key] = now
        more = self._quiet.pop(key, 0)
        log.log(level, "%s a connection on %s: %s%s", "dropped" if key == "other" else "refused", endpoint, why,
                f" ({more} more like it in the last {self.every:g} s)" if more else "")
