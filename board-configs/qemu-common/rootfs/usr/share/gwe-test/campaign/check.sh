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
# Let the apps settle: a version a cut left on trial is watched, and rolled back if it fails.
settled() {
    /usr/bin/gwe ctl status > /tmp/status 2>&1 || return 1
    grep -v ' RUNNING ' /tmp/status | grep -q . && return 1
    for t in /var/lib/gwe/apps/*/trial; do [ -e "$t" ] && return 1; done
    return 0
}
i=0
until settled || [ $i -ge 60 ]; do
    sleep 1
    i=$((i + 1))
done
/usr/bin/gwe ctl status 2>&1 | while read -r line; do say "GWE-STATUS $line"; done
/usr/bin/gwe check > /tmp/check.out 2>&1
rc=$?
while read -r line; do say "GWE-CHECK $line"; done < /tmp/check.out
say "GWE-CHECK-RC $rc"
stats=$(/usr/bin/gwe queue stats --json)
say "GWE-QSTATS $stats"
# What the hub has not confirmed yet (the host finds the rest at the hub).
fwd=$(echo "$stats" | sed -n 's/.*"forwarder":\([0-9]*\).*/\1/p')
/usr/bin/gwe queue dump | while read -r seq _ts alias value; do
    [ "$seq" -gt "${fwd:-0}" ] || continue
    case "$alias" in w1 | w2) say "GWE-QUEUED $alias $value" ;; esac
done
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
while true; do
    say "GWE-REPORT uptime=$(cut -d' ' -f1 /proc/uptime) $(/usr/bin/gwe ctl status 2>&1 | tr -s ' ' | tr '\n' ';')"
    sleep 2
done
