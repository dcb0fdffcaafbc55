#!/bin/sh
# Campaign writer: posts ALIAS=CYCLE.N to the agent's local GMQ API as fast as it can, once
# the campaign's check of this boot is done (/run/gwe-campaign-go), and prints each value the
# agent acknowledged (204: durable) on the console, where the host reads it.
alias=$1
api=http://127.0.0.1:8090
cycle=$(sed -n 's/.*gwe\.cycle=\([0-9]*\).*/\1/p' /proc/cmdline)
sn=$(tr 'a-f' 'A-F' < /sys/class/net/eth0/address)
while [ ! -e /run/gwe-campaign-go ]; do usleep 200000; done
token=""
while [ -z "$token" ]; do
    token=$(wget -q -O - --post-data "sn=$sn" "$api/provision/activate" 2>/dev/null)
    [ -n "$token" ] || sleep 1
done
n=0
while true; do
    n=$((n + 1))
    if wget -q -O /dev/null --header "X-Exosite-CIK: $token" --post-data "$alias=$cycle.$n" "$api/onep:v1/stack/alias"; then
        echo "GWE-ACKED $alias $cycle.$n" > /dev/console
    fi
done
