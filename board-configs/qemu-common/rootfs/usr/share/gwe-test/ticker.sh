#!/bin/sh
# Sample app for the boot test: once a second it posts a counter to the agent's local GMQ
# API, and reports each value the agent acknowledged (204: durable) on the console.
api=http://127.0.0.1:8090
sn=$(tr 'a-f' 'A-F' < /sys/class/net/eth0/address)
token=""
while [ -z "$token" ]; do
    token=$(wget -q -O - --post-data "sn=$sn" "$api/provision/activate" 2>/dev/null)
    [ -n "$token" ] || sleep 1
done
n=$(cat /var/lib/gwe/ticker.n 2>/dev/null || echo 0)
while true; do
    n=$((n + 1))
    if wget -q -O /dev/null --header "X-Exosite-CIK: $token" --post-data "tick=$n" "$api/onep:v1/stack/alias"; then
        echo "GWE-ACKED $n" > /dev/console
        echo "$n" > /var/lib/gwe/ticker.n
    fi
    sleep 1
done
