"""faild's state store: service records, bounded history, atomic persistence.

The state file is JSON, written to a temporary file, fsync'd and renamed over the
old one (then the directory is fsync'd), so a ``kill -9`` at any moment leaves
either the old or the new complete file.  A symlink as state file is followed: the
file it points to is replaced, the link stays.  Every field is checked at load, so a
file faild starts with never breaks a reader later (docs/faild.md, "State file").
"""

from __future__ import annotations

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
MAX_FILE = 16 * 1024 * 1024  # far above 256 services + 500 transitions (~200 KiB)
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
        log.info("loaded %d services from %s", len(self.records), path)

    def get(self, name: str) -> ServiceRecord | None:
        return self.records.get(name)

    def all(self) -> list[ServiceRecord]:
        return sorted(self.records.values(), key=lambda r: r.name)

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
        history = list(self.history)
        if self.history.maxlen is not None and len(history) >= self.history.maxlen:
            history = history[len(history) - self.history.maxlen + 1:]
        self._write(counter, {**self.records, name: rec}, [*history, change])
        self.counter = counter
        self.records[name] = rec
        self.history.append(change)
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
        self._write(self.counter, self.records, list(self.history), maintenance=flags)
        self.maintenance = flags
        self.flags_version += 1
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
        self._write(self.counter, self.records, list(self.history), prefer=targets)
        self.prefer = targets
        self.flags_version += 1
        return True

    def remove(self, name: str) -> bool:
        """Forget the record of ``name`` (its transitions stay in the history); whether there
        was one.  The counter moves, so a server over this store sees the change."""
        if name not in self.records:
            return False
        counter = self.counter + 1
        self._write(counter, {n: r for n, r in self.records.items() if n != name}, list(self.history))
        self.counter = counter
        del self.records[name]
        return True

    def save(self) -> None:
        self._write(self.counter, self.records, list(self.history))

    def _write(self, counter: int, records: dict[str, ServiceRecord], history: list[Transition],
               maintenance: dict[str, MaintEntry] | None = None, prefer: dict[str, PreferEntry] | None = None) -> None:
        """Replace the file with these records and history, and the maintenance and prefer
        given (default: the current ones)."""
        if self.path is None:
            return
        maintenance = self.maintenance if maintenance is None else maintenance
        prefer = self.prefer if prefer is None else prefer
        data: dict[str, Any] = {"format": FILE_FORMAT, "counter": counter,
                                "services": [records[n].to_wire() for n in sorted(records)],
                                "history": [t.to_wire() for t in history]}
        if maintenance:  # left out when empty, as in files written before failctl
            data["maintenance"] = {k: maintenance[k].to_wire() for k in sorted(maintenance)}
        if prefer:
            data["prefer"] = {k: prefer[k].to_wire() for k in sorted(prefer)}
        atomic_write(write_target(self.path), json.dumps(data, indent=1).encode())

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
