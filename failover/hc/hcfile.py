"""The Hcfile: hc's configuration, structured like a Makefile (grammar in docs/hc.md).

::

    # comment
    .defaults:
        interval 5
        faild localhost:1847 community secret

    db:
        check tcp 127.0.0.1:5432
    web: db
        check http http://127.0.0.1:8080/health status 200 body ok
        fall 3
        rise 2
        action /usr/local/sbin/web-alarm

A target line ``NAME: DEPENDENCY ...`` starts a node; the indented ``KEY VALUE ...``
lines below it describe it.  Every mistake is reported as one :class:`HcfileError`
whose message starts with ``file:line:``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import attrs

from failover.client import ClientError, endpoint_for
from failover.hc.kinds import Check, parse_check

DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_FALL = 3
DEFAULT_RISE = 2
DEFAULT_ACTION_TIMEOUT = 30.0
DEFAULT_FAILD_TIMEOUT = 1.0

_NODE = re.compile(r"^[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,63}$")
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m)?$")
SPECIAL_TARGETS = (".defaults",)
MAX_NODES = 256  # each node is a service of the monitor; a 'list' reply must fit one message


class HcfileError(Exception):
    """An unusable Hcfile; ``str()`` is one line starting with ``file:line:``."""


@attrs.frozen
class FaildTarget:
    """Where a node's state goes: a faild and the service name in it."""

    host: str
    service: str
    community: str = "public"
    timeout: float = DEFAULT_FAILD_TIMEOUT

    @property
    def endpoint(self) -> str:
        return endpoint_for(self.host, resolve=False)


@attrs.frozen
class Node:
    name: str
    line: int
    deps: tuple[str, ...] = ()
    check: Check | None = None
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    fall: int = DEFAULT_FALL
    rise: int = DEFAULT_RISE
    faild: tuple[FaildTarget, ...] = ()
    actions: tuple[str, ...] = ()
    action_timeout: float = DEFAULT_ACTION_TIMEOUT


@attrs.frozen
class Config:
    path: str
    nodes: dict[str, Node] = attrs.field(hash=False)
    order: tuple[str, ...]  # dependencies before the nodes that depend on them


# --- small value parsers: raise ValueError with a message for the user -------------

def parse_duration(text: str) -> float:
    """``5``, ``2.5``, ``500ms``, ``2s``, ``1m`` -> seconds (> 0)."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"invalid duration {text!r} (use seconds, or a number with ms, s or m)")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if value <= 0:
        raise ValueError(f"duration {text!r} must be greater than zero")
    return value


def parse_count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 1000:
        raise ValueError(f"invalid count {text!r} (an integer 1..1000)")
    return int(text)


def parse_faild(words: list[str], node: str | None) -> FaildTarget:
    usage = "faild HOST[:PORT] [service NAME] [community STRING] [timeout SECONDS]"
    if not words:
        raise ValueError(f"'faild' needs a host (usage: {usage})")
    host, opts = words[0], {}
    rest = words[1:]
    while rest:
        key = rest.pop(0)
        if key not in ("service", "community", "timeout"):
            raise ValueError(f"unknown faild option {key!r} (usage: {usage})")
        if not rest:
            raise ValueError(f"faild option {key!r} needs a value (usage: {usage})")
        opts[key] = rest.pop(0)
    try:
        endpoint_for(host, resolve=False)
    except (ValueError, ClientError) as exc:
        raise ValueError(f"invalid faild address {host!r}: {exc}") from None
    service = opts.get("service", node or "")
    if node is None and "service" in opts:
        raise ValueError("'faild ... service' cannot be a default: each node names its own service")
    from failover.protocol import valid_name
    if service and not valid_name(service):
        raise ValueError(f"invalid service name {service!r}")
    return FaildTarget(host=host, service=service, community=opts.get("community", "public"),
                       timeout=parse_duration(opts.get("timeout", str(DEFAULT_FAILD_TIMEOUT))))


# --- the file --------------------------------------------------------------------

def strip_comment(text: str) -> str:
    """Cut a ``#`` comment that starts a word outside quotes (``a#b`` and ``"#"`` stay)."""
    quote = None
    prev = " "
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and prev in " \t":
            return text[:i].rstrip()
        prev = ch
    return text


def _logical_lines(text: str):
    """Yield (first line number, indented?, text) with comments and continuations handled."""
    pending: list[str] = []
    start = 0
    indented = False
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            start, indented = number, raw[:1] in (" ", "\t")
        line = strip_comment(raw.strip() if pending else raw.rstrip())
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line.strip())
        yield start, indented, " ".join(p for p in pending if p)
        pending = []
    if pending:
        yield start, indented, " ".join(p for p in pending if p)


_NODE_KEYS = ("check", "interval", "timeout", "fall", "rise", "faild", "action", "action-timeout")
_REPEATABLE = ("faild", "action")


