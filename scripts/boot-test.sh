#!/usr/bin/env bash
# Boots a QEMU board image with a hub on the host and checks that init starts the agent,
# the agent activates with the hub, installs a sample app over the air (engine_fetch, a
# package made by `gwe pkg build` and signed), starts its apps and forwards their data;
# that agent and apps come back by themselves after a clean reboot and after a hard power
# cut (the emulator killed); and that every value the agent acknowledged is still queued
# or already at the hub. Reports the agent's resident memory on the board. The hub and
# QEMU share a network namespace the test makes and deletes (no traffic leaves it).
#   scripts/boot-test.sh [BOARD]     (default qemu-aarch64-virt)
set -euo pipefail
cd "$(dirname "$0")/.."
board=${1:-qemu-aarch64-virt}
# shellcheck source=/dev/null
. "board-configs/$board/board.env"
out=target/boards/$board
mkdir -p "$out"

# Host side: the hub, and the agent's package tools, built natively.
cargo build -q --bin gwe
cargo build -q --manifest-path hub/Cargo.toml --bin gwe-hub
gwe=target/debug/gwe
# shellcheck source=scripts/board-host.sh
. scripts/board-host.sh
release_keys "$out" "$gwe"
GWE_ROOT_KEY=$root_pub GWE_KEYS_FILE=$keys_json scripts/build-image.sh "$board"
data=$out/data.img
rm -f "$data"
truncate -s "$DATA_SIZE" "$data"
mkfs.ext4 -q -F "$data"

qemu_pid=""
hub_pid=""
tpm_pid=""
cleanup() {
  set +e
  [ -n "$qemu_pid" ] && kill -KILL "$qemu_pid" 2>/dev/null
  [ -n "$tpm_pid" ] && kill -KILL "$tpm_pid" 2>/dev/null && wait "$tpm_pid" 2>/dev/null
  [ -n "$hub_pid" ] && kill -KILL "$hub_pid" 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  true
}
trap cleanup EXIT
ns_up gwe-boot-$$

# romfile= : no PXE option ROM for the NIC (it is for network boot, and comes from a package,
# ipxe-qemu, a minimal machine does not have).
# A board with a TPM (board.env TPM=swtpm): a software TPM 2.0 per boot, its state (the
# seeds the gateway's key comes from) kept in $out/tpm from boot to boot, as a TPM chip's is.
tpm_args=()
if [ "${TPM:-}" = swtpm ]; then
  rm -rf "$out/tpm"
  mkdir -p "$out/tpm"
  tpm_args=(-chardev "socket,id=chrtpm,path=$out/tpm/sock" -tpmdev "emulator,id=tpm0,chardev=chrtpm"
            -device "tpm-tis-device,tpmdev=tpm0")
fi
tpm_up() {
  [ "${TPM:-}" = swtpm ] || return 0
  if [ -n "$tpm_pid" ]; then
    kill -KILL "$tpm_pid" 2>/dev/null || true
    wait "$tpm_pid" 2>/dev/null || true
  fi
  rm -f "$out/tpm/sock"
  swtpm socket --tpm2 --tpmstate "dir=$out/tpm" --ctrl "type=unixio,path=$out/tpm/sock" >> "$out/tpm/swtpm.log" 2>&1 &
  tpm_pid=$!
  local i
  for i in $(seq 100); do [ -S "$out/tpm/sock" ] && return 0; sleep 0.05; done
  echo "boot-test: swtpm did not come up" >&2
  exit 1
}
boot() { # boot MODE LOG: starts the board in the background
  tpm_up
  # shellcheck disable=SC2086
  # Not through in_ns: a backgrounded function is a subshell, and $! must be QEMU itself.
  ip netns exec "$ns" $QEMU $QEMU_ARGS "${tpm_args[@]}" -nographic -no-reboot -kernel "$out/vmlinuz" -initrd "$out/initrd.gz" \
    -append "console=$CONSOLE panic=-1 quiet gwe.test=$1 gwe.wait=sensor" \
    -drive "file=$data,format=raw,if=virtio" \
    -netdev user,id=n0 -device "virtio-net-pci,netdev=n0,mac=$NET_MAC,romfile=" < /dev/null > "$2" 2>&1 &
  qemu_pid=$!
}

