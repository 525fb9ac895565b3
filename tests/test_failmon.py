"""failmon against a real two-host cluster: -1, -l, -h, failmon.cgi, errors, and the curses
screen driven through tmux (send-keys / capture-pane)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cluster import Cluster
from support import TRANSIENT, free_port, wait_for

pytestmark = pytest.mark.process

FAILMON = [sys.executable, "-m", "failover.cli.failmon"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("failmon")).serving({"www1": "UP", "www2": "RECOVER"}) as c:
        yield c


def targets(c: Cluster) -> list[str]:
    return [f"127.0.0.1:{c.monitor_ports['www1']}", f"127.0.0.1:{c.monitor_ports['www2']}"]


def failmon(*args: str, stdin: str | None = None, argv0: list[str] | None = None,
            env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(argv0 or FAILMON), *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def rows(out: str) -> dict[tuple[str, str], list[str]]:
    """The service table of the text dump: (host, service) -> columns."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST  ") and "SERVICE" in line)
    table = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cols = line.split()
        table[(cols[0], cols[1])] = cols
    return table


def test_once_prints_every_target(cluster: Cluster) -> None:
    def settled() -> subprocess.CompletedProcess[str] | None:  # both failsh see each other
        r = failmon("-1", *targets(cluster))
        assert r.returncode == 0, r.stderr
        return r if "www2=RECOVER(up)" in r.stdout and "www1=UP(up)" in r.stdout else None
    r = wait_for(settled, 10, "both failsh to see each other", ignore=TRANSIENT)
    t = rows(r.stdout)
    www1, www2 = t[("www1", "web")], t[("www2", "web")]
    assert www1[2:4] == ["UP", "master"] and www2[2:4] == ["RECOVER", "slave"]
    assert "www2=RECOVER(up)" in www1 and "www1=UP(up)" in www2
    assert "LAST CHANGE" in r.stdout and "LAST CHECK" in r.stdout and "PEERS SEEN" in r.stdout
    assert "RECENT TRANSITIONS" in r.stdout and "start procedure returned UP" in r.stdout


def test_port_option_and_default_port(cluster: Cluster) -> None:
    r = failmon("-1", "-p", str(cluster.monitor_ports["www2"]), "127.0.0.1")
    assert r.returncode == 0, r.stderr
    assert list(rows(r.stdout)) == [("www2", "web")]


def test_unreachable_target_is_a_clear_error() -> None:
    r = failmon("-1", "-t", "1", f"127.0.0.1:{free_port()}")
    assert r.returncode == 3
    assert "no snapshot from" in r.stderr and "within 1 s" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_one_target_missing_still_prints_the_others(cluster: Cluster) -> None:
    r = failmon("-1", "-t", "1.5", targets(cluster)[0], f"127.0.0.1:{free_port()}")
    assert r.returncode == 3
    assert ("www1", "web") in rows(r.stdout)
    assert "no snapshot from" in r.stderr


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str]]] = []
        self._cell: list[str] | None = None
        self._class = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell, self._class = [], dict(attrs).get("class") or ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(("".join(self._cell), self._class))
            self._cell = None


def test_html_page(cluster: Cluster) -> None:
    r = failmon("-h", *targets(cluster))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("<!DOCTYPE html>") and r.stdout.rstrip().endswith("</html>")
    p = _Cells()
    p.feed(r.stdout)
    services = {(row[0][0], row[1][0]): row for row in p.rows if len(row) == 9 and row[0][0] in ("www1", "www2")}
    assert services[("www1", "web")][2] == ("UP", "UP")          # text and colour class
    assert services[("www2", "web")][2] == ("RECOVER", "RECOVER")
    assert services[("www1", "web")][3][0] == "master"
    assert services[("www1", "web")][4][0] == "-"  # flags: neither paused nor a switchover target
    assert "http-equiv" not in r.stdout  # no reload unless asked