def parse(text: str, origin: str = "Hcfile") -> Config:
    """Parse Hcfile text; raise HcfileError('origin:line: message') on the first mistake."""
    blocks: list[tuple[str, int, list[str], list[tuple[int, str]]]] = []
    seen: dict[str, int] = {}
    for number, indented, line in _logical_lines(text):
        where = f"{origin}:{number}"
        if indented:
            if not blocks:
                raise HcfileError(f"{where}: indented line before any target (start with 'NAME:')")
            blocks[-1][3].append((number, line))
            continue
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep:
            raise HcfileError(f"{where}: expected a target line 'NAME: [DEPENDENCY ...]' "
                              f"(attribute lines must be indented), got {line!r}")
        if name.startswith(".") and name not in SPECIAL_TARGETS:
            raise HcfileError(f"{where}: unknown special target {name!r} (known: {', '.join(SPECIAL_TARGETS)})")
        if not name.startswith(".") and not _NODE.match(name):
            raise HcfileError(f"{where}: invalid node name {name!r} (1-64 letters, digits, '_.@+-')")
        if name in seen:
            raise HcfileError(f"{where}: target {name!r} already defined on line {seen[name]}")
        seen[name] = number
        try:
            deps = shlex.split(rest)
        except ValueError as exc:
            raise HcfileError(f"{where}: {exc}") from None
        if name.startswith(".") and deps:
            raise HcfileError(f"{where}: {name} takes no dependencies")
        blocks.append((name, number, deps, []))

    defaults: dict[str, Any] = {}
    for name, _number, _deps, lines in blocks:
        if name == ".defaults":
            defaults = _attributes(name, lines, origin, None)
    nodes: dict[str, Node] = {}
    for name, number, deps, lines in blocks:
        if name.startswith("."):
            continue
        attrs_ = {**defaults, **_attributes(name, lines, origin, name)}
        if "faild" in attrs_:
            attrs_["faild"] = tuple(f if f.service else attrs.evolve(f, service=name) for f in attrs_["faild"])
        if "check" not in attrs_ and not deps:
            raise HcfileError(f"{origin}:{number}: node {name!r} has neither a 'check' line nor dependencies")
        for dep in deps:
            if dep not in seen or dep.startswith("."):
                raise HcfileError(f"{origin}:{number}: node {name!r} depends on unknown node {dep!r}")
            if dep == name:
                raise HcfileError(f"{origin}:{number}: node {name!r} depends on itself")
        nodes[name] = Node(name=name, line=number, deps=tuple(dict.fromkeys(deps)), **attrs_)
    if len(nodes) > MAX_NODES:
        raise HcfileError(f"{origin}:{nodes[list(nodes)[MAX_NODES]].line}: more than {MAX_NODES} nodes")
    if not nodes:
        raise HcfileError(f"{origin}:1: no nodes to check (write 'NAME:' and an indented 'check ...' line)")
    return Config(path=origin, nodes=nodes, order=_order(nodes, origin))


def _attributes(node: str, lines: list[tuple[int, str]], origin: str, name: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lines_of: dict[str, int] = {}
    for number, line in lines:
        where = f"{origin}:{number}"
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise HcfileError(f"{where}: {exc}") from None
        if not words:  # a lone continuation backslash leaves nothing
            continue
        key, args = words[0].lower(), words[1:]
        if key not in _NODE_KEYS:
            raise HcfileError(f"{where}: unknown keyword {words[0]!r} in {node!r} (known: {', '.join(_NODE_KEYS)})")
        if key not in _REPEATABLE and key in lines_of:
            raise HcfileError(f"{where}: {key!r} given twice for {node!r} (first on line {lines_of[key]})")
        if name is None and key == "check":
            raise HcfileError(f"{where}: 'check' cannot be a default; give it to each node")
        lines_of[key] = number
        try:
            if key == "check":
                out["check"] = parse_check(args, line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else "")
            elif key in ("interval", "timeout", "action-timeout"):
                if len(args) != 1:
                    raise ValueError(f"{key!r} takes one duration, e.g. '{key} 5' or '{key} 500ms'")
                out[key.replace("-", "_")] = parse_duration(args[0])
            elif key in ("fall", "rise"):
                if len(args) != 1:
                    raise ValueError(f"{key!r} takes one count, e.g. '{key} 3'")
                out[key] = parse_count(args[0])
            elif key == "faild":
                out["faild"] = (*out.get("faild", ()), parse_faild(args, name))
            elif key == "action":
                command = line.split(None, 1)[1].strip() if len(line.split(None, 1)) > 1 else ""
                if not command:
                    raise ValueError("'action' needs a command, e.g. 'action /usr/local/sbin/alarm'")
                out["actions"] = (*out.get("actions", ()), command)
        except ValueError as exc:
            raise HcfileError(f"{where}: {exc}") from None
    return out


def _order(nodes: dict[str, Node], origin: str) -> tuple[str, ...]:
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            first = nodes[cycle[0]]
            raise HcfileError(f"{origin}:{first.line}: dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for dep in nodes[name].deps:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in nodes:
        visit(name, [])
    return tuple(order)


def load(path: Path | str) -> Config:
    """Read and parse an Hcfile; unreadable files are HcfileError too."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HcfileError(f"{path}: cannot read: {reason}") from None
    return parse(text, str(path))
