# 01-web-master-slave.tcl -- failover 0.5 style: Apache on www1, www2 takes over.
#
# The same file runs on both hosts: failsh leaves the local host out of its own
# masters/slaves lists, so www1 sees "no masters, slave www2" and www2 sees
# "master www1, no slaves".  Procs are declared with args (0.5 scripts did not know
# whether failsh passes arguments) and return UP, RECOVER or FAIL.  Tcl 8.4 only.

# This host's name; FO_NODE overrides it (a site convention, handy in test beds).
if {[info exists env(FO_NODE)]} {
    set me $env(FO_NODE)
} else {
    set me [info hostname]
}

set initscript /etc/init.d/apache2
fo::log info "web policy loaded on $me"

# Run the init script with $action: $state when it worked, else FAIL (and a log line).
proc apache {action state} {
    global initscript
    if {[catch {exec $initscript $action} msg]} {
        fo::log error "apache did not $action: $msg"
        return FAIL
    }
    return $state
}

proc startweb {args} { return [apache start UP] }
proc stopweb {args} { return [apache stop RECOVER] }

# A FAILed web server is given another chance once it stops cleanly and hc, the health
# checker (hc -m with samples/Hcfile.example), finds it healthy again: hc sets web FAIL
# here while its check fails, so a reclaim that said RECOVER at once would hand the
# service back to a broken server, again and again.  Without hc: healthy (fo::hcok).
proc reclaimweb {args} {
    if {[stopweb] ne "RECOVER"} { return FAIL }
    if {![fo::hcok web]} { return FAIL }
    return RECOVER
}

failsvc web interval 2
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start startweb
failsvc web stop stopweb
failsvc web reclaim reclaimweb
