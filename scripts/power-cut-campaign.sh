#!/usr/bin/env bash
# Power-cut campaign on an emulated ARM board (docs/power-cut-campaign.md).
#
# Every cycle boots the board on the same data disk. The board's campaign hook waits for the
# agent init started, prints what the host checks, and lets the workload go: two apps writing
# to GMQ as fast as they can (each acknowledged value goes to the console), an app logging
# fast into a rotating log, and, from the host, an OTA install (every fourth one a version
# that fails and must be rolled back) and an edge command that rewrites the apps'
# configuration. At a random moment the emulator is killed: a power cut. The next boot checks:
#   acked   every value the agent acknowledged is still queued or already at the hub
#   files   `gwe check`: no queue record, app version, state file or database damaged
#   apps    each app RUNNING; the OTA app is the old or the new version, whole (the digest of
#           its files is the package's), never the failing one
#   config  apps.json is the configuration before the cut's command or after it, never neither
#   agent   init started the agent; nobody helped
#
#   scripts/power-cut-campaign.sh [--cycles N] [--board B] [--disk plain|drop|tear]
#                                 [--window SECONDS] [--seed S] [--out DIR] [--no-faults]
#                                 [--expect-fail]
#   scripts/power-cut-campaign.sh --resume --out DIR
#   scripts/power-cut-campaign.sh --os-update [--cycles N] [--disk plain|drop|tear] [--seed S]
#                                 [--phases LIST] [--prepare | --prepared]
#
# --os-update    cuts during whole-image updates instead, on the Debian board with U-Boot, two
#                root slots and RAUC (scripts/os_power_cut.py: download, install, reboot, first
#                boot before mark-good; its checks are in that script)
#
# --disk plain   the guest's writes all reach the disk image (killing QEMU drops only the
#                guest's own caches)
# --disk drop|tear  the data disk is served by scripts/lossy_disk.py: writes the guest did not
#                flush are dropped (or a random part of them torn in) at each cut
# --window S    the cut comes at a random moment 0..S seconds after the workload started
# --out DIR      where the images, logs and hub database go (default target/campaign/BOARD);
#                campaigns with different DIRs can run side by side
# --no-faults    no disk-full (cycles 5, 15, ...) or read-only (cycles 10, 20, ...) faults: in
#                those, the data partition fills up for 12 s (the agent must report it, keep
#                supervising, and recover: a new OTA install works, writes are acknowledged
#                again) or an ext4 error turns it read-only (reported, apps supervised)
# --expect-fail  succeed only if some cycle fails (the campaign's self-test with an agent
#                built without the queue's fsync: GWE_AGENT_FEATURES=test-skip-queue-fsync)
# --resume       go on with the paused campaign in DIR: same disk, hub database, agent image,
#                packages and bookkeeping, from the cycle after the last one it finished
#
# A campaign pauses after the current cycle's power cut on SIGINT/SIGTERM or when DIR/pause
# exists; its state (DIR/state.env) is saved after every cycle, so a long run (--cycles 1000)
# can be spread over several sittings.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --os-update ]; then
  shift
  exec python3 scripts/os_power_cut.py "$@"
fi
cycles=20 board=qemu-aarch64-virt disk=plain window=12 seed=$RANDOM expect_fail=0 out="" faults=1 resume=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles=$2; shift ;;
    --board) board=$2; shift ;;
    --disk) disk=$2; shift ;;
    --window) window=$2; shift ;;
    --seed) seed=$2; shift ;;
    --out) out=$2; shift ;;
    --expect-fail) expect_fail=1 ;;
    --no-faults) faults=0 ;;
    --resume) resume=1 ;;
    *) echo "usage: $0 [--cycles N] [--board B] [--disk plain|drop|tear] [--window S] [--seed S] [--out DIR] [--expect-fail]" >&2; exit 2 ;;
  esac
  shift
done
if [ "$resume" = 1 ]; then
  if [ -z "$out" ] || [ ! -f "$out/state.env" ]; then
    echo "--resume needs --out DIR of a paused campaign (DIR/state.env)" >&2
    exit 2
  fi
  # shellcheck source=/dev/null
  . "$out/state.env"
  rm -f "$out/pause"
