#!/usr/bin/env bash
# Cargo's runner for a test binary under qemu-user:  qemu-runner.sh QEMU SYSROOT BINARY ARGS...
# qemu-user can deadlock a guest's fork (a child of a multi-threaded process sticks on a
# lock qemu held at the fork, before it reaches exec); a real ARM board does not. So a test
# binary that has not finished in GWE_QEMU_TIMEOUT seconds (default 600) is killed with
# everything it started and run once more, saying so. A second hang fails the run.
set -uo pipefail
qemu=$1 sysroot=$2
shift 2
# The target's libraries, for this binary and for the ARM programs it starts (binfmt_misc).
export QEMU_LD_PREFIX=$sysroot
limit=${GWE_QEMU_TIMEOUT:-600}
for attempt in 1 2; do
  timeout --kill-after=10 "$limit" "$qemu" -L "$sysroot" "$@"
  rc=$?
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] || exit "$rc"
  echo "qemu-runner: $(basename "$1") did not finish in $limit s under $qemu (attempt $attempt)" >&2
done
exit 124
