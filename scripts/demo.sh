#!/bin/sh
# The README's main job: a two-host failover cluster on loopback, crash the master, watch
# the slave take over and the master take the service back.  Creates its own venv.
set -e
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e .
exec .venv/bin/python -m failover.lab.demo "$@"
