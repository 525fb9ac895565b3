#!/bin/sh
# setup.sh: generate the IP-failover policy for two Linux hosts (the checklist of the 0.5
# "getting started" page: the two host names, which is master, the address, the interface).
#
#   setup.sh -m MASTER -s SLAVE -a ADDRESS/PREFIX [-d DEVICE] [-i INTERVAL] [-o OUTPUT]
#
# Writes OUTPUT (default /etc/failover/ipfailover.tcl) and prints how to start faild and failsh.
# The address must not be configured at boot on either host: failsh owns it.
set -e
dev=eth0 interval=1 out=/etc/failover/ipfailover.tcl master= slave= vip=
while getopts m:s:a:d:i:o:h opt; do
    case $opt in
        m) master=$OPTARG ;; s) slave=$OPTARG ;; a) vip=$OPTARG ;;
        d) dev=$OPTARG ;; i) interval=$OPTARG ;; o) out=$OPTARG ;;
        *) sed -n '2,9p' "$0"; exit 2 ;;
    esac
done
if [ -z "$master" ] || [ -z "$slave" ] || [ -z "$vip" ]; then
    echo "setup.sh: -m MASTER, -s SLAVE and -a ADDRESS/PREFIX are required" >&2; exit 2
fi
case $vip in */*) ;; *) echo "setup.sh: the address needs a prefix length, e.g. $vip/24" >&2; exit 2 ;; esac
for tool in ip arping; do
    command -v $tool >/dev/null 2>&1 || echo "setup.sh: warning: '$tool' not found (Debian: iproute2, iputils-arping)" >&2
done
template="$(dirname "$0")/failover.tcl.in"
mkdir -p "$(dirname "$out")"
sed -e "s|@MASTER@|$master|g" -e "s|@SLAVE@|$slave|g" -e "s|@VIP@|$vip|g" \
    -e "s|@DEV@|$dev|g" -e "s|@INTERVAL@|$interval|g" "$template" > "$out"
echo "wrote $out"
echo "on both hosts run:  faild  &&  failsh -f $out"
echo "check with:         failstat $master $slave"