# The hub, on the namespace's loopback: the board reaches it as 10.0.2.2:18080.
hub_up fresh
whitelist
pkg=$("$gwe" pkg build board-configs/qemu-common/ota-sample/sensor --out "$out" --key "$key" --vendor gwe --model "$model")
upload "$pkg" "$pkg.meta"
command_install sensor.v1.0.tar.gz
# The edge path: the board's agent fetches this through ctrlpoll and batches "tick" here.
op POST "/edge/cmd/$serial" -H 'Content-Type: application/json' \
  -d '{"id":"boot","batch":{"gwe-hub":{"interval_ms":2000,"filter":["tick"]}}}' > /dev/null
echo "hub up; device $dev ($serial) whitelisted; $(basename "$pkg") uploaded and commanded"
history() { op GET "/api/v1/devices/$dev/dataports/$1/history?limit=100000" | json '"\n".join(p["value"] for p in v)'; }
acked() { grep -ao 'GWE-ACKED [0-9]*' "$1" | cut -d' ' -f2 | sort -n | uniq; }

echo "--- boot 1: first boot, then a clean reboot"
boot reboot "$out/boot1.log"
wait_for "$out/boot1.log" "data partition mounted on /var/lib/gwe" 120
wait_for "$out/boot1.log" "ticker RUNNING" 120
wait_for "$out/boot1.log" "GWE-REPORT rebooting" 60
wait "$qemu_pid" || true   # -no-reboot: the emulator exits when the guest reboots
qemu_pid=""
grep -q "Stopping gwe: OK" "$out/boot1.log" || { echo "boot-test: the agent was not stopped cleanly" >&2; exit 1; }
echo "clean shutdown ran the init script's stop"
status=$(op GET "/api/v1/devices/$dev" | json 'v["status"]')
[ "$status" = activated ] || { echo "boot-test: the device did not activate (status $status)" >&2; exit 1; }
fetch=$(dataport fetch_status)
case "$fetch" in
  "installed sensor 1.0"*) echo "activated with the hub; installed over the air: ${fetch%%$'\n'*}" ;;
  *) echo "boot-test: fetch_status is '$fetch', not 'installed sensor 1.0'" >&2; exit 1 ;;
esac

echo "--- boot 2: after the clean reboot"
boot report "$out/boot2.log"
wait_for "$out/boot2.log" "data partition mounted on /var/lib/gwe" 120
wait_for "$out/boot2.log" "ticker RUNNING" 120
if [ "${TPM:-}" = swtpm ]; then
  # The key in the TPM: a P-256 key (its DER prefix in base64), the same at both boots,
  # and no key file on the data partition.
  tpm_key() { grep -ao 'GWE-TPM-IDENTITY [^ ]* keyfile=[a-z]*' "$1" | head -1 | cut -d' ' -f2-; }
  k1=$(tpm_key "$out/boot1.log")
  k2=$(tpm_key "$out/boot2.log")
  case "$k1" in
    *,MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE*" keyfile=absent") ;;
    *) echo "boot-test: no key from the board's TPM: '$k1'" >&2; grep -a 'GWE-TPM\|tpm' "$out/boot1.log" >&2; exit 1 ;;
  esac
  [ "$k1" = "$k2" ] || { echo "boot-test: the TPM gave another key after the reboot: '$k2'" >&2; exit 1; }
  echo "the gateway's key in the board's TPM (/dev/tpmrm0), the same after the reboot, no key file: ${k1%%,MFkw*},..."
