#!/usr/bin/env bash
# Runs the whole test suite for aarch64 and armv7 under qemu-user (armv7 is 32-bit: it finds
# offset, size and alignment bugs that x86_64 hides). Child processes the tests start (the
# agent binary, the crash-harness child) run through binfmt_misc with the matching qemu.
#   scripts/test-arm.sh [--no-run] [aarch64|armv7]...     (default both)
# --no-run builds the test binaries only (CI builds them in the background, then runs them).
# Both targets build in one cargo invocation (its jobs fill both cores) into target/arm
# (CARGO_TARGET_DIR), apart from the native builds, so neither waits on the other's lock.
# The campaigns inside the suite take their sizes from the environment (tests/ota_crash.rs,
# tests/queue_crash.rs, tests/queue_props.rs); CI runs them smaller here than natively.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-cross.sh >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/arm}

run=1
if [ "${1:-}" = --no-run ]; then run=0; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)
args=()
for t in "${targets[@]}"; do
  case "$t" in
    aarch64) triple=aarch64-unknown-linux-gnu; sysroot=/usr/aarch64-linux-gnu; qemu="qemu-aarch64-static" ;;
    armv7) triple=armv7-unknown-linux-gnueabihf; sysroot=/usr/arm-linux-gnueabihf; qemu="qemu-arm-static" ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
  # A test binary that hangs (qemu-user's fork deadlock) is killed and rerun once: see
  # scripts/qemu-runner.sh, which also points qemu at the target's libraries.
  export "CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUNNER=$PWD/scripts/qemu-runner.sh $qemu $sysroot"
  args+=(--target "$triple")
done
if [ $run = 0 ]; then
  RUSTC=/usr/bin/rustc cargo test --locked "${args[@]}" --workspace --lib --bins --tests --no-run
  exit 0
fi

# binfmt_misc, so an ARM binary started by a test runs under qemu too. (Doctests are
# left to the native run: rustup's rustdoc has no ARM standard library here.)
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
for a in arm aarch64; do
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$a" ] || cat "/usr/lib/binfmt.d/qemu-$a.conf" > /proc/sys/fs/binfmt_misc/register
done
echo "=== ${args[*]} under qemu-user"
RUSTC=/usr/bin/rustc cargo test --locked "${args[@]}" --workspace --lib --bins --tests
