"""failsh's live web page (--http): its HTTP endpoints, and the page itself in a real headless
Chromium driven over the DevTools pipe: it fills in from the event stream, follows a real
failover without a reload, and the screenshot shows the green UP and red FAIL cells."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from support import TRANSIENT, http_get, prom_value, wait_for

from failover.client import Client
from failover.observe import feed

pytestmark = pytest.mark.process

GREEN = (0x2E, 0x9E, 0x44)   # .UP in dashboard.PAGE
RED = (0xD9, 0x30, 0x25)     # .FAIL
AMBER = (0xF0, 0xA5, 0x00)   # .RECOVER


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dashboard"), http=True, failsh_args=("--dead-factor", "2"))
    with c.serving({"www1": "UP", "www2": "RECOVER"}):
        yield c


def url(c: Cluster, path: str = "/") -> str:
    return f"http://127.0.0.1:{c.http_ports['www2']}{path}"


def test_http_endpoints(cluster: Cluster) -> None:
    status, ctype, body = http_get(url(cluster))
    assert status == 200 and ctype.startswith("text/html")
    assert "<title>failover: www2</title>" in body and "new EventSource" in body
    assert "<script src" not in body and "<link" not in body  # everything inline

    snap = wait_for(lambda: json.loads(http_get(url(cluster, "/snapshot.json"))[2]), 5, "a snapshot", ignore=TRANSIENT)
    feed.decode(json.dumps(snap).encode())  # the failmon feed format
    assert snap["node"] == "www2" and snap["services"][0]["name"] == "web"

    status, ctype, body = http_get(url(cluster, "/metrics"))
    assert status == 200 and prom_value(body, "failover_service_state", service="web", state="RECOVER") == 1
    assert http_get(url(cluster, "/nothing"))[0] == 404


def test_event_stream_pushes_snapshots(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.http_ports["www2"]), timeout=5) as s:
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"event: snapshot") < 2 and time.monotonic() < deadline:
            data += s.recv(65536)
    head, _, stream = data.partition(b"\r\n\r\n")
    assert b"200" in head.split(b"\r\n")[0] and b"text/event-stream" in head
    events = [json.loads(line[6:]) for line in stream.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) >= 2 and events[1]["seq"] > events[0]["seq"]  # pushed, not polled


# Chromium over the DevTools pipe --------------------------------------------------------
def _high(fd: int) -> int:
    """Move a pipe end to fd >= 10, out of the way of the 3 and 4 Chromium wants."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Browser:
    """Headless Chromium with --remote-debugging-pipe: JSON messages, NUL-terminated, on fds 3/4."""

    def __init__(self, profile: Path, exe: str) -> None:
        to_r, self._to = map(_high, os.pipe())
        self._from, from_w = map(_high, os.pipe())
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--force-color-profile=srgb", "--hide-scrollbars", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", "--window-size=1200,800", "about:blank"]
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-',
                                      "bash", *args], pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None

    def call(self, method: str, timeout: float = 15, **params: object) -> dict:
        self._id += 1
        msg: dict = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            ready, _, _ = select.select([self._from], [], [], 0.2)
            if ready:
                chunk = os.read(self._from, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
        raise TimeoutError(f"no answer to {method} within {timeout} s")

    def open(self, address: str) -> None:
        target = self.call("Target.createTarget", url=address)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def js(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self._to)
        os.close(self._from)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) with zlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            depth, colour, interlace = body[8], body[9], body[12]
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
        prev = line
    return width, height, rows


def count_colour(rows: list[bytes], rgb: tuple[int, int, int], tolerance: int = 6) -> int:
    n = 0
    for row in rows:
        for i in range(0, len(row), 3):
            if all(abs(row[i + k] - rgb[k]) <= tolerance for k in range(3)):
                n += 1
    return n


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) for the browser test")
    b = Browser(tmp_path / "profile", exe)
    try:
        yield b
    finally:
        b.close()


CELL = "(document.querySelector('#services tbody tr[data-service=web] td:nth-child({n})')||{{}}).textContent"