fi
case "$disk" in plain | drop | tear) ;; *) echo "--disk is plain, drop or tear" >&2; exit 2 ;; esac
RANDOM=$seed
# shellcheck source=/dev/null
. "board-configs/$board/board.env"
[ "$resume" = 1 ] || features=${GWE_AGENT_FEATURES:-}
out=${out:-target/campaign/$board${features:+-$features}}
mkdir -p "$out"
out=$(cd "$out" && pwd)

cargo build -q --bin gwe
cargo build -q --manifest-path hub/Cargo.toml --bin gwe-hub
gwe=target/debug/gwe
# shellcheck source=scripts/board-host.sh
. scripts/board-host.sh
release_keys "$out" "$gwe"
if [ "$resume" = 1 ]; then
  : # the agent image the campaign started with, in $out
elif [ -n "$features" ]; then
  # Beside the real build, never in its place (cross-build.sh --variant).
  scripts/cross-build.sh "$RUST_TARGET" --variant "$features" > /dev/null
  agent_bin=target/variant-$features/$RUST_TARGET/release/gwe
else
  scripts/cross-build.sh "$RUST_TARGET" > /dev/null
  agent_bin=target/$RUST_TARGET/release/gwe
fi
data=$out/data.img
if [ "$resume" = 0 ]; then
  GWE_AGENT_BIN=$agent_bin GWE_IMAGE_OUT=$out GWE_ROOT_KEY=$root_pub GWE_KEYS_FILE=$keys_json scripts/build-image.sh "$board" > /dev/null
  rm -f "$data" "$out"/cycle*.log "$out"/cycle*.txt "$out/disk.log" "$out/state.env" "$out/pause"
  truncate -s "$DATA_SIZE" "$data"
  mkfs.ext4 -q -F "$data"
fi

qemu_pid="" hub_pid="" disk_pid=""
cleanup() {
  set +e
  [ -n "$qemu_pid" ] && kill -KILL "$qemu_pid" 2>/dev/null
  [ -n "$hub_pid" ] && kill -KILL "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null
  [ -n "$disk_pid" ] && kill -TERM "$disk_pid" 2>/dev/null && wait "$disk_pid" 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  true
}
trap cleanup EXIT
ns_up gwe-cut-$$

if [ "$disk" = plain ]; then
  drive="file=$data,format=raw,if=virtio"
else
  rm -f "$out/disk.sock"
  python3 scripts/lossy_disk.py "$data" "$out/disk.sock" --mode "$disk" --seed "$seed" --log "$out/disk.log" &
  disk_pid=$!
  for _ in $(seq 50); do [ -S "$out/disk.sock" ] && break; sleep 0.1; done
  drive="file=nbd+unix:///?socket=$out/disk.sock,format=raw,if=virtio"
fi
fault_of() { # fault_of CYCLE: the data partition's fault in that cycle, if any
  [ "$faults" = 1 ] || return 0
  case $(($1 % 10)) in 5) echo full ;; 0) echo ro ;; esac
}
boot() { # boot CYCLE: starts the board in the background
  local f
  f=$(fault_of "$1")
  # shellcheck disable=SC2086
  ip netns exec "$ns" $QEMU $QEMU_ARGS -nographic -no-reboot -kernel "$out/vmlinuz" -initrd "$out/initrd.gz" \
    -append "console=$CONSOLE panic=-1 quiet gwe.test=campaign gwe.cycle=$1${f:+ gwe.fault=$f}" \
    -drive "$drive" \
    -netdev user,id=n0 -device "virtio-net-pci,netdev=n0,mac=$NET_MAC,romfile=" < /dev/null > "$out/cycle$1.log" 2>&1 &
  qemu_pid=$!
}
cut_power() {
  kill -KILL "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=""
}

if [ "$resume" = 1 ]; then
  hub_up keep
else
  hub_up fresh
  whitelist
fi

