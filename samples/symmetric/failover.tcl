# samples/symmetric: two hosts, two services, one policy file used on both hosts.
#
#   alpha is the master of "web" and the backup of "mail";
#   beta  is the master of "mail" and the backup of "web".
#
# Each service is a virtual IP address that moves with it.  Both lists name both hosts:
# failsh leaves the local host out of its own lists, so this file runs unchanged on both.
# Site settings can be overridden from the environment (FO_*), which the tests use.

proc setting {name default} {
    global env
    if {[info exists env($name)]} { return $env($name) }
    return $default
}

set alpha [setting FO_ALPHA alpha]
set beta  [setting FO_BETA beta]
set dev   [setting FO_DEV eth0]
array set vip [list web [setting FO_VIP_WEB 10.99.0.100/24] mail [setting FO_VIP_MAIL 10.99.0.101/24]]

# start/stop/reclaim procedures: failover 0.5 style, declared with args, returning a state
proc vipstart {service args} { global vip dev; return [fo::ipup $vip($service) $dev] }
proc vipstop  {service args} { global vip dev; return [fo::ipdown $vip($service) $dev] }
# A FAILed service is given back only once its address is gone here and hc (hc -m with a
# check of the service's name, samples/Hcfile.example) does not find it broken: hc sets it
# FAIL again while its check fails, and a reclaim that said RECOVER at once would make it
# bounce between the hosts.  Without hc, or without such a check: healthy (fo::hcok).
proc vipreclaim {service args} {
    if {[vipstop $service] ne "RECOVER"} { return FAIL }
    if {![fo::hcok $service]} { return FAIL }
    return RECOVER
}

foreach {service master backup} [list web $alpha $beta mail $beta $alpha] {
    failsvc $service interval [setting FO_INTERVAL 1]
    failsvc $service masters [list $master]
    failsvc $service slaves  [list $backup]
    failsvc $service start   [list vipstart $service]
    failsvc $service stop    [list vipstop $service]
    failsvc $service reclaim [list vipreclaim $service]
    failsvc $service announce [list fo::garp $vip($service) $dev]
}
