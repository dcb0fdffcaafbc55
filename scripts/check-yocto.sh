#!/usr/bin/env bash
# meta-gwe in real bitbake and OpenEmbedded-Core, offline, as an unprivileged user, for each
# series given (default: scarthgap wrynose), from the unmodified exports in
# ../shared/upstream (see its README):
#   - meta-gwe added alone to OpenEmbedded-Core, without oe-core's graphical, multimedia,
#     Sato and real-time recipes: every recipe parses with no error, no warning;
#   - bitbake gwe -c unpack from local mirrors of this repository and of the crates;
#   - gwe_check_rust: passes where the series' Rust is new enough, stops with the advice
#     where it is not (scarthgap's 1.75);
#   - bitbake gwe -c populate_lic: a text for every licence LICENSE names (the crates');
#   - bitbake gwe -c deploy: the release's bill of materials (sbom.cdx.json) is deployed;
#   - bitbake -e gwe under systemd and under SysV init: the unit or the script is installed;
#   - an app recipe using the gwe_app class, as the README has it: its install step puts
#     the package where the agent's preinstall step reads (/usr/share/gwe/preinstall);
#   - with meta-rauc of the same series: the example image (gwe, RAUC) and the verity
#     bundle of its root filesystem parse; the bundle's task graph reaches the image and
#     gwe; PACKAGECONFIG os-updates turns the agent's OS updates on and pulls RAUC in;
# Installs what it needs (Debian packages, the en_US.UTF-8 locale, the user gwebuild),
# idempotently. Work files: target/fw/yocto-SERIES. Fails on any error or warning.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
upstream=${GWE_UPSTREAM:-$root/../shared/upstream}
# --deps: install what the check needs, then stop (CI does this first, then runs the check
# in its background lane, where nothing may take apt's lock from the foreground).
deps_only=0
if [ "${1:-}" = --deps ]; then deps_only=1; shift; fi
series=("$@")
[ ${#series[@]} -gt 0 ] || series=(scarthgap wrynose)

pkgs=(chrpath diffstat lz4 zstd gawk file cpio rpcsvc-proto texinfo socat xz-utils bzip2 python3-jinja2 locales git)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  # A mirror mid-sync can fail one index; retry, then go on with what was fetched.
  for attempt in 1 2 3; do
    apt-get update -qq && break
    echo "check-yocto: apt-get update failed (attempt $attempt); retrying" >&2
    sleep 5
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! locale -a | grep -qi '^en_US\.utf8$'; then
  grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen
  locale-gen >/dev/null
fi
id gwebuild >/dev/null 2>&1 || useradd --create-home --shell /bin/bash gwebuild
[ $deps_only = 0 ] || exit 0
as_builder() { runuser -u gwebuild -- env -i HOME=/home/gwebuild PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=en_US.UTF-8 "$@"; }

fw=$root/target/fw
mkdir -p "$fw"
chown gwebuild: "$fw"
# The mirrors: this repository (bare, as a git server would give it) and every crate of
# Cargo.lock as the crates.io download it is.
srcrev=$(sed -n 's/^SRCREV = "\(.*\)"/\1/p' yocto-layer/meta-gwe/recipes-gwe/gwe/gwe_0.1.0.bb)
git cat-file -e "$srcrev^{commit}" 2>/dev/null || { echo "SRCREV $srcrev is not in this repository's history" >&2; exit 1; }
mirror=$fw/mirror
rm -rf "$mirror"
mkdir -p "$mirror/crates"
git clone --quiet --bare --no-local "$root" "$mirror/gwe.git"
cargo fetch --locked --quiet
cache=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -maxdepth 1 -type d -name 'index.crates.io-*' | head -1)/
git show "$srcrev:Cargo.lock" | python3 -c '
import sys, tomllib, shutil
lock = tomllib.loads(sys.stdin.read())
for p in lock["package"]:
    if p.get("source", "").startswith("registry+"):
        shutil.copy(sys.argv[1] + "%s-%s.crate" % (p["name"], p["version"]), sys.argv[2])
' "$cache" "$mirror/crates"
chown -R gwebuild: "$mirror"

# A layer of the user's own: an app recipe as the README shows it.
testlayer=$fw/meta-gwe-example
rm -rf "$testlayer"
mkdir -p "$testlayer/conf" "$testlayer/recipes-apps/sensor-app/files"
cat >"$testlayer/conf/layer.conf" <<'EOF'
BBPATH .= ":${LAYERDIR}"
BBFILES += "${LAYERDIR}/recipes-*/*/*.bb ${LAYERDIR}/recipes-*/*/*.bbappend"
BBFILE_COLLECTIONS += "gwe-example"
BBFILE_PATTERN_gwe-example = "^${LAYERDIR}/"
BBFILE_PRIORITY_gwe-example = "7"
LAYERDEPENDS_gwe-example = "gwe"
LAYERSERIES_COMPAT_gwe-example = "scarthgap styhead walnascar whinlatter wrynose"
EOF
cat >"$testlayer/recipes-apps/sensor-app/sensor-app_1.4.2.bb" <<'EOF'
SUMMARY = "An example app baked into the image"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"
SRC_URI = "file://sensor.v1.4.2.tar.gz"
GWE_APP_PACKAGES = "sensor.v1.4.2.tar.gz"
inherit gwe_app
EOF
# Offline only: do_patch depends on quilt-native and patch-native, whose sources are not
# here (gwe has no patches). A real build has them.
mkdir -p "$testlayer/recipes-gwe/gwe"
echo 'do_patch[depends] = ""' >"$testlayer/recipes-gwe/gwe/gwe_%.bbappend"
tar -C board-configs/qemu-common/ota-sample/sensor -czf "$testlayer/recipes-apps/sensor-app/files/sensor.v1.4.2.tar.gz" .
chown -R gwebuild: "$testlayer"

fail() { echo "check-yocto $s: $*" >&2; exit 1; }
# Any WARNING or ERROR line in bitbake's output fails the check.
clean() {
  local log=$1
  if grep -E '^(WARNING|ERROR):' "$log"; then fail "bitbake printed warnings or errors (above; $log)"; fi
}

for s in "${series[@]}"; do
  case $s in
    scarthgap) bitbake_tar=bitbake-2.8 ;;
    wrynose) bitbake_tar=bitbake-2.18 ;;
    *) echo "unknown series $s (scarthgap or wrynose)" >&2; exit 2 ;;
  esac
  work=$fw/yocto-$s
  stamp="$(sha256sum "$upstream/oe-core-$s.tar.xz" "$upstream/$bitbake_tar.tar.xz" "$upstream/meta-rauc-$s.tar.xz" |
    sha256sum | cut -c1-16)"
  if [ "$(cat "$work/.unpacked" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$work"
    mkdir -p "$work"
    tar -C "$work" -xJf "$upstream/oe-core-$s.tar.xz"
    tar -C "$work" -xJf "$upstream/$bitbake_tar.tar.xz"
    tar -C "$work" -xJf "$upstream/meta-rauc-$s.tar.xz"
    echo "$stamp" >"$work/.unpacked"
    chown -R gwebuild: "$work"
  fi
  build=$work/build
  rm -rf "$build/conf" "$build/tmp" "$build/tmp-glibc" "$build/cache"
  mkdir -p "$build/conf"
  cat >"$build/conf/bblayers.conf" <<EOF
BBPATH = "\${TOPDIR}"
BBFILES ?= ""
BBLAYERS = "$work/openembedded-core/meta $root/yocto-layer/meta-gwe"
EOF
  cat >"$build/conf/local.conf" <<EOF
MACHINE = "qemuarm64"
DL_DIR = "$work/downloads"
BB_NO_NETWORK = "1"
ASSUME_PROVIDED += "git-native"
PREMIRRORS:prepend = "git://git.example.org/.* git://$mirror/BASENAME;protocol=file \\
https://static.crates.io/crates/.* file://$mirror/crates/ \\
"
# The uninative shim is a download too; offline, the host's C library serves.
INHERIT_DISTRO:remove = "uninative"
CONF_VERSION = "2"
EOF
  chown -R gwebuild: "$build"
  bb() { as_builder bash -c "cd '$build' && export PATH='$work/bitbake/bin':\$PATH && bitbake $*"; }
  started=$(date +%s)

  # Two configurations, so two parses: meta-gwe alone under SysV init, then with the
  # user's layer under systemd. The first leaves out OpenEmbedded-Core's graphical,
  # multimedia, Sato and real-time recipes (215 of its 920 on scarthgap): meta-gwe has no
  # bbappend and sets nothing they read, so it cannot make them warn; the second parses
  # them all, as a user's build does.
  echo 'INIT_MANAGER = "sysvinit"' >>"$build/conf/local.conf"
  echo 'BBMASK = "/meta/recipes-(graphics|multimedia|sato|rt)/"' >>"$build/conf/local.conf"
  chown gwebuild: "$build/conf/local.conf"

  # 1. meta-gwe alone: parsing stays clean. bitbake -e parses every recipe as bitbake -p
  # does (and prints the same warnings); a separate -p first would cost wrynose's bitbake a
  # second whole parse, as it does not reuse -p's cache for -e.
  bb -e gwe >"$build/env-sysvinit.log" 2>&1 || { tail -n 20 "$build/env-sysvinit.log"; fail "bitbake -e gwe (sysvinit)"; }
  grep -q '^Parsing of [0-9]* .bb files complete' "$build/env-sysvinit.log" || fail "bitbake -e gwe did not parse the recipes"
  clean "$build/env-sysvinit.log"
  echo "check-yocto $s: $(grep '^Parsing of' "$build/env-sysvinit.log"): clean with meta-gwe alone"

  # The user's own layer joins (an app recipe), with systemd as the init system. pseudo
  # (fakeroot) is a native build from downloads: this offline check runs the install step
  # through a stand-in that just runs it (files owned by the builder); a real build runs
  # it under pseudo.
  echo "BBLAYERS += \"$testlayer $work/meta-rauc\"" >>"$build/conf/bblayers.conf"
  # meta-rauc as its README says: 'rauc' in DISTRO_FEATURES; gwe's OS updates on.
  printf 'DISTRO_FEATURES:append = " rauc"\nPACKAGECONFIG:append:pn-gwe = " os-updates"\n' >>"$build/conf/local.conf"
  cat >"$build/no-fakeroot" <<'EOF'
#!/bin/sh
# pseudo stand-in: runs the command; "-S" (shut down) is a no-op.
[ "$1" = -S ] || exec "$@"
EOF
  chmod 755 "$build/no-fakeroot"
  sed -i -e 's/^INIT_MANAGER = .*/INIT_MANAGER = "systemd"/' -e '/^BBMASK = /d' "$build/conf/local.conf"
  printf 'ASSUME_PROVIDED += "virtual/fakeroot-native"\nFAKEROOTCMD = "%s"\nFAKEROOTBASEENV = ""\n' "$build/no-fakeroot" >>"$build/conf/local.conf"
  chown -R gwebuild: "$build/conf" "$build/no-fakeroot"

  # 2. Fetch and unpack from the mirrors, offline. A clone left in DL_DIR by an earlier run
  # may lack the pinned commit, and bitbake would update it from the real URL, not from the
  # mirror: it goes, the mirror is made afresh each run anyway.
  rm -rf "$work/downloads/git2/git.example.org.gwe.git" "$work/downloads/git2/git.example.org.gwe.git.done"
  bb gwe -c unpack >"$build/unpack.log" 2>&1 || { tail -n 40 "$build/unpack.log"; fail "bitbake gwe -c unpack failed"; }
  clean "$build/unpack.log"
  bb -e gwe >"$build/env-systemd.log" 2>&1 || { tail -n 20 "$build/env-systemd.log"; fail "bitbake -e gwe (systemd)"; }
  src=$(sed -n 's/^S="\(.*\)"/\1/p' "$build/env-systemd.log")
  if [ ! -f "$src/Cargo.toml" ] || [ ! -f "$src/init/systemd/gwe.service" ]; then fail "no sources in S=$src after unpack"; fi
  git -C "$root" archive "$srcrev" Cargo.lock | tar -xO | cmp - "$src/Cargo.lock" || fail "the unpacked sources are not SRCREV's"
  crates=$(find "$work/downloads" -maxdepth 1 -name '*.crate' | wc -l)
  [ "$crates" -gt 0 ] || fail "no crates fetched"
  echo "check-yocto $s: gwe unpacked from the mirrors into $src ($crates crates)"

  # 3. The Rust check: passes on a new enough Rust; stops with the advice otherwise.
  rust=$(sed -n 's/^RUSTVERSION="\(.*\)"/\1/p' "$build/env-systemd.log")
  if bb gwe -c gwe_check_rust >"$build/rust.log" 2>&1; then
    [ "$s" != scarthgap ] || fail "gwe_check_rust passed on scarthgap's Rust $rust"
    echo "check-yocto $s: Rust $rust is new enough"
  else
    [ "$s" = scarthgap ] || { tail -n 20 "$build/rust.log"; fail "gwe_check_rust failed with Rust $rust"; }
    grep -q 'gwe needs Rust 1.82 or newer.*meta-lts-mixins' "$build/rust.log" || { tail -n 20 "$build/rust.log"; fail "the Rust check did not say what to add"; }
    echo "check-yocto $s: Rust $rust refused with the advice (meta-lts-mixins)"
  fi

  # 4. The gwe_app class as the README uses it.
  bb sensor-app -c install >"$build/app.log" 2>&1 || { tail -n 40 "$build/app.log"; fail "sensor-app -c install failed"; }
  clean "$build/app.log"
  d=$(bb -e sensor-app 2>/dev/null | sed -n 's/^D="\(.*\)"/\1/p')
  cmp "$d/usr/share/gwe/preinstall/sensor.v1.4.2.tar.gz" "$testlayer/recipes-apps/sensor-app/files/sensor.v1.4.2.tar.gz" \
    || fail "the app package is not in /usr/share/gwe/preinstall as it was given"
  echo "check-yocto $s: gwe_app put sensor.v1.4.2.tar.gz, unchanged, in /usr/share/gwe/preinstall"

  # 5. Licences: every one LICENSE names (the crates' too) has its text, Unicode-3.0 from the
  # layer where OpenEmbedded-Core lacks it. The agent's bill of materials goes beside the
  # images, as the release has it.
  bb gwe -c populate_lic >"$build/lic.log" 2>&1 || { tail -n 40 "$build/lic.log"; fail "bitbake gwe -c populate_lic failed"; }
  clean "$build/lic.log"
  # LICSSTATEDIR/gwe, or LICSSTATEDIR/ARCH/gwe (scarthgap).
  lics=$(find "$(sed -n 's/^LICSSTATEDIR="\(.*\)"/\1/p' "$build/env-systemd.log")" -maxdepth 2 -type d -name gwe | head -n 1)
  [ -n "$lics" ] || fail "populate_lic left no licence directory"
  n=0
  for l in Apache-2.0 MIT ISC BSD-3-Clause Unicode-3.0 0BSD Unlicense Zlib; do
    [ -s "$lics/generic_$l" ] || fail "no licence text for $l in $lics"
    n=$((n + 1))
  done
  bb gwe -c deploy >"$build/deploy.log" 2>&1 || { tail -n 40 "$build/deploy.log"; fail "bitbake gwe -c deploy failed"; }
  clean "$build/deploy.log"
  pv=$(sed -n 's/^PV="\(.*\)"/\1/p' "$build/env-systemd.log")
  sbom=$(sed -n 's/^DEPLOY_DIR_IMAGE="\(.*\)"/\1/p' "$build/env-systemd.log")/gwe-$pv.cdx.json
  git -C "$root" show "$srcrev:sbom.cdx.json" | cmp - "$sbom" || fail "the deployed SBOM is not the release's"
  echo "check-yocto $s: the texts of LICENSE's $n licences found; the release's SBOM deployed as $sbom"

  # 6. Init systems: the unit under systemd, the SysV script under SysV init.
  for init in systemd sysvinit; do
    body=$(sed -n '/^do_install() {/,/^}/p' "$build/env-$init.log")
    if [ $init = systemd ]; then on=gwe.service off=init/sysv/gwe; else on=init/sysv/gwe off=gwe.service; fi
    grep -A2 'if true; then' <<<"$body" | grep -q "$on" || fail "$init: $on is not installed"
    grep -A2 'if false; then' <<<"$body" | grep -q "$off" || fail "$init: $off is installed too"
    echo "check-yocto $s: $init: do_install installs $on only"
  done
  # 7. RAUC (meta-rauc): gwe with os-updates turns them on in gwe.toml and needs RAUC; the
  # example image holds both without RAUC's own mark-good service; the example bundle is a
  # verity one of that image's root filesystem, and its task graph reaches the image and gwe.
  body=$(sed -n '/^do_install() {/,/^}/p' "$build/env-systemd.log")
  grep -A1 'if true; then' <<<"$body" | grep -q 'os_updates = true' || fail "PACKAGECONFIG os-updates does not set os_updates"
  grep -q '^RDEPENDS:gwe=".*\brauc\b' "$build/env-systemd.log" || fail "gwe with os-updates does not need rauc"
  bb -e gwe-image-rauc >"$build/env-image.log" 2>&1 || { tail -n 20 "$build/env-image.log"; fail "bitbake -e gwe-image-rauc"; }
  grep -Eq '^IMAGE_INSTALL=".*\bgwe\b.*\brauc\b' "$build/env-image.log" || fail "gwe-image-rauc lacks gwe or rauc"
  grep -Eq '^BAD_RECOMMENDATIONS=".*\brauc-mark-good\b' "$build/env-image.log" || fail "gwe-image-rauc keeps rauc-mark-good"
  bb -e gwe-bundle >"$build/env-bundle.log" 2>&1 || { tail -n 20 "$build/env-bundle.log"; fail "bitbake -e gwe-bundle"; }
  for v in 'RAUC_BUNDLE_FORMAT="verity"' 'RAUC_SLOT_rootfs="gwe-image-rauc"' 'RAUC_BUNDLE_COMPATIBLE="qemuarm64-gwe"'; do
    grep -qxF "$v" "$build/env-bundle.log" || fail "gwe-bundle: no $v"
  done
  # Flags are not printed as values; the variable's history shows the last one set.
  adaptive=$(sed -n '/^# .RAUC_SLOT_rootfs /,/^# pre-expansion/p' "$build/env-bundle.log" | grep '^#  *\[adaptive\]' | tail -n 1)
  [ "$adaptive" = '#     [adaptive] "block-hash-index"' ] || fail "gwe-bundle: the slot image's [adaptive] is not block-hash-index ($adaptive)"
  (cd "$build" && rm -f task-depends.dot && bb -g gwe-bundle >"$build/graph.log" 2>&1) || { tail -n 30 "$build/graph.log"; fail "bitbake -g gwe-bundle"; }
  clean "$build/graph.log"
  grep -q '"gwe-bundle.do_unpack" -> "gwe-image-rauc.do_image_complete"' "$build/task-depends.dot" ||
    fail "gwe-bundle does not wait for gwe-image-rauc"
  grep -q '"gwe.do_package_write_' "$build/task-depends.dot" || fail "gwe-image-rauc does not build gwe"
  echo "check-yocto $s: meta-rauc: gwe-image-rauc (gwe with os-updates, RAUC) and its verity bundle gwe-bundle parse; the bundle's graph reaches the image and gwe"
  echo "check-yocto $s: done in $(($(date +%s) - started)) s"
done
