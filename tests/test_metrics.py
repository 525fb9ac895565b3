"""Prometheus metrics of failsh (--http .../metrics) and faild (--metrics), scraped over
HTTP from real processes before and after a real failover (www1 crashes, www2 takes over)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import WEB_POLICY, Cluster
from support import TRANSIENT, http_get, prom_value, wait_for

from failover.observe import metrics

pytestmark = pytest.mark.process

POLICY = WEB_POLICY + """proc broken args {error "boom"}
failsvc bad interval 1
failsvc bad masters {www1}
failsvc bad slaves {www2}
failsvc bad start broken
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("metrics"), policy=POLICY, http=True, metrics=True,
                failsh_args=("--dead-factor", "2"))
    with c.serving({"www1": "UP", "www2": "RECOVER"}):
        yield c


def scrape(port: int) -> str:
    status, ctype, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
    return body


def scrape_until(port: int, what: str, timeout: float, name: str, value: float | None = None,
                 **labels: str) -> str:
    """Scrape until sample ``name{labels}`` equals ``value`` (or exists and is non-zero)."""
    def ready() -> str | None:
        text = scrape(port)
        got = prom_value(text, name, **labels)
        return text if (got == value if value is not None else got) else None
    return wait_for(ready, timeout, what, ignore=TRANSIENT)


def test_policy_errors_counted(cluster: Cluster) -> None:
    """www1 masters "bad", whose start procedure raises a Tcl error (before www1 crashes below)."""
    text = scrape_until(cluster.http_ports["www1"], "the broken start procedure to be counted", 15,
                        "failover_policy_errors_total", service="bad", kind="start")
    assert prom_value(text, "failover_policy_errors_total", service="bad", kind="start") >= 1
    assert prom_value(text, "failover_policy_errors_total", service="web", kind="start") is None


def test_failover_seen_in_metrics(cluster: Cluster) -> None:
    http2, metrics2, failsh2 = cluster.http_ports["www2"], cluster.metrics_ports["www2"], cluster.failsh["www2"]
    # before: www2 holds web as slave and sees www1 reachable and UP
    before = scrape_until(http2, "www2's metrics to show www1 UP", 10,
                          "failover_peer_service_state", 1, service="web", host="www1", state="UP")
    assert prom_value(before, "failover_service_state", service="web", state="RECOVER") == 1
    assert prom_value(before, "failover_service_state", service="web", state="UP") == 0
    assert prom_value(before, "failover_peer_up", host="www1") == 1
    assert prom_value(before, "failover_peer_query_seconds_count", host="www1") >= 1
    takeovers = prom_value(before, "failover_transitions_total", service="web", **{"from": "RECOVER", "to": "UP"})
    durations = prom_value(before, "failover_failover_seconds_count", service="web") or 0
    durations_sum = prom_value(before, "failover_failover_seconds_sum", service="web") or 0
    faild_before = scrape(metrics2)
    assert prom_value(faild_before, "failover_faild_requests_total", op="list", result="ok") >= 1
    assert prom_value(faild_before, "failover_faild_request_seconds_count", op="list") >= 1

    mark = len(failsh2.log())
    cluster.crash_host("www1")
    cluster.wait_states("web", {"www2": "UP"}, timeout=15)

    after = scrape_until(http2, "www2's metrics to show www1 down", 5, "failover_peer_up", 0, host="www1")
    assert prom_value(after, "failover_service_state", service="web", state="UP") == 1
    assert prom_value(after, "failover_peer_service_state", service="web", host="www1", state="FAIL") == 1
    assert prom_value(after, "failover_transitions_total", service="web",
                      **{"from": "RECOVER", "to": "UP"}) == (takeovers or 0) + 1
    # failover duration: from www1's last answer to web UP on www2 (dead time 2 s + start)
    assert prom_value(after, "failover_failover_seconds_count", service="web") == durations + 1
    seconds = prom_value(after, "failover_failover_seconds_sum", service="web") - durations_sum
    assert 0.5 < seconds < 10, seconds

    faild_after = scrape(metrics2)
    assert prom_value(faild_after, "failover_faild_transitions_total", service="web", to="UP") == \
        (prom_value(faild_before, "failover_faild_transitions_total", service="web", to="UP") or 0) + 1
    assert prom_value(faild_after, "failover_faild_service_state", service="web", state="UP") == 1
    assert prom_value(faild_after, "failover_faild_requests_total", op="set", result="ok") >= 1

    # every transition is logged once, with its reason
    log = failsh2.log()
    lines = re.findall(r"failover\.scheduler: web: (\S+) -> (\S+): (.+)", log)
    takeover = re.findall(r"failover\.scheduler: web: (\S+) -> (\S+): (.+)", log[mark:])
    assert [t[:2] for t in takeover] == [("RECOVER", "UP")], takeover
    assert "master www1" in takeover[0][2] and "start procedure returned UP" in takeover[0][2]
    total = sum(prom_value(after, "failover_transitions_total", service="web", **{"from": a, "to": b}) or 0
                for a, b in {(a, b) for a, b, _ in lines})
    assert total == len(lines)


def test_faild_metrics_option_errors(tmp_path: Path) -> None:
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "failover.cli.faild", "-F", "--metrics", "nope:x",
                        "-s", str(tmp_path / "s"), "-r", str(tmp_path / "p")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "PORT" in r.stderr and "Traceback" not in r.stderr


def test_parse_listen() -> None:
    assert metrics.parse_listen("9100") == ("127.0.0.1", 9100)
    assert metrics.parse_listen(":9100") == ("127.0.0.1", 9100)
    assert metrics.parse_listen("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert metrics.parse_listen("[::1]:9100") == ("::1", 9100)
    for bad in ("", "x", "1:0", "h:70000"):
        with pytest.raises(ValueError):
            metrics.parse_listen(bad)
