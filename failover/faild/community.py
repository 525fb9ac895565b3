"""Community strings: SNMP-like RO/RW access per service (faild ``-c`` file).

File format (one rule per line, ``#`` starts a comment)::

    SERVICE|*  COMMUNITY  RO|RW

A rule naming the service beats a ``*`` rule for the same community; RW implies RO.
Without a file faild uses the single rule ``* public RW`` (and warns), so a fresh
install works like the 0.5 default ``public``.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from failover.files import read_file
from failover.protocol import DEFAULT_COMMUNITY, valid_name

NONE, RO, RW = 0, 1, 2
_LEVELS = {"RO": RO, "RW": RW}


class CommunityFileError(Exception):
    pass


@attrs.frozen
class Rules:
    # (service or "*", community) -> RO | RW
    table: dict[tuple[str, str], int]

    def access(self, service: str | None, community: str) -> int:
        """Access level of ``community`` for ``service`` (None: host-wide operations)."""
        if service is not None and (service, community) in self.table:
            return self.table[(service, community)]
        return self.table.get(("*", community), NONE)

    def knows(self, community: str) -> bool:
        """True if any rule names ``community``: other strings are refused outright."""
        return any(c == community for _service, c in self.table)

    def may_read(self, service: str | None, community: str) -> bool:
        return self.access(service, community) >= RO

    def may_write(self, service: str | None, community: str) -> bool:
        return self.access(service, community) >= RW


DEFAULT_RULES = Rules({("*", DEFAULT_COMMUNITY): RW})


def parse(text: str, origin: str = "<community>") -> Rules:
    table: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3:  # the line is not quoted: it may hold a community, a secret
            raise CommunityFileError(f"{origin}:{number}: expected 'SERVICE COMMUNITY RO|RW', "
                                     f"got {len(fields)} words")
        service, community, level = fields
        if service != "*" and not valid_name(service):
            raise CommunityFileError(f"{origin}:{number}: invalid service name {service!r}")
        if level.upper() not in _LEVELS:
            raise CommunityFileError(f"{origin}:{number}: access must be RO or RW, not {level!r}")
        key = (service, community)
        table[key] = max(table.get(key, NONE), _LEVELS[level.upper()])
    return Rules(table)


MAX_FILE = 1024 * 1024


def load(path: Path) -> Rules:
    """The rules of a community file (faild -c; re-read on SIGHUP, so it must never block:
    read bounded, a FIFO or a device refused)."""
    try:
        text = read_file(path, MAX_FILE, "community file").decode()
    except OSError as exc:
        raise CommunityFileError(f"cannot read community file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CommunityFileError(f"cannot read community file {path}: not a UTF-8 text file") from None
    except ValueError as exc:
        raise CommunityFileError(str(exc)) from None
    return parse(text, str(path))
