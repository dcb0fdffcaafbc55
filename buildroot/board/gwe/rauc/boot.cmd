# The A/B boot selection of the QEMU virt boards: Buildroot's
# qemu_aarch64_virt_gwe_rauc_defconfig, and board-configs/qemu-aarch64-debian and
# qemu-armv7-debian (links to this file) run by Debian's U-Boot. U-Boot's distro boot finds
# this script, compiled to boot.scr, on partition 1. The disk: 1 boot, 2 bootstate, 3 slot A, 4 slot B, 5 data.
#
# State: RAUC's U-Boot variables BOOT_ORDER ("A B": try A first), BOOT_A_LEFT, BOOT_B_LEFT
# (tries left), kept on partition 2 as a redundant U-Boot environment: two copies of
# 16 KiB (CRC-32, a flags byte that counts up, then the variables), the newer valid one
# wins. libubootenv (fw_printenv, fw_setenv, and RAUC through them) reads and writes the
# same copies from Linux (/etc/fw_env.config). A write goes to the older copy, so a power
# cut in the middle of one leaves the other whole.
#
# Each boot takes one try from the first slot in BOOT_ORDER that has tries left. The slot
# is marked good from Linux (RAUC's mark-good: its tries back to 3); a system that never
# gets there, because its kernel panics or its agent finds it bad, runs out of tries and
# the next slot in BOOT_ORDER boots.

setenv env_size 0x4000
setenv env_blocks 0x20
setenv e1 0x48000000
setenv e2 0x48010000
setenv t 0x48020000
part start virtio 0 2 bs_blk
setexpr bs_blk2 ${bs_blk} + ${env_blocks}
virtio read ${e1} ${bs_blk} ${env_blocks}
virtio read ${e2} ${bs_blk2} ${env_blocks}
setexpr.b f1 *0x48000004
setexpr.b f2 *0x48010004

# Imports copy N (at address $c) if its CRC holds: the copy is CRC, flags, data; U-Boot's
# import wants CRC then data.
setexpr data_size ${env_size} - 5
setexpr imp_size ${env_size} - 1
setenv import_copy 'cp.l ${c} ${t} 1; setexpr cd ${c} + 5; setexpr td ${t} + 4; cp.b ${cd} ${td} ${data_size}; env import -c ${t} ${imp_size} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT'

# The older copy first, then the newer, so the newer one's values stand when both are whole.
setexpr f1n ${f1} + 1
setexpr f1n ${f1n} "&" 0xff
setenv ok1 0
setenv ok2 0
if test ${f2} = ${f1n}; then
  setenv order "1 2"
else
  setenv order "2 1"
fi
for n in ${order}; do
  if test ${n} = 1; then setenv c ${e1}; else setenv c ${e2}; fi
  if run import_copy; then setenv ok${n} 1; setenv cur ${n}; fi
done

test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

setenv slot
for s in ${BOOT_ORDER}; do
  if test -z "${slot}"; then
    if test "${s}" = A && test ${BOOT_A_LEFT} -gt 0; then
      setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
      setenv slot A
      setenv rootpart 3
    elif test "${s}" = B && test ${BOOT_B_LEFT} -gt 0; then
      setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
      setenv slot B
      setenv rootpart 4
    fi
  fi
done
if test -z "${slot}"; then
  # No slot has tries left (both failed): each gets 3 again, rather than never booting.
  echo "gwe-boot: no slot has tries left; giving each 3 again"
  setenv BOOT_A_LEFT 3
  setenv BOOT_B_LEFT 3
  setenv reset_after 1
fi

# Save the try: to the copy that is not the current one, flags one above the current's.
if test "${cur}" = 1; then
  setexpr nf ${f1} + 1
  setenv dst ${bs_blk2}
elif test "${cur}" = 2; then
  setexpr nf ${f2} + 1
  setenv dst ${bs_blk}
else
  setenv nf 1
  setenv dst ${bs_blk}
fi
setexpr nf ${nf} "&" 0xff
env export -c -s ${imp_size} ${t} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
mw.b ${e1} 0 ${env_size}
cp.l ${t} ${e1} 1
setexpr td ${t} + 4
setexpr cd ${e1} + 5
cp.b ${td} ${cd} ${data_size}
setexpr fa ${e1} + 4
mw.b ${fa} ${nf}
virtio write ${e1} ${dst} ${env_blocks}
test -z "${reset_after}" || reset

echo "gwe-boot: slot ${slot} (order ${BOOT_ORDER}, tries left A ${BOOT_A_LEFT} B ${BOOT_B_LEFT})"
# The slot's kernel: a zImage on 32-bit ARM (bootz), an Image on arm64 (booti).
setenv zimage 0
if ext4load virtio 0:${rootpart} ${kernel_addr_r} /boot/zImage; then
  setenv zimage 1
else
  ext4load virtio 0:${rootpart} ${kernel_addr_r} /boot/Image
fi
setenv initrd -
setenv bootargs "console=ttyAMA0 quiet net.ifnames=0 panic=5 root=/dev/vda${rootpart} rauc.slot=${slot}"
# A slot with an initramfs (the Debian board's) boots through it; one without (Buildroot's,
# its disk driver built in) has the kernel mount the slot itself. Not "rootwait" with an
# initramfs: should the initramfs be broken, a kernel whose disk driver is a module would
# wait for the root forever instead of panicking, and never give the boot counter its turn.
if ext4load virtio 0:${rootpart} ${ramdisk_addr_r} /boot/initrd.gz; then
  setenv initrd ${ramdisk_addr_r}:${filesize}
else
  setenv bootargs "${bootargs} rootwait"
fi
if test ${zimage} = 1; then
  bootz ${kernel_addr_r} ${initrd} ${fdt_addr}
else
  booti ${kernel_addr_r} ${initrd} ${fdt_addr}
fi
echo "gwe-boot: slot ${slot} did not boot"
reset
