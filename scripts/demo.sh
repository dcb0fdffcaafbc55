#!/usr/bin/env bash
# The main job on one machine: builds the agent, runs it with a throw-away config, lets an
# "app" write data points through the local GMQ API, and shows them durably queued.
# (Hub and forwarding join this demo as they land; see docs/ARCHITECTURE.md.)
#   scripts/demo.sh [--keep]    --keep leaves the agent running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1

scripts/setup.sh
cargo build --release --locked --bin gwe
gwe=$PWD/target/release/gwe

work=$(mktemp -d /tmp/gwe-demo.XXXXXX)
port=18090
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
TOML

"$gwe" --config "$work/gwe.toml" run &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/timestamp" && break; sleep 0.1; done

echo "--- an app activates with the gateway's identity and gets the local token"
token=$(curl -s -d 'vendor=demo&model=gw1&sn=DEMO-0001' "http://127.0.0.1:$port/provision/activate")
echo "token: ${token:0:8}..."

echo "--- it writes values (204 = durable on flash) and timestamped records"
curl -s -o /dev/null -w 'write  -> %{http_code}\n' -H "X-Exosite-CIK: $token" \
  -d 'temperature=21.5&status=ok%26running' "http://127.0.0.1:$port/onep:v1/stack/alias"
now=$(date +%s)
curl -s -o /dev/null -w 'record -> %{http_code}\n' -H "X-Exosite-CIK: $token" \
  -d "$((now-2))=40.1&$((now-1))=40.3&$now=40.2" "http://127.0.0.1:$port/onep:v1/stack/alias/humidity"
echo "--- a bad request is refused with a reason and changes nothing"
curl -s -w '(%{http_code})\n' -H "X-Exosite-CIK: $token" -d 'broken' "http://127.0.0.1:$port/onep:v1/stack/alias"

echo "--- the agent is killed with SIGKILL, as by a power cut, and started again"
kill -KILL $agent; wait $agent 2>/dev/null || true
"$gwe" --config "$work/gwe.toml" run &
agent=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/timestamp" && break; sleep 0.1; done

echo "--- everything acknowledged is still queued (seq, timestamp, alias, value):"
"$gwe" --config "$work/gwe.toml" queue dump
"$gwe" --config "$work/gwe.toml" queue stats
if [ $keep = 1 ]; then
  echo "agent running with config $work/gwe.toml; Ctrl-C to stop"
  wait $agent
fi
