# The kernel side of an emulated board, from Debian's packages, for build-image.sh and
# build-debian-image.sh. The sourcing script has read the board's board.env.
# shellcheck shell=bash disable=SC2154

# kernel_and_busybox: downloads (once, cached) the newest kernel package matching
# KERNEL_PACKAGE_GLOB and busybox-static for DEB_ARCH, unpacked; sets kpkg, x (the unpacked
# tree) and kdir (its modules' kernel/ folder).
kernel_and_busybox() {
  local cache=target/boards/cache/$DEB_ARCH pkg deb lock
  mkdir -p "$cache"
  kpkg=$(apt-cache search --names-only "$KERNEL_PACKAGE_GLOB" | awk '{print $1}' | sort -V | tail -1)
  [ -n "$kpkg" ] || { echo "no kernel package matches $KERNEL_PACKAGE_GLOB" >&2; exit 1; }
  # Boards of one architecture share the cache, and CI builds two of them at once.
  exec {lock}>"$cache/.lock"
  flock "$lock"
  for pkg in "$kpkg" busybox-static; do
    ls "$cache/${pkg}_"*.deb >/dev/null 2>&1 || (cd "$cache" && apt-get download "$pkg:$DEB_ARCH" 2>/dev/null)
  done
  x=$cache/x
  if [ ! -d "$x/bin" ]; then
    for deb in "$cache"/*.deb; do dpkg-deb -x "$deb" "$x"; done
  fi
  exec {lock}>&-
  kdir=$(find "$x/lib/modules" -mindepth 2 -maxdepth 2 -name kernel -type d | head -1)
}

# copy_modules DIR ORDER: KERNEL_MODULES and the modules they need into DIR (decompressed),
# their names in load order into ORDER (each after what it needs, as modules.dep says: a
# newer kernel of the same series can add a dependency, as 6.1.192's virtio on virtio_ring
# did); those built into the kernel are skipped.
copy_modules() {
  local dir=$1 order=$2 m f line d name kver mods mods_root
  module_tree
  : > "$order"
  for m in $KERNEL_MODULES; do
    line=$(grep -E "/$m\.ko(\.xz)?:" "$mods/modules.dep" || true)
    if [ -z "$line" ]; then
      grep -q "/$m.ko" "$kdir/../modules.builtin" && continue
      echo "module $m is neither a module nor built into $kpkg" >&2
      exit 1
    fi
    # modules.dep lists what a module needs with what is loaded first last.
    for d in $(echo "${line#*:}" | tr ' ' '\n' | tac) "${line%%:*}"; do
      name=$(basename "$d")
      name=${name%.xz}
      name=${name%.ko}
      grep -qx "$name" "$order" && continue
      f=$kdir/${d#kernel/}
      case "$f" in
        *.xz) xz -dc "$f" > "$dir/$name.ko" ;;
        *) cp "$f" "$dir/$name.ko" ;;
      esac
      echo "$name" >> "$order"
    done
  done
  rm -rf "$mods_root"
}

# module_tree: the kernel's modules with depmod's modules.dep, in a temporary tree; sets
# kver (the kernel's version), mods (its lib/modules/KVER) and mods_root (to remove after).
module_tree() {
  kver=$(basename "$(dirname "$kdir")")
  mods_root=$(mktemp -d)
  mods=$mods_root/lib/modules/$kver
  mkdir -p "$mods"
  ln -s "$(realpath "$kdir")" "$mods/kernel"
  cp "$kdir/../modules.order" "$kdir/../modules.builtin" "$kdir/../modules.builtin.modinfo" "$mods/"
  depmod -b "$mods_root" "$kver"
}
