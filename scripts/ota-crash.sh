#!/usr/bin/env bash
# SIGKILL campaign during OTA installs.
#   scripts/ota-crash.sh [--cycles N]     (default 20, as in CI; the full campaign is 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=20
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles="$2"; shift 2 ;;
    *) echo "usage: $0 [--cycles N]" >&2; exit 2 ;;
  esac
done
GWE_OTA_CRASH_CYCLES="$cycles" cargo test --release --locked --test ota_crash -- --nocapture --test-threads=1