# The OTA packages: three good versions of sensor, with 2 MB of data so that download, check
# and unpacking take a while on the board, and one that exits at once (rolled back). Each
# cycle installs one that is not current; every fourth cycle, the failing one.
pkgs=$out/pkgs
[ "$resume" = 1 ] || { rm -rf "$pkgs"; mkdir -p "$pkgs"; }
make_pkg() { # make_pkg VERSION good|bad: builds, signs and uploads; prints the files' digest
  local v=$1 src=$pkgs/src-$1
  cp -r board-configs/qemu-common/ota-sample/sensor "$src"
  echo "{\"name\": \"sensor\", \"version\": \"$v\", \"excludes\": [\"build.json\"]}" > "$src/build.json"
  head -c 2000000 /dev/urandom > "$src/calibration.bin"
  [ "$2" = bad ] && printf '#!/bin/sh\necho "sensor %s: cannot start"\nexit 1\n' "$v" > "$src/run.sh"
  local pkg
  # Each cycle installs a version that is not current, older ones too: signed to allow that.
  pkg=$("$gwe" pkg build "$src" --out "$pkgs" --key "$key" --vendor gwe --model "$model" --allow-downgrade)
  upload "$pkg" "$pkg.meta"
  rm -rf "$pkgs/x-$v" && mkdir -p "$pkgs/x-$v" && tar -xzf "$pkg" -C "$pkgs/x-$v"
  (cd "$pkgs/x-$v" && find . -type f | sort | xargs sha256sum) | sha256sum | cut -c1-16
}
declare -A digest_of
goods=(2.1 2.2 2.3) bad=2.9
if [ "$resume" = 1 ]; then
  # shellcheck disable=SC2154 # from state.env
  for v in "${!saved_digest[@]}"; do digest_of[$v]=${saved_digest[$v]}; done
else
  for v in "${goods[@]}"; do digest_of[$v]=$(make_pkg "$v" good); done
  digest_of[$bad]=$(make_pkg "$bad" bad)
fi
pick_good() { # pick_good VERSION...: a good version that is none of these
  local v
  for v in "${goods[@]}"; do
    case " $* " in *" $v "*) ;; *) echo "$v"; return ;; esac
  done
}
command_ota() { command_install "sensor.v$1.tar.gz"; }
command_edge() { # command_edge CYCLE: a new configuration for the apps
  op POST "/edge/cmd/$serial" -H 'Content-Type: application/json' \
    -d "{\"id\":\"c$1\",\"batch\":{\"gwe-hub\":{\"interval_ms\":$((1000 + $1)),\"filter\":[\"w1\"]}},\"config\":{\"cycle\":$1,\"pad\":\"$(head -c 600 /dev/zero | tr '\0' x)\"}}" > /dev/null
}
hub_values() { # the w1/w2 values the hub stored last (outstanding values are recent ones)
  for a in w1 w2; do
    { op GET "/api/v1/devices/$dev/dataports/$a/history?limit=20000" || echo '[]'; } |
      python3 -c "import json,sys; [print('$a', p['value']) for p in json.load(sys.stdin)]"
  done
}

