"""The Hcfile grammar: what parses, and the one-line file:line error for what does not."""

from __future__ import annotations

import textwrap

import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.hc import hcfile, kinds
from failover.hc.hcfile import HcfileError, parse

pytestmark = pytest.mark.fast

FULL = """\
# a full example
.defaults:
    interval 5
    fall 4
    faild localhost:1847 community secret

db:
    check tcp 127.0.0.1:5432
    interval 2            # seconds
web: db
    check http http://127.0.0.1:8080/health status 200,204 body "it works"  # a comment
    timeout 500ms
    rise 3
    faild www1:1900 service www community rw timeout 2
    action /usr/local/sbin/alarm --to ops
    action logger -t hc "web changed"
dns:
    check dns 127.0.0.1:5353 www.example.org type A expect 10.0.0.1
mail:
    check smtp mail.example.org helo hc.example.org starttls insecure
dir:
    check ldap [::1]:389 dn "cn=admin,dc=example" password s3cret
script:
    check command ldapsearch -x -H ldap://localhost -b "" -s base >/dev/null \\
        && echo ok
site: web dns
"""


def test_full_example():
    cfg = parse(FULL, "Hcfile")
    assert list(cfg.nodes) == ["db", "web", "dns", "mail", "dir", "script", "site"]
    assert cfg.order.index("db") < cfg.order.index("web") < cfg.order.index("site")
    db, web = cfg.nodes["db"], cfg.nodes["web"]
    assert (db.interval, db.timeout, db.fall, db.rise) == (2.0, hcfile.DEFAULT_TIMEOUT, 4, hcfile.DEFAULT_RISE)
    assert db.check == kinds.Tcp(target="127.0.0.1:5432", text="tcp 127.0.0.1:5432", host="127.0.0.1", port=5432)
    assert db.faild == (hcfile.FaildTarget("localhost:1847", "db", "secret"),)
    assert db.line == 7 and web.line == 10
    assert web.deps == ("db",)
    assert web.check.status == ((200, 200), (204, 204))
    assert web.check.body == "it works"
    assert (web.interval, web.timeout, web.fall, web.rise) == (5.0, 0.5, 4, 3)
    assert web.faild == (hcfile.FaildTarget("www1:1900", "www", "rw", 2.0),)
    assert web.faild[0].endpoint == "tcp://www1:1900"
    assert web.actions == ("/usr/local/sbin/alarm --to ops", 'logger -t hc "web changed"')
    dns = cfg.nodes["dns"].check
    assert (dns.server, dns.port, dns.name, dns.type, dns.expect) == \
        ("127.0.0.1", 5353, "www.example.org", "A", "10.0.0.1")
    mail = cfg.nodes["mail"].check
    assert (mail.host, mail.port, mail.helo, mail.starttls, mail.insecure) == \
        ("mail.example.org", 25, "hc.example.org", True, True)
    ldap = cfg.nodes["dir"].check
    assert (ldap.host, ldap.port, ldap.dn) == ("::1", 389, "cn=admin,dc=example")
    assert "s3cret" not in ldap.text and "s3cret" not in repr(ldap)  # passwords stay out of what the monitor shows
    assert cfg.nodes["script"].check.command == \
        'ldapsearch -x -H ldap://localhost -b "" -s base >/dev/null && echo ok'
    site = cfg.nodes["site"]
    assert site.check is None and site.deps == ("web", "dns")


def test_defaults_apply_and_nodes_override():
    cfg = parse("""\
.defaults:
    action /bin/true
    faild localhost
a:
    check tcp h:1
b:
    check tcp h:2
    faild otherhost service bee
    action /bin/false
""")
    assert cfg.nodes["a"].actions == ("/bin/true",)
    assert cfg.nodes["a"].faild == (hcfile.FaildTarget("localhost", "a"),)
    assert cfg.nodes["b"].actions == ("/bin/false",)
    assert cfg.nodes["b"].faild == (hcfile.FaildTarget("otherhost", "bee"),)


@pytest.mark.parametrize("text, value", [("5", 5.0), ("2.5", 2.5), ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0)])
def test_durations(text, value):
    assert hcfile.parse_duration(text) == value


@pytest.mark.parametrize("text, ranges", [
    ("200", ((200, 200),)), ("2xx", ((200, 299),)), ("2xx,3xx", ((200, 399),)),
    ("301,200-204", ((200, 204), (301, 301))), ("200,201", ((200, 201),)),
])
def test_status(text, ranges):
    assert kinds.parse_status(text) == ranges


