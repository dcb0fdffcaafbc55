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
# shellcheck source=scripts/sqlite-flags.sh
. scripts/sqlite-flags.sh
# No unwind tables in the C code the agent compiles in (ring, and SQLite in the default
# build): with panic = "abort" nothing unwinds through it. -131 KB on aarch64 with SQLite.
# (Rust's own come mostly from the precompiled std and stay.)
export "CFLAGS_${target//-/_}=-fno-asynchronous-unwind-tables -fno-unwind-tables"
# Linked by lld (Debian's lld-16) with packed relative relocations (DT_RELR, glibc 2.36 and
# newer): the position-independent binary's relocation table goes from 145 KB to 2 KB on
# aarch64, and so does what the loader reads of it at start. Binutils 2.40 cannot pack them
# for aarch64.
triple_env=${target//-/_}
triple_env=${triple_env^^}
rustflags_var=CARGO_TARGET_${triple_env}_RUSTFLAGS
export "$rustflags_var=${!rustflags_var:-} -C link-arg=-B/usr/lib/llvm-16/bin -C link-arg=-fuse-ld=lld -C link-arg=-Wl,-z,pack-relative-relocs"
# The standard library is compiled from source with the agent (Debian's rust-web-src and
# cargo-web, both from scripts/setup-cross.sh): optimized for size and link-time optimized
# together with the agent, without backtrace symbolization (a panic still prints its message
# and location). -654 KB on aarch64. -Z build-std is unstable, so this build sets
# RUSTC_BOOTSTRAP=1 for that one compiler. GWE_PREBUILT_STD=1 links Debian's precompiled std
# instead, as the Yocto and Buildroot recipes do.
if [ "${GWE_PREBUILT_STD:-0}" = 1 ]; then
  RUSTC=/usr/bin/rustc cargo build --locked --release --target "$target" --bin gwe "$@"
else
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --locked --release \
    --target "$target" --bin gwe -Z build-std=std,panic_abort -Z build-std-features= "$@"
fi
bin="${CARGO_TARGET_DIR:-target}/$target/release/gwe"
"$strip" "$bin" 2>/dev/null || true
echo "$bin $(stat -c %s "$bin") bytes"