def test_cgi_mode(cluster: Cluster, tmp_path: Path) -> None:
    script = shutil.which("failmon", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the failmon console script is not installed in the venv")
    cgi = tmp_path / "failmon.cgi"
    cgi.symlink_to(script)
    env = {"FAILMON_TARGETS": " ".join(targets(cluster)), "GATEWAY_INTERFACE": "CGI/1.1"}
    r = failmon(argv0=[str(cgi)], env=env)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition("\n\n")  # text mode turns the CGI CRLF into LF
    assert head == "Content-Type: text/html; charset=utf-8"
    assert body.startswith("<!DOCTYPE html>") and 'http-equiv="refresh" content="10"' in body
    assert 'class="UP">UP<' in body
    down = failmon("-t", "1", f"127.0.0.1:{free_port()}", argv0=[str(cgi)])
    assert down.returncode == 0
    assert down.stdout.startswith("Status: 503") and "no snapshot from" in down.stdout


def test_line_mode_dumps_on_return(cluster: Cluster) -> None:
    r = failmon("-l", *targets(cluster), stdin="\n\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("failmon at ") == 3  # at start, then once per Return; EOF ends it
    r = failmon("-l", "--every", "0.3", "--count", "2", targets(cluster)[0])
    assert r.returncode == 0 and r.stdout.count("failmon at ") == 2


def test_curses_needs_a_terminal(cluster: Cluster) -> None:
    r = failmon(targets(cluster)[0])
    assert r.returncode == 2 and "terminal" in r.stderr


# curses in tmux --------------------------------------------------------------------------
@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[str]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    base = ["tmux", "-L", f"failmon-test-{os.getpid()}", "-f", "/dev/null"]
    yield base
    subprocess.run([*base, "kill-server"], capture_output=True, timeout=10)


def test_curses_keys(cluster: Cluster, tmux: list[str], tmp_path: Path) -> None:
    status = tmp_path / "status"
    cmd = " ".join([*FAILMON, "-c", *targets(cluster)]) + f"; echo $? > {status}"
    subprocess.run([*tmux, "new-session", "-d", "-s", "mon", "-x", "120", "-y", "40",
                    f"env -u COLUMNS -u LINES TERM=xterm-256color {cmd}"], check=True, timeout=10)

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "mon"], capture_output=True, text=True,
                              timeout=10).stdout

    def keys(*k: str) -> None:
        subprocess.run([*tmux, "send-keys", "-t", "mon", *k], check=True, timeout=10)

    def shows(*needles: str, timeout: float = 10) -> str:
        last = [""]

        def ready() -> str | None:
            last[0] = screen()
            return last[0] if all(n in last[0] for n in needles) else None
        try:
            return wait_for(ready, timeout, f"the screen to show {needles}", ignore=TRANSIENT)
        except pytest.fail.Exception:
            print(last[0])
            raise

    # start: the services of the first host (www1)
    s = shows("[services]", "services on www1", "live")
    line = next(x for x in s.splitlines() if x.startswith("> www1"))
    assert line.split()[1:5] == ["www1", "web", "UP", "master"] and "www2=RECOVER(up)" in line
    assert "h hosts" in s.splitlines()[-1] or "h hosts" in s
    # h: the hosts list with "last connect"
    keys("h")
    s = shows("[hosts]", "LAST CONNECT")
    assert sum(1 for x in s.splitlines() if x[2:].startswith("www2")) == 2  # itself + as seen by www1
    # c: toggle to "last call", and back
    keys("c")
    shows("[hosts]", "LAST CALL")
    keys("c")
    shows("LAST CONNECT")
    # select the third row (www2 itself), left arrow: its services
    keys("Down", "Down", "Left")
    s = shows("services on www2")
    assert next(x for x in s.splitlines() if x.startswith("> www2")).split()[3:5] == ["RECOVER", "slave"]
    # right arrow: the detail of the selected service
    keys("Right")
    s = shows("[service detail]", "service web on www2", "decision", "masters      www1")
    assert "wait: master www1 is UP" in s
    # tab: to the hosts, tab: back to the detail
    keys("Tab")
    shows("[hosts]")
    keys("Tab")
    shows("[service detail]")
    # s: the detail again; l: back to the list
    keys("s")
    shows("[service detail]")
    keys("l")
    shows("[services]", "services on www2")
    # the screen follows the feed: www1 crashes, www2 takes web over, without a key
    cluster.crash_host("www1")
    s = shows("www1=FAIL(down)", timeout=15)
    assert next(x for x in s.splitlines() if x.startswith("> www2")).split()[3] == "UP"
    # www1's failsh sends no snapshot any more: its target is "gone since", not "live"
    s = shows("failsh www1 gone since", f"{targets(cluster)[0]}: gone since", timeout=15)
    assert f"{targets(cluster)[1]}: live" in s
    keys("q")
    wait_for(lambda: status.exists() and status.read_text().strip() == "0", 10, "failmon to quit with 0",
             ignore=TRANSIENT)


