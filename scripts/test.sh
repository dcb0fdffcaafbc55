#!/usr/bin/env bash
# The project's test command (README, .ci/run). Installs what the tests need, idempotently,
# then runs formatting, lints (including the MSRV lint) and every test suite.
# Sizes of the long campaigns are small here; see README for the full-size runs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "tool check"
cargo --version
rustc --version

step "format"
cargo fmt --all -- --check

step "clippy (warnings are errors; incompatible_msrv denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked
