"""systemd integration: the sample units (Type=notify, ExecReload = SIGHUP) and the sd_notify
messages real faild and failsh processes send on start, reload (SIGHUP) and stop."""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import FaildProcess, free_port

pytestmark = pytest.mark.process

UNITS = Path(__file__).resolve().parent.parent / "samples" / "systemd"
POLICY = "proc up args {return UP}\nproc down args {return RECOVER}\nfailsvc web interval 1\n" \
         "failsvc web start up\nfailsvc web stop down\n"


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((UNITS / name).read_text())
    return cp


@pytest.mark.parametrize("name,program", [("faild.service", "faild"), ("failsh.service", "failsh"),
                                          ("hc.service", "hc")])
def test_unit_files(name: str, program: str) -> None:
    u = unit(name)
    svc = u["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    exe, *args = svc["ExecStart"].split()
    # the Debian package's path; a pip install substitutes its own (docs/getting-started.md)
    assert exe == f"/usr/bin/{program}" and "-F" in args  # in the foreground, as Type=notify needs
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_failsh_unit_has_a_watchdog_longer_than_a_procedure() -> None:
    from failover.shell.policy import DEFAULT_TIMEOUT
    svc = unit("failsh.service")["Service"]
    assert float(svc["WatchdogSec"]) > DEFAULT_TIMEOUT  # failsh sends WATCHDOG=1 (test below)
    assert "$FAILSH_OPTS" in svc["ExecStart"].split()   # the RW community, from the package's env file


def test_faild_unit_runs_unprivileged() -> None:
    svc = unit("faild.service")["Service"]
    assert svc["User"] == "failover"
    args = svc["ExecStart"].split()
    # its writable places are the ones systemd makes for that user
    assert args[args.index("-s") + 1].startswith(f"/var/lib/{svc['StateDirectory']}/")
    assert args[args.index("-r") + 1].startswith(f"/run/{svc['RuntimeDirectory']}/")


def test_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    venv = Path(sys.executable).parent
    if not (venv / "faild").exists():
        pytest.skip("the console scripts are not installed in the venv")
    for f in UNITS.glob("*.service"):
        (tmp_path / f.name).write_text(f.read_text().replace("/usr/bin/", f"{venv}/"))
    # verify runs 'man' for the units' Documentation=man:NAME(1): the generated pages
    from failover.cli import manpage
    manpage.write_all(tmp_path / "man" / "man1")
    env = {**os.environ, "MANPATH": str(tmp_path / "man")}
    r = subprocess.run([analyze, "verify", *map(str, sorted(tmp_path.glob("*.service")))],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def notify() -> Iterator[tuple[str, socket.socket]]:
    directory = tempfile.mkdtemp(prefix="fo-notify-", dir="/tmp")  # AF_UNIX paths are short
    path = os.path.join(directory, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(15)
    yield path, s
    s.close()
    shutil.rmtree(directory, ignore_errors=True)


def expect(s: socket.socket, *messages: str) -> None:
    """Receive until each of ``messages`` came, in this order (socket timeout: fail)."""
    got: list[str] = []
    for want in messages:
        while want not in (lines := s.recv(4096).decode().split("\n")):
            got += lines
        got += lines


def run(cmd: list[str], notify_path: str, log: Path, **extra_env: str) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, **extra_env}
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def test_faild_notifies(notify: tuple[str, socket.socket], tmp_path: Path) -> None:
    path, s = notify
    p = run([sys.executable, "-m", "failover.cli.faild", "-F", "-l", "127.0.0.1", "-p", str(free_port()),
             "-s", str(tmp_path / "state"), "-r", str(tmp_path / "pid")], path, tmp_path / "log")
    try:
        expect(s, "READY=1")
        p.send_signal(signal.SIGHUP)
        expect(s, "RELOADING=1", "READY=1")
        p.send_signal(signal.SIGTERM)
        expect(s, "STOPPING=1")
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


@contextlib.contextmanager
def solo_failsh(notify_path: str, tmp_path: Path, **extra_env: str) -> Iterator[subprocess.Popen]:
    """failsh -F for one service, notifying ``notify_path``, over a faild that does not."""
    faild = FaildProcess(tmp_path / "faild", node="solo", env={**os.environ, "NOTIFY_SOCKET": ""}).start()
    policy = tmp_path / "p.tcl"
    policy.write_text(POLICY)
    failsh = run([sys.executable, "-m", "failover.cli.failsh", "-F", "-N", "solo", "-f", str(policy),
                  "--faild", faild.address, "-m", "0", "-D", "0", "-i", str(tmp_path / "pid")],
                 notify_path, tmp_path / "failsh.log", **extra_env)
    try:
        yield failsh
    finally:
        if failsh.poll() is None:
            failsh.kill()
            failsh.wait(5)
        faild.kill9()


def test_failsh_notifies(notify: tuple[str, socket.socket], tmp_path: Path) -> None:
    path, s = notify
    with solo_failsh(path, tmp_path) as failsh:
        expect(s, "READY=1")
        failsh.send_signal(signal.SIGHUP)
        expect(s, "RELOADING=1", "READY=1")
        failsh.send_signal(signal.SIGTERM)
        expect(s, "STOPPING=1")
        failsh.wait(15)


def test_failsh_feeds_the_watchdog(notify: tuple[str, socket.socket], tmp_path: Path) -> None:
    """WatchdogSec= in failsh.service: systemd sets WATCHDOG_USEC and failsh sends WATCHDOG=1
    at least every half of it while its policy thread runs."""
    path, s = notify
    with solo_failsh(path, tmp_path, WATCHDOG_USEC="1000000"):
        expect(s, "READY=1")
        seen: list[float] = []
        start = time.monotonic()
        while len(seen) < 4:
            if "WATCHDOG=1" in s.recv(4096).decode().split("\n"):
                seen.append(time.monotonic())
        assert seen[-1] - start < 3.5  # four within 3.5 s: every 0.5 s or so