fault_status_ok() { # fault_status_ok LOG ERROR: during the fault every app ran and the agent reported ERROR
  local n bad
  n=$(grep -ac '^GWE-STATUS' "$out/cycle$k.txt")
  bad=$(tr -d '\r' < "$1" | grep -a '^GWE-FAULT-STATUS' | awk -v n="$n" '{ c = gsub(/ RUNNING /, "&"); if (c < n) print }' | head -1)
  [ -z "$bad" ] || problems+=("an app stopped running during the fault: ${bad:0:120}")
  [ -n "$2" ] || return 0
  # The board asks every 2 s; a fault that came just now shows at the next look.
  local i
  for ((i = 0; i < 40; i++)); do
    # grep -c, not -q: under pipefail, a grep that stops at the first match fails the
    # pipeline when the writer before it gets SIGPIPE.
    grep -a '^GWE-FAULT-STATUS' "$1" | grep -c "fault: .*$2" > /dev/null && return 0
    sleep 0.2
  done
  problems+=("the agent did not report '$2' (gwe ctl status)")
}
fault_full() { # the disk fills up as the OTA download starts, then frees up; the agent must carry on
  wait_for "$log" "GWE-FAULT full" 60 || { problems+=("the disk did not fill"); return; }
  # shellcheck disable=SC2154
  command_ota "$new"
  wait_for "$log" "GWE-FAULT cleared" 60 || { problems+=("the disk-full fault did not end"); return; }
  # The install sent while the disk was full is refused and fetch_status says why, unless the
  # fetcher was still busy with an install the cut had interrupted (then it runs later).
  local fs hist
  hist=$(op GET "/api/v1/devices/$dev/dataports/fetch_status/history?limit=20" | json '"\n".join(p["value"] for p in v)' || true)
  # A refused install is a fault the agent must show; without one, the preallocated queue
  # and the edge store may well have met no full disk (then only the apps are checked).
  case "$hist" in
    *"No space left"* | *"not enough free space"*)
      fault_note="disk full: ota refused and reported"
      fault_status_ok "$log" "\(No space left\|disk is full\|not enough free space\)"
      ;;
    *)
      fault_note="disk full: ota came after it"
      fault_status_ok "$log" ""
      ;;
  esac
  # Recovery: a new install works now, and the apps' writes are acknowledged again.
  local again
  again=$(pick_good "$ver" "$new")
  command_ota "$again"
  local i
  for ((i = 0; i < 120; i++)); do
    fs=$(dataport fetch_status || true)
    case "$fs" in "installed sensor $again"*) break ;; esac
    sleep 0.5
  done
  case "$fs" in "installed sensor $again"*) ;; *) problems+=("no recovery: installing $again after the disk-full fault: ${fs:0:80}") ;; esac
  tr -d '\r' < "$log" | sed -n '/GWE-FAULT cleared/,$p' | grep -c 'GWE-ACKED' > /dev/null ||
    problems+=("no value acknowledged after the disk had space again")
  good_versions="$was_versions $new $again"
  fault_note="$fault_note, recovered"
}
fault_ro() { # an ext4 error makes the partition read-only; the agent must keep supervising
  wait_for "$log" "GWE-FAULT stays" 60 || { problems+=("the read-only fault did not come"); return; }
  grep -aq 'GWE-FAULT ro: writes refused' "$log" || problems+=("the partition did not turn read-only")
  fault_status_ok "$log" "Read-only file system"
  fault_note="read-only: reported, supervised"
}

digest_of[none]=""
outstanding=$out/outstanding.txt   # acknowledged values not yet seen at the hub
if [ "$resume" = 0 ]; then
  good_versions="none"      # versions that may be current after the cut (old or new)
  config_ok="none"          # apps.json "cycle" values that may be there after the cut
  : > "$outstanding"
  failed=0 total_acked=0 boots=0 next=1
else
  echo "resuming at cycle $next of $cycles (disk: $disk, seed $seed): $total_acked values acknowledged so far, $((boots - failed)) of $boots boots passed"
  if [ -s "$out/cycle$next.log" ]; then
    # The campaign stopped in the middle of this cycle (killed, not paused): what the board
    # acknowledged then must still be there, and the commands sent then may have come.
    grep -ao 'GWE-ACKED w[12] [0-9.]*' "$out/cycle$next.log" | cut -d' ' -f2- >> "$outstanding" || true
    good_versions="$good_versions ${goods[*]}" config_ok="$config_ok $next"
    echo "cycle $next was cut short: its acknowledged values are checked, its OTA and edge command may have come"
  fi
  RANDOM=$((seed + next))
