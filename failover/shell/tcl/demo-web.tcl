# Demo policy: a "web" service on a shared address (127.0.0.1:$env(FO_DEMO_PORT)) that only
# one host may hold at a time, like a virtual IP.  www1 is the master, www2 the slave.
# The same file runs on both hosts (the local node is left out of its own lists), in the
# failover 0.5 style: procs declared with args, returning UP, RECOVER or FAIL.

proc pidfile {} { global env; return [file join $env(FO_DEMO_DIR) web.$env(FO_NODE).pid] }

proc startweb {args} {
    global env
    set pid [exec $env(FO_PYTHON) -m failover.lab.vipserver --name $env(FO_NODE) \
                 --bind 127.0.0.1 --port $env(FO_DEMO_PORT) >/dev/null 2>@1 &]
    set f [open [pidfile] w]; puts $f $pid; close $f
    # UP only once the port answers: a start that cannot bind is a FAIL
    for {set i 0} {$i < 40} {incr i} {
        if {![catch {socket 127.0.0.1 $env(FO_DEMO_PORT)} s]} { close $s; return UP }
        after 50
    }
    stopweb
    return FAIL
}

proc stopweb {args} {
    if {[file exists [pidfile]]} {
        set f [open [pidfile]]; set pid [string trim [read $f]]; close $f
        catch {exec kill $pid}
        file delete [pidfile]
    }
    return RECOVER
}

proc reclaimweb {args} { stopweb; return RECOVER }

failsvc web interval 0.5
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start startweb
failsvc web stop stopweb
failsvc web reclaim reclaimweb
