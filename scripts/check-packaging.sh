#!/usr/bin/env bash
# Lints the firmware packaging: the Yocto layer with oelint-adv (and gwe-crates.inc in sync
# with Cargo.lock), the Buildroot external tree with kconfiglib and .mk checks.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/lint-venv
if [ ! -x "$venv/bin/oelint-adv" ] || ! "$venv/bin/python" -c 'import kconfiglib' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet oelint-adv kconfiglib
fi
python3 scripts/gen-yocto-crates.py --check
"$venv/bin/python" scripts/check_buildroot.py
layer=yocto-layer/meta-gwe
# CI has no network, so HOMEPAGE cannot be pinged; everything else must be clean.
"$venv/bin/oelint-adv" --quiet --noinfo --suppress oelint.vars.homepageping \
  "$layer"/recipes-gwe/*/*.bb "$layer"/classes/*.bbclass
echo "oelint-adv: $layer clean"
