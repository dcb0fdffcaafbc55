#!/usr/bin/env bash
# Assembles a bootable QEMU board whose root filesystem is Debian for ARM, made from Debian's
# packages by mmdebstrap, with systemd as init and the agent installed as firmware builds
# install it (the binary, init/systemd/gwe.service enabled, /etc/gwe). Debian's U-Boot boots
# one of two root slots, counting tries (board-configs/BOARD/boot/boot.cmd), and RAUC from
# Debian updates the other one:
#   target/boards/BOARD/u-boot.bin    Debian's U-Boot for QEMU's virt machine (-bios)
#   target/boards/BOARD/disk.img      GPT: boot (boot.scr), the boot selection's U-Boot
#                                     environment, slot A, slot B, data
#   target/boards/BOARD/rootfs/       the slot's files (scripts/build-os-bundle.sh makes
#                                     RAUC bundles of it)
#   target/boards/BOARD/rauc/         the signing PKI of the bundles (made once, a test PKI:
#                                     RAUC_KEYRING, RAUC_CERT and RAUC_KEY give your own)
# Each slot holds its kernel (/boot/Image on arm64, /boot/zImage on armv7) and a BusyBox
# initramfs (/boot/initrd.gz) that loads the virtio modules (and ext4, where it is one),
# mounts the root= slot and hands over to systemd (switch_root). A board whose board.env
# names COMMON_ROOTFS takes that board's rootfs/ overlay, then its own, with its compatible
# string and model written into RAUC's system.conf and the agent's gwe.toml.
#   scripts/build-debian-image.sh qemu-aarch64-debian [--deps]     (--deps: the host tools only)
# GWE_ROOT_KEY (64 hex digits) and GWE_KEYS_FILE (a keys document it signed) bake the OTA
# trust in, as build-image.sh does; GWE_EXTRA_FILES (a directory) is copied to /root.
# The Debian root is cached in target/boards/cache (it takes about 2 minutes to make).
set -euo pipefail
cd "$(dirname "$0")/.."
board=${1:?usage: $0 BOARD}
cfg=board-configs/$board
# shellcheck source=/dev/null
. "$cfg/board.env"

# Host tools, from Debian: mmdebstrap with arch-test (its check that the board's
# architecture runs, through qemu-user), RAUC (bundles), squashfs-tools (RAUC's bundle
# format), u-boot-tools (mkimage), gdisk (sgdisk), kmod (depmod), libubootenv-tool.
missing=()
for t in mmdebstrap:mmdebstrap arch-test:arch-test rauc:rauc mksquashfs:squashfs-tools mkimage:u-boot-tools sgdisk:gdisk \
         depmod:kmod fw_setenv:libubootenv-tool; do
  PATH=$PATH:/usr/sbin:/sbin command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# --deps: only those (CI installs them first, then builds in its background lane).
[ "${2:-}" != --deps ] || exit 0
export PATH=$PATH:/usr/sbin:/sbin

scripts/cross-build.sh "$RUST_TARGET" >/dev/null
bin=target/$RUST_TARGET/release/gwe

# Kernel and BusyBox (for the initramfs), as build-image.sh takes them.
# shellcheck source=scripts/board-kernel.sh
. scripts/board-kernel.sh
kernel_and_busybox

out=target/boards/$board
mkdir -p "$out"

# Debian's U-Boot for QEMU (an architecture-independent package).
cache=target/boards/cache
ls "$cache"/u-boot-qemu_*.deb >/dev/null 2>&1 || (cd "$cache" && apt-get download u-boot-qemu 2>/dev/null)
rm -rf "$cache/u-boot-qemu"
for deb in "$cache"/u-boot-qemu_*.deb; do dpkg-deb -x "$deb" "$cache/u-boot-qemu"; done
cp "$cache/u-boot-qemu/usr/lib/u-boot/$UBOOT/u-boot.bin" "$out/u-boot.bin"