fi
save_state() { # save_state NEXT-CYCLE: what --resume needs, replaced whole
  {
    declare -p cycles board disk window seed faults features expect_fail model serial dev
    declare -p good_versions config_ok failed total_acked boots
    echo "next=$1"
    local v
    echo "declare -A saved_digest=()"
    for v in "${goods[@]}" "$bad"; do echo "saved_digest[$v]=${digest_of[$v]}"; done
  } > "$out/state.env.tmp"
  mv "$out/state.env.tmp" "$out/state.env"
}
pause_asked=0
trap 'pause_asked=1' INT TERM
save_state "$next"
printf '%-5s %-7s %-6s %-34s %-28s %s\n' cycle cut_at acked "in flight at the cut" disk checks
for ((k = next; k <= cycles + 1; k++)); do
  log=$out/cycle$k.log
  : > "$log"
  boot "$k"
  boots=$((boots + 1))
  problems=()
  if ! wait_for "$log" GWE-CHECK-END 240; then
    problems+=("the agent did not come up by itself (no check after 240 s)")
  else
    log=$out/cycle$k.txt
    tr -d '\r' < "$out/cycle$k.log" > "$log"
    # files: gwe check on the board
    rc=$(grep -ao 'GWE-CHECK-RC [0-9]*' "$log" | cut -d' ' -f2)
    [ "$rc" = 0 ] || problems+=("gwe check: $(grep -a '^GWE-CHECK error' "$log" | head -3 | tr '\n' ' ')")
    # acked: everything acknowledged so far is queued on the board or at the hub
    hub_values | sort -u > "$out/hub.txt"
    { grep -ao 'GWE-QUEUED w[12] [0-9.]*' "$log" | cut -d' ' -f2- || true; cat "$out/hub.txt"; } | sort -u > "$out/present.txt"
    missing=$(sort -u "$outstanding" | comm -23 - "$out/present.txt" | wc -l)
    [ "$missing" -eq 0 ] || problems+=("$missing acknowledged values lost: $(sort -u "$outstanding" | comm -23 - "$out/present.txt" | head -3 | tr '\n' ' ')")
    sort -u "$outstanding" | comm -23 - "$out/hub.txt" > "$out/still.txt"
    mv "$out/still.txt" "$outstanding"
    # apps: all RUNNING; the OTA app old or new and whole
    notrun=$(grep -a '^GWE-STATUS' "$log" | grep -v ' RUNNING ' | cut -d' ' -f2-3 | tr '\n' ' ' || true)
    [ -z "$notrun" ] || problems+=("not RUNNING: $notrun")
    for a in w1 w2 chatter logger idler ticker; do
      grep -aq "^GWE-STATUS $a  *RUNNING" "$log" || problems+=("$a is not RUNNING")
    done
    app=$(grep -ao 'GWE-APP sensor [^ ]* [0-9a-f]*' "$log" | head -1 || true)
    ver=none
    if [ -n "$app" ]; then
      read -r _ _ ver dig <<< "$app"
      case " $good_versions " in
        *" $ver "*) [ "$dig" = "${digest_of[$ver]}" ] || problems+=("sensor $ver is not whole (files $dig, package ${digest_of[$ver]})") ;;
        *) problems+=("sensor $ver is current; expected one of: $good_versions") ;;
      esac
      grep -aq "^GWE-STATUS sensor  *RUNNING" "$log" || problems+=("sensor is not RUNNING")
    else
      case " $good_versions " in *" none "*) ;; *) problems+=("no sensor version is current; expected one of: $good_versions") ;; esac
    fi
    # config: old or new
    conf=$(grep -a '^GWE-CONFIG' "$log" | head -1 | cut -d' ' -f2-)
    cyc=none
    if [ -n "$conf" ]; then
      cyc=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["cycle"])' "$conf" 2>/dev/null) ||
        problems+=("apps.json does not parse: ${conf:0:60}")
    fi
    case " $config_ok " in *" $cyc "*) ;; *) problems+=("apps.json is from cycle $cyc; expected one of: $config_ok") ;; esac
    qstats=$(grep -a '^GWE-QSTATS' "$log" | head -1 | cut -d' ' -f2-)
    lost=$(python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(v["lost_records"] + v["corrupt_segments"])' "$qstats" 2>/dev/null || echo "?")
    [ "$lost" = 0 ] || problems+=("queue counted $lost lost records or corrupt segments")
  fi
  log=$out/cycle$k.log
  if [ "$k" -gt "$cycles" ]; then
    # The last boot only checks.
    cut_at="-" inflight="(final check)" acked=0 dsk=-
  else
    # This cycle's work: an OTA install and an edge command, then the cut at a random moment.
    # What the board reported before the work; when it reported nothing (it failed), what
    # was possible before stays possible.
    ver=$(grep -ao 'GWE-APP sensor [^ ]*' "$log" | head -1 | cut -d' ' -f3 || true)
    if grep -aq GWE-CHECK-END "$log"; then
      ver=${ver:-none} was_versions=$ver was_config=$cyc
    else
      ver=${good_versions%% *} was_versions=$good_versions was_config=$config_ok
    fi
    new=$(pick_good "$ver") kind=good
    [ $((k % 4)) -eq 0 ] && new=$bad kind=bad
    fault=$(fault_of "$k") fault_note=""
    [ -n "$fault" ] || command_ota "$new"
    command_edge "$k"
    if [ "$kind" = good ]; then good_versions="$was_versions $new"; else good_versions="$was_versions"; fi
    config_ok="$was_config $k"
    case "$fault" in
      full) fault_full ;;
      ro) fault_ro; good_versions="$was_versions" ;;
    esac
    cut_ms=$((RANDOM % (window * 1000)))
    sleep "$(printf '%d.%03d' $((cut_ms / 1000)) $((cut_ms % 1000)))"
    fs=$(dataport fetch_status 2>/dev/null || echo "?")
    fs=${fs%%$'\n'*}
    edge=$(op GET "/edge/cmd/$serial" | python3 -c 'import json,sys; s=json.load(sys.stdin).get("state") or {}; c=s.get("last_command") or {}; print(c.get("id","-"))' 2>/dev/null || echo "?")
    cut_power
    dsk=plain
    if [ "$disk" != plain ]; then
      # What the lossy disk did with its write cache at this cut (it logs once it saw it).
      for _ in $(seq 50); do [ "$(wc -l < "$out/disk.log")" -ge "$k" ] && break; sleep 0.1; done
      dsk=$(sed -n "${k}p" "$out/disk.log" | sed -n 's/.*; \([0-9]*\) unflushed blocks: \([0-9]*\) reached.*/\1 unflushed, \2 kept/p')
    fi
    grep -ao 'GWE-ACKED w[12] [0-9.]*' "$log" | cut -d' ' -f2- >> "$outstanding" || true
    acked=$(grep -ac 'GWE-ACKED w[12]' "$log" || true)
    total_acked=$((total_acked + acked))
    cut_at=$(printf '%d.%03ds' $((cut_ms / 1000)) $((cut_ms % 1000)))
    ota="ota $new($kind): ${fs:0:24}"
    [ "$fault" = ro ] && ota="no ota"
    inflight="$ota; edge c$k:$([ "$edge" = "c$k" ] && echo applied || echo pending)"
    [ -z "$fault_note" ] || inflight="$fault_note; $inflight"
  fi
  if [ ${#problems[@]} -eq 0 ]; then
    checks="ok (sensor $ver, config $cyc)"
  else
    checks="FAIL: $(printf '%s; ' "${problems[@]}")"
    failed=$((failed + 1))
  fi
  printf '%-5s %-7s %-6s %-34s %-28s %s\n' "$k" "$cut_at" "$acked" "$inflight" "$dsk" "$checks"
  [ "$k" -gt "$cycles" ] && cut_power
  save_state $((k + 1))
  if [ "$k" -le "$cycles" ] && { [ "$pause_asked" = 1 ] || [ -e "$out/pause" ]; }; then
    echo "paused after cycle $k of $cycles: $total_acked values acknowledged, $((boots - failed)) of $boots boots passed;" \
      "go on with: $0 --resume --out $out"
    exit 0
  fi
  if [ "$expect_fail" = 1 ] && [ "$failed" -gt 0 ]; then
    cut_power
    break
  fi
done
echo "summary: $cycles power cuts on $board (disk: $disk, seed $seed${features:+, agent features: $features}):" \
  "$total_acked values acknowledged, $((boots - failed)) of $boots boots passed every check"
if [ "$expect_fail" = 1 ]; then
  [ "$failed" -gt 0 ] && { echo "the campaign caught the broken agent, as it must"; exit 0; }
  echo "the campaign did NOT catch the broken agent" >&2
  exit 1
fi
[ "$failed" -eq 0 ]
