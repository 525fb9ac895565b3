"""What every failover command shares: exit codes, common options, error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from failover import __version__, protocol
from failover.client import ClientError, RequestFailed, UnknownHost, Unreachable

EXIT_OK = 0
EXIT_REFUSED = 1      # faild answered with an error (unknown service, denied, bad state)
EXIT_USAGE = 2        # bad command line (argparse uses 2 too)
EXIT_UNREACHABLE = 3  # no reply within the timeout
EXIT_UNKNOWN_HOST = 4
EXIT_CONFIG = 5       # a configuration or state file cannot be used

EXIT_CODES_HELP = """exit codes:
  0  success
  1  faild refused the request (unknown service, access denied, bad state)
  2  usage error
  3  faild did not answer within the timeout
  4  unknown host name
  5  unusable configuration or state file"""


def parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    """An argparse parser with --help only (0.5 programs use -h for host or HTML) and -V."""
    p = argparse.ArgumentParser(prog=prog, description=description, add_help=False,
                                epilog=(epilog + "\n\n" + EXIT_CODES_HELP).strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-V", "--version", action="version", version=f"%(prog)s (failover) {__version__}")
    return p


def port_number(text: str) -> int:
    """argparse type: a TCP port 1..65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is not in 1..65535")
    return port


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"timeout {text} is not in (0, 3600] seconds")
    return value


def _retries(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid retry count {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"retry count {value} is not in 0..100")
    return value


def add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--community", default=protocol.DEFAULT_COMMUNITY,
                   help="community string presented to faild (default: %(default)s)")
    p.add_argument("-p", "--port", type=port_number, default=protocol.DEFAULT_PORT,
                   help="faild port when HOST has none (default: %(default)s)")
    p.add_argument("-t", "--timeout", type=_timeout, default=1.0,
                   help="seconds to wait for each try (default: %(default)s)")
    p.add_argument("-r", "--retries", type=_retries, default=1,
                   help="extra tries after a timeout (default: %(default)s)")


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
    except KeyboardInterrupt:
        return 130
