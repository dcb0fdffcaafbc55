#!/usr/bin/env bash
# Cross-builds the agent with Debian's rustc (scripts/setup-cross.sh) and rustup's cargo.
#   scripts/cross-build.sh aarch64|armv7 [cargo build args...]
# Prints the path of the stripped release binary and its size.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  aarch64) target=aarch64-unknown-linux-gnu; strip=aarch64-linux-gnu-strip ;;
  armv7) target=armv7-unknown-linux-gnueabihf; strip=arm-linux-gnueabihf-strip ;;
  *) echo "usage: $0 aarch64|armv7 [cargo args]" >&2; exit 2 ;;
esac
shift
scripts/setup-cross.sh >/dev/null
# No unwind tables in the C code the agent compiles in (ring, and SQLite in the default
# build): with panic = "abort" nothing unwinds through it. -131 KB on aarch64 with SQLite.
# (Rust's own come mostly from the precompiled std and stay.)
export "CFLAGS_${target//-/_}=-fno-asynchronous-unwind-tables -fno-unwind-tables"
RUSTC=/usr/bin/rustc cargo build --locked --release --target "$target" --bin gwe "$@"
bin="${CARGO_TARGET_DIR:-target}/$target/release/gwe"
"$strip" "$bin" 2>/dev/null || true
echo "$bin $(stat -c %s "$bin") bytes"