# The Debian root, made once per suite, architecture and package list. What a gateway's
# root does not need is left out: documentation, translations, the character set converters,
# udev's hardware database, and perl with usrmerge (scripts/debian-slim-root.sh; the board's
# packages name usr-is-merged for what depends on a merged root): a smaller slot is a
# smaller bundle and a shorter install.
slim=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/lib/*/gconv/*'
  --dpkgopt='path-exclude=/usr/lib/udev/hwdb.d/*'
  --customize-hook="$PWD/scripts/debian-slim-root.sh \"\$1\"")
tag=$(echo "$DEBIAN_SUITE $DEB_ARCH $DEBIAN_PACKAGES ${slim[*]} $(sha256sum < scripts/debian-slim-root.sh)" \
  | sha256sum | cut -c1-12)
tarball=$cache/debian-$DEBIAN_SUITE-$DEB_ARCH-$tag.tar
if [ ! -f "$tarball" ]; then
  mmdebstrap --quiet --mode=root --format=tar --architectures="$DEB_ARCH" --variant=minbase \
    --include="$DEBIAN_PACKAGES" "${slim[@]}" \
    "$DEBIAN_SUITE" "$tarball.tmp" http://deb.debian.org/debian
  mv "$tarball.tmp" "$tarball"
fi

# The bundles' signing PKI: a CA (the keyring the board trusts) and a signing certificate.
pki=$out/rauc
if [ -n "${RAUC_KEYRING:-}" ]; then
  keyring=$RAUC_KEYRING
else
  keyring=$pki/ca.pem
  if [ ! -f "$pki/signing.pem" ]; then
    mkdir -p "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/O=gwe test/CN=$board OS update CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/O=gwe test/CN=$board OS bundles" -keyout "$pki/signing.key" -out "$pki/signing.csr" 2>/dev/null
    openssl x509 -req -in "$pki/signing.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -out "$pki/signing.pem" 2>/dev/null
  fi
fi

root=$out/rootfs
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$tarball"
[ -z "${COMMON_ROOTFS:-}" ] || cp -a "board-configs/$COMMON_ROOTFS/rootfs/." "$root/"
[ ! -d "$cfg/rootfs" ] || cp -a "$cfg/rootfs/." "$root/"
sed -i "s/^compatible=.*/compatible=$RAUC_COMPATIBLE/" "$root/etc/rauc/system.conf"
sed -i "s/^model = .*/model = \"$board\"/" "$root/etc/gwe/gwe.toml"
echo "$board" > "$root/etc/hostname"
install -m 0644 "$keyring" "$root/etc/rauc/keyring.pem"
mkdir -p "$root/data"
# Which image this slot holds (os-release's IMAGE_ID and IMAGE_VERSION; a bundle sets its own).
printf 'IMAGE_ID=%s\nIMAGE_VERSION=%s\n' "$RAUC_COMPATIBLE" "${GWE_OS_VERSION:-1}" >> "$root/etc/os-release"
# Quiet sample apps (the console is the test's command line): a logger and an idler.
mkdir -p "$root/etc/gwe/programs.d"
cp board-configs/qemu-common/rootfs/etc/gwe/programs.d/more-apps.conf "$root/etc/gwe/programs.d/"
if [ -n "${GWE_ROOT_KEY:-}" ]; then
  install -m 0644 "$GWE_KEYS_FILE" "$root/etc/gwe/keys.json"
  # Into the board's [ota] table (the file ends with it when it has one).
  grep -q '^\[ota\]' "$root/etc/gwe/gwe.toml" || printf '\n[ota]\n' >> "$root/etc/gwe/gwe.toml"
  printf 'root_keys = ["%s"]\nkeys_file = "/etc/gwe/keys.json"\n' "$GWE_ROOT_KEY" >> "$root/etc/gwe/gwe.toml"
fi
[ -n "${GWE_EXTRA_FILES:-}" ] && cp -a "$GWE_EXTRA_FILES/." "$root/root/"

