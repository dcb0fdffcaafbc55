#!/usr/bin/env bash
# Boots a QEMU board image and checks that init starts the agent, the agent starts its apps,
# and both come back by themselves after a clean reboot and after a hard power cut (the
# emulator killed), with the app's data on the data partition intact. Reports the agent's
# resident memory on the board. QEMU runs in a network namespace of its own (no traffic
# leaves it).
#   scripts/boot-test.sh [BOARD]     (default qemu-aarch64-virt)
set -euo pipefail
cd "$(dirname "$0")/.."
board=${1:-qemu-aarch64-virt}
# shellcheck source=/dev/null
. "board-configs/$board/board.env"
scripts/build-image.sh "$board"
out=target/boards/$board
data=$out/data.img
rm -f "$data"
truncate -s "$DATA_SIZE" "$data"
mkfs.ext4 -q -F "$data"

qemu_pid=""
boot() { # boot MODE LOG: starts the board in the background
  # shellcheck disable=SC2086
  unshare -n $QEMU $QEMU_ARGS -nographic -no-reboot -kernel "$out/vmlinuz" -initrd "$out/initrd.gz" \
    -append "console=$CONSOLE panic=-1 quiet gwe.test=$1" \
    -drive "file=$data,format=raw,if=virtio" \
    -netdev user,id=n0 -device "virtio-net-pci,netdev=n0,mac=$NET_MAC" < /dev/null > "$2" 2>&1 &
  qemu_pid=$!
}
cleanup() { [ -n "$qemu_pid" ] && kill -KILL "$qemu_pid" 2>/dev/null; true; }
trap cleanup EXIT

wait_for() { # wait_for LOG PATTERN SECONDS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q "$2" "$1" && return 0
    sleep 0.1
  done
  echo "boot-test: no '$2' in $1 after $3 s; console:" >&2
  tail -20 "$1" >&2
  return 1
}
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

echo "--- boot 2: after the clean reboot"
boot report "$out/boot2.log"
wait_for "$out/boot2.log" "data partition mounted on /var/lib/gwe" 120
wait_for "$out/boot2.log" "ticker RUNNING" 120
wait_for "$out/boot2.log" "GWE-ACKED" 30
# Resident memory of the agent after a minute with three apps running.
wait_for "$out/boot2.log" "uptime=6[0-9]\." 120
for app in ticker logger idler; do
  grep -aq "$app RUNNING" "$out/boot2.log" || { echo "boot-test: $app is not RUNNING" >&2; exit 1; }
done
rss=$(grep -a 'uptime=6[0-9]\.' "$out/boot2.log" | grep -ao 'VmRSS:[^k]*kB' | head -1)
echo "agent and its 3 apps back by themselves; agent after a minute: $rss"
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
grep -ao 'GWE-QUEUED [0-9]*' "$out/boot3.log" | cut -d' ' -f2 | sort -n | uniq > "$out/queued.txt"
missing=$(comm -23 <(sort "$out/acked.txt") <(sort "$out/queued.txt") | wc -l)
if [ "$missing" -ne 0 ]; then
  echo "boot-test: $missing acknowledged values are not in the queue after the power cut:" >&2
  comm -23 <(sort "$out/acked.txt") <(sort "$out/queued.txt") | head >&2
  exit 1
fi
echo "all $(wc -l < "$out/acked.txt") acknowledged values are still queued after the power cut"
kill -KILL "$qemu_pid"
qemu_pid=""
echo "boot test passed on $board: agent resident memory $rss"
