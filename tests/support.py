"""Shared test helpers: free ports, bounded waits, the console scripts, real faild processes.

Nothing here is mocked: ``faild`` is the real daemon (``python -m failover.cli.faild -F``),
talking ZeroMQ on 127.0.0.1, with its state file in the test's tmp_path.  The fixtures
that use these are in conftest.py; the clusters of faild and failsh hosts in cluster.py.

    free_port()                                   a currently unused TCP port on 127.0.0.1
    wait_for(predicate, timeout, what, ignore=)   poll a condition, bounded in time
    run_cli(name, *args, timeout=20)              run failc/failstat/... from the venv, capture output
    FaildProcess(directory, port=None, ...)       one faild; start(), stop(), kill9(), restart()
    HcProcess(directory, hcfile, ...)             hc -F with its monitor on a free port
    http_get(url), prom_value(text, name, ...)    the web page and the Prometheus metrics
    json_paths(value), replaced(value, path, new) every member of a JSON value, one replaced
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from failover.client import Client, ClientError
from failover.lab.loopback import free_port

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 10.0
# what a predicate may raise while the thing it looks at is not there yet: a server not
# listening, a file half written, a snapshot without the service yet
TRANSIENT = (OSError, ValueError, KeyError)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str | Callable[[], str] = "condition",
             interval: float = 0.02, ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Call ``predicate`` until it returns something truthy, and return that; fail the test
    after ``timeout``, saying ``what`` (a function: called then, to show logs of that moment).
    An exception in ``ignore`` counts as not yet (the last one is shown)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = predicate()
        except ignore as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout} s waiting for {text}" + (f" (last: {last!r})" if last else ""))
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


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def prom_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None if absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        got = dict(item.split("=", 1) for item in rest.rstrip("}").split(",") if item) if rest else {}
        if all(got.get(k) == json.dumps(v) for k, v in labels.items()):
            return float(value)
    return None


def json_paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path (keys and indexes) of every member of a JSON value, so a fuzz reaches each."""
    out = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        out += json_paths(inner, (*prefix, key))
    return out


def replaced(value: Any, path: tuple[Any, ...], new: object) -> Any:
    """A copy of ``value`` with the member at ``path`` set to ``new`` (``...`` deletes it)."""
    out = copy.deepcopy(value)
    *parents, last = path
    holder = out
    for key in parents:
        holder = holder[key]
    if new is ...:
        del holder[last]
    else:
        holder[last] = new
    return out


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
                 node: str = "testnode", extra: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
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
        self.env = env
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
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self.env)
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

    def state(self, service: str, timeout: float = 0.5) -> str | None:
        """The state faild holds for ``service``; None if it does not answer or know it."""
        try:
            with self.client(timeout=timeout) as c:
                return c.get(service).state.value
        except ClientError:
            return None


class HcProcess(Daemon):
    """hc in the foreground (``hc -F -m``) with its monitor on 127.0.0.1:``port``; its log
    and pid file in ``directory``.  ``start()`` does not wait: hc's first results take
    their checks' time anyway (wait for them with ``monitor.healthy`` or a faild's state)."""

    def __init__(self, directory: Path, hcfile: Path, port: int | None = None, node: str = "hcd",
                 extra: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.hcfile = hcfile
        self.node = node
        self.logfile = directory / "hc.log"
        self.pidfile = directory / "hc.pid"
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [*cli_command("hc"), "-F", "-m", "-l", "127.0.0.1", "-p", str(self.port), "-N", self.node,
                "-f", str(self.hcfile), "-r", str(self.pidfile), *self.extra]

    def start(self) -> HcProcess:
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        return self
