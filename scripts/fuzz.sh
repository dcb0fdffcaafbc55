#!/usr/bin/env bash
# Fuzz the queue's segment decoder with cargo-fuzz (libFuzzer).
#   scripts/fuzz.sh [--seconds N]    (default 30; CI runs the default)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=30
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    *) echo "usage: $0 [--seconds N]" >&2; exit 2 ;;
  esac
done
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# cargo-fuzz needs nightly flags: use the nightly toolchain when rustup has one, otherwise
# let the stable compiler accept them.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
mkdir -p fuzz/corpus/segment_reader
# Seed: a few valid records, so the fuzzer starts from the real format.
cargo run --quiet --example make-fuzz-seed -- fuzz/corpus/segment_reader/seed 2>/dev/null || true
cargo "${toolchain[@]}" fuzz run segment_reader -- -max_total_time="$seconds" -max_len=8192
