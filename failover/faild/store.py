"""faild's state store: service records, bounded history, atomic persistence.

The state file is JSON, written to a temporary file, fsync'd and renamed over the
old one (then the directory is fsync'd), so a ``kill -9`` at any moment leaves
either the old or the new complete file.  A symlink as state file is followed: the
file it points to is replaced, the link stays.  Every field is checked at load, so a
file faild starts with never breaks a reader later (docs/faild.md, "State file").
"""

from __future__ import annotations

import bisect
import json
import logging
import reprlib
import stat
import time
from collections import deque
from pathlib import Path
from typing import Any

from failover import model, protocol
from failover.files import atomic_write, read_file, stale_temps, write_target
from failover.files import make_dir as make_dir  # still imported from here by shell/engine.py (the dump)
from failover.model import MaintEntry, PreferEntry, ServiceRecord, Transition
from failover.states import State

log = logging.getLogger("failover.store")
FILE_FORMAT = 1
HISTORY_LIMIT = 500
# above anything faild writes: protocol.MAX_SERVICES records of at most ~4.5 KiB (a reason of
# 256 and a "by" of 80 characters that JSON writes as \uXXXX escapes) and 500 transitions
MAX_FILE = 512 * 1024 * 1024
MAX_REASON = model.MAX_REASON  # what protocol accepts in a set request
LATEST_TIME = model.LATEST_TIME


class StateFileError(Exception):
    """The state file exists but cannot be used; faild refuses to start over it."""


