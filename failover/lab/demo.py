"""The README's demo: a two-host cluster on loopback that shows a real failover.

www1 (master) and www2 (slave) each run faild and failsh with failover/shell/tcl/demo-web.tcl.
A client asks the shared service address every 100 ms and reports who answers.
The demo crashes www1 (kill -9 of its faild, failsh and web server), shows www2
taking over and how long the client went unserved, then brings www1 back and
shows the handback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from failover import client
from failover.lab.loopback import free_port
from failover.shell import tcllib

POLICY = tcllib.path(tcllib.DEMO_POLICY)  # failover/shell/tcl/demo-web.tcl, package data
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {text}", flush=True)


def who_serves(port: int) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.settimeout(0.2)
            return s.recv(64).decode().strip() or None
    except OSError:
        return None


class Host:
    def __init__(self, name: str, peer: str, ports: dict[str, int], workdir: Path, env: dict) -> None:
        self.name, self.peer, self.ports, self.dir, self.env = name, peer, ports, workdir, env
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        bin_dir = Path(sys.executable).parent
        log = open(self.dir / f"{self.name}.log", "ab")
        faild = [str(bin_dir / "faild"), "-F", "-N", self.name, "-l", "127.0.0.1",  # loopback only
                 "-p", str(self.ports[self.name]), "-s", str(self.dir / f"{self.name}.state"),
                 "-r", str(self.dir / f"{self.name}.faild.pid")]
        failsh = [str(bin_dir / "failsh"), "-F", "-N", self.name, "-f", str(POLICY),
                  "--faild", f"127.0.0.1:{self.ports[self.name]}",
                  "-P", f"{self.peer}=127.0.0.1:{self.ports[self.peer]}", "-m", "0", "-D", "0",
                  "-i", str(self.dir / f"{self.name}.failsh.pid"), "-l", str(self.dir / f"{self.name}.dump")]
        env = {**self.env, "FO_NODE": self.name}
        self.procs = [subprocess.Popen(argv, stdout=log, stderr=log, env=env) for argv in (faild, failsh)]

    def crash(self) -> None:
        """kill -9 everything of this host: faild, failsh and the web server it started."""
        for p in self.procs:
            p.kill()
            p.wait()
        self.kill_web(signal.SIGKILL)

    def kill_web(self, sig: int) -> None:
        """Signal the web server this host's start procedure left running, if any."""
        pidfile = self.dir / f"web.{self.name}.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), sig)
            except (OSError, ValueError):
                pass
            pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()


def wait_for(port: int, wanted: str, timeout: float) -> float | None:
    """Poll the service every 100 ms until ``wanted`` answers; return when, or None."""
    deadline = time.monotonic() + timeout
    last: str | None = "?"
    while time.monotonic() < deadline:
        served = who_serves(port)
        if served != last:
            say(f"client: {'served by ' + served if served else 'no answer'}")
            last = served
        if served == wanted:
            return time.monotonic()
        time.sleep(0.1)
    return None


class DemoFailed(Exception):
    pass


def expect(port: int, wanted: str, timeout: float, failure: str) -> float:
    took = wait_for(port, wanted, timeout)
    if took is None:
        raise DemoFailed(failure)
    return took


def states(ports: dict[str, int]) -> str:
    out = []
    for name, port in ports.items():
        try:
            with client.Client(f"tcp://127.0.0.1:{port}", timeout=0.3, retries=0) as c:
                rec = c.get("web")
                out.append(f"{name}={rec.state}")
        except client.ClientError:
            out.append(f"{name}=down")
    return " ".join(out)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="failover-demo", description=__doc__.splitlines()[0]).parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="failover-demo-"))
    ports = {"www1": free_port(), "www2": free_port()}
    web_port = free_port()
    env = {**os.environ, "FO_DEMO_DIR": str(workdir), "FO_DEMO_PORT": str(web_port),
           "FO_PYTHON": sys.executable}
    hosts = {"www1": Host("www1", "www2", ports, workdir, env), "www2": Host("www2", "www1", ports, workdir, env)}
    say(f"starting www1 (master) and www2 (slave) on loopback; service on 127.0.0.1:{web_port}; logs in {workdir}")
    keep = os.environ.get("FO_DEMO_KEEP") is not None  # the logs are removed unless this is set or it fails
    try:
        for h in hosts.values():
            h.start()
        expect(web_port, "www1", 15, "www1 never came up")
        say(f"faild states: {states(ports)}")
        time.sleep(1)
        say("CRASH: kill -9 of www1's faild, failsh and web server")
        crashed = time.monotonic()
        hosts["www1"].crash()
        took = expect(web_port, "www2", 20, "www2 did not take over")
        say(f"FAILOVER: www2 serves; the client was unserved for {took - crashed:.2f} s")
        say(f"faild states: {states(ports)}")
        say("www1 comes back")
        back = time.monotonic()
        hosts["www1"].start()
        took = expect(web_port, "www1", 20, "www1 did not take the service back")
        say(f"HANDBACK: www1 serves again {took - back:.2f} s after its restart")
        time.sleep(1.5)
        say(f"faild states: {states(ports)}")
        return 0
    except DemoFailed as exc:
        say(f"{exc}; see the logs in {workdir} (kept)")
        keep = True
        return 1
    finally:
        for h in hosts.values():
            h.stop()
            h.kill_web(signal.SIGTERM)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
