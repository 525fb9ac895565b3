"""What every failover command shares: exit codes, common options, error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from failover import __version__, daemon, keys, ports, protocol
from failover.client import ClientError, RequestFailed, UnknownHost, Unreachable

EXIT_OK = 0
EXIT_REFUSED = 1      # faild answered with an error (unknown service, denied, bad state)
EXIT_USAGE = 2        # bad command line (argparse uses 2 too)
EXIT_UNREACHABLE = 3  # no reply within the timeout
EXIT_UNKNOWN_HOST = 4
EXIT_CONFIG = 5       # a configuration or state file cannot be used
EXIT_STALE = 6        # failstat: a service UP on a host whose faild reports no live failsh
EXIT_NO_HOLDER = 7    # failctl status: a service without a live holder
EXIT_SPLIT = 8        # failctl status: a service with more than one live holder

EXIT_CODES_HELP = """exit codes:
  0  success
  1  faild refused the request (unknown service, access denied, bad state)
  2  usage error
  3  faild did not answer within the timeout
  4  unknown host name
  5  unusable configuration or state file
  6  (failstat) a service is UP on a host without a live failsh (stale)"""


def safe_output() -> None:
    """stdout and stderr write what they cannot encode as escapes instead of raising: an
    argument that is not valid UTF-8 (a file or host name) comes back in messages and
    tables as lone surrogates, which a strict UTF-8 stream refuses with a traceback."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.errors == "strict":
                stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # not a TextIOWrapper, or closed
            pass


def parser(prog: str, description: str, epilog: str = "",
           extra_codes: dict[int, str] | None = None) -> argparse.ArgumentParser:
    """An argparse parser with --help only (0.5 programs use -h for host or HTML) and -V.
    Every program makes one first: its output is made safe here (see safe_output).
    ``extra_codes``: exit codes of this program only, added to EXIT_CODES_HELP."""
    safe_output()
    codes = EXIT_CODES_HELP + "".join(f"\n  {code}  {text}" for code, text in sorted((extra_codes or {}).items()))
    p = argparse.ArgumentParser(prog=prog, description=description, add_help=False,
                                epilog=(epilog + "\n\n" + codes).strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-V", "--version", action="version", version=f"%(prog)s (failover) {__version__}")
    return p


def bounded(name: str, convert: type, low: float, high: float, shown: str,
            low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: ``convert(text)`` within [low, high] (or (low, high] with
    ``low_open``); errors name the option's ``name`` and the ``shown`` range."""
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name} {text!r}") from None
        if not (low < value if low_open else low <= value) or not value <= high:
            raise argparse.ArgumentTypeError(f"{name} {text if convert is float else value} is not in {shown}")
        return value
    parse.__name__ = name.replace(" ", "_")  # argparse names the type in its messages
    return parse


port_number = bounded("port", int, 1, 65535, "1..65535")
_timeout = bounded("timeout", float, 0, 3600, "(0, 3600] seconds", low_open=True)
_retries = bounded("retry count", int, 0, 100, "0..100")


def add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--community", default=protocol.DEFAULT_COMMUNITY,
                   help="community string presented to faild (default: %(default)s)")
    p.add_argument("-p", "--port", type=port_number, default=ports.FAILD,
                   help="faild port when HOST has none (default: %(default)s)")
    p.add_argument("-t", "--timeout", type=_timeout, default=1.0,
                   help="seconds to wait for each try (default: %(default)s)")
    p.add_argument("-r", "--retries", type=_retries, default=1,
                   help="extra tries after a timeout (default: %(default)s)")


def add_curve_options(p: argparse.ArgumentParser) -> None:
    """failc, failstat, faildebug: talk to a faild that requires CURVE (docs/security.md)."""
    p.add_argument("--curve-secret", type=Path, metavar="FILE",
                   help="talk CURVE with this key pair (a .key_secret file, see failkey); "
                        "needs --server-key or --server-keys")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--server-key", type=Path, metavar="FILE",
                   help="public key (NAME.key) of the faild asked, with --curve-secret")
    g.add_argument("--server-keys", type=Path, metavar="DIR",
                   help="directory holding HOST.key for each faild HOST asked, with --curve-secret")


def check_curve_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of the CURVE options (exit 2)."""
    has_server = args.server_key is not None or args.server_keys is not None
    if args.curve_secret is not None and not has_server:
        p.error("--curve-secret needs --server-key FILE or --server-keys DIR")
    if args.curve_secret is None and has_server:
        p.error("--server-key/--server-keys need --curve-secret FILE (this client's key pair)")


def debug_levels(program: str, facilities: Iterable[str]) -> bool:
    """-d FACILITY: each one's log level to debug; an unknown facility is one line on stderr
    (then False: exit EXIT_USAGE)."""
    try:
        for facility in facilities:
            daemon.set_level(facility, "debug")
    except ValueError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return False
    return True


def load_identity(args: argparse.Namespace) -> keys.Identity | None:
    """This client's key pair (--curve-secret), or None; KeyFileError if unreadable."""
    return keys.load_identity(args.curve_secret) if args.curve_secret is not None else None


def curve_for(args: argparse.Namespace, identity: keys.Identity | None, host: str) -> keys.Curve | None:
    """CURVE settings for asking ``host`` (HOST[:PORT] or an endpoint); KeyFileError if the
    server's key file cannot be read."""
    if identity is None:
        return None
    path = args.server_key or args.server_keys / f"{host_name(host)}.key"
    return keys.Curve(identity, keys.load_public(path))


def host_name(host: str) -> str:
    """The host part of HOST, HOST:PORT, [V6]:PORT or tcp://HOST:PORT (names HOST.key)."""
    if "://" in host:
        host = host.split("://", 1)[1]
    name, sep, rest = host.rpartition(":")
    if sep and rest.isascii() and rest.isdigit() and (not name.count(":") or name.startswith("[")):
        host = name
    return host.strip("[]")


def exit_code(exc: ClientError) -> int:
    if isinstance(exc, UnknownHost):
        return EXIT_UNKNOWN_HOST
    if isinstance(exc, Unreachable):
        return EXIT_UNREACHABLE
    if isinstance(exc, RequestFailed):
        return EXIT_REFUSED
    return EXIT_REFUSED


def run(prog: str, body: Callable[[], int]) -> int:
    """Run a client body; turn client errors into one clear line and an exit code."""
    try:
        return body()
    except ClientError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except keys.KeyFileError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
