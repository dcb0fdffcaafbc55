#!/usr/bin/env bash
# Runs the whole test suite for aarch64 and armv7 under qemu-user (armv7 is 32-bit: it finds
# offset, size and alignment bugs that x86_64 hides). Child processes the tests start (the
# agent binary, the crash-harness child) run through binfmt_misc with the matching qemu.
#   scripts/test-arm.sh [aarch64|armv7]...     (default both)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-cross.sh >/dev/null

# A test binary that hangs (qemu-user's fork deadlock) is killed and rerun once: see
# scripts/qemu-runner.sh.
# binfmt_misc, so an ARM binary started by a test runs under qemu too. (Doctests are
# left to the native run: rustup's rustdoc has no ARM standard library here.)
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
for a in arm aarch64; do
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$a" ] || cat "/usr/lib/binfmt.d/qemu-$a.conf" > /proc/sys/fs/binfmt_misc/register
done

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)
for t in "${targets[@]}"; do
  case "$t" in
    aarch64) triple=aarch64-unknown-linux-gnu; sysroot=/usr/aarch64-linux-gnu; qemu="qemu-aarch64-static" ;;
    armv7) triple=armv7-unknown-linux-gnueabihf; sysroot=/usr/arm-linux-gnueabihf; qemu="qemu-arm-static" ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
  runner_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUNNER"
  echo "=== $triple under $qemu"
  env RUSTC=/usr/bin/rustc QEMU_LD_PREFIX="$sysroot" "$runner_var=$PWD/scripts/qemu-runner.sh $qemu $sysroot" \
    cargo test --locked --target "$triple" --workspace --lib --bins --tests
done
