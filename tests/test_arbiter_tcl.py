"""The arbiter's Tcl side with a real interpreter, no etcd: failarbiter and
``failsvc NAME arbiter``, their errors, and the fencing token's environment variable
around a procedure (docs/tcl-extension.md, docs/arbiter.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_tclext import tcl_error

from failover.shell.commands import Commands
from failover.shell.policy import ArbiterConfig, Policy
from failover.shell.procedures import run_procedure
from failover.shell.tclhost import TclHost
from failover.states import State

pytestmark = pytest.mark.fast


def test_failarbiter_and_failsvc_arbiter(tcl: TclHost, cmds: Commands, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    tcl.interp.eval(f"failarbiter etcd https://10.0.0.1:2379 {{https://[fd00::2]:2379}} -ttl 4.5 -prefix /acme/ "
                    f"-cacert {ca} -user failover -password s3cret")
    assert cmds.policy.arbiter == ArbiterConfig("etcd", ("https://10.0.0.1:2379", "https://[fd00::2]:2379"),
                                                "/acme/", 4.5, str(ca), None, None, "failover", "s3cret")
    shown = tcl.interp.eval("failarbiter")
    assert "s3cret" not in shown and "-ttl 4.5" in shown and "-user failover" in shown
    tcl.interp.eval("failsvc web arbiter etcd")
    assert cmds.policy.services["web"].arbiter == "etcd"
    assert tcl.interp.eval("dict get [failsvc web] arbiter") == "etcd"
    tcl.interp.eval("failsvc web arbiter none")
    assert cmds.policy.services["web"].arbiter == ""
    tcl.interp.eval("failarbiter etcd 127.0.0.1:2379")  # host:port means http; defaults
    a = cmds.policy.arbiter
    assert a is not None and (a.endpoints, a.prefix, a.ttl) == (("127.0.0.1:2379",), "/failover/", 10.0)


def test_a_05_script_has_no_arbiter(tcl: TclHost, cmds: Commands) -> None:
    tcl.interp.eval("failsvc web masters www2; failsvc web start {return UP}")
    assert cmds.policy.arbiter is None and cmds.policy.services["web"].arbiter == ""
    assert tcl.interp.eval("failarbiter") == ""
    assert tcl.interp.eval("dict get [failsvc web] arbiter") == "none"


@pytest.mark.parametrize(("script", "code", "message"), [
    ("failarbiter zookeeper zk1:2181", "FAILOVER BADVALUE zookeeper", 'unknown arbiter "zookeeper": must be etcd'),
    ("failarbiter etcd", "FAILOVER USAGE", "failarbiter etcd: no endpoint given"),
    ("failarbiter etcd ftp://e1", "FAILOVER BADVALUE ftp://e1", "arbiter etcd: not an endpoint: 'ftp://e1'"),
    ("failarbiter etcd http://e1:99999", "FAILOVER BADVALUE http://e1:99999", "arbiter etcd: bad port"),
    ("failarbiter etcd e1 -ttl 1", "FAILOVER BADVALUE 1", 'failarbiter -ttl: expected 2 to 3600 seconds, not "1"'),
    ("failarbiter etcd e1 -ttl soon", "FAILOVER BADVALUE soon", "expected 2 to 3600 seconds"),
    ("failarbiter etcd e1 -ttl", "FAILOVER USAGE", "failarbiter: -ttl needs a value"),
    ("failarbiter etcd e1 -lease 3", "FAILOVER BADOPTION -lease", 'failarbiter: unknown option "-lease": must be'),
    ("failarbiter etcd e1 -ttl 3 e2", "FAILOVER USAGE", 'failarbiter: endpoint "e2" after the options'),
    ("failarbiter etcd e1 -user u", "FAILOVER USAGE", "-user and -password go together"),
    ("failarbiter etcd https://e1 -cacert /nonexistent/ca.pem", "FAILOVER BADVALUE /nonexistent/ca.pem",
     'failarbiter -cacert: no such file "/nonexistent/ca.pem"'),
    ("failarbiter etcd e1 -prefix {}", "FAILOVER BADVALUE {}", "failarbiter -prefix"),
    ("failsvc web arbiter zookeeper", "FAILOVER USAGE", 'should be "failsvc web arbiter etcd|none"'),
    ("failsvc web arbiter", "FAILOVER USAGE", "arbiter etcd|none"),
    ("fo::token web", "FAILOVER NOTREADY", "fo::token: not available while the policy is loading"),
])
def test_arbiter_errors(tcl: TclHost, cmds: Commands, script: str, code: str, message: str) -> None:
    msg, errorcode = tcl_error(tcl, script)
    assert message in msg
    assert errorcode == code
    assert cmds.policy.arbiter is None and "web" not in cmds.policy.services


def test_tls_options_need_https(tcl: TclHost, tmp_path: Path) -> None:
    Commands(tcl, Policy("www1"))
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    msg, code = tcl_error(tcl, f"failarbiter etcd http://e1:2379 -cert {cert}")
    assert "need https:// endpoints" in msg and code == "FAILOVER USAGE"
    msg, _ = tcl_error(tcl, f"failarbiter etcd https://e1:2379 -key {cert}")
    assert "-key without -cert" in msg


def test_the_token_is_in_the_environment_of_the_start_only(tcl: TclHost) -> None:
    assert "FO_FENCING_TOKEN" not in os.environ
    out = run_procedure(tcl, "web", "start", "if {$env(FO_FENCING_TOKEN) == 17 && [exec sh -c {echo $FO_FENCING_TOKEN}]"
                                             " == 17} {return UP} {return FAIL}", 5, {"FO_FENCING_TOKEN": "17"})
    assert out.state is State.UP, out
    assert "FO_FENCING_TOKEN" not in os.environ and tcl.interp.eval("info exists env(FO_FENCING_TOKEN)") == "0"
