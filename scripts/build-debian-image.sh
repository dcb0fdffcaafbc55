#!/usr/bin/env bash
# Assembles a bootable QEMU board whose root filesystem is Debian for ARM, made from Debian's
# packages by mmdebstrap, with systemd as init and the agent installed as firmware builds
# install it (the binary, init/systemd/gwe.service enabled, /etc/gwe):
#   target/boards/BOARD/vmlinuz      Debian's kernel
#   target/boards/BOARD/initrd.gz    BusyBox: loads the virtio modules, mounts the root disk
#                                    and hands over to systemd (switch_root)
#   target/boards/BOARD/root.img     the root filesystem (ext4, read-write)
#   scripts/build-debian-image.sh qemu-aarch64-debian
# GWE_ROOT_KEY (64 hex digits) and GWE_KEYS_FILE (a keys document it signed) bake the OTA
# trust in, as build-image.sh does; GWE_EXTRA_FILES (a directory) is copied to /root.
# The Debian root is cached in target/boards/cache (it takes about 2 minutes to make).
set -euo pipefail
cd "$(dirname "$0")/.."
board=${1:?usage: $0 BOARD}
cfg=board-configs/$board
# shellcheck source=/dev/null
. "$cfg/board.env"

command -v mmdebstrap >/dev/null || apt-get install -y -qq mmdebstrap >/dev/null
scripts/cross-build.sh "$RUST_TARGET" >/dev/null
bin=target/$RUST_TARGET/release/gwe

# Kernel and BusyBox (for the initramfs), as build-image.sh takes them.
# shellcheck source=scripts/board-kernel.sh
. scripts/board-kernel.sh
kernel_and_busybox

# The Debian root, made once per suite, architecture and package list.
tag=$(echo "$DEBIAN_SUITE $DEB_ARCH $DEBIAN_PACKAGES" | sha256sum | cut -c1-12)
tarball=target/boards/cache/debian-$DEBIAN_SUITE-$DEB_ARCH-$tag.tar
if [ ! -f "$tarball" ]; then
  mmdebstrap --quiet --mode=root --format=tar --architectures="$DEB_ARCH" --variant=minbase \
    --include="$DEBIAN_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$DEBIAN_SUITE" "$tarball.tmp" http://deb.debian.org/debian
  mv "$tarball.tmp" "$tarball"
fi

out=target/boards/$board
root=$out/rootfs
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$tarball"
cp -a "$cfg/rootfs/." "$root/"
echo "$board" > "$root/etc/hostname"
# The journal on disk (journald's "auto" storage): the test reads the last boot's.
mkdir -p "$root/var/log/journal"
# Quiet sample apps (the console is the test's command line): a logger and an idler.
mkdir -p "$root/etc/gwe/programs.d"
cp board-configs/qemu-common/rootfs/etc/gwe/programs.d/more-apps.conf "$root/etc/gwe/programs.d/"
if [ -n "${GWE_ROOT_KEY:-}" ]; then
  install -m 0644 "$GWE_KEYS_FILE" "$root/etc/gwe/keys.json"
  printf '\n[ota]\nroot_keys = ["%s"]\nkeys_file = "/etc/gwe/keys.json"\n' "$GWE_ROOT_KEY" >> "$root/etc/gwe/gwe.toml"
fi
[ -n "${GWE_EXTRA_FILES:-}" ] && cp -a "$GWE_EXTRA_FILES/." "$root/root/"

# The agent, installed as the Yocto recipe and the Buildroot package install it.
install -D -m 0755 "$bin" "$root/usr/bin/gwe"
install -D -m 0644 init/systemd/gwe.service "$root/usr/lib/systemd/system/gwe.service"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sfn /usr/lib/systemd/system/gwe.service "$root/etc/systemd/system/multi-user.target.wants/gwe.service"

rm -f "$out/root.img"
truncate -s "$ROOT_SIZE" "$out/root.img"
mkfs.ext4 -q -F -L root -d "$root" "$out/root.img"

# The initramfs: BusyBox, the modules the root disk and NIC need, and an /init that mounts
# the root disk and starts systemd on it.
ird=$out/initramfs
rm -rf "$ird"
mkdir -p "$ird"/{bin,proc,sys,dev,newroot,lib/modules}
cp "$x/bin/busybox" "$ird/bin/busybox"
for a in sh mount umount insmod sleep switch_root mkdir cat; do ln -s busybox "$ird/bin/$a"; done
copy_modules "$ird/lib/modules" "$ird/lib/modules/order"
cat > "$ird/init" <<INIT
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in \$(cat /lib/modules/order); do insmod /lib/modules/\$m.ko; done
n=0
while [ ! -b $ROOT_DEVICE ] && [ \$n -lt 50 ]; do sleep 0.1; n=\$((n + 1)); done
mount -t ext4 -o rw $ROOT_DEVICE /newroot || { echo "initramfs: cannot mount $ROOT_DEVICE"; exec sh; }
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
INIT
chmod 0755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.gz"
cp "$(find "$x/boot" -name 'vmlinuz-*' | head -1)" "$out/vmlinuz"
echo "$out: kernel $kpkg, Debian $DEBIAN_SUITE root $(du -sm "$root" | cut -f1) MB with systemd, agent $(stat -c %s "$bin") bytes"
