#!/usr/bin/env bash
# The BR2_EXTERNAL tree in real Buildroot, offline, for each release given (default: the
# two LTS exports in ../shared/upstream, 2025.02.16 and 2026.02.3):
#   - the release tarball (scripts/release-tarball.py) is made again and matches gwe.hash,
#     checked by Buildroot's own check-hash; gwe.mk pins the commit the Yocto recipe pins;
#   - utils/check-package over the external tree: 0 warnings;
#   - both QEMU defconfigs, and Buildroot's raspberrypi4_64_defconfig with our fragment
#     merged: make DEFCONFIG, make gwe-show-info (version, source, licences, the download
#     from BR2_PACKAGE_GWE_SITE), make printvars VARS='GWE_%', and every line of the
#     defconfig or fragment still in the final .config (no dead lines).
# Compiling needs Buildroot's host Rust, a download: nothing is compiled here.
# Work files: target/fw/buildroot-VERSION. Fails on any error or warning.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
upstream=${GWE_UPSTREAM:-$root/../shared/upstream}
# --deps: install what the check needs, then stop (as check-yocto.sh --deps).
deps_only=0
if [ "${1:-}" = --deps ]; then deps_only=1; shift; fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(2025.02.16 2026.02.3)
fw=$root/target/fw
mkdir -p "$fw"

# Buildroot's own host requirements (the manual's list).
pkgs=(build-essential diffutils patch gzip bzip2 perl tar cpio unzip rsync file bc findutils wget python3-venv)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  # A mirror mid-sync can fail one index; retry, then go on with what was fetched.
  for attempt in 1 2 3; do
    apt-get update -qq && break
    echo "check-buildroot: apt-get update failed (attempt $attempt); retrying" >&2
    sleep 5
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

venv=$fw/br-venv
if ! "$venv/bin/python" -c 'import magic, flake8' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet python-magic flake8
fi
[ $deps_only = 0 ] || exit 0

version=$(sed -n 's/^GWE_VERSION = //p' buildroot/package/gwe/gwe.mk)
srcrev=$(sed -n 's/^SRCREV = "\(.*\)"/\1/p' yocto-layer/meta-gwe/recipes-gwe/gwe/gwe_0.1.0.bb)
[ "$version" = "$srcrev" ] || { echo "gwe.mk pins $version, the Yocto recipe $srcrev: one release" >&2; exit 1; }
cargo fetch --locked --quiet
release=$root/target/release
tarball=$(python3 scripts/release-tarball.py --commit "$version" --out "$release" | cut -d' ' -f1)
python3 scripts/gen-licenses.py --check

fail() { echo "check-buildroot $v: $*" >&2; exit 1; }
for v in "${versions[@]}"; do
  work=$fw/buildroot-$v
  stamp=$(sha256sum "$upstream/buildroot-$v.tar.xz" | cut -c1-16)
  if [ "$(cat "$work/.unpacked" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$work"
    mkdir -p "$work"
    tar -C "$work" -xJf "$upstream/buildroot-$v.tar.xz"
    echo "$stamp" >"$work/.unpacked"
  fi
  br=$work/buildroot
  started=$(date +%s)

  # The tarball, by Buildroot's own hash checker, against gwe.hash.
  ok=$(cd "$br" && support/download/check-hash "$tarball" "$(basename "$tarball")" \
    "$root/buildroot/package/gwe/gwe.hash" 2>&1) || { echo "$ok"; fail "the release tarball does not match gwe.hash"; }
  grep -q 'OK (sha256' <<<"$ok" || { echo "$ok"; fail "gwe.hash has no sha256 for the release tarball"; }

  # The tarball carries the agent's bill of materials, which gwe.mk installs beside the images.
  tar -xzOf "$tarball" "gwe-$version/sbom.cdx.json" | python3 -c 'import json, sys; json.load(sys.stdin)' ||
    fail "the release tarball has no sbom.cdx.json"

  # check-package over the external tree.
  out=$( (cd "$root/buildroot" && find . -type f | sed 's|^\./||' | sort |
    xargs "$venv/bin/python" "$br/utils/check-package" -b) 2>&1) || true
  grep -q '^0 warnings generated' <<<"$out" || { echo "$out"; fail "check-package warned"; }
  echo "check-buildroot $v: check-package: $(grep 'lines processed' <<<"$out"), 0 warnings"

  for cfg in qemu_aarch64_virt_gwe qemu_arm_virt_gwe qemu_aarch64_virt_gwe_rauc raspberrypi4_64; do
    o=$work/out-$cfg
    rm -rf "$o"
    mk() { make -s -C "$br" O="$o" BR2_EXTERNAL="$root/buildroot" BR2_DL_DIR="$work/dl" "$@"; }
    mk "${cfg}_defconfig" >"$work/$cfg.log" 2>&1 || { cat "$work/$cfg.log"; fail "make ${cfg}_defconfig"; }
    wanted=$root/buildroot/configs/${cfg}_defconfig
    if [ "$cfg" = raspberrypi4_64 ]; then
      wanted=$root/buildroot/configs/raspberrypi4_64_gwe.fragment
      (cd "$o" && "$br/support/kconfig/merge_config.sh" -m .config "$wanted" >>"$work/$cfg.log" 2>&1) || fail "merge_config.sh"
      mk olddefconfig >>"$work/$cfg.log" 2>&1 || fail "make olddefconfig"
    fi
    # Every setting we wrote is in the final configuration (Kconfig drops what does not
    # apply, silently).
    while IFS= read -r line; do
      case $line in '#'* | '') continue ;; esac
      grep -qxF "$line" "$o/.config" || fail "$cfg: '$line' is not in the final .config (a dead line)"
    done <"$wanted"
    grep -qx 'BR2_DOWNLOAD_FORCE_CHECK_HASHES=y' "$o/.config" || fail "$cfg: hashes are not enforced"
    info=$(mk gwe-show-info 2>"$work/$cfg.err") || { cat "$work/$cfg.err"; fail "$cfg: gwe-show-info"; }
    [ ! -s "$work/$cfg.err" ] || { cat "$work/$cfg.err"; fail "$cfg: gwe-show-info printed errors"; }
    python3 - "$info" "$version" "$release" <<'EOF' || fail "$cfg: gwe-show-info"
