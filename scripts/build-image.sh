#!/usr/bin/env bash
# Assembles a bootable image for a QEMU board from Debian's ARM kernel and BusyBox:
#   target/boards/BOARD/vmlinuz      the kernel
#   target/boards/BOARD/initrd.gz    the root filesystem (read-only at run time: the agent
#                                    writes only to the data partition, /run and /tmp)
# The data partition is made by the boot test (a blank ext4 image).
#   scripts/build-image.sh qemu-aarch64-virt
# GWE_ROOT_KEY (64 hex digits) and GWE_KEYS_FILE (a keys document it signed) bake the OTA
# trust into the board, as a firmware build does: root_keys in /etc/gwe/gwe.toml and the
# keys document as /etc/gwe/keys.json (docs/ota-format.md, "Release metadata").
# GWE_AGENT_BIN puts that agent binary in the image instead of a fresh release build, and
# GWE_IMAGE_OUT writes the image there instead of target/boards/BOARD (the power-cut
# campaign's self-test boots an agent variant without touching the real image).
set -euo pipefail
cd "$(dirname "$0")/.."
board=${1:?usage: $0 BOARD}
cfg=board-configs/$board
# shellcheck source=/dev/null
. "$cfg/board.env"

case "$RUST_TARGET" in
  aarch64-*) readelf=aarch64-linux-gnu-readelf; qemu_user=qemu-aarch64-static ;;
  armv7-*) readelf=arm-linux-gnueabihf-readelf; qemu_user=qemu-arm-static ;;
  *) echo "unknown target $RUST_TARGET" >&2; exit 1 ;;
esac
if [ -n "${GWE_AGENT_BIN:-}" ]; then
  bin=$GWE_AGENT_BIN
else
  scripts/cross-build.sh "$RUST_TARGET" >/dev/null
  bin=target/$RUST_TARGET/release/gwe
fi

# shellcheck source=scripts/board-kernel.sh
. scripts/board-kernel.sh
kernel_and_busybox

out=${GWE_IMAGE_OUT:-target/boards/$board}
root=$out/rootfs
rm -rf "$root"
mkdir -p "$out" "$root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,run,tmp,var/lib/gwe,var/log/gwe,var/run,etc/init.d}
# Files the QEMU boards share, then the board's own.
[ -n "${COMMON_ROOTFS:-}" ] && cp -a "board-configs/$COMMON_ROOTFS/rootfs/." "$root/"
cp -a "$cfg/rootfs/." "$root/"
if [ -n "${GWE_ROOT_KEY:-}" ]; then
  install -m 0644 "$GWE_KEYS_FILE" "$root/etc/gwe/keys.json"
  printf '\n[ota]\nroot_keys = ["%s"]\nkeys_file = "/etc/gwe/keys.json"\n' "$GWE_ROOT_KEY" >> "$root/etc/gwe/gwe.toml"
fi

# BusyBox and its applets; busybox as /init runs its init applet.
cp "$x/bin/busybox" "$root/bin/busybox"
for applet in $("$qemu_user" "$x/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -sf ../bin/busybox "$root/sbin/init"
ln -sf bin/busybox "$root/init"

# The agent, its init script, and the C libraries it links (none when it is static).
install -m 0755 "$bin" "$root/usr/bin/gwe"
install -m 0755 init/sysv/gwe "$root/etc/init.d/gwe"
if "$readelf" -l "$bin" | grep -q INTERP; then
  for lib in $("$readelf" -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p') "$LOADER"; do
    cp -L "$SYSROOT/lib/$lib" "$root/lib/$lib"
  done
fi

# Kernel modules the board needs, in load order.
copy_modules "$root/lib/modules" "$root/etc/modules"

cp "$(find "$x/boot" -name 'vmlinuz-*' | head -1)" "$out/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.gz"
echo "$out: kernel $kpkg, initrd $(stat -c %s "$out/initrd.gz") bytes, agent $(stat -c %s "$bin") bytes"
