# 02-symmetric-two-services.tcl -- two hosts, two services, each host the master of one.
#
#   alpha is the master of "web" and the backup of "mail";
#   beta  is the master of "mail" and the backup of "web".
#
# One file for both hosts.  The start/stop procs take the service name as their first
# argument ("failsvc web start {startsvc web}" evaluates that script).  Tcl 8.4 only.

if {[info exists env(FO_NODE)]} { set me $env(FO_NODE) } else { set me [info hostname] }

# service -> {master backup init-script}
array set svcs {
    web  {alpha beta /etc/init.d/apache2}
    mail {beta alpha /etc/init.d/postfix}
}

proc initscript {service} {
    global svcs
    return [lindex $svcs($service) 2]
}

proc startsvc {service args} {
    if {[catch {exec [initscript $service] start} msg]} {
        fo::log error "$service: start failed: $msg"
        return FAIL
    }
    return UP
}

proc stopsvc {service args} {
    if {[catch {exec [initscript $service] stop} msg]} {
        fo::log error "$service: stop failed: $msg"
        return FAIL
    }
    return RECOVER
}

# A FAILed service comes back once it stops cleanly and hc (hc -m, samples/Hcfile.example)
# does not find it broken any more: hc keeps setting it FAIL while its check fails, and a
# reclaim that said RECOVER at once would make it bounce between the hosts (fo::hcok:
# healthy without hc or without a check of that name).
proc reclaimsvc {service args} {
    if {[stopsvc $service] ne "RECOVER"} { return FAIL }
    if {![fo::hcok $service]} { return FAIL }
    return RECOVER
}

foreach service [array names svcs] {
    set master [lindex $svcs($service) 0]
    set backup [lindex $svcs($service) 1]
    failsvc $service interval 1
    failsvc $service masters [list $master]
    failsvc $service slaves [list $backup]
    failsvc $service start [list startsvc $service]
    failsvc $service stop [list stopsvc $service]
    failsvc $service reclaim [list reclaimsvc $service]
}
