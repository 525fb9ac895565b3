"""failkey: make the CURVE key pair that authenticates a failover host or client, or the
cluster's heartbeat key (failsh --heartbeat-key)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from failover import heartbeat, keys
from failover.cli import common
from failover.protocol import valid_name

EPILOG = """examples:
  failkey -d /etc/failover/keys www1      makes www1.key (public) and www1.key_secret
  failkey --show /etc/failover/keys/www1.key
  failkey --heartbeat-key /etc/failover/heartbeat.key   the cluster's heartbeat key, mode 0600

Copy NAME.key (never the .key_secret) into the allow-list directory of every faild
NAME must talk to (faild --curve-allow DIR), and into the server-keys directory of the
clients that talk to NAME's faild (failsh --curve-keys DIR, failc --server-key FILE).

The heartbeat key is one secret for the whole cluster: copy the file (mode 0600, owned by
the user failsh runs as) to every host and give it to failsh --heartbeat-key FILE."""


def build_parser() -> argparse.ArgumentParser:
    p = common.parser("failkey", "Generate or show a CURVE key pair for faild, failsh and clients, or make "
                      "a cluster's heartbeat key.", EPILOG)
    p.add_argument("-d", "--directory", type=Path, default=Path("."), help="where to write (default: .)")
    p.add_argument("--show", type=Path, metavar="FILE", help="print the public key of a key file and exit")
    p.add_argument("--heartbeat-key", type=Path, metavar="FILE",
                   help="write a new random heartbeat key for failsh --heartbeat-key to FILE (mode 0600; "
                        "an existing FILE is left alone) and exit")
    p.add_argument("name", nargs="?", help="name of the key pair, usually the host name")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        if args.show:
            print(keys.load_public(args.show).decode())
            return common.EXIT_OK
        if args.heartbeat_key:
            if args.name:
                p.error("--heartbeat-key FILE takes no NAME")
            heartbeat.write_key(args.heartbeat_key)
            print(f"heartbeat key: {args.heartbeat_key}  (copy it to every host of the cluster, mode 0600)")
            return common.EXIT_OK
        if not args.name:
            p.error("give a NAME for the new key pair, or --show FILE")
        if not valid_name(args.name):
            p.error(f"invalid name {args.name!r}: use 1-64 letters, digits and _.:@+- (a host name)")
        public, secret = keys.generate(args.directory, args.name)
    except keys.KeyFileError as exc:  # the CURVE and the heartbeat key: one class (files.py)
        print(f"failkey: {exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    except OSError as exc:  # -d names a file, or a directory we may not write
        where = args.heartbeat_key or f"the key pair in {args.directory}"
        print(f"failkey: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    print(f"public key: {public}  ({keys.load_public(public).decode()})")
    print(f"secret key: {secret}  (keep it on this host, mode 0600)")
    return common.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
