#!/usr/bin/env bash
# The full power-cut campaign: N cycles spread over several emulated boards that run side by
# side, each a scripts/power-cut-campaign.sh of its own (own data disk, hub, seed and out
# directory), half of them on a disk that tears what was not flushed and half on a plain one.
#
#   scripts/power-cut-full.sh [--cycles 1000] [--boards 6] [--seed S] [--out DIR] [campaign options...]
#   scripts/power-cut-full.sh --resume [--out DIR]
#
# Why side by side: a cycle spends a good part of its time waiting, in wall-clock time, for
# the moment of the cut while the board burns its CPU on the workload. On 2 cores, measured
# over this project's full run: two boards finish 5.2 cycles a minute, four 6.5 to 7, six
# 7.9, so the 1,000 cuts take a little over 2 hours with six instead of well over 3 with two.
#
# Each board's table goes to DIR/board-K.log as it runs; this script prints every board's
# summary line and the total at the end, and fails if any board failed a check.
# Ctrl-C or SIGTERM pauses every board after its current cut (each campaign's own pause;
# `touch DIR/board-K/pause` pauses one board); --resume goes on with all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=1000 boards=6 seed=$RANDOM out=target/campaign-full resume=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles=$2; shift ;;
    --boards) boards=$2; shift ;;
    --seed) seed=$2; shift ;;
    --out) out=$2; shift ;;
    --resume) resume=1 ;;
    --disk)
      echo "the full campaign picks each board's disk (tear, plain, tear, ...)" >&2
      exit 2
      ;;
    *) extra+=("$1") ;;
  esac
  shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ "$resume" = 1 ]; then
  boards=$(find "$out" -maxdepth 1 -type d -name 'board-*' | wc -l)
else
  if [ "$boards" -lt 1 ] || [ "$cycles" -lt "$boards" ]; then
    echo "--cycles must be at least --boards (at least 1)" >&2
    exit 2
  fi
  # Built once before the boards start: each board's own builds then find them done.
  cargo build -q --bin gwe
  cargo build -q --manifest-path hub/Cargo.toml --bin gwe-hub
  scripts/cross-build.sh aarch64-unknown-linux-musl > /dev/null
fi
pids=()
for ((b = 1; b <= boards; b++)); do
  dir=$out/board-$b
  if [ "$resume" = 1 ]; then
    [ -f "$dir/state.env" ] || continue
    args=(--resume --out "$dir")
  else
    n=$((cycles / boards + (b <= cycles % boards ? 1 : 0)))
    disk=tear
    [ $((b % 2)) -eq 0 ] && disk=plain
    args=(--cycles "$n" --disk "$disk" --seed $((seed + 1000 * b)) --out "$dir" "${extra[@]}")
  fi
  bash scripts/power-cut-campaign.sh "${args[@]}" >> "$out/board-$b.log" 2>&1 < /dev/null &
  pids+=($!)
  echo "board $b: scripts/power-cut-campaign.sh ${args[*]} (table in $out/board-$b.log)"
done
[ ${#pids[@]} -gt 0 ] || { echo "no board to resume in $out" >&2; exit 2; }
trap 'kill -TERM "${pids[@]}" 2> /dev/null' INT TERM
rc=0
for p in "${pids[@]}"; do
  # A signal ends `wait` early while the board is still pausing: wait again until it is gone.
  until wait "$p"; do kill -0 "$p" 2> /dev/null || { rc=1; break; }; done
done
counts() { # counts STATE.ENV: cuts done, values acknowledged, boots, failed boots
  # shellcheck source=/dev/null disable=SC2154 # the campaign's saved state
  (. "$1" && echo "$((next - 1 > cycles ? cycles : next - 1)) $total_acked $boots $failed")
}
total_cuts=0 total_acked=0 total_boots=0 total_passed=0 paused=0
for ((b = 1; b <= boards; b++)); do
  log=$out/board-$b.log
  [ -f "$log" ] || continue
  last=$(grep -a '^summary:\|^paused after' "$log" | tail -1 || true)
  echo "board $b: ${last:-no summary (see $log)}"
  case "$last" in paused*) paused=1 ;; esac
  [ -f "$out/board-$b/state.env" ] || continue
  read -r c a n f <<< "$(counts "$out/board-$b/state.env")"
  total_cuts=$((total_cuts + c)) total_acked=$((total_acked + a))
  total_boots=$((total_boots + n)) total_passed=$((total_passed + n - f))
done
note=""
[ "$paused" = 0 ] || note=" (paused; go on with --resume --out $out)"
echo "total: $total_cuts power cuts on $boards boards: $total_acked values acknowledged," \
  "$total_passed of $total_boots boots passed every check$note"
exit "$rc"
