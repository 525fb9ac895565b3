"""Process plumbing shared by faild and failsh: logging, pid files, daemonizing, sd_notify."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
import time
from pathlib import Path

FACILITIES = ("server", "store", "community", "protocol", "peers", "scheduler", "policy",
              "procedures", "monitor", "hc", "security")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def setup_logging(program: str, to_syslog: bool, debug: list[str] | None = None) -> None:
    """Log to syslog (facility daemon, as 0.5 did) or to stderr; -d raises facilities to DEBUG."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if to_syslog and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter(f"{program}[%(process)d]: %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"%(asctime)s {program} %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for facility in debug or ():
        set_level(facility, "debug")


def set_level(facility: str, level: str) -> None:
    """Change one facility's log level at run time (faildebug); 'all' means every facility."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}")
    if facility != "all" and facility not in FACILITIES:
        raise ValueError(f"unknown facility {facility!r}; use 'all' or one of {', '.join(FACILITIES)}")
    # 'all' also resets each facility, so "all info" undoes an earlier "scheduler debug"
    names = ["failover", *(f"failover.{f}" for f in FACILITIES)] if facility == "all" else [f"failover.{facility}"]
    for name in names:
        logging.getLogger(name).setLevel(LEVELS[level.lower()])


def daemonize() -> None:
    """Classic double fork: detach from the terminal and the session."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def write_pidfile(path: Path) -> None:
    """Mode 0644 whatever the umask; a symlink planted at ``path`` is not followed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o644)
        f.write(f"{os.getpid()}\n")


def remove_pidfile(path: Path | None) -> None:
    if path is not None:
        try:
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()
        except OSError:
            pass


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about READY=1, RELOADING=1, STOPPING=1; no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), address)
    except OSError:
        logging.getLogger("failover.server").debug("sd_notify failed", exc_info=True)


class RateLimit:
    """At most ``burst`` log lines per ``period`` seconds per key (a peer address): a flood
    of bad requests must not flood the log.  What is held back is counted and reported in
    one "N more ... suppressed" line once the period is over (on the next line for that
    key, or at ``flush()``, which idle loops call).  At most ``max_keys`` keys are tracked;
    beyond that every new key shares one entry, so memory stays bounded too."""

    OTHERS = "other peers"

    def __init__(self, logger: logging.Logger, what: str, burst: int = 5, period: float = 1.0,
                 max_keys: int = 1024) -> None:
        self.logger, self.what = logger, what
        self.burst, self.period, self.max_keys = burst, period, max_keys
        self._keys: dict[str, list] = {}  # key -> [window start, lines logged, lines suppressed]

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if key not in self._keys and len(self._keys) >= self.max_keys:
            self.flush(now)
            if len(self._keys) >= self.max_keys:
                key = self.OTHERS
        entry = self._keys.get(key)
        if entry is None or now - entry[0] >= self.period:
            if entry is not None:
                self._summary(key, entry)
            entry = self._keys[key] = [now, 0, 0]
        if entry[1] < self.burst:
            entry[1] += 1
            self.logger.log(level, msg, *args)
        else:
            entry[2] += 1

    def flush(self, now: float | None = None) -> None:
        """Report and forget the keys whose period is over."""
        now = time.monotonic() if now is None else now
        for key in [k for k, e in self._keys.items() if now - e[0] >= self.period]:
            self._summary(key, self._keys.pop(key))

    def _summary(self, key: str, entry: list) -> None:
        if entry[2]:
            self.logger.warning("%d more %s from %s suppressed", entry[2], self.what, key)
