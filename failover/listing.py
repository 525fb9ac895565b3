"""One faild's whole list, read in pages and kept up to date by incremental reads
(docs/protocol.md, "Paged and incremental list").

Pure bookkeeping, no I/O: :class:`ListReader` says which ``list`` members to send next
(:meth:`~ListReader.request`) and takes the replies (:meth:`~ListReader.take`).  The
synchronous client (failover.client) and failsh's network thread (shell/peerlink.py) both
read through it, so that their view of a faild is the same as a full read would give.
"""

from __future__ import annotations

from typing import Any

import attrs

from failover import protocol
from failover.model import HostInfo, MaintEntry, Page, PreferEntry, ServiceRecord, bad

Asked = dict[str, Any]  # the list members of a request: {"after": ...} and/or {"since": ...}


@attrs.define
class _Read:
    """A read in progress: a full one (since None) or the changes after ``since``."""

    since: int | None
    started: float
    counter: int  # of its first page: what the next read starts from
    after: str = ""  # the last name taken
    stable: bool = True  # the counter did not move between its pages
    records: dict[str, ServiceRecord] = attrs.field(factory=dict)
    flags: tuple[dict[str, MaintEntry], dict[str, PreferEntry]] | None = None


class ListReader:
    """What one faild holds for a community, as of the last complete read.

    A full read (``after: ""``, then ``after`` the last name of each page) replaces
    everything; later reads ask only for what changed ``since`` the counter of the
    previous read's first page, and merge it.  A faild that restarted (``host.started``
    moved), whose counter went backwards, or whose ``count`` disagrees with the merged
    records (one was removed) is read in full again.  A faild older than paging answers
    every request with its whole list (``legacy``)."""

    def __init__(self) -> None:
        self.host: HostInfo | None = None  # of the last reply taken
        self.records: dict[str, ServiceRecord] = {}
        self.maintenance: dict[str, MaintEntry] = {}
        self.prefer: dict[str, PreferEntry] = {}
        self.complete = False            # a read has completed: the above are exact
        self.counter: int | None = None  # the next read asks for changes since this; None: a full read
        self.started: float | None = None  # host.started of the faild the view comes from
        self.legacy = False              # the faild does not page (failover 0.6)
        self.resyncs = 0                 # full reads forced by a restart, a counter gone back, a removal
        self.pages = 0                   # replies taken
        self._read: _Read | None = None
        self._asked: dict[str, Asked] = {}  # request id -> what it asked (ask/answer)

    def request(self) -> Asked:
        """The ``list`` members of the next request."""
        read = self._read
        if read is not None:
            return {"after": read.after} if read.since is None else {"since": read.since, "after": read.after}
        return {"after": ""} if self.counter is None else {"since": self.counter}

    @property
    def pending(self) -> bool:
        """A request is wanted now: the next page of a read, or a full read after a resync."""
        return self._read is not None or (self.counter is None and self.complete and not self.legacy)

    def ask(self, rid: str) -> Asked:
        """:meth:`request`, remembered under the request id ``rid`` for :meth:`answer` (for a
        caller with several requests in flight: failsh's network thread)."""
        asked = self._asked[rid] = self.request()
        if len(self._asked) > 8:  # forget the oldest unanswered
            self._asked.pop(next(iter(self._asked)))
        return asked

    def answer(self, rid: str, page: Page) -> bool:
        """:meth:`take` of the reply to the request ``rid`` (as :meth:`ask` sent it); False
        for a reply to no request of ours."""
        asked = self._asked.pop(rid, None)
        return asked is not None and self.take(asked, page)

    def resync(self) -> None:
        """Read everything again at the next request (the view stays until that read is done)."""
        self.counter, self._read = None, None

    def take(self, asked: Asked, page: Page) -> bool:
        """Take the reply ``page`` to a request that carried ``asked`` (as :meth:`request`
        gave it).  True when it completed a read: ``records``, ``maintenance`` and
        ``prefer`` are then what the faild holds.  A reply to any other request than the
        one expected now (a late duplicate of a poll) is ignored.  ProtocolError
        (BADREPLY) for pages that make no progress or hold too much."""
        self.host = page.host
        self.pages += 1
        if page.counter is None:  # an un-paged list: all there is
            self._done(page.host.started, None, {r.name: r for r in page.services},
                       (page.maintenance or {}, page.prefer or {}))
            self.legacy = True
            return True
        self.legacy = False
        if asked != self.request():
            return False
        try:
            return self._take(asked, page)
        except protocol.ProtocolError:
            self.resync()  # a bad page: the next read starts afresh
            raise

    def _take(self, asked: Asked, page: Page) -> bool:
        assert page.counter is not None  # a page of a paged read
        since, after = asked.get("since"), asked.get("after") or ""
        read = self._read
        if read is None:  # the first page of a read
            if since is not None and (page.host.started != self.started or page.counter < since):
                self.resyncs += 1  # a restarted faild (or its state file replaced): read everything
                self.resync()
                return False
            read = self._read = _Read(since, page.host.started, page.counter)
        elif page.host.started != read.started:  # restarted between two pages
            self.resyncs += 1
            self.resync()
            return False
        for rec in page.services:
            if not rec.name > after:
                raise bad("reply.services", f"{rec.name!r} is not after {after!r}: no progress")
        read.records.update((r.name, r) for r in page.services)
        read.stable &= page.counter == read.counter
        if page.maintenance is not None and page.prefer is not None:
            read.flags = (page.maintenance, page.prefer)
        if len(read.records) > protocol.MAX_SERVICES:
            raise bad("reply", f"more than {protocol.MAX_SERVICES} services")
        if page.more:
            if not page.services:
                raise bad("reply.services", "empty, yet 'more' is true")
            read.after = page.services[-1].name
            return False
        self._read = None
        if read.since is None:
            self._done(read.started, read.counter, read.records, read.flags or ({}, {}))
            return True
        records = {**self.records, **read.records} if read.records else self.records
        if read.stable and page.count is not None and len(records) != page.count:
            self.resyncs += 1  # a record is gone (or the community's access changed): read everything
            self.resync()
            return False
        self._done(read.started, read.counter, records, read.flags or (self.maintenance, self.prefer))
        return True

    def _done(self, started: float, counter: int | None, records: dict[str, ServiceRecord],
              flags: tuple[dict[str, MaintEntry], dict[str, PreferEntry]]) -> None:
        self.records = records
        self.maintenance, self.prefer = flags
        self.started, self.counter = started, counter
        self.complete = True

    def sorted(self) -> list[ServiceRecord]:
        """The records by name, as an un-paged list gives them."""
        return [self.records[n] for n in sorted(self.records)]
