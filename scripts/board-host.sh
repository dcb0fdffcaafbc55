# Host side of the emulated-board tests, sourced by boot-test.sh and power-cut-campaign.sh:
# a network namespace the test makes, a hub in it on 127.0.0.1:18080 (the board reaches it
# as 10.0.2.2:18080 through QEMU's user network), and helpers to drive the hub.
# The sourcing script sets: board (and has sourced its board.env), out (a work directory).
# shellcheck shell=bash disable=SC2154,SC2034

# release_keys DIR GWE: a root key, a release key and the keys document the root signed
# (kept in DIR across runs); sets root_pub, key (the release key), keys_json.
release_keys() {
  local dir=$1 gwe=$2
  [ -f "$dir/root.key" ] || "$gwe" pkg keygen "$dir/root.key" > /dev/null
  [ -f "$dir/release.key" ] || "$gwe" pkg keygen "$dir/release.key" > /dev/null
  "$gwe" pkg keys --root-key "$dir/root.key" --add "$dir/release.key.pub" --out "$dir/keys.json" > /dev/null
  root_pub=$(cat "$dir/root.key.pub")
  key=$dir/release.key
  keys_json=$dir/keys.json
}

# ns_up NAME: makes the namespace (the caller deletes it on exit).
ns_up() {
  ns=$1
  ip netns add "$ns"
  in_ns ip link set lo up
}
in_ns() { ip netns exec "$ns" "$@"; }

# hub_up fresh|keep: starts the hub with a fresh database in $out (keep: the one there, and its
# operator token); sets hub_pid, port.
hub_up() {
  port=18080
  [ "$1" = keep ] || rm -f "$out"/hub.db* "$out/operator.token"
  ip netns exec "$ns" hub/target/debug/gwe-hub serve --listen "127.0.0.1:$port" --db "sqlite:$out/hub.db" \
    --operator-token-file "$out/operator.token" --system-name gwe-hub --advertise "10.0.2.2:$port" \
    > "$out/hub.log" 2>&1 &
  hub_pid=$!
  for _ in $(seq 100); do in_ns curl -sf "http://127.0.0.1:$port/timestamp" > /dev/null && break; sleep 0.1; done
}

# op METHOD PATH [curl args...]: the hub's operator API.
op() {
  local m=$1 p=$2
  shift 2
  in_ns curl -sf -X "$m" -H "Authorization: Bearer $(cat "$out/operator.token")" "$@" "http://127.0.0.1:$port$p"
}
json() { python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"; }

# whitelist: the board's model and serial (eth0's MAC), whitelisted; sets model, serial, dev.
whitelist() {
  model=$(sed -n 's/^model = "\(.*\)".*/\1/p' "board-configs/$board/rootfs/etc/gwe/gwe.toml")
  serial=$(echo "$NET_MAC" | tr 'a-f' 'A-F')
  dev=$(op POST /api/v1/devices -H 'Content-Type: application/json' \
    -d "{\"vendor\":\"gwe\",\"model\":\"$model\",\"sn\":\"$serial\"}" | json 'v["id"]')
}

# upload FILE...: into the hub's content store for the board's model.
upload() {
  local f
  for f in "$@"; do
    op PUT "/api/v1/content/gwe/$model/$(basename "$f")" -H 'Content-Type: application/octet-stream' \
      --data-binary "@$f" > /dev/null
  done
}

# command_install PACKAGE: engine_fetch, as the cloud commands an install.
command_install() {
  local cmd="{\"install\":[{\"name\":\"$1\"}]}"
  op PUT "/api/v1/devices/$dev/dataports/engine_fetch" -H 'Content-Type: application/json' \
    -d "$(python3 -c 'import json,sys; print(json.dumps({"value": sys.argv[1]}))' "$cmd")" > /dev/null
}

# dataport ALIAS: its value at the hub.
dataport() { op GET "/api/v1/devices/$dev/dataports/$1" | json 'v["value"]'; }

# wait_for LOG PATTERN SECONDS: fails (and shows the console's end) on timeout, or at once
# when the emulator ($qemu_pid) is gone.
wait_for() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -aqs "$2" "$1" && return 0
    if [ -n "${qemu_pid:-}" ] && ! kill -0 "$qemu_pid" 2>/dev/null; then
      grep -aqs "$2" "$1" && return 0
      break
    fi
    sleep 0.1
  done
  echo "no '$2' in $1 after $3 s; console:" >&2
  tail -20 "$1" | sed 's/^/    | /' >&2
  return 1
}
