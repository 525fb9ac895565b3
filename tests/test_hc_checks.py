"""hc's check kinds against real local servers: working, failing, hanging, flapping."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time

import pytest
from support import free_port

from failover.hc import checks, kinds
from failover.lab.fakes import FakeDNS, FakeHTTP, FakeLDAP, FakeSMTP, FakeTCP

pytestmark = pytest.mark.fast


def spec(line: str) -> kinds.Check:
    return kinds.parse_check(line.split(), line)


def timed(fn, *args, **kw):
    start = time.monotonic()
    result = fn(*args, **kw)
    return result, time.monotonic() - start


# --- tcp ----------------------------------------------------------------------------

def test_tcp_connect_and_refused():
    with FakeTCP() as srv:
        ok, detail = kinds.run_check(spec(f"tcp 127.0.0.1:{srv.port}"), 1.0)
        assert ok, detail
    ok, detail = kinds.run_check(spec(f"tcp 127.0.0.1:{free_port()}"), 1.0)
    assert (ok, detail) == (False, "connection refused")


def test_tcp_expect_banner_and_hang():
    with FakeTCP() as srv:
        assert kinds.run_check(spec(f"tcp 127.0.0.1:{srv.port} expect SSH-2.0"), 1.0)[0]
        ok, detail = kinds.run_check(spec(f"tcp 127.0.0.1:{srv.port} expect NOPE"), 1.0)
        assert not ok and detail.startswith("connection closed before 'NOPE' arrived (got 'SSH-2.0-fake')")
        srv.mode = "hang"
        (ok, detail), took = timed(kinds.run_check, spec(f"tcp 127.0.0.1:{srv.port} expect SSH"), 0.3)
        assert (ok, detail) == (False, "timed out after 0.3 s")
        assert took < 0.8


def test_tcp_listener_that_never_accepts_still_connects():
    # the kernel completes the handshake for a full backlog: a plain connect check passes
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert kinds.run_check(spec(f"tcp 127.0.0.1:{listener.getsockname()[1]}"), 0.5)[0]


# --- http ---------------------------------------------------------------------------

def test_http_ok_status_and_body():
    with FakeHTTP() as web:
        ok, detail = kinds.run_check(spec(f"http {web.url} status 200 body ok"), 1.0)
        assert ok and detail.startswith("HTTP 200 OK in"), detail
        ok, detail = kinds.run_check(spec(f"http {web.url} body nothere"), 1.0)
        assert not ok and "body lacks 'nothere'" in detail and "all ok" in detail


def test_http_error_status():
    with FakeHTTP("error") as web:
        ok, detail = kinds.run_check(spec(f"http {web.url}health"), 1.0)
        assert (ok, detail) == (False, "HTTP 500 Internal Server Error (expected 200-399)")
        assert kinds.run_check(spec(f"http {web.url} status 5xx"), 1.0)[0]


def test_http_hang_times_out_on_time():
    with FakeHTTP("hang") as web:
        (ok, detail), took = timed(kinds.run_check, spec(f"http {web.url}"), 0.3)
    assert (ok, detail) == (False, "timed out after 0.3 s")
    assert 0.25 < took < 0.8


def test_http_trickling_body_is_cut_at_the_deadline():
    # each byte comes within the socket timeout, so only the watchdog can stop it
    with FakeHTTP("trickle") as web:
        (ok, detail), took = timed(kinds.run_check, spec(f"http {web.url} body xxx"), 0.5)
    assert (ok, detail) == (False, "timed out after 0.5 s")
    assert took < 1.0


def test_http_refused():
    assert kinds.run_check(spec(f"http http://127.0.0.1:{free_port()}/"), 1.0) == (False, "connection refused")


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True,
                   timeout=30)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


def test_https_self_signed_needs_insecure(tls_context):
    with FakeHTTP(tls=tls_context) as web:
        ok, detail = kinds.run_check(spec(f"http {web.url}"), 2.0)
        assert not ok and detail.startswith("TLS error"), detail
        ok, detail = kinds.run_check(spec(f"http {web.url} insecure body ok"), 2.0)
        assert ok, detail


# --- dns ----------------------------------------------------------------------------

def test_dns_answer_nxdomain_servfail():
    with FakeDNS({"ok.test": "127.0.0.7"}) as dns:
        server = f"127.0.0.1:{dns.port}"
        ok, detail = kinds.run_check(spec(f"dns {server} ok.test"), 1.0)
        assert ok and detail.startswith("ok.test A: 127.0.0.7 in"), detail
        assert kinds.run_check(spec(f"dns {server} ok.test expect 127.0.0.7"), 1.0)[0]
        assert kinds.run_check(spec(f"dns {server} ok.test expect 127.0.0.8"), 1.0) == \
            (False, "ok.test A: 127.0.0.7 (expected 127.0.0.8)")
        assert kinds.run_check(spec(f"dns {server} missing.test"), 1.0) == (False, "missing.test A: NXDOMAIN")
        assert kinds.run_check(spec(f"dns {server} ok.test type MX"), 1.0) == \
            (False, "ok.test MX: NOERROR but no answer")
        dns.mode = "error"
        assert kinds.run_check(spec(f"dns {server} ok.test"), 1.0) == (False, "ok.test A: SERVFAIL")


def test_dns_hang_retransmits_once_and_times_out():
    with FakeDNS(mode="hang") as dns:
        (ok, detail), took = timed(kinds.run_check, spec(f"dns 127.0.0.1:{dns.port} ok.test"), 0.4)
        assert (ok, detail) == (False, "timed out after 0.4 s")
        assert took < 0.9
        assert dns.requests == 2  # the query and one retransmission


def test_dns_nothing_listening():
    port = free_port()
    (ok, detail), took = timed(kinds.run_check, spec(f"dns 127.0.0.1:{port} ok.test"), 0.5)
    assert (ok, detail) == (False, f"nothing listens on 127.0.0.1:{port}/udp (ICMP port unreachable)")
    assert took < 0.4


def test_dns_query_and_parse_roundtrip():
    query = checks.dns_query(0x1234, "www.example.org", 1)
    assert query[:2] == b"\x12\x34" and b"\x03www\x07example\x03org\x00" in query
    reply = FakeDNS({"www.example.org": "10.1.2.3"}).answer(query)
    assert checks.dns_parse(reply, 1) == (0x1234, 0, 1, ["10.1.2.3"])
    with pytest.raises(ValueError):
        checks.dns_parse(reply[:20], 1)
    with pytest.raises(ValueError):
        checks.dns_parse(query, 1)  # a query, not a reply


# --- smtp ---------------------------------------------------------------------------

def test_smtp_banner_ehlo_error_hang():
    with FakeSMTP() as smtp:
        target = f"127.0.0.1:{smtp.port}"
        ok, detail = kinds.run_check(spec(f"smtp {target} helo hc.test"), 1.0)
        assert ok and detail.startswith("220 banner and 250 EHLO in"), detail
        ok, detail = kinds.run_check(spec(f"smtp {target} starttls"), 1.0)
        assert (ok, detail) == (False, "server does not offer STARTTLS")
        smtp.mode = "error"
        ok, detail = kinds.run_check(spec(f"smtp {target}"), 1.0)
        assert not ok and "554" in detail, detail
        smtp.mode = "hang"
        (ok, detail), took = timed(kinds.run_check, spec(f"smtp {target}"), 0.3)
        assert (ok, detail) == (False, "timed out after 0.3 s") and took < 0.8


# --- ldap ---------------------------------------------------------------------------

def test_ldap_bind_request_encoding():
    assert checks.ldap_bind_request(1) == bytes.fromhex("300c020101600702010304008000")
    long_dn = "cn=" + "x" * 200
    message = checks.ldap_bind_request(1, long_dn, "pw")
    assert message[1] == 0x81 and message[2] == len(message) - 3  # long-form length


def test_ldap_anonymous_credentials_error_hang():
    with FakeLDAP() as ldap:
        target = f"127.0.0.1:{ldap.port}"
        ok, detail = kinds.run_check(spec(f"ldap {target}"), 1.0)
        assert ok and detail.startswith("anonymous bind succeeded"), detail
        assert kinds.run_check(spec(f"ldap {target} dn cn=admin,dc=test password secret"), 1.0)[0]
        ok, detail = kinds.run_check(spec(f"ldap {target} dn cn=admin,dc=test password wrong"), 1.0)
        assert (ok, detail) == (False, "bind as 'cn=admin,dc=test': resultCode 49 (invalidCredentials): "
                                       "fake says no")
        ldap.mode = "error"
        assert kinds.run_check(spec(f"ldap {target}"), 1.0)[1] == \
            "anonymous bind: resultCode 52 (unavailable): fake says no"
        ldap.mode = "hang"
        (ok, detail), took = timed(kinds.run_check, spec(f"ldap {target}"), 0.3)
        assert (ok, detail) == (False, "timed out after 0.3 s") and took < 0.8


def test_ldap_not_ldap():
    with FakeSMTP() as smtp:  # speaks first, and not BER
        ok, detail = kinds.run_check(spec(f"ldap 127.0.0.1:{smtp.port}"), 1.0)
    assert not ok and detail.startswith("bad LDAP reply"), detail


# --- command ------------------------------------------------------------------------

def test_command_exit_status_and_output():
    assert kinds.run_check(spec("command echo hello"), 2.0)[1].endswith(": hello")
    assert kinds.run_check(spec("command echo broken; exit 3"), 2.0) == (False, "exit status 3: broken")


def test_command_timeout_kills_the_process_group(tmp_path):
    marker = tmp_path / "survivor"
    cmd = f"(sleep 1; touch {marker}) & sleep 5"
    (ok, detail), took = timed(kinds.run_check, spec(f"command {cmd}"), 0.3)
    assert (ok, detail) == (False, "killed after 0.3 s")
    assert took < 1.0
    time.sleep(1.2)
    assert not marker.exists(), "the background child outlived the check"


def test_details_are_bounded():
    ok, detail = kinds.run_check(spec(f"command echo {'y' * 500}; false"), 2.0)
    assert not ok and len(detail) == kinds.DETAIL_LIMIT and detail.endswith("...")


def test_unresolvable_host():
    ok, detail = kinds.run_check(spec("tcp no-such-host.invalid:80"), 2.0)
    assert not ok and detail.startswith("cannot resolve host"), detail
