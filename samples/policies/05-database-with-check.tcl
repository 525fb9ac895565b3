# 05-database-with-check.tcl -- a database on shared storage, with a health check,
# a reclaim that repairs, and a trap that mails the admin.
#
# db1 is the master, db2 the slave.  The start proc mounts the shared file system and
# starts the database; the stop proc does the reverse.  A FAILed database is reclaimed
# by an fsck of the volume.  check, timeout and failtrap are new in this failsh (0.5
# had no health checks in failsh); a 0.5 failsh would reject them, so keep them apart
# when a file must also run on the old one.  Tcl 8.4 only.

if {[info exists env(FO_NODE)]} { set me $env(FO_NODE) } else { set me [info hostname] }
set volume /dev/mapper/shared-db
set mountpoint /srv/db
set admin root@localhost

proc mounted {} {
    global mountpoint
    return [expr {![catch {exec mountpoint -q $mountpoint}]}]
}

proc startdb {args} {
    global volume mountpoint
    if {![mounted] && [catch {exec mount $volume $mountpoint} msg]} {
        fo::log error "mount failed: $msg"
        return FAIL
    }
    if {[catch {exec systemctl start postgresql} msg]} {
        fo::log error "postgresql did not start: $msg"
        return FAIL
    }
    return UP
}

proc stopdb {args} {
    global mountpoint
    catch {exec systemctl stop postgresql}
    if {[mounted] && [catch {exec umount $mountpoint} msg]} {
        fo::log error "umount failed: $msg"
        return FAIL
    }
    return RECOVER
}

proc reclaimdb {args} {
    global volume
    if {[stopdb] ne "RECOVER"} { return FAIL }
    if {[catch {exec fsck -p $volume} msg]} {
        fo::log error "fsck failed: $msg"
        return FAIL
    }
    return RECOVER
}

# 1 while the database answers
proc checkdb {args} {
    return [expr {![catch {exec pg_isready -q}]}]
}

# failtrap state SERVICE script: appended arguments are service old new reason
proc mailadmin {service old new reason} {
    global admin me
    catch {exec mail -s "failover: $service on $me $old -> $new" $admin << $reason}
}

failsvc db interval 3
failsvc db timeout 120
failsvc db masters {db1}
failsvc db slaves {db2}
failsvc db start startdb
failsvc db stop stopdb
failsvc db reclaim reclaimdb
failsvc db check checkdb
failtrap state db mailadmin
