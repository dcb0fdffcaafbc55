#!/bin/sh
# Sample app the boot test installs over the air: posts a reading every 5 s through the
# agent's local GMQ API and says on its log what the agent acknowledged.
api=http://127.0.0.1:8090
sn=$(tr 'a-f' 'A-F' < /sys/class/net/eth0/address)
token=""
while [ -z "$token" ]; do
    token=$(wget -q -O - --post-data "sn=$sn" "$api/provision/activate" 2>/dev/null)
    [ -n "$token" ] || sleep 1
done
n=0
while true; do
    n=$((n + 1))
    if wget -q -O /dev/null --header "X-Exosite-CIK: $token" --post-data "sensor=$n" "$api/onep:v1/stack/alias"; then
        echo "sensor: acknowledged $n"
    fi
    sleep 5
done
