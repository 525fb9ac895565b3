# failover.tcl -- Tcl helpers shipped with failover and loaded by failsh before the policy.
# Everything lives in namespace ::fo; procs return UP, RECOVER or FAIL where they stand
# in for a start/stop procedure, and 1/0 where they are checks.  Tcl 8.4-style code.

namespace eval ::fo {}

# fo::sh CMD ?ARG ...?  -- run a command; 1 if it exited 0, 0 otherwise (output is logged).
proc ::fo::sh {args} {
    if {[catch {eval exec -ignorestderr -- $args 2>@1} out]} {
        fo::log warning "command failed: $args: $out"
        return 0
    }
    return 1
}

# fo::ipup ADDRESS/PREFIX DEVICE  -- add a virtual IP and announce it with gratuitous ARP.
proc ::fo::ipup {cidr dev} {
    set ip [lindex [split $cidr /] 0]
    if {![fo::hasip $ip $dev] && ![fo::sh ip addr add $cidr dev $dev]} { return FAIL }
    fo::garp $cidr $dev
    return UP
}

# fo::garp ADDRESS/PREFIX DEVICE  -- announce that this host holds the address (gratuitous
# ARP).  Without it, clients keep the old MAC for up to 45 s (tech notes §5).  Use it as
# a service's announce script too: failsvc ip announce {fo::garp 10.0.0.100/24 eth0}
# Two ARPs one second apart, sent in the background: the policy thread does not wait the
# second for them (a SIGTERM, other services' runs would).  fo::ipdown stops them: an ARP
# sent after this host let the address go would send the clients back to it.
proc ::fo::garp {cidr dev} {
    set ip [lindex [split $cidr /] 0]
    fo::garpstop $ip
    set ::fo::garping($ip) [fo::bg arping -q -U -c 2 -w 1 -I $dev $ip]
    return
}

proc ::fo::garpstop {ip} {
    if {[info exists ::fo::garping($ip)]} {
        fo::bgkill $::fo::garping($ip)
        unset ::fo::garping($ip)
    }
}

# fo::bg CMD ?ARG ...?  -- start a command in the background and return at once; when it
# ends, a failure (exit status, output) is logged as fo::sh would.  Needs the event loop,
# which failsh runs.  Returns a handle for fo::bgkill, or "" if it could not be started.
proc ::fo::bg {args} {
    if {[catch {open |[concat $args [list 2>@1]] r} chan]} {
        fo::log warning "command failed: $args: $chan"
        return ""
    }
    fconfigure $chan -blocking 0
    set ::fo::bgout($chan) ""
    fileevent $chan readable [list ::fo::BgRead $chan $args]
    return $chan
}

# fo::bgkill HANDLE  -- end a command fo::bg started, if it still runs (quietly).
proc ::fo::bgkill {chan} {
    if {$chan eq "" || ![info exists ::fo::bgout($chan)]} { return }  ;# ended: its pid may be reused
    set ::fo::bgkilled($chan) 1
    foreach p [pid $chan] { catch {exec kill $p} }
}

proc ::fo::BgRead {chan cmd} {
    append ::fo::bgout($chan) [read $chan]
    if {![eof $chan]} { return }
    fconfigure $chan -blocking 1
    set out [string trim $::fo::bgout($chan)]
    unset ::fo::bgout($chan)
    set killed [info exists ::fo::bgkilled($chan)]
    unset -nocomplain ::fo::bgkilled($chan)
    if {[catch {close $chan} err] && !$killed} {
        fo::log warning "command failed: $cmd: [expr {$out ne {} ? $out : $err}]"
    }
}

# fo::ipdown ADDRESS/PREFIX DEVICE  -- remove a virtual IP; RECOVER when it is gone.
proc ::fo::ipdown {cidr dev} {
    set ip [lindex [split $cidr /] 0]
    fo::garpstop $ip
    if {[fo::hasip $ip $dev] && ![fo::sh ip addr del $cidr dev $dev]} { return FAIL }
    return RECOVER
}

# fo::hasip IP DEVICE  -- 1 if DEVICE carries IP.
proc ::fo::hasip {ip dev} {
    if {[catch {exec ip -o -4 addr show dev $dev} out]} { return 0 }
    foreach line [split $out \n] {
        if {[regexp {inet ([0-9.]+)/} $line -> a] && $a eq $ip} { return 1 }
    }
    return 0
}

# fo::systemctl start|stop UNIT  -- start/stop a systemd unit as a failover procedure.
proc ::fo::systemctl {action unit} {
    if {[fo::sh systemctl $action $unit]} {
        if {$action eq "start"} { return UP } else { return RECOVER }
    }
    return FAIL
}

# fo::initscript SCRIPT start|stop  -- the same with a SysV init script.
proc ::fo::initscript {script action} {
    if {[fo::sh $script $action]} {
        if {$action eq "start"} { return UP } else { return RECOVER }
    }
    return FAIL
}
