#!/usr/bin/env bash
# SIGKILL crash campaigns.
#   scripts/crash-campaign.sh queue [--cycles N]   the producer killed mid-append (GMQ queue)
#   scripts/crash-campaign.sh ota [--cycles N]     the agent killed mid-install (OTA)
# N defaults to 20, as in CI; the full campaigns are 1000.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: $0 queue|ota [--cycles N]" >&2; exit 2; }
case "${1:-}" in
  queue) test=queue_crash; var=GWE_CRASH_CYCLES ;;
  ota) test=ota_crash; var=GWE_OTA_CRASH_CYCLES ;;
  *) usage ;;
esac
shift
cycles=20
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles="$2"; shift 2 ;;
    *) usage ;;
  esac
done
env "$var=$cycles" cargo test --release --locked --test "$test" -- --nocapture --test-threads=1
