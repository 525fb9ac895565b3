"""The start-up check of the libraries (failover/cli/requirements.py): a missing tkinter or a
too-old pyzmq/attrs/prometheus_client is one line naming the package, exit 5."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from failover.cli import launch, requirements

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent


def test_floors_are_pyprojects() -> None:
    """One set of floors: pyproject.toml's dependencies are the ones the check enforces."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for dep in deps:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep).groups()
        floors[name] = requirements.parse_version(version)
    assert floors == {d: floor for d, (_m, floor, _p) in requirements.LIBRARIES.items()}
    # Debian 12's versions pass
    for dist, version in (("pyzmq", "24.0.1"), ("attrs", "22.2.0"), ("prometheus_client", "0.16.0")):
        assert requirements.library_problem(dist, version) is None


@pytest.mark.parametrize("text,parsed", [("24.0.1", (24, 0, 1)), ("0.17.0rc1", (0, 17, 0)), ("23", (23,)),
                                         ("26.1.0.post1", (26, 1, 0)), ("1.2b3", (1, 2)), ("dev", ())])
def test_parse_version(text: str, parsed: tuple[int, ...]) -> None:
    assert requirements.parse_version(text) == parsed


def test_problems_name_the_debian_package() -> None:
    old = requirements.library_problem("pyzmq", "23.2.1")
    assert old == ("pyzmq 23.2.1 is too old, failover needs 24.0 or newer: "
                   "apt-get install python3-zmq, or pip install 'pyzmq>=24.0'")
    assert "apt-get install python3-attr" in requirements.library_problem("attrs", "21.4.0")
    missing = requirements.library_problem("prometheus_client", None)
    assert missing.startswith("Python module prometheus_client (prometheus_client) is missing")
    assert "python3-prometheus-client" in missing


def test_this_environment_passes() -> None:
    assert requirements.problems(tkinter=True) == []


def test_every_console_script_is_checked() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"failover.cli.launch:{name}" for name in launch.PROGRAMS}


def run_without_tkinter(program: str, *args: str) -> subprocess.CompletedProcess:
    """The console script's entry point in a Python where ``import tkinter`` fails (a module
    set to None in sys.modules cannot be imported: Python's own way to block one)."""
    code = f"import sys; sys.modules['tkinter'] = None; from failover.cli import launch; sys.exit(launch.{program}())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_missing_tkinter_is_one_line_and_exit_5() -> None:
    policy = ROOT / "samples/policies/01-web-master-slave.tcl"
    r = run_without_tkinter("failsh", "--check", "-N", "www1", "-f", str(policy))
    assert r.returncode == 5
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("failsh: Python's tkinter is missing")
    assert lines[0].endswith("apt-get install python3-tk")


def test_programs_without_tcl_do_not_need_tkinter() -> None:
    for program in ("faild", "failc", "failstat", "failkey"):
        r = run_without_tkinter(program, "--version")
        assert r.returncode == 0, r.stderr
        assert "(failover)" in r.stdout
