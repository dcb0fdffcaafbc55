#!/usr/bin/env bash
# Supervises the same 20 programs with gwe and with supervisord (from PyPI) in one run and
# prints each supervisor's resident memory, CPU time while idle, and app crash-to-restart
# time, with ratios.
#   scripts/bench-supervisor.sh [--idle-seconds N]    (default 60; CI runs 10)
set -euo pipefail
cd "$(dirname "$0")/.."
idle=60
while [ $# -gt 0 ]; do
  case "$1" in
    --idle-seconds) idle="$2"; shift 2 ;;
    *) echo "usage: $0 [--idle-seconds N]" >&2; exit 2 ;;
  esac
done
venv=target/bench-venv
if [ ! -x "$venv/bin/supervisord" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet supervisor
fi
# The app-hosting agent alone, without the edge paths (which add 87 KB of binary);
# GWE_FEATURES= (empty) measures the default build.
# shellcheck disable=SC2086
cargo build --release --locked --bin gwe ${GWE_FEATURES---no-default-features}
python3 scripts/bench_supervisor.py --gwe "${CARGO_TARGET_DIR:-target}/release/gwe" --supervisord "$venv/bin/supervisord" \
  --idle-seconds "$idle"
