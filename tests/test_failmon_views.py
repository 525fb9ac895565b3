"""failmon's views and the snapshot decoder, in-process: maintenance and switchover flags
from failsh's snapshot (optional members, validated), and a failsh whose snapshots stopped
("gone") marked in the text, HTML and curses-detail views."""

from __future__ import annotations

import copy
import json
import re
import time
from html.parser import HTMLParser
from typing import Any

import pytest

from failover.cli import failmon
from failover.observe import feed

pytestmark = pytest.mark.fast

NOW = time.time()
SNAP: dict[str, Any] = {
    "v": 1, "type": "snapshot", "node": "www1", "time": NOW, "seq": 3, "lease": 2.5,
    "services": [
        {"name": "db", "state": "RECOVER", "role": "slave", "masters": ["www2"], "slaves": [], "interval": 1.0,
         "last_change": NOW - 9, "last_check": NOW - 1, "decision": "wait", "peers": {}},
        {"name": "web", "state": "UP", "role": "master", "masters": [], "slaves": ["www2"], "interval": 1.0,
         "last_change": NOW - 5, "last_check": NOW - 1, "decision": "stay UP",
         "peers": {"www2": {"role": "slave", "state": "RECOVER", "status": "up"}},
         "paused": {"scope": "host", "reason": "kernel\x1b[2J update", "since": NOW - 3, "by": "failctl from 10.0.0.9"},
         "prefer": "www2"}],
    "hosts": [{"name": "www2", "endpoint": "tcp://10.0.0.2:1847", "status": "up", "last_seen": NOW - 1,
               "last_call": NOW - 1, "rtt": 0.001, "failsh": True, "paused": True}],
    "history": []}


def decoded(snap: dict[str, Any] | None = None) -> dict[str, Any]:
    return feed.decode(json.dumps(snap or SNAP).encode())


def test_the_new_members_are_optional() -> None:
    snap = decoded()
    db, web = snap["services"]
    assert db["paused"] is None and db["prefer"] is None  # a failsh that predates them
    assert web["paused"] == {"scope": "host", "reason": "kernel[2J update", "since": NOW - 3,
                             "by": "failctl from 10.0.0.9"}  # no escape reaches a terminal
    assert web["prefer"] == "www2" and snap["hosts"][0]["paused"] is True
    old = copy.deepcopy(SNAP)
    del old["hosts"][0]["paused"]
    del old["services"][1]["paused"]["by"], old["services"][1]["paused"]["reason"]
    snap = decoded(old)
    assert snap["hosts"][0]["paused"] is False and snap["services"][1]["paused"]["by"] == ""


@pytest.mark.parametrize(("path", "value", "where"), [
    (("services", 1, "paused"), "host", "services[1].paused: not an object"),
    (("services", 1, "paused", "scope"), None, "services[1].paused.scope"),
    (("services", 1, "paused", "since"), "now", "services[1].paused.since"),
    (("services", 1, "paused", "reason"), 5, "services[1].paused.reason"),
    (("services", 1, "prefer"), ["www2"], "services[1].prefer"),
    (("services", 1, "prefer"), "", "services[1].prefer"),
    (("hosts", 0, "paused"), "no", "hosts[0].paused"),
])
def test_bad_flags_are_refused_naming_the_field(path: tuple, value: object, where: str) -> None:
    snap = copy.deepcopy(SNAP)
    holder: Any = snap
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    with pytest.raises(feed.BadSnapshot) as err:
        decoded(snap)
    assert str(err.value).startswith(where), str(err.value)


def table(out: str, header: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:len(header.split())] == header.split())
    return [line.split() for line in lines[start + 1:] if line.strip()][:10]


def test_text_shows_flags_and_paused_hosts() -> None:
    out = failmon.text([decoded()])
    services = {row[1]: row for row in table(out, "HOST  SERVICE")[:2]}
    assert services["web"][2:5] == ["UP", "master", "paused(host),switchover:www2"]
    assert services["db"][2:5] == ["RECOVER", "slave", "-"]
    hosts = table(out, "HOST  SEEN BY")
    assert hosts[0][:5] == ["www2", "www1", "up", "yes", "yes"]
    assert "gone" not in out
    dump = feed.text(decoded())  # failsh's SIGINT dump
    assert "paused (host) since" in dump and "by failctl from 10.0.0.9: kernel[2J update" in dump
    assert "switchover target www2" in dump and "failsh yes; paused" in dump


def test_text_marks_a_gone_failsh() -> None:
    gone = {"www1": NOW - 12}
    out = failmon.text([decoded()], gone=gone)
    since = time.strftime("%H:%M:%S", time.localtime(NOW - 12))
    assert re.search(rf"failsh www1 gone since {since} \(no snapshot for [0-9hms]+\): its rows are its last snapshot",
                     out), out
    assert [row[0] for row in table(out, "HOST  SERVICE")[:2]] == ["www1[gone]", "www1[gone]"]
    assert table(out, "HOST  SEEN BY")[0][1] == "www1[gone]"


class Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self.paragraphs: list[tuple[str, str]] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append((dict(attrs).get("class") or "", []))
        elif tag == "td":
            self.rows[-1][1].append("")
            self._in = "td"
        elif tag == "p":
            self.paragraphs.append((dict(attrs).get("class") or "", ""))
            self._in = "p"

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "td":
            self.rows[-1][1][-1] += data
        elif self._in == "p":
            cls, text = self.paragraphs[-1]
            self.paragraphs[-1] = (cls, text + data)


def test_html_greys_a_gone_failsh_and_shows_flags() -> None:
    page = Rows()
    page.feed(failmon.html_page([decoded()]))
    web = next(cells for cls, cells in page.rows if cells[:2] == ["www1", "web"])
    assert web[4] == "paused(host),switchover:www2"
    assert all(cls != "gone" for cls, _cells in page.rows)
    page = Rows()
    page.feed(failmon.html_page([decoded()], gone={"www1": NOW - 5}))
    marked = [(cls, cells) for cls, cells in page.rows if cells and cells[0].startswith("www1")]
    assert marked and all(cls == "gone" for cls, _cells in marked)
    assert marked[0][1][0] == "www1[gone]"
    assert any(cls == "gone" and text.startswith("failsh www1 gone since") for cls, text in page.paragraphs)


def test_detail_shows_maintenance_and_switchover() -> None:
    snap = decoded()
    row = next(r for r in failmon.service_rows([snap]) if r["service"] == "web")
    lines = [text for text, _state in failmon.detail_lines(row, [snap])]
    assert any(line.startswith("maintenance  paused (host) since") and "kernel[2J update" in line for line in lines)
    assert "switchover   www2" in lines
    row = next(r for r in failmon.service_rows([snap]) if r["service"] == "db")
    lines = [text for text, _state in failmon.detail_lines(row, [snap])]
    assert "maintenance  -" in lines and "switchover   -" in lines