def test_comments_and_quotes():
    cfg = parse('a:\n    check http http://h/#frag body "a # b"   # real comment\n')
    assert cfg.nodes["a"].check.url == "http://h/#frag"
    assert cfg.nodes["a"].check.body == "a # b"
    assert hcfile.strip_comment(r'x "q\" # still quoted" # gone') == r'x "q\" # still quoted"'


def test_tabs_indent_and_blank_lines():
    cfg = parse("a:\n\tcheck tcp h:1\n\n\n\tinterval 1\n")
    assert cfg.nodes["a"].interval == 1.0


def test_https_alias_and_default_status():
    check = parse("a:\n check https https://h/\n").nodes["a"].check
    assert check.kind == "http" and check.status == ((200, 399),)


@pytest.mark.parametrize("text, line, message", [
    ("    check tcp h:1\n", 1, "indented line before any target"),
    ("a:\n check tcp h:1\nb\n", 3, "expected a target line 'NAME: [DEPENDENCY ...]'"),
    ("a:\n check tcp h:1\na:\n check tcp h:2\n", 3, "target 'a' already defined on line 1"),
    ("a b:\n check tcp h:1\n", 1, "invalid node name 'a b'"),
    (".phony:\n", 1, "unknown special target '.phony'"),
    ("a:\n", 1, "node 'a' has neither a 'check' line nor dependencies"),
    ("a: b\n", 1, "node 'a' depends on unknown node 'b'"),
    ("a: a\n", 1, "node 'a' depends on itself"),
    ("a: b\nb: c\nc: a\n", 1, "dependency cycle: a -> b -> c -> a"),
    ("x:\n check tcp h:1\na: b\nb: a\n", 3, "dependency cycle: a -> b -> a"),
    ("a:\n chek tcp h:1\n", 2, "unknown keyword 'chek' in 'a'"),
    ("a:\n check\n", 2, "'check' needs a kind"),
    ("a:\n check htp h:1\n", 2, "unknown check kind 'htp' (known: tcp, http, dns, smtp, ldap, command)"),
    ("a:\n check tcp h\n", 2, "address 'h' needs a port"),
    ("a:\n check tcp h:99999\n", 2, "invalid port in 'h:99999'"),
    ("a:\n check tcp h:1 bogus\n", 2, "unknown option 'bogus' for a tcp check"),
    ("a:\n check tcp h:1 expect\n", 2, "option 'expect' of a tcp check needs a value"),
    ("a:\n check http ftp://h/\n", 2, "invalid URL 'ftp://h/'"),
    ("a:\n check http http://h/ status 2x\n", 2, "invalid status '2x'"),
    ("a:\n check dns 127.0.0.1\n", 2, "a dns check needs 2 arguments"),
    ("a:\n check dns 127.0.0.1 h type BOGUS\n", 2, "unsupported DNS type 'BOGUS'"),
    ("a:\n check dns 127.0.0.1 h type MX expect 1.2.3.4\n", 2, "'expect 1.2.3.4' does not fit a type MX query"),
    ("a:\n check dns 127.0.0.1 h expect nope\n", 2, "'expect' of a dns check must be an IP address"),
    ("a:\n check ldap h dn cn=x\n", 2, "needs both 'dn' and 'password'"),
    ("a:\n check command\n", 2, "a command check needs a shell command"),
    ("a:\n check tcp h:1\n check tcp h:2\n", 3, "'check' given twice for 'a' (first on line 2)"),
    ("a:\n check tcp h:1\n interval\n", 3, "'interval' takes one duration"),
    ("a:\n check tcp h:1\n interval 0\n", 3, "duration '0' must be greater than zero"),
    ("a:\n check tcp h:1\n timeout 5x\n", 3, "invalid duration '5x'"),
    ("a:\n check tcp h:1\n fall 0\n", 3, "invalid count '0'"),
    ("a:\n check tcp h:1\n faild\n", 3, "'faild' needs a host"),
    ("a:\n check tcp h:1\n faild h colour red\n", 3, "unknown faild option 'colour'"),
    ("a:\n check tcp h:1\n faild h service bad/name\n", 3, "invalid service name 'bad/name'"),
    ("a:\n check tcp h:1\n action\n", 3, "'action' needs a command"),
    ('a:\n check http http://h/ body "open\n', 2, "No closing quotation"),
    (".defaults:\n check tcp h:1\n", 2, "'check' cannot be a default"),
    (".defaults:\n faild h service x\n", 2, "'faild ... service' cannot be a default"),
    ("a:\n check tcp h:1 \\\n   expect\n", 2, "option 'expect' of a tcp check needs a value"),
    ("# nothing\n", 1, "no nodes to check"),
])
def test_errors_name_file_and_line(text, line, message):
    with pytest.raises(HcfileError) as info:
        parse(text, "/etc/Hcfile")
    text_ = str(info.value)
    assert text_.startswith(f"/etc/Hcfile:{line}: "), text_
    assert message in text_, text_
    assert "\n" not in text_