import json, sys
info, version, release = json.loads(sys.argv[1])["gwe"], sys.argv[2], sys.argv[3]
assert info["version"] == version, info["version"]
dl = info["downloads"][0]
assert dl["source"] == f"gwe-{version}-vendored.tar.gz", dl
assert any(u.split("+", 1)[-1].startswith("file://") and u.rstrip("/").endswith("/target/release")
           for u in dl["uris"]), dl["uris"]
for lic in ("Apache-2.0", "MIT (crates)", "ISC (crates)", "BSD-3-Clause (crates)", "Unicode-3.0"):
    assert lic in info["licenses"], (lic, info["licenses"])
EOF
    vars=$(mk printvars VARS='GWE_%' 2>&1)
    grep -q "^GWE_VERSION=$version\$" <<<"$vars" || { echo "$vars" | head; fail "$cfg: printvars GWE_VERSION"; }
    grep -q "^GWE_SOURCE=gwe-$version-vendored.tar.gz\$" <<<"$vars" || fail "$cfg: printvars GWE_SOURCE"
    grep -q "^GWE_INSTALL_IMAGES=YES\$" <<<"$vars" || fail "$cfg: the SBOM is not installed with the images"
    if [ "$cfg" = qemu_aarch64_virt_gwe_rauc ]; then
      # RAUC as the agent uses it (JSON, the D-Bus service) and can stream, U-Boot for QEMU
      # with the A/B boot script, and gwe with OS updates on.
      vars=$(mk printvars VARS='RAUC_CONF_OPTS UBOOT_KCONFIG_DEFCONFIG HOST_UBOOT_TOOLS_DEPENDENCIES' 2>&1)
      for want in -Djson=enabled -Dservice=true -Dstreaming=true; do
        grep -q "^RAUC_CONF_OPTS=.*$want" <<<"$vars" || { echo "$vars"; fail "$cfg: RAUC is not configured with $want"; }
      done
      grep -q '^UBOOT_KCONFIG_DEFCONFIG=qemu_arm64_defconfig$' <<<"$vars" || { echo "$vars"; fail "$cfg: U-Boot is not qemu_arm64"; }
      grep -qx 'BR2_PACKAGE_UBOOT_TOOLS_FWPRINTENV=y' "$o/.config" || fail "$cfg: no fw_printenv/fw_setenv for RAUC"
      grep -qx 'BR2_PACKAGE_RAUC=y' "$o/.config" || fail "$cfg: no RAUC"
      # Read whole, then searched: grep -q would stop reading early, and make's SIGPIPE fail
      # the pipeline (pipefail).
      vars=$(mk printvars VARS=GWE_INSTALL_CONFIG 2>&1)
      grep -q 'os_updates = true' <<<"$vars" || fail "$cfg: gwe.toml does not turn OS updates on"
    fi
    echo "check-buildroot $v: $cfg: defconfig, gwe-show-info, printvars, no dead lines"
  done
  echo "check-buildroot $v: done in $(($(date +%s) - started)) s"
done