# The agent, installed as the Yocto recipe and the Buildroot package install it.
install -D -m 0755 "$bin" "$root/usr/bin/gwe"
install -D -m 0644 init/systemd/gwe.service "$root/usr/lib/systemd/system/gwe.service"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sfn /usr/lib/systemd/system/gwe.service "$root/etc/systemd/system/multi-user.target.wants/gwe.service"
# The network, by systemd-networkd (board-configs/BOARD/rootfs/etc/systemd/network).
ln -sfn /lib/systemd/system/systemd-networkd.service \
  "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"

# What a headless gateway does not run, left out of the boot (each unit or generator is a
# process systemd starts; on the emulated board they cost 14 % of a boot's CPU, 74 s to 63 s):
# generators for what this root has not (encrypted, integrity or verity volumes set up by
# systemd, partitions found by type, hibernation, SysV scripts, rc.local, offline updates);
# pseudo file systems and modules for debugging, FUSE and graphics; the VGA console's getty
# (the console is the serial line); e2fsprogs' LVM snapshot clean-up; and the timers that
# would run apt and fstrim on a gateway. fstab's, the serial getty's and the kernel command
# line's generators stay.
mkdir -p "$root/etc/systemd/system-generators"
for g in cryptsetup gpt-auto hibernate-resume integritysetup rc-local run system-update sysv veritysetup; do
  ln -sfn /dev/null "$root/etc/systemd/system-generators/systemd-$g-generator"
done
for u in dev-hugepages.mount sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
  modprobe@drm.service modprobe@efi_pstore.service modprobe@fuse.service modprobe@configfs.service \
  systemd-pstore.service; do
  ln -sfn /dev/null "$root/etc/systemd/system/$u"
