#!/usr/bin/env bash
# A signed RAUC bundle of a board's root filesystem slot, in RAUC's verity format, its image
# with a block-hash-index so that RAUC can fetch only the blocks a slot lacks (adaptive
# updates):
#   scripts/build-os-bundle.sh BOARD VERSION OUT.raucb [TWEAK]
# It takes the slot's files scripts/build-debian-image.sh assembled
# (target/boards/BOARD/rootfs), sets os-release's IMAGE_VERSION to VERSION, runs TWEAK (a
# shell command; $ROOT is the copy of the files) to make a variant, and signs the bundle with
# the board's PKI (target/boards/BOARD/rauc, or RAUC_CERT, RAUC_KEY and RAUC_KEYRING).
# BUNDLE_COMPATIBLE names another compatible string than the board's (a test of refusal);
# BUNDLE_IMAGE_SIZE makes the image smaller than the slot (a variant with less in it);
# BUNDLE_ADAPTIVE=0 leaves the block-hash-index out (RAUC then copies the image whole: on a
# slot it has no index of yet, it need not read and hash both slots first).
set -euo pipefail
cd "$(dirname "$0")/.."
board=${1:?usage: $0 BOARD VERSION OUT.raucb [TWEAK]}
version=${2:?usage: $0 BOARD VERSION OUT.raucb [TWEAK]}
bundle=${3:?usage: $0 BOARD VERSION OUT.raucb [TWEAK]}
tweak=${4:-}
# shellcheck source=/dev/null
. "board-configs/$board/board.env"
out=target/boards/$board
[ -d "$out/rootfs" ] || { echo "no $out/rootfs: run scripts/build-debian-image.sh $board first" >&2; exit 1; }
export PATH=$PATH:/usr/sbin:/sbin
cert=${RAUC_CERT:-$out/rauc/signing.pem}
key=${RAUC_KEY:-$out/rauc/signing.key}
keyring=${RAUC_KEYRING:-$out/rauc/ca.pem}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ROOT=$work/rootfs
export ROOT
cp -a "$out/rootfs" "$ROOT"
sed -i "s/^IMAGE_VERSION=.*/IMAGE_VERSION=$version/" "$ROOT/etc/os-release"
[ -z "$tweak" ] || bash -c "$tweak"
mkdir "$work/bundle"
truncate -s "${BUNDLE_IMAGE_SIZE:-$SLOT_SIZE}" "$work/bundle/rootfs.ext4"
# A fixed UUID and hash seed: the same files make the same blocks, so an adaptive update
# finds them in the slot it already has.
mkfs.ext4 -q -F -L rootfs -U clear -E hash_seed=00000000-0000-0000-0000-000000000000 \
  -d "$ROOT" "$work/bundle/rootfs.ext4"
cat > "$work/bundle/manifest.raucm" <<MANIFEST
[update]
compatible=${BUNDLE_COMPATIBLE:-$RAUC_COMPATIBLE}
version=$version

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
MANIFEST
[ "${BUNDLE_ADAPTIVE:-1}" = 0 ] || echo "adaptive=block-hash-index" >> "$work/bundle/manifest.raucm"
rm -f "$bundle"
rauc bundle --cert="$cert" --key="$key" --keyring="$keyring" "$work/bundle" "$bundle" >/dev/null
echo "$bundle: ${BUNDLE_COMPATIBLE:-$RAUC_COMPATIBLE} $version, $(stat -c %s "$bundle") bytes"
