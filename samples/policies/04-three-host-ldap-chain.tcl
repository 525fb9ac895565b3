# 04-three-host-ldap-chain.tcl -- three directory servers in a priority chain.
#
# ldap1 > ldap2 > ldap3 for "ldap", but ldap3 > ldap2 > ldap1 for "nis", so each
# service has its own order.  From each host's point of view the hosts before it in
# a chain are its masters and those after it its slaves.  Shows the failhost lines of
# 0.5: ldap3 sits behind a firewall and is reached on a fixed port ("firewall friendly
# mode"), and an old "protocol udp" line (accepted; the transport is always TCP now).
# Tcl 8.4 only.

if {[info exists env(FO_NODE)]} { set me $env(FO_NODE) } else { set me [info hostname] }

failhost ldap3 port 1847
failhost ldap3 protocol udp
failhost ldap1 protocol tcp

proc chain {service order} {
    global me
    set i [lsearch -exact $order $me]
    if {$i < 0} {
        # not in this chain: watch it from outside (every host is a master)
        set masters $order
        set slaves {}
    } else {
        set masters [lrange $order 0 [expr {$i - 1}]]
        set slaves [lrange $order [expr {$i + 1}] end]
    }
    failsvc $service interval 2
    failsvc $service masters $masters
    failsvc $service slaves $slaves
    failsvc $service start [list daemon $service start]
    failsvc $service stop [list daemon $service stop]
    failsvc $service reclaim [list daemon $service stop]
}

# daemon SERVICE start|stop ?args? -- the init script of each service
proc daemon {service action args} {
    set script(ldap) /etc/init.d/slapd
    set script(nis) /etc/init.d/ypserv
    if {[catch {exec $script($service) $action} msg]} {
        fo::log error "$service $action: $msg"
        return FAIL
    }
    if {$action eq "start"} { return UP }
    return RECOVER
}

chain ldap {ldap1 ldap2 ldap3}
chain nis {ldap3 ldap2 ldap1}
