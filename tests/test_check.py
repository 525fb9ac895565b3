"""failsh --check (failover/shell/verify.py): what keepalived -t or crm_verify would find.

Errors exit 5 and name FILE:LINE; warnings exit 0; --json says the same as an object;
the file is evaluated for every host its lists name, with -N (and $FO_NODE) set to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import run_cli

from failover import heartbeat
from failover.shell.commands import Commands
from failover.shell.policy import Policy
from failover.shell.tclhost import TclHost
from failover.shell.verify import commands_of

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
ADDRESSES = "foreach h {a b c} { failhost $h address 127.0.0.1 }\n"  # no DNS in these tests


def check(tmp_path: Path, text: str, *args: str, node: str = "a") -> tuple[int, str, str]:
    policy = tmp_path / "policy.tcl"
    policy.write_text(text)
    r = run_cli("failsh", "--check", "-N", node, "-f", str(policy), *args, env={**os.environ, "FO_NODE": node})
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout, r.stderr


ERRORS = {
    "undefined procedure": ("proc up args { return UP }\nfailsvc web slaves b\nfailsvc web start up\n"
                            "failsvc web stop {stopweb; return RECOVER}\n",
                            4, 'web: stop script "stopweb; return RECOVER" calls "stopweb", which is not defined'),
    "undefined trap script": ("failsvc web slaves b\nfailtrap state * notify\n", 2,
                              'failtrap state * script "notify" calls "notify", which is not defined'),
    "each other's masters": ("if {$env(FO_NODE) eq \"a\"} {\n  failsvc web masters b\n} else {\n"
                             "  failsvc web masters a\n}\n", 4, "web: a and b are each other's masters: both wait "
                                                               "for the other forever"),
    "each other's slaves": ("failsvc web slaves {a b}\n", 1, "web: a and b are each other's slaves: both may start "
                                                              "it at once"),
    "a cycle": ("array set next {a b b c c a}\nfailsvc web slaves $next($env(FO_NODE))\n", 2,
                "web: the masters/slaves lists do not form one order: a > b > c > a"),
    "in both lists": ("failsvc web masters b\nfailsvc web slaves b\n", 2, "web: on a, b is in both its masters and "
                                                                           "its slaves list"),
    "dead time within an interval": ("failsvc web slaves b\nfailsvc web interval 2\nfailhost b deadtime 1.5\n", 3,
                                     "on a: b's dead time 1.5 s (failhost deadtime) is not longer than the interval "
                                     "it is polled at (2 s, service web)"),
    "an arbiter not named": ("failsvc web slaves b\nfailsvc web arbiter etcd\n", 2,
                             "web is under the arbiter (failsvc web arbiter etcd) but the file has no failarbiter: "
                             "it would never start"),
    "loads for one host only": ("failsvc web slaves b\nif {$env(FO_NODE) eq \"b\"} { error \"not here\" }\n", 2,
                                "the file does not load as host b: not here"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_exit_5_with_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, message = ERRORS[case]
    status, out, err = check(tmp_path, ADDRESSES + text)
    assert status == 5, err
    assert f"failsh: {tmp_path / 'policy.tcl'}:{line + 1}: error: {message}" in err, err
    assert out.startswith("web: interval"), out  # the services are still listed


WARNINGS = {
    "a node in no list": ("failsvc web masters b\nfailsvc web slaves c\n", {"node": "z"},
                          "web: z (this host, -N) is in no host's masters or slaves list, but runs it"),
    "a slave that does not list its master": ("switch $env(FO_NODE) {\n  a { failsvc web slaves b }\n"
                                              "  b { failsvc web slaves c }\n  c { failsvc web masters {a b} }\n}\n",
                                              {},
                                              "web: a counts b as its slave, but b does not list a"),
    "a name that does not resolve": ("failsvc web slaves nosuch-host.invalid\n", {},
                                     "host nosuch-host.invalid does not resolve and has no address"),
    "one lost poll": ("failsvc web slaves b\n", {"args": ("--dead-factor", "1.5")},
                      "on a: b's dead time 1.5 s (--dead-factor 1.5 x interval) is less than two intervals"),
}


@pytest.mark.parametrize("case", sorted(WARNINGS))
def test_warnings_exit_0(tmp_path: Path, case: str) -> None:
    text, options, message = WARNINGS[case]
    status, _out, err = check(tmp_path, ADDRESSES + text, *options.get("args", ()), node=options.get("node", "a"))
    assert status == 0, err
    assert "warning: " + message in err, err
    assert "error:" not in err


def test_heartbeats_vouch_for_a_dead_time_under_two_intervals(tmp_path: Path) -> None:
    """With --heartbeat-key a lost poll does not count a live host FAIL: no warning at 1.5."""
    key = tmp_path / "hb.key"
    heartbeat.write_key(key)
    status, _out, err = check(tmp_path, ADDRESSES + "failsvc web slaves b\n", "--dead-factor", "1.5",
                              "--heartbeat-key", str(key))
    assert status == 0 and "dead time" not in err, err


def test_a_good_file_says_nothing(tmp_path: Path) -> None:
    text = ADDRESSES + ("proc up args { return UP }\nproc down args { return RECOVER }\n"
                        "foreach {k v} {masters a slaves b start up stop {down; return RECOVER} "
                        "reclaim {fo::ipdown 10.0.0.1/24 eth0} check {fo::hasip 10.0.0.1 eth0}} {\n"
                        "    failsvc web $k $v\n}\n")
    for node in ("a", "b"):
        status, out, err = check(tmp_path, text, node=node)
        assert (status, err) == (0, ""), (node, err)
        assert out.startswith("web: interval 1 masters"), out


def test_json(tmp_path: Path) -> None:
    status, out, _err = check(tmp_path, ADDRESSES + "failsvc web slaves {a b}\nfailsvc web failback delay 30\n"
                                                    "failsvc web start nosuch\n", "--json")
    assert status == 5
    report = json.loads(out)
    assert report["ok"] is False and report["node"] == "a" and report["file"].endswith("policy.tcl")
    assert report["services"] == [{"name": "web", "interval": 1.0, "masters": [], "slaves": ["b"],
                                   "failback": "delay 30", "flap": "6 5"}]
    assert [e["message"].split(":")[0] for e in report["errors"]] == ["web", "web"]
    assert all(e["level"] == "error" and e["where"].startswith(report["file"] + ":") for e in report["errors"])
    assert report["warnings"] == []
    broken = tmp_path / "broken.tcl"
    broken.write_text("failsvc web interval soon\n")
    r = run_cli("failsh", "--check", "--json", "-N", "a", "-f", str(broken))
    assert r.returncode == 5
    assert json.loads(r.stdout)["errors"][0]["where"] == f"{broken}:1"


@pytest.mark.parametrize("args", [["--check"], ["--json", "-f", "x.tcl"], ["--check", "--json"]])
def test_check_needs_a_file(args: list[str]) -> None:
    r = run_cli("failsh", *args)
    assert r.returncode == 2 and r.stderr.startswith("failsh: --check needs a policy"), r.stderr


SAMPLES = {"policies/01-web-master-slave.tcl": ("www1", "www2"),
           "policies/02-symmetric-two-services.tcl": ("alpha", "beta"),
           "policies/03-ipfailover-linux.tcl": ("www1", "www2"),
           "policies/04-three-host-ldap-chain.tcl": ("ldap1", "ldap2", "ldap3"),
           "policies/05-database-with-check.tcl": ("db1", "db2"),
           "symmetric/failover.tcl": ("alpha", "beta")}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_the_samples_have_no_errors(sample: str) -> None:
    """Only their host names, which no DNS here knows, are warned about."""
    for node in SAMPLES[sample]:
        peers = [a for h in SAMPLES[sample] if h != node for a in ("-P", f"{h}=127.0.0.1")]
        r = run_cli("failsh", "--check", "-N", node, *peers, "-f", str(ROOT / "samples" / sample),
                    env={**os.environ, "FO_NODE": node})
        assert r.returncode == 0, r.stderr
        assert [line for line in r.stderr.splitlines() if ": warning: " in line or ": error: " in line] == [], \
            r.stderr


@pytest.mark.parametrize(("script", "words"), [
    ("startweb", ["startweb"]),
    ("startsvc web", ["startsvc"]),
    ("exec systemctl start apache2; return UP", ["exec", "return"]),
    ("if {$x} {\n  a; b\n} else { c }\nfo::log info {x; y}", ["if", "fo::log"]),
    ("# a comment; still one\nset x [one; two]\n", ["set"]),
    ('puts "a;b"; $cmd arg; [list p] q', ["puts", "", ""]),
    ("{start web} x", ["start web"]),
    ("", []),
])
def test_the_commands_a_script_calls(script: str, words: list[str]) -> None:
    tcl = TclHost()
    Commands(tcl, Policy("a"))
    assert commands_of(tcl, script) == words


def test_an_incomplete_script() -> None:
    tcl = TclHost()
    assert commands_of(tcl, "if {1} {") is None
