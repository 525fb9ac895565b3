#!/bin/sh
# The README's test command: installs what the tests use, a fresh venv, then ruff and pytest.
# Tests needing root (network namespaces), keepalived or chromium skip with a reason elsewhere.
set -e
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    need=""
    python3 -c "import tkinter; tkinter.Tcl()" 2>/dev/null || need="$need tcl8.6 libtk8.6"
    for pair in tmux:tmux ip:iproute2 arping:iputils-arping keepalived:keepalived chromium:chromium tc:iproute2 \
            nft:nftables; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
    done
    if [ -n "$need" ]; then
        echo "installing:$need"
        (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need) >/tmp/failover-apt.log 2>&1 \
            || echo "apt-get failed (see /tmp/failover-apt.log); tests that need those tools will skip"
    fi
fi
python3 -m venv .venv-test
.venv-test/bin/pip install -q --disable-pip-version-check -e '.[test]'
.venv-test/bin/ruff check failover tests bench
exec .venv-test/bin/python -m pytest -q "$@"
