"""The check kinds: one attrs class per kind, registered by name in :data:`KINDS`.

Each class reads its ``check KIND ...`` line (:meth:`Check.parse`, called by the Hcfile
parser through :func:`parse_check`) and runs itself (:meth:`Check.run`, called by the
runner through :func:`run_check`) with the probes of failover/hc/checks.py.  A new kind
is one class here, named in :data:`KINDS`: the grammar, the usage line in its errors, the
runner and hc's help all take it from the registry.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import re
import smtplib
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attrs

from failover.hc import checks
from failover.hc.checks import DNS_TYPES, CheckTimeout, Result

log = logging.getLogger("failover.hc.checks")
DETAIL_LIMIT = 200  # characters of a result's detail (the monitor shows it, a transition's reason holds it)


@attrs.frozen(kw_only=True)
class Check:
    """What one node checks.  ``target`` is what it checks in a few words (the monitor's
    column), ``text`` the check line as written (a password masked)."""

    kind: ClassVar[str]
    usage: ClassVar[str]                  # the words after 'check', for error messages
    arguments: ClassVar[int] = 1          # positional words after the kind
    valued: ClassVar[tuple[str, ...]] = ()  # options with a value ('expect TEXT')
    flags: ClassVar[tuple[str, ...]] = ()   # options without one ('insecure')
    aliases: ClassVar[tuple[str, ...]] = ()

    target: str
    text: str

    @classmethod
    def from_words(cls, words: list[str], raw_rest: str) -> Check:
        """The check of the words after ``check`` (the kind first); ``raw_rest`` is the same
        text unsplit.  ValueError with a message for the user."""
        n = cls.arguments
        if len(words) < 1 + n:
            raise ValueError(f"a {cls.kind} check needs {n} argument{'s' if n > 1 else ''} (usage: check {cls.usage})")
        return cls.parse(words[1:1 + n], cls._options(words[1 + n:]), " ".join(words))

    @classmethod
    def _options(cls, words: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        i = 0
        while i < len(words):
            word = words[i]
            if word in cls.flags:
                out[word] = True
                i += 1
            elif word in cls.valued:
                if i + 1 >= len(words):
                    raise ValueError(f"option {word!r} of a {cls.kind} check needs a value (usage: check {cls.usage})")
                out[word] = words[i + 1]
                i += 2
            else:
                known = ", ".join(cls.valued + cls.flags) or "none"
                raise ValueError(f"unknown option {word!r} for a {cls.kind} check "
                                 f"(known: {known}; usage: check {cls.usage})")
        return out

    @classmethod
    def parse(cls, args: list[str], opts: dict[str, Any], text: str) -> Check:
        """The check of its positional words and options; ValueError if they are wrong."""
        raise NotImplementedError

    def run(self, timeout: float) -> Result:
        """Check once within ``timeout``: (ok, detail).  May raise (see :func:`run_check`)."""
        raise NotImplementedError


# --- value parsers: raise ValueError with a message for the user ---------------------

def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, or ``host`` when a default port exists."""
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"invalid address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid address {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ValueError(f"invalid address {text!r}: no host")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"address {text!r} needs a port (HOST:PORT)")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port in {text!r}")
    return host, int(port_text)


def parse_status(text: str) -> tuple[tuple[int, int], ...]:
    """``200``, ``200,204``, ``2xx``, ``200-299`` or combinations -> inclusive ranges."""
    ranges = []
    for part in text.split(","):
        if re.fullmatch(r"[1-5]xx", part):
            base = int(part[0]) * 100
            ranges.append((base, base + 99))
        elif re.fullmatch(r"\d{3}-\d{3}", part):
            lo, hi = (int(x) for x in part.split("-"))
            if lo > hi:
                raise ValueError(f"invalid status range {part!r}")
            ranges.append((lo, hi))
        elif re.fullmatch(r"\d{3}", part):
            ranges.append((int(part), int(part)))
        else:
            raise ValueError(f"invalid status {part!r} (use e.g. 200, 200,204, 2xx or 200-399)")
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


# --- the kinds -------------------------------------------------------------------

@attrs.frozen(kw_only=True)
class Tcp(Check):
    kind = "tcp"
    usage = "tcp HOST:PORT [expect TEXT]"
    valued = ("expect",)

    host: str
    port: int
    expect: str | None = None

    @classmethod
    def parse(cls, args: list[str], opts: dict[str, Any], text: str) -> Tcp:
        host, port = parse_hostport(args[0])
        return cls(target=args[0], text=text, host=host, port=port, expect=opts.get("expect"))

    def run(self, timeout: float) -> Result:
        return checks.check_tcp(self.host, self.port, timeout, self.expect)


@attrs.frozen(kw_only=True)
class Http(Check):
    kind = "http"
    usage = "http URL [status CODES] [body TEXT] [insecure]"
    valued = ("status", "body")
    flags = ("insecure",)
    aliases = ("https",)

    url: str
    status: tuple[tuple[int, int], ...]
    body: str | None = None
    insecure: bool = False

    @classmethod
    def parse(cls, args: list[str], opts: dict[str, Any], text: str) -> Http:
        url = urlsplit(args[0])
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"invalid URL {args[0]!r} (http://HOST[:PORT]/PATH or https://...)")
        try:
            url.port  # noqa: B018 - validates the port
        except ValueError:
            raise ValueError(f"invalid port in URL {args[0]!r}") from None
        return cls(target=args[0], text=text, url=args[0], status=parse_status(opts.get("status", "2xx,3xx")),
                   body=opts.get("body"), insecure=bool(opts.get("insecure")))

    def run(self, timeout: float) -> Result:
        return checks.check_http(self.url, timeout, self.status, self.body, self.insecure)


