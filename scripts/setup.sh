#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian 12 machine. Idempotent: a
# second run changes nothing. Needs root for apt (CI and the dev machines run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
command -v mount >/dev/null || need_apt+=(mount)
command -v curl >/dev/null || need_apt+=(curl)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
command -v start-stop-daemon >/dev/null || need_apt+=(dpkg)
# The hub's tests start a private PostgreSQL server (never the system's cluster).
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need_apt+=(postgresql)
# The dashboard's browser tests drive Debian's headless Chromium through chromedriver.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
# axe-core (npm) checks the dashboard's accessibility inside those tests.
command -v npm >/dev/null || need_apt+=(npm)
# A software TPM 2.0 for the gateway key held in a TPM (src/tpm.rs, hub/tests/identity.rs).
command -v swtpm >/dev/null || need_apt+=(swtpm)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install Rust with rustup first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
# The browser tests' JavaScript tools, pinned by hub/tests/browser/package-lock.json.
if [ ! -f hub/tests/browser/node_modules/axe-core/axe.min.js ]; then
  npm ci --prefix hub/tests/browser --no-audit --no-fund
fi
# The vendors' own device clients, unmodified, from PyPI (hub/tests/murano_client.rs,
# hub/tests/arrowhead_client.rs); installed again only when the requirements change.
venv=hub/tests/clients/venv
want=$(sha256sum hub/tests/clients/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$want" ]; then
  command -v python3 >/dev/null || { apt-get update -qq; apt-get install -y -qq python3; }
  python3 -m venv "$venv" 2>/dev/null || { apt-get update -qq; apt-get install -y -qq python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q -r hub/tests/clients/requirements.txt
  echo "$want" > "$venv/.requirements"
fi
# cargo-deny checks licences, duplicate crates and sources against deny.toml and
# hub/deny.toml (scripts/test.sh). From crates.io, built once (unoptimized: it builds in half
# the time and checks in seconds all the same).
deny_version=0.20.2
if [ "$(cargo-deny --version 2>/dev/null)" != "cargo-deny $deny_version" ]; then
  cargo install --locked --debug --no-default-features cargo-deny --version "$deny_version"
fi