done
rm -f "$root/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service" \
  "$root/etc/systemd/system/getty.target.wants/getty@tty1.service" \
  "$root"/etc/systemd/system/timers.target.wants/*.timer

# The kernel's modules the root needs, with their dependencies.
module_tree
want=""
for m in $ROOT_MODULES; do
  line=$(grep -E "/$m\.ko(\.xz)?:" "$mods/modules.dep") \
    || { echo "module $m is not in $kpkg" >&2; exit 1; }
  want="$want ${line%%:*} ${line#*:}"
done
for f in $(echo "$want" | tr ' ' '\n' | sort -u); do
  install -D -m 0644 "$kdir/${f#kernel/}" "$root/lib/modules/$kver/$f"
done
cp "$kdir/../modules.order" "$kdir/../modules.builtin" "$kdir/../modules.builtin.modinfo" "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"
rm -rf "$mods_root"

# The slot's kernel and initramfs (U-Boot loads both from the slot it boots).
ird=$out/initramfs
rm -rf "$ird"
mkdir -p "$ird"/{bin,proc,sys,dev,newroot,lib/modules}
cp "$x/bin/busybox" "$ird/bin/busybox"
for a in sh mount umount insmod sleep switch_root mkdir cat tr mv sync; do ln -s busybox "$ird/bin/$a"; done
copy_modules "$ird/lib/modules" "$ird/lib/modules/order"
cat > "$ird/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko; done
root=
for a in $(cat /proc/cmdline); do case "$a" in root=*) root=${a#root=} ;; esac; done
n=0
while [ ! -b "$root" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
mount -t ext4 -o rw "$root" /newroot || { echo "initramfs: cannot mount root=$root"; exec sh; }
# One machine id for the board, whichever slot boots (the journal, DHCP and D-Bus key on
# it): kept on the data partition, made once, written into the slot when it differs.
mkdir -p /data
if mount -t ext4 -o rw DATA_DEVICE /data; then
  id=$(cat /data/machine-id 2>/dev/null)
  if [ ${#id} -ne 32 ]; then
    id=$(cat /newroot/etc/machine-id 2>/dev/null)
    [ ${#id} -eq 32 ] || id=$(tr -d '-' < /proc/sys/kernel/random/uuid)
    echo "$id" > /data/machine-id.tmp && sync && mv /data/machine-id.tmp /data/machine-id && sync
  fi
  [ "$(cat /newroot/etc/machine-id 2>/dev/null)" = "$id" ] || { echo "$id" > /newroot/etc/machine-id; sync; }
  umount /data
fi
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
INIT
sed -i "s|DATA_DEVICE|$DATA_DEVICE|" "$ird/init"
chmod 0755 "$ird/init"
mkdir -p "$root/boot"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$root/boot/initrd.gz"
# Debian's arm64 cloud kernel is an uncompressed Image, as U-Boot's booti takes it; its armhf
# kernels are a zImage, for bootz (the boot script takes whichever the slot has).
cp "$(find "$x/boot" -name 'vmlinuz-*' | head -1)" "$root/boot/${KERNEL_IMAGE:-Image}"

# The slot image, as the factory writes it into slot A and a bundle carries it.
rm -f "$out/rootfs.ext4"
truncate -s "$SLOT_SIZE" "$out/rootfs.ext4"
mkfs.ext4 -q -F -L rootfs -d "$root" "$out/rootfs.ext4"

# Partition 1: U-Boot's boot script. Partition 2: its environment, both copies saying "A B".
parts=$(mktemp -d)
mkdir -p "$parts/boot"
mkimage -A "${MKIMAGE_ARCH:-arm64}" -O linux -T script -C none -n "gwe A/B boot" -d "$cfg/boot/boot.cmd" "$parts/boot/boot.scr" >/dev/null
truncate -s 8M "$parts/boot.img"
mkfs.ext4 -q -F -L boot -d "$parts/boot" "$parts/boot.img"
truncate -s 1M "$parts/bootstate.img"
printf '%s 0x0 0x4000\n%s 0x4000 0x4000\n' "$parts/bootstate.img" "$parts/bootstate.img" > "$parts/fw_env.config"
# Twice: each write goes to the older copy. The defaults are the board's, which libubootenv
# also falls back to on the board should both copies be unreadable.
for _ in 1 2; do
  printf 'BOOT_ORDER A B\n' | fw_setenv -c "$parts/fw_env.config" -f "$root/etc/u-boot-initial-env" -s - >/dev/null 2>&1
done
# Partition 5: the data partition, with the folders the agent, RAUC and journald use.
mkdir -p "$parts/data/gwe" "$parts/data/log/gwe" "$parts/data/rauc" "$parts/data/journal"
truncate -s "$DATA_SIZE" "$parts/data.img"
mkfs.ext4 -q -F -L data -d "$parts/data" "$parts/data.img"

mib() { echo $(( $(stat -c %s "$1") / 1048576 )); }
disk=$out/disk.img
rm -f "$disk"
truncate -s $(( 1 + 8 + 1 + 2 * $(mib "$out/rootfs.ext4") + $(mib "$parts/data.img") + 2 ))M "$disk"
sgdisk -a 2048 \
  -n 1:1M:+8M -c 1:boot -A 1:set:2 \
  -n 2:0:+1M -c 2:bootstate \
  -n 3:0:+"$(mib "$out/rootfs.ext4")"M -c 3:rootfs-A \
  -n 4:0:+"$(mib "$out/rootfs.ext4")"M -c 4:rootfs-B \
  -n 5:0:+"$(mib "$parts/data.img")"M -c 5:data "$disk" >/dev/null
put() {
  local start
  start=$(sgdisk -i "$1" "$disk" | awk '/^First sector/ {print $3}')
  dd if="$2" of="$disk" bs=512 seek="$start" conv=notrunc,sparse status=none
}
put 1 "$parts/boot.img"
put 2 "$parts/bootstate.img"
# The factory system in both slots, as a factory image of an A/B product has it: slot B is in
# BOOT_ORDER from the start, so U-Boot's fallback from A must find a whole system there.
put 3 "$out/rootfs.ext4"
put 4 "$out/rootfs.ext4"
put 5 "$parts/data.img"
rm -rf "$parts"
echo "$out: U-Boot $UBOOT, kernel $kpkg, Debian $DEBIAN_SUITE root $(du -sm "$root" | cut -f1) MB with systemd" \
  "and RAUC in slots A and B of $(mib "$disk") MB, agent $(stat -c %s "$bin") bytes"
