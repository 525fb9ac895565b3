"""Shared test helpers: real faild subprocesses on free loopback ports, and the console scripts.

Nothing here is mocked: ``faild`` is the real daemon (``python -m failover.cli.faild -F``),
talking ZeroMQ on 127.0.0.1, with its state file in the test's tmp_path.

Fixtures:
    faild          a started faild (no community file: '* public RW')
    faild_factory  make_faild(**options) -> FaildProcess, started; all stopped at teardown

Helpers (import them: ``from conftest import ...``):
    free_port()                         a currently unused TCP port on 127.0.0.1
    run_cli(name, *args, timeout=20)    run failc/failstat/... from the venv, capture output
    wait_for(predicate, timeout, what)  poll a condition, bounded in time
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import zmq

from failover.client import Client, ClientError

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition",
             interval: float = 0.02) -> object:
    """Call ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def cli_command(name: str) -> list[str]:
    """The venv's console script ``name``, or ``python -m failover.cli.NAME`` if not installed."""
    script = BIN / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", f"failover.cli.{name}"]


def run_cli(name: str, *args: str, timeout: float = 20.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a failover program to completion; stdout/stderr captured as text."""
    return subprocess.run([*cli_command(name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


class Daemon:
    """A program the tests run in the background: ``proc``, output in ``logfile``."""

    proc: subprocess.Popen[bytes] | None = None
    logfile: Path

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``signum`` and wait for the exit; SIGKILL after ``timeout``.  Returns the status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""


class FaildProcess(Daemon):
    """One real faild on 127.0.0.1:``port``; its files live in ``directory``.

    ``start()`` waits until faild answers a ping.  ``stop()`` sends SIGTERM and returns the
    exit status; ``kill9()`` sends SIGKILL; ``restart()`` starts it again with the same
    port, state file and options (stopping it first if it is still running).
    """

    def __init__(self, directory: Path, port: int | None = None, communities: Path | None = None,
                 node: str = "testnode", extra: Sequence[str] = ()) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = port or free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"  # for failc -h / failstat
        self.statefile = directory / "faild.state"
        self.pidfile = directory / "faild.pid"
        self.logfile = directory / "faild.log"
        self.communities = communities
        self.node = node
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "failover.cli.faild", "-F", "-l", "127.0.0.1", "-p", str(self.port),
               "-s", str(self.statefile), "-r", str(self.pidfile), "-N", self.node]
        if self.communities is not None:
            cmd += ["-c", str(self.communities)]
        return cmd + self.extra

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to serve (for start-up failure tests)."""
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return self.proc

    def start(self) -> FaildProcess:
        proc = self.spawn()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with self.client(timeout=0.2) as c:  # subclasses' client() (CURVE) is used here too
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"faild exited with {proc.returncode} during start-up:\n{self.log()}")
                try:
                    c.ping()
                    return self
                except ClientError:
                    if time.monotonic() > deadline:
                        self.kill9()
                        raise RuntimeError(f"faild did not answer within {STARTUP_TIMEOUT} s:\n{self.log()}") from None

    def restart(self) -> FaildProcess:
        if self.running():
            self.stop()
        return self.start()

    def client(self, community: str = "public", timeout: float = 2.0, retries: int = 0) -> Client:
        return Client(self.endpoint, community=community, timeout=timeout, retries=retries)


@pytest.fixture
def faild_factory(tmp_path: Path) -> Iterator[Callable[..., FaildProcess]]:
    """make_faild(name="a", start=True, **FaildProcess options) -> FaildProcess; each on a fresh port."""
    made: list[FaildProcess] = []

    def make(name: str = "faild", start: bool = True, **options: object) -> FaildProcess:
        f = FaildProcess(tmp_path / f"{name}{len(made)}", **options)  # type: ignore[arg-type]
        made.append(f)
        return f.start() if start else f

    yield make
    for f in made:
        if f.running():
            f.kill9()


@pytest.fixture
def faild(faild_factory: Callable[..., FaildProcess]) -> FaildProcess:
    return faild_factory()


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    """A private ZeroMQ context for raw sockets; closed (linger 0) after the test."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)
