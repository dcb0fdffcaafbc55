#!/usr/bin/env bash
# Lints the firmware packaging: the Yocto layer with oelint-adv (and gwe-crates.inc in sync
# with Cargo.lock), the Buildroot external tree with kconfiglib and .mk checks, and the
# agent's software bill of materials (sbom.cdx.json in sync with Cargo.lock, and valid
# CycloneDX by the CycloneDX project's own validator).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/lint-venv
if [ ! -x "$venv/bin/oelint-adv" ] || ! "$venv/bin/python" -c 'import kconfiglib, cyclonedx, jsonschema' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet oelint-adv kconfiglib 'cyclonedx-python-lib[json-validation]'
fi
python3 scripts/sbom.py --check
python3 scripts/sbom.py --target aarch64-unknown-linux-musl --out target/gwe-aarch64-musl.cdx.json >/dev/null
"$venv/bin/python" scripts/sbom.py --validate sbom.cdx.json target/gwe-aarch64-musl.cdx.json
python3 scripts/gen-yocto-crates.py --check
"$venv/bin/python" scripts/check_buildroot.py
layer=yocto-layer/meta-gwe
# CI has no network, so HOMEPAGE cannot be pinged; everything else must be clean.
"$venv/bin/oelint-adv" --quiet --noinfo --suppress oelint.vars.homepageping \
  --constantmods=+yocto-layer/oelint-constants.json \
  "$layer"/recipes-gwe/*/*.bb "$layer"/dynamic-layers/*/recipes-*/*/*.bb "$layer"/classes/*.bbclass
echo "oelint-adv: $layer clean"
