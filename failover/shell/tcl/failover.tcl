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

# fo::hcok CHECK ?HOST[:PORT]?  -- 1 unless hc (run with -m, e.g. with samples/Hcfile.example)
# says its check CHECK is not UP; without an hc that answers within half a second, or
# without such a check, 1.  For a reclaim procedure: while hc still finds the service
# broken it sets it FAIL again, and a reclaim that said RECOVER at once would hand it back
# to a broken host, over and over (the service would flap between the hosts).  The hc
# asked by default: $::fo::hc (localhost, port 1850).
if {![info exists ::fo::hc]} { set ::fo::hc localhost }
proc ::fo::hcok {check {where ""}} {
    if {$where eq ""} { set where $::fo::hc }
    if {[catch {healthy -unreachable 1 $check $where 0.5} ok]} { return 1 }
    return $ok
}

# fo::ipup ADDRESS/PREFIX DEVICE  -- add a virtual IP (IPv4 or IPv6) and announce it:
# gratuitous ARP for IPv4, an unsolicited neighbour advertisement for IPv6.  IPv6 addresses
# are added with nodad: duplicate address detection would keep the address tentative (and
# unusable) for a second or more, and the peer that held it has just let it go.
# A takeover waits for nothing it can skip: the address is added first (only when that fails
# is it looked for: already there is fine), and the first announcement leaves from failsh
# itself before fo::garp's announcer has even started.
proc ::fo::ipup {cidr dev} {
    if {[catch {fo::ipcanon $cidr} ip]} { fo::log error "fo::ipup: $ip"; return FAIL }
    set opts [expr {[string match *:* $ip] ? {nodad} : {}}]
    if {[catch {eval [list exec -ignorestderr -- ip addr add $cidr dev $dev] $opts 2>@1} out]
            && ![fo::hasip $ip $dev]} {
        fo::log warning "command failed: ip addr add $cidr dev $dev $opts: $out"
        return FAIL
    }
    # (if failsh cannot send it, the announcer sends them all, or logs why it cannot either)
    fo::garp $cidr $dev [expr {![catch {fo::announce $dev $ip}]}]
    return UP
}

# fo::garp ADDRESS/PREFIX DEVICE  -- announce that this host holds the address (gratuitous
# ARP, or an unsolicited neighbour advertisement for IPv6; sent by failover.announce, no
# arping needed).  Without it, clients keep the old MAC for up to 45 s (tech notes §5).
# Use it as a service's announce script too: failsvc ip announce {fo::garp 10.0.0.100/24 eth0}
# $::fo::garpcount announcements $::fo::garpdelay s apart, sent in the background: the
# policy thread does not wait for them (a SIGTERM, other services' runs would).  fo::ipdown
# stops them: an announcement sent after this host let the address go would send the
# clients back to it.
if {![info exists ::fo::garpcount]} { set ::fo::garpcount 2 }
if {![info exists ::fo::garpdelay]} { set ::fo::garpdelay 1 }
# (fo::ipup passes SENT 1: it has sent the first itself, the announcer sends the rest.)
proc ::fo::garp {cidr dev {sent 0}} {
    if {[catch {fo::ipcanon $cidr} ip]} { fo::log error "fo::garp: $ip"; return }
    fo::garpstop $ip
    set count [expr {$::fo::garpcount - ($sent ? 1 : 0)}]
    if {$count < 1} { return }
    set how [list $dev $ip --count $count --delay $::fo::garpdelay]
    if {$sent} { lappend how --wait $::fo::garpdelay }
    set ::fo::garping($ip) [eval fo::bg $::fo::announcer $how]
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

# fo::ipdown ADDRESS/PREFIX DEVICE  -- remove a virtual IP; RECOVER only when it is really
# gone from DEVICE (checked after the removal), FAIL with an error logged otherwise.  It is
# removed with the prefix length DEVICE has (someone may have added it as /32 or /128).
proc ::fo::ipdown {cidr dev} {
    if {[catch {fo::ipcanon $cidr} ip]} { fo::log error "fo::ipdown: $ip"; return FAIL }
    fo::garpstop $ip
    if {![catch {fo::ipaddrs -prefix $dev} have]} {
        foreach a $have {
            if {[fo::ipcanon $a] eq $ip} { fo::sh ip addr del $a dev $dev }
        }
    }
    if {[catch {fo::ipaddrs $dev} addrs]} { fo::log error "fo::ipdown: $addrs"; return FAIL }
    if {[lsearch -exact $addrs $ip] >= 0} {
        fo::log error "fo::ipdown: $ip is still on $dev after ip addr del"
        return FAIL
    }
    return RECOVER
}

# fo::hasip IP DEVICE  -- 1 if DEVICE carries IP (IPv4 or IPv6, any spelling), else 0.
proc ::fo::hasip {ip dev} {
    if {[catch {fo::ipcanon $ip} ip] || [catch {fo::ipaddrs $dev} addrs]} { return 0 }
    return [expr {[lsearch -exact $addrs $ip] >= 0}]
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