class Store:
    def __init__(self, path: Path | None, history_limit: int = HISTORY_LIMIT) -> None:
        self.path = path
        self.records: dict[str, ServiceRecord] = {}
        self.history: deque[Transition] = deque(maxlen=history_limit)
        self.counter = 0
        # what an administrator set (failctl): "*" (the whole host) or a service -> maintenance,
        # a service -> its switchover target; persisted with the states, not counted
        self.maintenance: dict[str, MaintEntry] = {}
        self.prefer: dict[str, PreferEntry] = {}
        self.flags_version = 0  # moves on every change of maintenance or prefer (Faild's reply cache)
        # the counter of the last change of maintenance or prefer (a paged list sends them when
        # it is after the reader's "since"); the counter at load: a restart makes readers resync
        self.flags_counter = 0
        self._sorted: list[ServiceRecord] | None = None  # all(), until the records change
        # the file's lines of the records (sorted by name) and of the history, as last written:
        # the file is rewritten on every change, 10,000 services must not be encoded each time
        self._names: list[str] = []
        self._lines: list[bytes] = []
        self._history_lines: deque[bytes] = deque(maxlen=history_limit)
        raw = read_state_file(path) if path is not None else None
        if path is not None and raw is not None:
            self._load(path, raw)

    def _load(self, path: Path, raw: bytes) -> None:
        try:
            data = json.loads(raw)
            _check(isinstance(data, dict), "not a JSON object")
            _check(data.get("format") == FILE_FORMAT, f"unknown format {data.get('format')!r}")
            services = _field(data, "services", list)
            _check(len(services) <= protocol.MAX_SERVICES, f"more than {protocol.MAX_SERVICES} services")
            for i, d in enumerate(services):
                rec = ServiceRecord.from_wire(d, f"services[{i}]")  # ProtocolError is a ValueError
                _check(rec.name not in self.records, f"services[{i}].name: service {rec.name!r} twice")
                self.records[rec.name] = rec
            for i, t in enumerate(_field(data, "history", list, default=[])):
                self.history.append(Transition.from_wire(t, f"history[{i}]"))
            self.counter = _count(data, "counter", "top level")
            # optional (files written before failctl have neither): read as a reply's members
            if data.get("maintenance") is not None:
                self.maintenance = model.maintenance_from_wire(data["maintenance"])
            if data.get("prefer") is not None:
                self.prefer = model.prefer_from_wire(data["prefer"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise StateFileError(f"invalid state file {path}: {exc}") from None
        highest = max([r.counter for r in self.records.values()] + [t.counter for t in self.history] + [0])
        if self.counter < highest:  # else the next set would reuse a counter peers have seen
            log.warning("state file %s: counter %d is below the highest counter in it; raised to %d",
                        path, self.counter, highest)
            self.counter = highest
        self.flags_counter = self.counter
        self._encode_all()
        log.info("loaded %d services from %s", len(self.records), path)

    def get(self, name: str) -> ServiceRecord | None:
        return self.records.get(name)

    def all(self) -> list[ServiceRecord]:
        """Every record, sorted by name: one list until the next change (do not modify it)."""
        if self._sorted is None:
            self._sorted = sorted(self.records.values(), key=lambda r: r.name)
        return self._sorted

    def __len__(self) -> int:
        return len(self.records)

    def set(self, name: str, state: State, reason: str = "", by: str = "") -> tuple[ServiceRecord, bool]:
        """Set a state; return the record and whether it changed.  Persists changes first:
        if the write fails, memory is left as it was (as the file is) and the error raised.
        ``by``: who asks (faild's "AGENT from ADDRESS"), kept with the record and the transition."""
        old = self.records.get(name)
        if old is not None and old.state is state:
            return old, False
        reason = protocol.clean_text(reason)[:MAX_REASON]  # as the loader wants it (hc's reasons too)
        by = protocol.clean_text(by)[:model.MAX_BY]
        counter = self.counter + 1
        now = time.time()
        rec = ServiceRecord(name=name, state=state, last_change=now, counter=counter, reason=reason, by=by)
        change = Transition(service=name, old=old.state if old else None, new=state,
                            time=now, counter=counter, reason=reason, by=by)
        i = bisect.bisect_left(self._names, name)
        known = old is not None
        line = _line(rec)
        history = list(self._history_lines)
        if self.history.maxlen is not None and len(history) >= self.history.maxlen:
            history = history[len(history) - self.history.maxlen + 1:]
        self._write(counter, [*self._lines[:i], line, *self._lines[i + known:]], [*history, _line(change)])
        self.counter = counter
        self.records[name] = rec
        if known and self._sorted is not None:  # a new list: callers may hold the old one
            self._sorted = [*self._sorted[:i], rec, *self._sorted[i + 1:]]
        else:
            self._sorted = None
        self._lines[i:i + known] = [line]
        if not known:
            self._names.insert(i, name)
        self.history.append(change)
        self._history_lines.append(_line(change))
        return rec, True

    def maint(self, key: str, on: bool, reason: str = "", by: str = "") -> bool:
        """Maintenance of ``key`` (a service, or protocol.HOST_WIDE) on or off; whether it
        changed (an entry already there keeps its time and reason).  Persisted first, as
        :meth:`set`; ValueError (LIMIT) beyond model.MAX_MAINT entries."""
        if on == (key in self.maintenance):
            return False
        flags = dict(self.maintenance)
        if on:
            if len(flags) >= model.MAX_MAINT:
                raise protocol.ProtocolError("LIMIT", f"faild holds {model.MAX_MAINT} maintenance entries already")
            flags[key] = MaintEntry(since=time.time(), reason=protocol.clean_text(reason)[:MAX_REASON],
                                    by=protocol.clean_text(by)[:model.MAX_BY])
        else:
            del flags[key]
        self._write(self.counter + 1, maintenance=flags)
        self.maintenance = flags
        self._flags_changed()
        return True

    def set_prefer(self, service: str, host: str | None, reason: str = "", by: str = "") -> bool:
        """The switchover target of ``service`` (None clears it); whether it changed (the
        same target again keeps its time and reason).  Persisted first, as :meth:`set`."""
        old = self.prefer.get(service)
        if (old.host if old is not None else None) == host:
            return False
        targets = dict(self.prefer)
        if host is None:
            del targets[service]
        else:
            if old is None and len(targets) >= model.MAX_PREFER:
                raise protocol.ProtocolError("LIMIT", f"faild holds {model.MAX_PREFER} switchover targets already")
            targets[service] = PreferEntry(host=host, since=time.time(),
                                           reason=protocol.clean_text(reason)[:MAX_REASON],
                                           by=protocol.clean_text(by)[:model.MAX_BY])
        self._write(self.counter + 1, prefer=targets)
        self.prefer = targets
        self._flags_changed()
        return True

    def _flags_changed(self) -> None:
        """maintenance or prefer changed (and was written with the counter moved by one)."""
        self.counter += 1
        self.flags_counter = self.counter
        self.flags_version += 1

    def remove(self, name: str) -> bool:
        """Forget the record of ``name`` (its transitions stay in the history); whether there
        was one.  The counter moves, so a server over this store sees the change."""
        if name not in self.records:
            return False
        counter = self.counter + 1
        i = self._names.index(name)
        self._write(counter, [*self._lines[:i], *self._lines[i + 1:]])
        self.counter = counter
        del self.records[name]
        self._sorted = None
        del self._names[i], self._lines[i]
        return True

    def save(self) -> None:
        self._encode_all()
        self._write(self.counter)

    def _encode_all(self) -> None:
        self._names = sorted(self.records)
        self._lines = [_line(self.records[n]) for n in self._names]
        self._history_lines.clear()
        self._history_lines.extend(_line(t) for t in self.history)

    def _write(self, counter: int, lines: list[bytes] | None = None, history: list[bytes] | None = None,
               maintenance: dict[str, MaintEntry] | None = None, prefer: dict[str, PreferEntry] | None = None) -> None:
        """Replace the file with these record and history lines (default: the current ones),
        and the maintenance and prefer given (default: the current ones)."""
        if self.path is None:
            return
        lines = self._lines if lines is None else lines
        history = list(self._history_lines) if history is None else history
        maintenance = self.maintenance if maintenance is None else maintenance
        prefer = self.prefer if prefer is None else prefer
        parts = [f'{{\n "format": {FILE_FORMAT},\n "counter": {counter},\n "services": [\n'.encode(),
                 b",\n".join(lines), b'\n ],\n "history": [\n', b",\n".join(history), b"\n ]"]
        if maintenance:  # left out when empty, as in files written before failctl
            flags = {k: maintenance[k].to_wire() for k in sorted(maintenance)}
            parts.append(b',\n "maintenance": ' + json.dumps(flags).encode())
        if prefer:
            parts.append(b',\n "prefer": ' + json.dumps({k: prefer[k].to_wire() for k in sorted(prefer)}).encode())
        parts.append(b"\n}\n")
        atomic_write(write_target(self.path), b"".join(parts))

    def clean_temp(self) -> None:
        """Remove temporary files a killed faild left next to the state file (faild start-up
        only: a second reader of the file must not delete a running faild's temp file)."""
        if self.path is None:
            return
        for tmp in stale_temps(write_target(self.path)):
            try:
                if stat.S_ISREG(tmp.lstat().st_mode):
                    tmp.unlink()
                    log.info("removed stale temporary file %s", tmp)
            except OSError as exc:
                log.warning("cannot remove stale temporary file %s: %s", tmp, exc)


def _line(item: ServiceRecord | Transition) -> bytes:
    """A record's or a transition's line in the state file."""
    return b"  " + json.dumps(item.to_wire()).encode()


def read_state_file(path: Path) -> bytes | None:
    """The state file's bytes, or None if there is none; StateFileError if it cannot be used.
    A dangling symlink is an error (see write_target); the rest as :func:`read_file`."""
    try:
        target = write_target(path)
        if not target.exists():
            return None
        return read_file(target, MAX_FILE, "state file", shown=path)
    except ValueError as exc:  # names the file already
        raise StateFileError(str(exc)) from None
    except OSError as exc:
        raise StateFileError(f"cannot use state file {path}: {exc.strerror or exc}") from None


# Field checks for _load: each raises ValueError naming where the bad value is; the
# records and transitions are read by the same code as a reply's (model.from_wire) ------
def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _field(d: dict, key: str, kind: type, where: str = "top level", default: Any = ...) -> Any:
    if key not in d and default is not ...:
        return default
    _check(key in d, f"{where}: no {key!r}")
    value = d[key]
    _check(isinstance(value, kind), f"{where}: {key!r} must be a {kind.__name__}, not {reprlib.repr(value)}")
    return value


def _count(d: dict, key: str, where: str) -> int:
    value: Any = d.get(key)
    _check(type(value) is int and 0 <= value < 2**63, f"{where}: {key} must be a whole number >= 0, "
           f"not {reprlib.repr(value)}")
    return value
