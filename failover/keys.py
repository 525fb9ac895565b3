"""CURVE keys: authentication and encryption between failover hosts (docs/security.md).

Key files are ZeroMQ certificates (zmq.auth's format, shared with other ZeroMQ tools):
``NAME.key`` holds the public key and may be copied anywhere; ``NAME.key_secret``
holds both keys and stays on its host (mode 0600).  A faild with a secret key
accepts only clients whose public key file is in its allow-list directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import attrs
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("failover.security")


class KeyFileError(Exception):
    pass


@attrs.frozen
class Identity:
    public: bytes
    secret: bytes


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """Create NAME.key and NAME.key_secret in ``directory``; refuse to overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
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
    return public, secret


def load_identity(path: Path) -> Identity:
    """Our own keys, from a NAME.key_secret file."""
    public, secret = _load(path)
    if not secret:
        raise KeyFileError(f"{path} holds no secret key: give the .key_secret file")
    return Identity(public, secret)


def load_public(path: Path) -> bytes:
    return _load(path)[0]


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from None
    if not public:
        raise KeyFileError(f"{path} is not a ZeroMQ certificate (no public-key)")
    return public, secret


def load_allowed(directory: Path) -> set[bytes]:
    """Public keys of every *.key file in ``directory`` (the peers allowed in)."""
    if not directory.is_dir():
        raise KeyFileError(f"allow-list {directory} is not a directory")
    return {load_public(p) for p in sorted(directory.glob("*.key"))}


def client_socket(sock: zmq.Socket, me: Identity, server_public: bytes) -> None:
    sock.curve_publickey = me.public
    sock.curve_secretkey = me.secret
    sock.curve_serverkey = server_public


def server_socket(sock: zmq.Socket, me: Identity) -> None:
    sock.curve_server = True
    sock.curve_publickey = me.public
    sock.curve_secretkey = me.secret


class AllowList:
    """ZAP credentials provider: lets in listed keys, logs every refusal once per key."""

    def __init__(self, allowed: set[bytes]) -> None:
        self.allowed = allowed
        self._refused: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        z85 = zmq.utils.z85.encode(key) if len(key) == 32 else key
        if z85 in self.allowed:
            return True
        if z85 not in self._refused:
            self._refused.add(z85)
            log.warning("refused a connection: client key %s is not in the allow-list",
                        z85.decode(errors="replace"))
        return False


def start_authenticator(ctx: zmq.Context, allowed: set[bytes]) -> ThreadAuthenticator:
    """Start ZAP for ``ctx``: only keys in ``allowed`` complete the CURVE handshake."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("failover.security.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=AllowList(allowed))
    return auth
