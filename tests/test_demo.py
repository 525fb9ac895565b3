"""The README's main job: the loopback demo shows a failover and a handback."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.process


def test_demo_fails_over_and_hands_back() -> None:
    r = subprocess.run([sys.executable, "-m", "failover.lab.demo"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAILOVER: www2 serves" in r.stdout
    assert "HANDBACK: www1 serves again" in r.stdout
    assert r.stdout.rstrip().endswith("faild states: www1=UP www2=RECOVER"), r.stdout
