#!/usr/bin/env bash
# The main job on one machine: the hub and an agent, with throw-away state.
#  1. the operator whitelists the gateway; the agent activates with the hub;
#  2. an app writes through the agent's local GMQ API; the data reaches the hub;
#  3. the hub goes down, the app keeps writing, the agent is SIGKILLed (a power cut) and
#     restarted, the hub comes back: every point arrives, none twice;
#  4. the operator installs an app over the air (signed package, engine_fetch) and sees
#     fetch_status and engine_report;
#  5. the operator signs in to the fleet dashboard and sees the gateway and its apps.
#   scripts/demo.sh [--keep]    --keep leaves hub and agent running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1

scripts/setup.sh
cargo build --release --locked --bin gwe
cargo build --release --locked --manifest-path hub/Cargo.toml --bin gwe-hub
gwe=$PWD/target/release/gwe
hubbin=$PWD/hub/target/release/gwe-hub

work=$(mktemp -d /tmp/gwe-demo.XXXXXX)
hport=18080
port=18090
hub=http://127.0.0.1:$hport
api=http://127.0.0.1:$port
agent=""
hubpid=""
stop_all() {
  [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
  [ -n "$hubpid" ] && kill "$hubpid" 2>/dev/null && wait "$hubpid" 2>/dev/null
  rm -rf "$work"
}
trap stop_all EXIT
wait_url() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
start_hub() {
  RUST_LOG=warn "$hubbin" serve --listen "127.0.0.1:$hport" --db "sqlite:$work/hub.db" \
    --operator-token-file "$work/operator.token" > "$work/hub.out" &
  hubpid=$!
  wait_url "$hub/timestamp"
}
start_agent() {
  "$gwe" --config "$work/gwe.toml" run 2>> "$work/agent.log" &
  agent=$!
  wait_url "$api/timestamp"
}
op() { # op METHOD PATH [curl args]: the hub's operator API
  local m=$1 p=$2
  shift 2
  curl -sf -X "$m" -H "Authorization: Bearer $(cat "$work/operator.token")" "$@" "$hub$p"
}
value() { op GET "/api/v1/devices/1/dataports/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])'; }
count() { op GET "/api/v1/devices/1/dataports/$1/history?limit=100000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

# The OTA trust, as a firmware build bakes it in: an offline root key, and the keys document
# in which it vouches for the release key (docs/ota-format.md, "Release metadata").
"$gwe" pkg keygen "$work/root.key" > /dev/null
"$gwe" pkg keygen "$work/release.key" > /dev/null
"$gwe" pkg keys --root-key "$work/root.key" --add "$work/release.key.pub" --out "$work/keys.json" > /dev/null
cat > "$work/gwe.toml" <<TOML
[device]
vendor = "demo"
model = "gw1"
serial = "DEMO-0001"

[paths]
state_dir = "$work/state"
log_dir = "$work/log"
run_dir = "$work/run"

[ingest]
listen = "127.0.0.1:$port"

[cloud]
url = "$hub"
linger_ms = 200
retry_max_secs = 2
report_interval_secs = 30
poll_ms = 20000

[ota]
root_keys = ["$(cat "$work/root.key.pub")"]
keys_file = "$work/keys.json"
TOML

echo "--- 1. the hub starts; the operator whitelists gateway demo/gw1/DEMO-0001; the agent activates"
start_hub
op POST /api/v1/devices -H 'Content-Type: application/json' -d '{"vendor":"demo","model":"gw1","sn":"DEMO-0001"}'
echo
start_agent
for _ in $(seq 100); do [ -s "$work/state/state/cloud_token" ] && break; sleep 0.1; done
echo "device token saved (0600): $(stat -c '%a %s bytes' "$work/state/state/cloud_token")"

echo "--- 2. an app writes through the local API (204 = durable on flash); the data reaches the hub"
token=$(curl -s -d 'vendor=demo&model=gw1&sn=DEMO-0001' "$api/provision/activate")
post() { curl -s -o /dev/null -w '%{http_code}' -H "X-Exosite-CIK: $token" -d "$2" "$api/onep:v1/stack/alias/$1"; }
now=$(date +%s)
echo "record -> $(post temperature "$((now - 2))=21.4&$((now - 1))=21.5&$now=21.7")"
echo "a bad request is refused with a reason and changes nothing: $(curl -s -H "X-Exosite-CIK: $token" -d 'broken' "$api/onep:v1/stack/alias")"
for _ in $(seq 50); do [ "$(count temperature 2>/dev/null)" = 3 ] && break; sleep 0.1; done
echo "at the hub: $(count temperature) temperature points, latest $(value temperature)"

echo "--- 3. the hub goes down; the app writes 300 points; the agent loses power; all come back"
kill "$hubpid"; wait "$hubpid" 2>/dev/null || true
for i in $(seq 0 29); do
  body=$(for j in $(seq 0 9); do printf '%d=%d&' "$((1700000000 + i * 10 + j))" "$((i * 10 + j))"; done)
  [ "$(post counter "${body%&}")" = 204 ] || echo "write $i refused"
done
kill -KILL "$agent"; wait "$agent" 2>/dev/null || true
echo "agent SIGKILLed with the hub away; queued on flash:"
"$gwe" --config "$work/gwe.toml" queue stats | sed 's/^/  /'
start_agent
start_hub
for _ in $(seq 200); do [ "$(count counter 2>/dev/null)" = 300 ] && break; sleep 0.1; done
echo "at the hub after the outage: $(count counter) counter points (300 written, each stored once)"

echo "--- 4. an app installed over the air: a package with signed release metadata, commanded through engine_fetch"
src=$work/hello
mkdir -p "$src"
# shellcheck disable=SC2016 # expanded by the gateway, not here
printf '#!/bin/sh\necho "hello $GWE_VERSION installed"\n' > "$src/install.sh"
printf '#!/bin/sh\nwhile true; do echo "hello from an OTA app"; sleep 5; done\n' > "$src/run.sh"
printf '[supervisord]\ncommand = ./run.sh\nstartsecs = 1\n' > "$src/supervisor.conf"
printf '{"name": "hello", "version": "1.0", "excludes": ["build.json"]}\n' > "$src/build.json"
chmod 755 "$src/install.sh" "$src/run.sh"
pkg=$("$gwe" pkg build "$src" --out "$work" --key "$work/release.key" --vendor demo --model gw1)
for f in "$pkg" "$pkg.meta"; do
  op PUT "/api/v1/content/demo/gw1/$(basename "$f")" -H 'Content-Type: application/octet-stream' --data-binary "@$f" > /dev/null
done
op PUT /api/v1/devices/1/dataports/engine_fetch -H 'Content-Type: application/json' \
  -d '{"value":"{\"install\":[{\"name\":\"hello.v1.0.tar.gz\"}]}"}'
for _ in $(seq 100); do value fetch_status 2>/dev/null | grep -q '^installed' && break; sleep 0.2; done
echo "fetch_status: $(value fetch_status | tr '\n' ' ')"
"$gwe" --config "$work/gwe.toml" ctl status
for _ in $(seq 100); do value engine_report 2>/dev/null | grep -q '"hello"' && break; sleep 0.2; done
echo "engine_report: $(value engine_report)"

echo "--- 5. the fleet dashboard: operator 'demo' signs in and reads the fleet"
password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$password" | "$hubbin" operator add demo --db "sqlite:$work/hub.db"
curl -s -o /dev/null -c "$work/cookies" --data "name=demo&password=$password" "$hub/ui/login"
curl -sf -b "$work/cookies" "$hub/ui/api/fleet" | python3 -c '
import json, sys
f = json.load(sys.stdin)
for r in f["rows"]:
    d = dict(zip(f["columns"], r))
    apps = ", ".join("%s %s %s" % (a[0], a[1] or "-", a[2]) for a in d["apps"])
    state = "online" if d["online"] else "offline"
    print("dashboard: %s %s, agent %s, backlog %s, apps: %s" % (d["sn"], state, d["engine_version"], d["backlog"], apps))'

if [ $keep = 1 ]; then
  echo "dashboard on $hub/ui/ (operator demo, password $password)"
  echo "hub on $hub (operator token in $work/operator.token), agent config $work/gwe.toml; Ctrl-C to stop"
  wait "$agent"
fi
