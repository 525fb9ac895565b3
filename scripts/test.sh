#!/bin/sh
# The README's test command: installs what the tests use, a fresh venv, then ruff, mypy
# (its configuration is pyproject.toml's [tool.mypy]) and pytest.
# As root it installs the missing Debian packages (only those: nothing else is upgraded);
# tests needing root (network namespaces, debootstrap), keepalived or chromium skip with a
# reason elsewhere.  The arguments go to pytest: sh scripts/test.sh -m fast is the fast
# lane (in-process tests, under a minute), -m 'not slow' leaves out the package builds.
set -e
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # tmux..nftables: the namespace, load-balancer, arbiter and browser tests; dpkg-dev..python3-wheel: building the
    # Debian package (tests/test_package.py); python3-*: Debian's own libraries, for the pip
    # install on Debian's python3; debootstrap, systemd (systemd-analyze), man-db: the installs
    wanted="tmux iproute2 keepalived haproxy etcd-server etcd-client chromium nftables
            dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel
            python3-venv python3-zmq python3-attr python3-prometheus-client python3-tk
            debootstrap systemd man-db"
    python3 -c "import tkinter; tkinter.Tcl()" 2>/dev/null || wanted="$wanted tcl8.6 libtk8.6"
    need=""
    for pkg in $wanted; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
    done
    if [ -n "$need" ]; then
        echo "installing:$need"
        apt="apt-get -q -o DPkg::Lock::Timeout=600"
        ($apt update && DEBIAN_FRONTEND=noninteractive $apt install -y --no-upgrade $need) \
            >/tmp/failover-apt.log 2>&1 \
            || echo "apt-get failed (see /tmp/failover-apt.log); tests that need those tools will skip"
    fi
fi
python3 -m venv .venv-test
.venv-test/bin/pip install -q --disable-pip-version-check -e '.[test]'
.venv-test/bin/ruff check failover tests bench
.venv-test/bin/mypy
exec .venv-test/bin/python -m pytest -q "$@"
