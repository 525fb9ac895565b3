#!/bin/sh
# setup.sh: generate the IP-failover policy for two Linux hosts (the checklist of the 0.5
# "getting started" page: the two host names, which is master, the addresses, the interface).
#
#   setup.sh -m MASTER -s SLAVE -a ADDRESS/PREFIX [-a ADDRESS/PREFIX ...] [-d DEVICE] [-i INTERVAL] [-o OUTPUT]
#
# -a is an IPv4 or IPv6 address with its prefix length; give it once per address (say one
# of each); they move together.  Writes OUTPUT (default /etc/failover/ipfailover.tcl) and
# prints how to start faild and failsh.  The addresses must not be configured at boot on
# either host: failsh owns them.
set -e
dev=eth0 interval=1 out=/etc/failover/ipfailover.tcl master= slave= vips=
while getopts m:s:a:d:i:o:h opt; do
    case $opt in
        m) master=$OPTARG ;; s) slave=$OPTARG ;; a) vips="${vips:+$vips }$OPTARG" ;;
        d) dev=$OPTARG ;; i) interval=$OPTARG ;; o) out=$OPTARG ;;
        *) sed -n '2,10p' "$0"; exit 2 ;;
    esac
done
if [ -z "$master" ] || [ -z "$slave" ] || [ -z "$vips" ]; then
    echo "setup.sh: -m MASTER, -s SLAVE and -a ADDRESS/PREFIX are required" >&2; exit 2
fi
for vip in $vips; do
    case $vip in
        */*) ;;
        *:*) echo "setup.sh: the address needs a prefix length, e.g. $vip/64" >&2; exit 2 ;;
        *) echo "setup.sh: the address needs a prefix length, e.g. $vip/24" >&2; exit 2 ;;
    esac
    case $vip in
        *[!0-9A-Fa-f.:/]*) echo "setup.sh: not an IPv4 or IPv6 address/prefix: $vip" >&2; exit 2 ;;
    esac
done
command -v ip >/dev/null 2>&1 || echo "setup.sh: warning: 'ip' not found (Debian: iproute2)" >&2
template="$(dirname "$0")/failover.tcl.in"
mkdir -p "$(dirname "$out")"
sed -e "s|@MASTER@|$master|g" -e "s|@SLAVE@|$slave|g" -e "s|@VIPS@|$vips|g" \
    -e "s|@DEV@|$dev|g" -e "s|@INTERVAL@|$interval|g" "$template" > "$out"
echo "wrote $out"
echo "on both hosts run:  faild  &&  failsh -f $out"
echo "check with:         failstat $master $slave"