fi
wait_for "$out/boot2.log" "GWE-ACKED" 30
# Resident memory of the agent after a minute with three apps running.
wait_for "$out/boot2.log" "uptime=6[0-9]\." 120
for app in ticker logger idler sensor; do
  grep -aq "$app RUNNING" "$out/boot2.log" || { echo "boot-test: $app is not RUNNING" >&2; exit 1; }
done
minute=$(grep -a 'uptime=6[0-9]\.' "$out/boot2.log" | head -1)
rss=$(echo "$minute" | sed -n 's/.*\(VmRSS:.*kB\).*/\1/p')
echo "agent and its 4 apps (one installed over the air) back by themselves; agent after a minute: $rss"
wait_for "$out/boot2.log" "GWE-SMAPS" 30
grep -a 'GWE-SMAPS' "$out/boot2.log" | tr -d '\r' | sed 's/^.*GWE-SMAPS/  /'
# The target: at most 4 MB. Pss (from smaps, exact) and not VmRSS, whose per-thread
# counters the kernel updates lazily and which reads low.
pss=$(echo "$minute" | sed -n 's/.*Pss: *\([0-9]*\) kB.*/\1/p')
[ -n "$pss" ] || { echo "boot-test: no Pss in the board's report" >&2; exit 1; }
if [ "$pss" -gt 4096 ]; then
  echo "boot-test: the agent holds $pss kB after a minute; the target is at most 4096 kB" >&2
  exit 1
fi
for alias in tick sensor; do
  n=$(history "$alias" | grep -c . || true)
  [ "$n" -gt 0 ] || { echo "boot-test: no $alias values reached the hub" >&2; exit 1; }
  echo "$n $alias values forwarded to the hub"
done
edge=$(op GET "/edge/cmd/$serial" | json 'v["state"]["last_command"]["result"]')
[ "$edge" = applied ] || { echo "boot-test: the edge command was not applied (state: $edge)" >&2; exit 1; }
n=$(op GET "/api/v1/edge/$serial/batches" | json 'sum(b["points"] for b in v["batches"])')
[ "$n" -gt 0 ] || { echo "boot-test: no edge batch reached the hub" >&2; exit 1; }
echo "edge path: command applied on the board; $n tick points in edge batches at the hub"
echo "--- power cut: the emulator is killed while the app writes"
kill -KILL "$qemu_pid"
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""
acked "$out/boot1.log" > "$out/acked.txt"
acked "$out/boot2.log" >> "$out/acked.txt"
echo "$(wc -l < "$out/acked.txt") values acknowledged by the agent before the cut"

echo "--- boot 3: after the power cut"
boot verify "$out/boot3.log"
wait_for "$out/boot3.log" "data partition mounted on /var/lib/gwe" 120
wait_for "$out/boot3.log" "ticker RUNNING" 120
wait_for "$out/boot3.log" "GWE-QUEUE-END" 60
wait_for "$out/boot3.log" "sensor RUNNING" 120
# Acknowledged values are either still queued on the board or already stored by the hub.
{
  grep -ao 'GWE-QUEUED [0-9]*' "$out/boot3.log" | cut -d' ' -f2
  history tick
} | sort -u > "$out/queued.txt"
missing=$(comm -23 <(sort -u "$out/acked.txt") "$out/queued.txt" | wc -l)
if [ "$missing" -ne 0 ]; then
  echo "boot-test: $missing acknowledged values are neither queued nor at the hub after the power cut:" >&2
  comm -23 <(sort -u "$out/acked.txt") "$out/queued.txt" | head >&2
  exit 1
fi
echo "all $(sort -u "$out/acked.txt" | wc -l) acknowledged values are queued or at the hub after the power cut"
kill -KILL "$qemu_pid"
qemu_pid=""
echo "boot test passed on $board: agent resident memory $rss"
kill -KILL "$hub_pid" 2>/dev/null || true
wait "$hub_pid" 2>/dev/null || true
hub_pid=""
