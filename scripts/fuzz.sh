#!/usr/bin/env bash
# Fuzz every decoder of outside input with cargo-fuzz (libFuzzer):
#   segment_reader   the queue's segment decoder (a torn or corrupt flash page)
#   package_extract  the app package extractor (gzip + tar)
#   http_request     the agent's local API request reader (head, headers, chunked bodies)
#   form             the form, query, timestamp and header rules of the hub and the agent
#   edge_command     the edge command parser (what a hub's ctrlpoll hands the agent)
#   batch            the forwarder batch decoder (the hub's /gwe/v1/batch)
#
#   scripts/fuzz.sh [--seconds N] [--runs N] [TARGET...]
# --seconds: each target runs that long (default 10; CI runs 4);
# --runs: each target runs that many inputs instead (by hand: --runs 10000000).
# Prints each target's executions and exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=10
runs=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    -*) echo "usage: $0 [--seconds N] [--runs N] [TARGET...]" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(segment_reader package_extract http_request form edge_command batch release_metadata)
# A debug build: it only drives cargo and libFuzzer, and CI builds it on every run.
command -v cargo-fuzz >/dev/null || cargo install --locked --debug cargo-fuzz
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
mkdir -p fuzz/corpus/segment_reader
# The seed writer is an example of the agent's crate, built where the test suite builds it
# (cargo test builds the examples): in CI it is there already, and a build of its own would
# cost a debug build of the agent and its crates (150 s of CPU).
cargo run --quiet --locked --example make-fuzz-seed -- fuzz/corpus/segment_reader/seed 2>/dev/null || true
# Seeds: a real package, real requests and bodies, so the fuzzer starts deep.
mkdir -p fuzz/corpus/package_extract fuzz/corpus/http_request fuzz/corpus/form fuzz/corpus/edge_command fuzz/corpus/batch \
  fuzz/corpus/release_metadata
if [ ! -f fuzz/corpus/package_extract/seed ]; then
  tmp=$(mktemp -d)
  printf '#!/bin/sh\necho hi\n' > "$tmp/install.sh"
  printf '[supervisord]\ncommand=./run.sh\n' > "$tmp/supervisor.conf"
  ln -s install.sh "$tmp/link"
  # A plain tar behind a 0x01 byte: the target wraps it in gzip.
  { printf '\001'; tar -C "$tmp" -cf - .; } > fuzz/corpus/package_extract/seed
  rm -rf "$tmp"
fi
printf 'POST /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\nX-Exosite-CIK: 0123\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\r\ntemp=21.5' \
  > fuzz/corpus/http_request/seed
printf 'POST /onep:v1/stack/record HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nalias\r\n0\r\n\r\n' \
  > fuzz/corpus/http_request/chunked
printf 'alias=temp&1700000000.5=21%%2E5&b=x+y' > fuzz/corpus/form/seed
printf '{"id":"c1","batch":{"hub-a":{"interval_ms":2000,"filter":["temp*"]}},"config":{"rate":5}}' \
  > fuzz/corpus/edge_command/seed
# A DSSE envelope whose payload is release metadata (the signature is not a real one).
printf '{"payloadType":"application/vnd.gwe.release+json","payload":"%s","signatures":[{"keyid":"%s","sig":"%s"}]}' \
  "$(printf '{"name":"sensor","version":"1.0","sha256":"00","size":1,"target":{"vendor":"acme","model":"gw1","arch":"*"},"issued":1,"expires":2}' | base64 -w0)" \
  "$(printf '%064d' 0)" "$(head -c 64 /dev/zero | base64 -w0)" > fuzz/corpus/release_metadata/seed
printf 'GWB1\001\000\000\000\000\000\000\000\001\020\000\000\000\000\000\000\000\000\004temp21.5' \
  > fuzz/corpus/batch/seed

# Without a sanitizer, with debug assertions: the decoders are safe Rust (no unsafe code), so
# AddressSanitizer finds nothing there and costs a fifth more build; what can go wrong in
# safe Rust is a panic, and arithmetic that overflows (checked with debug assertions).
build=(--sanitizer none --debug-assertions)
limit=(-max_total_time="$seconds")
[ -n "$runs" ] && limit=(-runs="$runs")
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  echo "=== fuzz $t"
  if ! cargo "${toolchain[@]}" fuzz run "${build[@]}" "$t" -- "${limit[@]}" -max_len=8192 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz $t: a crash (the input is in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$log" || tail -n 5 "$log"
done
