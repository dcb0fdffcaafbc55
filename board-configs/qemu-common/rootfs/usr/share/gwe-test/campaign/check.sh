#!/bin/sh
# Campaign hook (gwe.test=campaign on the kernel command line), run once by init: waits for
# the agent that init started, prints on the console what the host checks after a power cut
# (GWE-* lines), then lets the workload go and reports until the power goes.
grep -q 'gwe.test=campaign' /proc/cmdline || exit 0
say() { echo "$*" > /dev/console; }
i=0
until /usr/bin/gwe ctl status > /dev/null 2>&1; do
    i=$((i + 1))
    [ $i -gt 600 ] && { say "GWE-AGENT-DOWN"; exit 1; }
    usleep 100000
done
say "GWE-AGENT-UP uptime=$(cut -d' ' -f1 /proc/uptime)"
# Let the apps settle: an OTA command the cut interrupted is carried out (download, install),
# and a version on trial is watched, then confirmed or rolled back if it fails.
settled() {
    [ -e /var/lib/gwe/state/engine_fetch ] && return 1
    /usr/bin/gwe ctl status > /tmp/status 2> /dev/null || return 1
    grep -v ' RUNNING ' /tmp/status | grep -q . && return 1
    for t in /var/lib/gwe/apps/*/trial; do [ -e "$t" ] && return 1; done
    return 0
}
i=0
until settled || [ $i -ge 120 ]; do
    sleep 1
    i=$((i + 1))
done
[ $i -lt 120 ] || /usr/bin/gwe ctl status > /tmp/status 2> /dev/null
# The states settled() saw: an OTA command that comes from the hub only now may restart an
# app a moment later, which is no failure of this boot.
while read -r line; do say "GWE-STATUS $line"; done < /tmp/status
/usr/bin/gwe check > /tmp/check.out 2>&1
rc=$?
while read -r line; do say "GWE-CHECK $line"; done < /tmp/check.out
say "GWE-CHECK-RC $rc"
stats=$(/usr/bin/gwe queue stats --json)
say "GWE-QSTATS $stats"
# What the hub has not confirmed yet (the host finds the rest at the hub).
fwd=$(echo "$stats" | sed -n 's/.*"forwarder":\([0-9]*\).*/\1/p')
# awk, not a shell loop: the queue keeps up to a segment of records (over 100,000 small
# ones), and a loop of reads takes minutes of an emulated CPU over them.
/usr/bin/gwe queue dump | awk -v fwd="${fwd:-0}" '$1 > fwd && ($3 == "w1" || $3 == "w2") { print "GWE-QUEUED " $3 " " $4 }' > /dev/console
for d in /var/lib/gwe/apps/*/; do
    [ -L "$d/current" ] || continue
    name=$(basename "$d")
    (cd "$d/current/" && find . -type f ! -name install.log | sort | xargs sha256sum) > /tmp/app.sums
    digest=$(sha256sum < /tmp/app.sums | cut -c1-16)
    while read -r sum file; do say "GWE-APPFILE $name $file $sum"; done < /tmp/app.sums
    say "GWE-APP $name $(readlink "$d/current") $digest"
done
say "GWE-CONFIG $(tr -d '\n ' < /var/lib/gwe/config/apps.json 2>/dev/null)"
say "GWE-CHECK-END"
touch /run/gwe-campaign-go
# A fault of the data partition while the workload runs (gwe.fault= on the command line):
#   full  fill it up for 12 s, then free the space again
#   ro    an ext4 error: the kernel turns it read-only (errors=remount-ro) until the reboot
fault=$(sed -n 's/.*gwe\.fault=\([a-z]*\).*/\1/p' /proc/cmdline)
report_fault() {
    /usr/bin/gwe ctl status > /tmp/fstatus 2>&1
    say "GWE-FAULT-STATUS $(tr -s ' ' < /tmp/fstatus | tr '\n' ';')"
}
case "$fault" in
    full)
        sleep 2
        dd if=/dev/zero of=/var/lib/gwe/ballast bs=65536 2> /dev/null
        say "GWE-FAULT full: $(df -k /var/lib/gwe | tail -1 | tr -s ' ')"
        i=0
        while [ $i -lt 6 ]; do report_fault; sleep 2; i=$((i + 1)); done
        rm -f /var/lib/gwe/ballast
        say "GWE-FAULT cleared"
        ;;
    ro)
        sleep 2
        echo 1 > /sys/fs/ext4/vda/trigger_fs_error
        sleep 1
        if touch /var/lib/gwe/.ro-probe 2> /dev/null; then
            rm -f /var/lib/gwe/.ro-probe
            say "GWE-FAULT ro: still writable"
        else
            say "GWE-FAULT ro: writes refused"
        fi
        i=0
        while [ $i -lt 4 ]; do report_fault; sleep 2; i=$((i + 1)); done
        say "GWE-FAULT stays until the reboot"
        ;;
esac
while true; do
    [ -n "$fault" ] && report_fault
    say "GWE-REPORT uptime=$(cut -d' ' -f1 /proc/uptime) $(/usr/bin/gwe ctl status 2>&1 | tr -s ' ' | tr '\n' ';')"
    sleep 2
done
