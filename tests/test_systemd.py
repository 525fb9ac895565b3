"""systemd integration: the sample units (Type=notify, ExecReload = SIGHUP) and the sd_notify
messages real faild and failsh processes send on start, reload (SIGHUP) and stop."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from opscluster import free_port

UNITS = Path(__file__).resolve().parent.parent / "samples" / "systemd"
POLICY = "proc up args {return UP}\nproc down args {return RECOVER}\nfailsvc web interval 1\n" \
         "failsvc web start up\nfailsvc web stop down\n"


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((UNITS / name).read_text())
    return cp


@pytest.mark.parametrize("name,program", [("faild.service", "faild"), ("failsh.service", "failsh")])
def test_unit_files(name: str, program: str) -> None:
    u = unit(name)
    svc = u["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    exe, *args = svc["ExecStart"].split()
    assert Path(exe).name == program and "-F" in args  # in the foreground, as Type=notify needs
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    venv = Path(sys.executable).parent
    if not (venv / "faild").exists():
        pytest.skip("the console scripts are not installed in the venv")
    for f in UNITS.glob("*.service"):
        (tmp_path / f.name).write_text(f.read_text().replace("/usr/local/bin/", f"{venv}/"))
    r = subprocess.run([analyze, "verify", *map(str, sorted(tmp_path.glob("*.service")))],
                       capture_output=True, text=True, timeout=60)
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


def run(cmd: list[str], notify_path: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": notify_path}
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


def test_failsh_notifies(notify: tuple[str, socket.socket], tmp_path: Path) -> None:
    path, s = notify
    port = free_port()
    faild = run([sys.executable, "-m", "failover.cli.faild", "-F", "-l", "127.0.0.1", "-p", str(port),
                 "-s", str(tmp_path / "state"), "-r", str(tmp_path / "fpid")], "", tmp_path / "faild.log")
    policy = tmp_path / "p.tcl"
    policy.write_text(POLICY)
    failsh = run([sys.executable, "-m", "failover.cli.failsh", "-F", "-N", "solo", "-f", str(policy),
                  "--faild", f"127.0.0.1:{port}", "-m", "0", "-D", "0", "-i", str(tmp_path / "pid")],
                 path, tmp_path / "failsh.log")
    try:
        expect(s, "READY=1")
        failsh.send_signal(signal.SIGHUP)
        expect(s, "RELOADING=1", "READY=1")
        failsh.send_signal(signal.SIGTERM)
        expect(s, "STOPPING=1")
        failsh.wait(15)
    finally:
        for p in (failsh, faild):
            if p.poll() is None:
                p.kill()
                p.wait(5)