def test_page_shows_maintenance_and_the_switchover_target(cluster: Cluster, browser: Browser) -> None:
    """Neither moves the service here (www1 holds it, and is the target): the page shows
    them, and takes them away when they end."""
    browser.open(url(cluster))
    row = "document.querySelector('#services tbody tr[data-service=web]')"
    wait_for(lambda: browser.js(f"!!{row}"), 15, "the page to render", ignore=TRANSIENT)
    with Client(cluster.failds["www2"].endpoint, agent="failctl") as a:
        a.maint(True, "web", "disk swap")
    with Client(cluster.failds["www1"].endpoint, agent="failctl") as a:
        a.maint(True, None, "kernel update")
        a.prefer("web", "www1", "stay there")
    wait_for(lambda: browser.js(f"{row}.dataset.paused + '/' + {row}.dataset.prefer") == "service/www1", 10,
             "the page to show the pause and the target", ignore=TRANSIENT)
    assert browser.js(f"{row}.querySelector('td').textContent") == "web" + "paused" + "\u2192 www1"
    assert "maintenance: disk swap (by failctl from 127.0.0.1 since" in \
        browser.js(f"{row}.querySelector('.badge.paused').title")
    assert browser.js(CELL.format(n=2)) == "RECOVERslave \u00b7 paused"
    assert browser.js(CELL.format(n=3)) == "UPmaster \u00b7 up \u00b7 paused \u00b7 switchover target"
    assert browser.js(f"{row}.querySelector('td:last-child').textContent").startswith("paused: disk swap")
    hosts = browser.js("[...document.querySelectorAll('#hosts tbody tr')].map(r => r.lastChild.textContent)")
    assert hosts == ["paused"]
    snap = json.loads(http_get(url(cluster, "/snapshot.json"))[2])
    web = snap["services"][0]
    assert web["paused"]["scope"] == "service" and web["paused"]["reason"] == "disk swap" and web["prefer"] == "www1"
    assert snap["hosts"][0]["paused"] is True
    with Client(cluster.failds["www2"].endpoint, agent="failctl") as a:
        a.maint(False, "web")
    with Client(cluster.failds["www1"].endpoint, agent="failctl") as a:
        a.maint(False, None)
        a.prefer("web", None)
    wait_for(lambda: browser.js(f"{row}.dataset.paused + '/' + {row}.dataset.prefer") == "/", 10,
             "the page to drop them", ignore=TRANSIENT)
    assert browser.js(CELL.format(n=1)) == "web"
    assert cluster.states("web") == {"www1": "UP", "www2": "RECOVER"}


def test_page_in_chromium_follows_a_failover(cluster: Cluster, browser: Browser, tmp_path: Path) -> None:
    browser.open(url(cluster))
    wait_for(lambda: (browser.js("+(document.body.dataset.updates||0)") or 0) >= 2, 15,
             "the page to render two snapshots from the event stream", ignore=TRANSIENT)
    assert browser.js("document.getElementById('conn').textContent") == "live"
    headers = browser.js("[...document.querySelectorAll('#services thead th')].map(e => e.textContent)")
    assert headers[:3] == ["service", "www2 (here)", "www1"]
    assert browser.js(CELL.format(n=2)) == "RECOVERslave"
    assert browser.js(CELL.format(n=3)) == "UPmaster \u00b7 up"
    browser.js("window.sameDocument = 'yes'")   # survives only without a reload
    before = png_pixels(browser.screenshot())[2]
    assert count_colour(before, GREEN) > 1000 and count_colour(before, AMBER) > 1000
    assert count_colour(before, RED) == 0

    cluster.crash_host("www1")
    wait_for(lambda: browser.js(CELL.format(n=2)) == "UPslave", 15, "the page to show web UP on www2", ignore=TRANSIENT)
    wait_for(lambda: browser.js(CELL.format(n=3)) == "FAILmaster \u00b7 down", 5, "www1 FAIL on the page",
             ignore=TRANSIENT)
    assert browser.js("window.sameDocument") == "yes"
    assert browser.js("performance.getEntriesByType('navigation').length") == 1
    history = browser.js("[...document.querySelectorAll('#history tbody tr')].map(r => r.textContent)")
    assert any("RECOVER \u2192 UP" in h and "master www1" in h for h in history), history
    assert browser.js("[...document.querySelectorAll('#hosts tbody td')].map(e => e.textContent)")[:2] == \
        ["www1", "down"]

    png = browser.screenshot()
    (tmp_path / "dashboard.png").write_bytes(png)
    width, height, rows = png_pixels(png)
    assert width >= 1000 and height >= 600
    green, red = count_colour(rows, GREEN), count_colour(rows, RED)
    # one UP cell and one FAIL cell of the services matrix, each ~180x45 px
    assert green > 3000, f"too few UP-green pixels ({green}) in {tmp_path / 'dashboard.png'}"
    assert red > 3000, f"too few FAIL-red pixels ({red}) in {tmp_path / 'dashboard.png'}"
    assert count_colour(rows, AMBER) == 0


def test_polling_fallback_in_chromium(cluster: Cluster, browser: Browser) -> None:
    """/?poll uses /snapshot.json every second instead of the event stream."""
    browser.open(url(cluster, "/?poll"))
    wait_for(lambda: (browser.js("+(document.body.dataset.updates||0)") or 0) >= 2, 15,
             "the polling page to render two snapshots", ignore=TRANSIENT)
    assert browser.js("document.getElementById('conn').textContent") == "live (polling)"
    assert browser.js(CELL.format(n=1)) == "web"
