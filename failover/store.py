"""faild's state store: service records, bounded history, atomic persistence.

The state file is JSON, written to a temporary file, fsync'd and renamed over the
old one (then the directory is fsync'd), so a ``kill -9`` at any moment leaves
either the old or the new complete file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import deque
from pathlib import Path

from failover.model import ServiceRecord, Transition
from failover.states import State, parse_state

log = logging.getLogger("failover.store")
FILE_FORMAT = 1
HISTORY_LIMIT = 500


class StateFileError(Exception):
    """The state file exists but cannot be used; faild refuses to start over it."""


class Store:
    def __init__(self, path: Path | None, history_limit: int = HISTORY_LIMIT) -> None:
        self.path = path
        self.records: dict[str, ServiceRecord] = {}
        self.history: deque[Transition] = deque(maxlen=history_limit)
        self.counter = 0
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FILE_FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            for d in data["services"]:
                rec = ServiceRecord(name=d["name"], state=d["state"],
                                    last_change=float(d["last_change"]), counter=int(d["counter"]))
                self.records[rec.name] = rec
            for t in data.get("history", []):
                self.history.append(Transition(
                    service=t["service"], old=parse_state(t["old"]) if t.get("old") else None,
                    new=parse_state(t["new"]), time=float(t["time"]), counter=int(t["counter"]),
                    reason=t.get("reason", "")))
            self.counter = int(data["counter"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise StateFileError(f"cannot read state file {path}: {exc}") from None
        log.info("loaded %d services from %s", len(self.records), path)

    def get(self, name: str) -> ServiceRecord | None:
        return self.records.get(name)

    def all(self) -> list[ServiceRecord]:
        return sorted(self.records.values(), key=lambda r: r.name)

    def set(self, name: str, state: State, reason: str = "") -> tuple[ServiceRecord, bool]:
        """Set a state; return the record and whether it changed.  Persists changes."""
        old = self.records.get(name)
        if old is not None and old.state is state:
            return old, False
        self.counter += 1
        now = time.time()
        rec = ServiceRecord(name=name, state=state, last_change=now, counter=self.counter)
        self.records[name] = rec
        self.history.append(Transition(service=name, old=old.state if old else None, new=state,
                                       time=now, counter=self.counter, reason=reason))
        try:
            self.save()
        except BaseException:  # not saved: undo, so memory never runs ahead of the file
            self.counter -= 1
            self.history.pop()
            if old is None:
                del self.records[name]
            else:
                self.records[name] = old
            raise
        return rec, True

    def save(self) -> None:
        if self.path is None:
            return
        data = {"format": FILE_FORMAT, "counter": self.counter,
                "services": [r.to_wire() for r in self.all()],
                "history": [t.to_wire() for t in self.history]}
        atomic_write(self.path, json.dumps(data, indent=1).encode())


def atomic_write(path: Path, payload: bytes) -> None:
    """Write temp file + fsync + rename + fsync(dir): never a torn file."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