def test_too_many_nodes():
    text = "".join(f"n{i}:\n check tcp h:1\n" for i in range(hcfile.MAX_NODES + 1))
    with pytest.raises(HcfileError, match=rf":{2 * hcfile.MAX_NODES + 1}: more than {hcfile.MAX_NODES} nodes"):
        parse(text)


def test_load_reports_unreadable_files(tmp_path):
    with pytest.raises(HcfileError, match=r"missing: cannot read: No such file or directory"):
        hcfile.load(tmp_path / "missing")
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(HcfileError, match=r"bin: cannot read"):
        hcfile.load(tmp_path / "bin")


def test_sample_file_parses():
    from pathlib import Path
    sample = Path(__file__).parent.parent / "samples" / "Hcfile.example"
    cfg = hcfile.load(sample)
    assert cfg.nodes


def test_docs_example_parses():
    from pathlib import Path
    doc = (Path(__file__).parent.parent / "docs" / "hc.md").read_text()
    block = doc.split("```make\n", 1)[1].split("```", 1)[0]
    assert parse(textwrap.dedent(block), "docs/hc.md").nodes


# --- hostile files: one line and exit 5 from `hc -n`, never a traceback ----------------------

HOSTILE = {
    "faild port out of range": ("web:\n    check tcp 127.0.0.1:80\n    faild h:99999\n",
                                "hc: {f}:3: invalid faild address 'h:99999': invalid port 99999 for host 'h'"),
    "superscript digit as a count": ("web:\n    check tcp 127.0.0.1:80\n    fall \u00b2\n",
                                     "hc: {f}:3: invalid count '\u00b2' (an integer 1..1000)"),
    "superscript digit as a port": ("web:\n    check tcp 127.0.0.1:\u00b2\n",
                                    "hc: {f}:2: invalid port in '127.0.0.1:\u00b2'"),
}


@pytest.mark.parametrize("text,message", HOSTILE.values(), ids=HOSTILE.keys())
def test_hc_n_reports_a_hostile_file_in_one_line(tmp_path, text, message):
    f = tmp_path / "Hcfile"
    f.write_text(text)
    r = run_cli("hc", "-n", "-f", str(f))
    assert r.returncode == 5, r.stderr
    assert r.stderr.strip() == message.format(f=f) and "Traceback" not in r.stderr


def test_hc_n_ignores_an_indented_lone_backslash(tmp_path):
    f = tmp_path / "Hcfile"
    f.write_text("web:\n    check tcp 127.0.0.1:80\n    \\\n")
    r = run_cli("hc", "-n", "-f", str(f))
    assert r.returncode == 0 and r.stdout.strip() == f"{f}: 1 node (web)", r.stderr
    assert parse("web:\n  \\\n  check tcp h:1\n").nodes["web"].check.port == 1


def _check_parse(text: str) -> None:
    try:
        parse(text, "fuzz")
    except HcfileError as exc:
        assert str(exc).startswith("fuzz:") and "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_hcfile_errors(text):
    _check_parse(text)


_WORDS = st.one_of(st.sampled_from([*hcfile._NODE_KEYS, *kinds.KINDS, "service", "community", "timeout",
                                    "status", "body", "type", "expect", "\\", '"', "'", "#", ":", "h:1",
                                    "[::1]:2", "127.0.0.1:99999", "http://h:0/", "3", "0", "\u00b2", "500ms",
                                    "1e400", "nan", "-1", ".defaults:", "web:", "db"]),
                   st.text(max_size=8))
_LINES = st.tuples(st.sampled_from(["", "    ", "\t"]), st.lists(_WORDS, max_size=8)).map(
    lambda t: t[0] + " ".join(t[1]))


@settings(max_examples=500, deadline=None)
@given(st.lists(_LINES, max_size=12))
def test_hcfile_like_text_raises_only_hcfile_errors(lines):
    _check_parse("\n".join(lines) + "\n")
