#!/usr/bin/env bash
# Cross toolchain for aarch64 and armv7 on a fresh Debian 12 machine, from Debian packages
# (rustup cannot add targets here; see ../shared/FIRMWARE-TESTING.md). Idempotent.
#   - Debian's rustc-web at a version whose std also exists for arm64 and armhf
#   - that std unpacked into /usr/lib/rustlib for both targets; the matching std source and
#     cargo, to compile std with the agent (scripts/cross-build.sh); musl for both targets
#   - GNU compilers and lld (packed relocations), qemu-user (to run ARM test binaries) and
#     qemu-system-arm (to boot boards)
set -euo pipefail

have_std() { [ -d "/usr/lib/rustlib/$1/lib" ] && ls "/usr/lib/rustlib/$1/lib"/libstd-*.rlib >/dev/null 2>&1; }

if [ -x /usr/bin/rustc ] && have_std aarch64-unknown-linux-gnu && have_std armv7-unknown-linux-gnueabihf \
   && command -v aarch64-linux-gnu-gcc >/dev/null && command -v arm-linux-gnueabihf-gcc >/dev/null \
   && command -v qemu-aarch64-static >/dev/null && command -v qemu-system-aarch64 >/dev/null \
   && [ -x /usr/bin/cargo ] && [ -f /usr/lib/rustlib/src/rust/library/Cargo.lock ] \
   && [ -x /usr/lib/llvm-16/bin/ld.lld ] && [ -f /usr/lib/aarch64-linux-musl/musl-gcc.specs ] \
   && [ -f /usr/lib/arm-linux-musleabihf/musl-gcc.specs ]; then
  echo "cross toolchain: already set up ($(/usr/bin/rustc --version))"
  exit 0
fi

dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
# A mirror mid-sync can fail one index; retry, then go on with what was fetched.
for attempt in 1 2 3; do
  apt-get update -qq && break
  echo "setup-cross: apt-get update failed (attempt $attempt); retrying" >&2
  sleep 5
done

# The newest rustc-web version that the arm64 and armhf indexes also carry a std for.
pick=""
for v in $(apt-cache madison rustc-web | awk -F'|' '{gsub(/ /,"",$2); print $2}'); do
  if apt-cache madison libstd-rust-web-dev:arm64 | grep -q " $v " \
     && apt-cache madison libstd-rust-web-dev:armhf | grep -q " $v "; then
    pick=$v
    break
  fi
done
[ -n "$pick" ] || { echo "setup-cross: no rustc-web version with an arm64 and armhf std" >&2; exit 1; }
series=$(echo "$pick" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
echo "cross toolchain: rustc-web $pick"

DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "rustc-web=$pick" "libstd-rust-web-dev=$pick" "libstd-rust-web-$series=$pick" \
  "cargo-web=$pick" "rust-web-src=$pick" \
  gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf lld-16 libc6-dev-arm64-cross libc6-dev-armhf-cross \
  qemu-user-static qemu-system-arm cpio e2fsprogs

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "libstd-rust-web-dev:arm64=$pick" "libstd-rust-web-dev:armhf=$pick" \
  musl-dev:arm64 musl-dev:armhf)
for deb in "$tmp"/*.deb; do
  dpkg-deb -x "$deb" "$tmp/x"
done
# musl's static library, start files, headers and gcc specs for both targets (the static
# agent the QEMU boards run): they live in their own directories, beside nothing else.
for m in aarch64-linux-musl arm-linux-musleabihf; do
  rm -rf "/usr/lib/$m" "/usr/include/$m"
  cp -a "$tmp/x/usr/lib/$m" /usr/lib/
  cp -a "$tmp/x/usr/include/$m" /usr/include/
done
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  rm -rf "/usr/lib/rustlib/$t"
  cp -a "$tmp/x/usr/lib/rustlib/$t" /usr/lib/rustlib/
done
/usr/bin/rustc --version
