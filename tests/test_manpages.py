"""Man pages generated from the argparse parsers (failover/cli/manpage.py, setup.py's build_man)."""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from failover.cli import manpage
from failover.cli.launch import PROGRAMS

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent


def test_setup_builds_a_page_for_every_program() -> None:
    tree = ast.parse((ROOT / "setup.py").read_text())
    assigned = {node.targets[0].id: node.value for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    assert ast.literal_eval(assigned["PROGRAMS"]) == list(PROGRAMS)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("man")
    return {p.stem: p for p in manpage.write_all(directory)}


def test_every_option_is_documented(pages: dict[str, Path]) -> None:
    assert set(pages) == set(PROGRAMS)
    for program, parser in manpage.parsers():
        text = pages[program].read_text()
        assert text.startswith(f".TH {program.upper()} 1 ")
        for action in parser._actions:
            for option in action.option_strings:
                assert f"\\fB{manpage.escape(option)}\\fR" in text, (program, option)


def test_every_command_is_documented(pages: dict[str, Path]) -> None:
    """A program with commands (failctl): each command, its synopsis and its options."""
    seen = 0
    for program, parser in manpage.parsers():
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            text = pages[program].read_text()
            for name, sub in action.choices.items():
                seen += 1
                assert f".SS {name}\n" in text and f"\\fB{program} {name}\\fR " in text, (program, name)
                for a in sub._actions:
                    for option in a.option_strings:
                        assert f"\\fB{manpage.escape(option)}\\fR" in text, (program, name, option)
    assert seen >= 4  # failctl status, pause, resume, switchover


def test_pages_build_without_tkinter(tmp_path: Path) -> None:
    """The build needs the parsers only: a Python without tkinter (Debian's python3 without
    python3-tk, as in a pip build on a stock host) still writes every page."""
    code = ("import sys; sys.modules['tkinter'] = None; from failover.cli import manpage; "
            f"sys.exit(manpage.main([{str(tmp_path)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.stem for p in tmp_path.glob("*.1")) == sorted(PROGRAMS)


def plain(text: str) -> str:
    """Without the overstrikes (bold: X backspace X) that man keeps."""
    return re.sub(".\b", "", text)


@pytest.mark.skipif(shutil.which("man") is None, reason="man (man-db) is not installed")
def test_man_renders_them_without_warnings(pages: dict[str, Path]) -> None:
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    for program, path in pages.items():
        r = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 0 and r.stderr == "", (program, r.stderr)
        assert "SYNOPSIS" in plain(r.stdout) and "OPTIONS" in plain(r.stdout)
    rendered = plain(subprocess.run(["man", "-l", str(pages["faild"])], capture_output=True, text=True, env=env,
                                    timeout=60).stdout)
    assert "-c FILE, --communities FILE" in rendered
    assert "(default: /var/lib/failover/faild.state)" in " ".join(rendered.split())