@attrs.frozen(kw_only=True)
class Dns(Check):
    kind = "dns"
    usage = "dns SERVER[:PORT] NAME [type A|AAAA|MX|...] [expect ADDRESS]"
    arguments = 2
    valued = ("type", "expect")

    server: str
    port: int
    name: str
    type: str = "A"
    expect: str | None = None

    @classmethod
    def parse(cls, args: list[str], opts: dict[str, Any], text: str) -> Dns:
        server, port = parse_hostport(args[0], 53)
        name = args[1]
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,253}", name):
            raise ValueError(f"invalid DNS name {name!r}")
        qtype = opts.get("type", "A").upper()
        if qtype not in DNS_TYPES:
            raise ValueError(f"unsupported DNS type {qtype!r} (known: {', '.join(DNS_TYPES)})")
        expect = None
        if "expect" in opts:
            try:
                addr = ipaddress.ip_address(opts["expect"])
            except ValueError:
                raise ValueError(f"'expect' of a dns check must be an IP address, not {opts['expect']!r}") from None
            if qtype not in ("A", "AAAA") or (addr.version == 4) != (qtype == "A"):
                raise ValueError(f"'expect {addr}' does not fit a type {qtype} query")
            expect = str(addr)
        return cls(target=f"{name}@{args[0]}", text=text, server=server, port=port, name=name, type=qtype,
                   expect=expect)

    def run(self, timeout: float) -> Result:
        return checks.check_dns(self.server, self.port, self.name, timeout, self.type, self.expect)


@attrs.frozen(kw_only=True)
class Smtp(Check):
    kind = "smtp"
    usage = "smtp HOST[:PORT] [helo NAME] [starttls] [insecure]"
    valued = ("helo",)
    flags = ("starttls", "insecure")

    host: str
    port: int
    helo: str = ""
    starttls: bool = False
    insecure: bool = False

    @classmethod
    def parse(cls, args: list[str], opts: dict[str, Any], text: str) -> Smtp:
        host, port = parse_hostport(args[0], 25)
        return cls(target=args[0], text=text, host=host, port=port, helo=opts.get("helo", ""),
                   starttls=bool(opts.get("starttls")), insecure=bool(opts.get("insecure")))

    def run(self, timeout: float) -> Result:
        return checks.check_smtp(self.host, self.port, timeout, self.helo, self.starttls, self.insecure)


@attrs.frozen(kw_only=True)
class Ldap(Check):
    kind = "ldap"
    usage = "ldap HOST[:PORT] [dn DN password SECRET]"
    valued = ("dn", "password")

    host: str
    port: int
    dn: str = ""
    password: str = attrs.field(default="", repr=False)

    @classmethod
    def parse(cls, args: list[str], opts: dict[str, Any], text: str) -> Ldap:
        host, port = parse_hostport(args[0], 389)
        if ("dn" in opts) != ("password" in opts):
            raise ValueError("an ldap check needs both 'dn' and 'password', or neither (anonymous bind)")
        password = opts.get("password", "")
        if password:
            text = text.replace(password, "****")  # the monitor shows the text
        return cls(target=args[0], text=text, host=host, port=port, dn=opts.get("dn", ""), password=password)

    def run(self, timeout: float) -> Result:
        return checks.check_ldap(self.host, self.port, timeout, self.dn, self.password)


@attrs.frozen(kw_only=True)
class Command(Check):
    kind = "command"
    usage = "command SHELL-COMMAND..."

    command: str

    @classmethod
    def from_words(cls, words: list[str], raw_rest: str) -> Command:
        """The rest of the line as written, not its words: quotes and spacing are the shell's."""
        rest = raw_rest.split(None, 1)
        command = rest[1].strip() if len(rest) > 1 else ""
        if not command:
            raise ValueError(f"a command check needs a shell command (usage: check {cls.usage})")
        return cls(target=command, text=f"command {command}", command=command)

    def run(self, timeout: float) -> Result:
        return checks.run_command(self.command, timeout)


# --- the registry ----------------------------------------------------------------

KINDS: dict[str, type[Check]] = {c.kind: c for c in (Tcp, Http, Dns, Smtp, Ldap, Command)}  # in this order in errors
_ALIASES = {alias: c.kind for c in KINDS.values() for alias in c.aliases}  # another name -> name


def names() -> str:
    """The kinds for hc's help: 'tcp, http (and https), ...'."""
    return ", ".join(k + "".join(f" (and {a})" for a in cls.aliases) for k, cls in KINDS.items())


def parse_check(words: list[str], raw_rest: str) -> Check:
    """Parse the words after ``check``; ``raw_rest`` is the unsplit text (for command)."""
    if not words:
        raise ValueError(f"'check' needs a kind: one of {', '.join(KINDS)}")
    kind = _ALIASES.get(words[0].lower(), words[0].lower())
    if kind not in KINDS:
        raise ValueError(f"unknown check kind {words[0]!r} (known: {', '.join(KINDS)})")
    return KINDS[kind].from_words(words, raw_rest)


CheckFn = Callable[[Check, float], Result]  # run_check, or a test's stand-in


def run_check(check: Check, timeout: float) -> Result:
    """Run one check; never raises.  ``detail`` is at most DETAIL_LIMIT characters."""
    try:
        ok, detail = check.run(timeout)
    except Exception as exc:
        ok, detail = False, checks.describe(exc, timeout)
        expected = (OSError, CheckTimeout, http.client.HTTPException, smtplib.SMTPException)
        log.debug("%s check %s failed", check.kind, check.target, exc_info=not isinstance(exc, expected))
    if len(detail) > DETAIL_LIMIT:
        detail = detail[:DETAIL_LIMIT - 3] + "..."
    return ok, detail
