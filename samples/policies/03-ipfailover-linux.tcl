# 03-ipfailover-linux.tcl -- a virtual IP address that moves between two Linux hosts.
#
# The 0.5 installer asked for the address, interface, netmask and broadcast and wrote a
# script like this one.  Without a gratuitous ARP, clients keep the old MAC address for
# up to a minute, so the start proc announces the address.  Tcl 8.4 only.
#
# Site settings (override with FO_VIP, FO_DEV in the environment of failsh):

if {[info exists env(FO_NODE)]} { set me $env(FO_NODE) } else { set me [info hostname] }
set vip 192.0.2.100/24
set dev eth0
if {[info exists env(FO_VIP)]} { set vip $env(FO_VIP) }
if {[info exists env(FO_DEV)]} { set dev $env(FO_DEV) }

proc address {} {
    global vip
    return [lindex [split $vip /] 0]
}

# 1 if the address is configured on the interface
proc hasvip {} {
    global dev
    if {[catch {exec ip -o -4 addr show dev $dev} out]} { return 0 }
    foreach line [split $out "\n"] {
        if {[regexp {inet ([0-9.]+)/} $line -> a] && $a eq [address]} { return 1 }
    }
    return 0
}

proc vipup {args} {
    global vip dev
    if {![hasvip] && [catch {exec ip addr add $vip dev $dev} msg]} {
        fo::log error "cannot add $vip to $dev: $msg"
        return FAIL
    }
    # gratuitous ARP: neighbours learn the new MAC at once (0.5 ran arping here; failover's
    # library sends it itself, in the background, see fo::garp in docs/tcl-extension.md)
    fo::garp $vip $dev
    return UP
}

proc vipdown {args} {
    global vip dev
    if {[hasvip] && [catch {exec ip addr del $vip dev $dev} msg]} {
        fo::log error "cannot remove $vip from $dev: $msg"
        return FAIL
    }
    return RECOVER
}

failsvc vip interval 1
failsvc vip masters {www1}
failsvc vip slaves {www2}
failsvc vip start vipup
failsvc vip stop vipdown
failsvc vip reclaim vipdown
# new in this failsh (not 0.5): notice an address removed behind failsh's back
failsvc vip check hasvip