def test_curses_unreachable(tmux: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = " ".join([*FAILMON, "-t", "1", f"127.0.0.1:{free_port()}"]) + f" 2> {out}; echo $? >> {out}.rc"
    subprocess.run([*tmux, "new-session", "-d", "-s", "bad", "-x", "80", "-y", "24", cmd], check=True, timeout=10)
    wait_for(lambda: Path(f"{out}.rc").exists(), 10, "failmon to exit", ignore=TRANSIENT)
    time.sleep(0.1)
    assert Path(f"{out}.rc").read_text().strip() == "3"
    assert "no snapshot from" in out.read_text() and "Traceback" not in out.read_text()


def test_history_survives_a_failsh_restart(cluster: Cluster) -> None:
    """faild persists the transitions; a restarted failsh shows them to failmon."""
    name = next(n for n in ("www1", "www2") if cluster.state(n, "web") == "UP")
    cluster.failsh[name].stop(timeout=15)  # stops web ("failsh stopping"), the transition goes to faild
    cluster.start_failsh(name)

    def shown() -> str | None:
        r = failmon("-1", "-t", "3", f"127.0.0.1:{cluster.monitor_ports[name]}")
        return r.stdout if r.returncode == 0 and "failsh stopping" in r.stdout else None
    out = wait_for(shown, 15, "the transitions from before the restart", ignore=TRANSIENT)
    line = next(x for x in out.splitlines() if "failsh stopping" in x)
    assert f"{name}  web  UP -> RECOVER" in line


def test_a_failsh_that_stops_publishing_is_marked_gone(tmp_path: Path) -> None:
    """failmon -l keeps showing the last snapshot of a failsh killed with -9, marked as
    such: "failsh solo gone since HH:MM:SS" and its rows as HOST[gone]."""
    c = Cluster(tmp_path, names=("solo",), policy="proc up args {return UP}\nfailsvc web interval 1\n"
                "failsvc web start up\n")
    out = tmp_path / "failmon.out"
    try:
        c.start()
        c.wait_states("web", {"solo": "UP"})
        with open(out, "w") as f:
            proc = subprocess.Popen([*FAILMON, "-l", "--every", "0.5", f"127.0.0.1:{c.monitor_ports['solo']}"],
                                    stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: "solo  web" in out.read_text(), 15, "a first dump", ignore=TRANSIENT)
            assert "gone" not in out.read_text()
            c.failsh["solo"].kill9()
            last = wait_for(lambda: (d := out.read_text().split("failmon at ")[-1]) and "[gone]" in d and d,
                            15, "the failsh to be marked gone", ignore=TRANSIENT)
            assert "failsh solo gone since " in last and "its rows are its last snapshot" in last
            assert rows(last)[("solo[gone]", "web")][2] == "UP"  # its last state, marked
        finally:
            proc.kill()
            proc.wait(5)
    finally:
        c.close()
