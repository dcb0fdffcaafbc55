#!/bin/sh
# qemu_aarch64_virt_gwe_rauc: the data partition (5) on /data, outside both root slots:
# the agent's queue, apps and state, and RAUC's own data, survive every update.
set -eu
target=$1
mkdir -p "$target/data"
grep -q '^/dev/vda5[[:space:]]' "$target/etc/fstab" ||
	printf '/dev/vda5\t/data\text4\tdefaults,noatime\t0\t2\n' >>"$target/etc/fstab"
