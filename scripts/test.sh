#!/usr/bin/env bash
# The project's test command (README, .ci/run). Installs what the tests need, idempotently,
# then runs formatting, lints (including the MSRV lint) and every test suite. The long
# campaigns run at their small CI size here; README says how to run them at full size.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how far into the run it starts, and how busy the machine's cores were during
# the step before (both lanes, from /proc/stat), so a slow run shows where its minutes went and
# where cores stood idle.
cpu_busy=0 cpu_total=0
step() {
  local busy total
  read -r busy total < <(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  [ "$cpu_total" = 0 ] || [ "$total" = "$cpu_total" ] ||
    printf '(cores busy %d %% of that step)\n' $(((busy - cpu_busy) * 100 / (total - cpu_total)))
  cpu_busy=$busy cpu_total=$total
  printf '\n=== [%dm%02ds] %s (disk: %s free)\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" \
    "$(df -h --output=avail . | tail -1 | tr -d ' ')"
}

# Disk: a CI machine's disk can be small (a run once stopped with "No space left on device"
# building the ARM tests). Test builds keep line tables only (a failing test still names its
# file and line), and nothing incremental: each test build is made once here. The ARM test
# builds are removed when their suite has run (nothing later uses them).
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only

step "setup"
scripts/setup.sh
cargo --version
rustc --version
# Everything the background lane needs from apt is installed now, in the foreground: the
# cross toolchain, Yocto's and Buildroot's host tools.
scripts/setup-cross.sh
scripts/check-yocto.sh --deps
scripts/check-buildroot.sh --deps
scripts/build-debian-image.sh qemu-aarch64-debian --deps

# The background lane (scripts/ci-background.sh): CPU-heavy work no timer depends on runs
# beside the foreground steps at a lower priority, on the cores they leave idle. Each job
# is joined (waited for, its output shown) where its result is due. First what the
# foreground needs halfway: the ARM test builds, the boards' agents (static musl, and the
# power-cut campaign's variant without the queue's fsync), the Debian board's image and OS
# bundles (os_update_test.py's and the update power-cut campaign's); then the build systems'
# checks and the fuzz run, joined at the end.
bg=target/ci-bg
rm -rf "$bg"
mkdir -p "$bg"
setsid scripts/ci-background.sh "$bg" \
  arm-build "scripts/test-arm.sh --no-run" \
  board-agents "scripts/cross-build.sh aarch64-unknown-linux-musl --variant test-skip-queue-fsync &&
                scripts/cross-build.sh armv7-unknown-linux-musleabihf" \
  debian-board "python3 scripts/os_power_cut.py --prepare" \
  yocto "scripts/check-yocto.sh scarthgap wrynose" \
  buildroot "scripts/check-buildroot.sh 2025.02.16 2026.02.3" \
  fuzz "scripts/fuzz.sh --seconds 4" &
bg_pid=$!
# Every lane's process group is stopped when this script ends, whichever way.
lanes="-$bg_pid"
trap 'kill -TERM -- $lanes 2>/dev/null || true' EXIT
# joined NAME [LANE]: waits for the job NAME of the lane whose pid is LANE (default: the
# background lane), shows its output and when it ran, and stops here if it failed.
run_started=$((EPOCHSECONDS - SECONDS))
joined() {
  local lane=${2:-$bg_pid}
  while [ ! -f "$bg/$1.rc" ]; do
    kill -0 "$lane" 2>/dev/null || [ -f "$bg/$1.rc" ] || { echo "the lane of $1 ended before $1 did" >&2; exit 1; }
    sleep 2
  done
  local rc start end cpu
  read -r rc start end cpu <"$bg/$1.rc"
  start=$((start - run_started)) end=$((end - run_started))
  cat "$bg/$1.log"
  printf '(%s ran from %dm%02ds to %dm%02ds, %s s of CPU)\n' "$1" $((start / 60)) $((start % 60)) \
    $((end / 60)) $((end % 60)) "$cpu"
  [ "$rc" = 0 ] || { echo "$1 failed (exit status $rc): its output is above" >&2; exit 1; }
}

step "format"
cargo fmt --all -- --check
cargo fmt --manifest-path hub/Cargo.toml -- --check

step "shellcheck (init scripts and project scripts)"
shellcheck -x init/sysv/gwe scripts/*.sh .ci/run
shellcheck -s sh board-configs/*/rootfs/etc/init.d/* board-configs/*/rootfs/usr/share/gwe-test/*.sh board-configs/*/rootfs/usr/share/gwe-test/*/*.sh board-configs/*/ota-sample/*/*.sh

step "clippy (warnings are errors; incompatible_msrv denied against rust-version)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --manifest-path hub/Cargo.toml --all-targets --locked -- -D warnings

step "firmware packaging: Yocto layer (oelint-adv, crates.inc in sync), Buildroot tree (kconfiglib, .mk)"
scripts/check-packaging.sh

step "no import cycles between the modules of the agent, wire and the hub; imports grouped std / external / crate"
python3 scripts/check-module-cycles.py src wire/src hub/src
python3 scripts/check-imports.py

step "cargo-deny: licences, duplicate crates and sources (deny.toml, hub/deny.toml)"
# Every crate of the lock files, those of other platforms too (cargo-deny reads them all).
cargo fetch --locked
cargo fetch --locked --manifest-path hub/Cargo.toml
cargo deny --offline check licenses bans sources
(cd hub && cargo deny --offline check licenses bans sources)

step "dependencies fit rust-version"
python3 scripts/check-msrv-deps.py
python3 scripts/check-msrv-deps.py hub

step "tests (includes the 20-cycle SIGKILL crash harness)"
cargo test --workspace --locked

step "hub tests: device, operator and dashboard APIs over sockets on SQLite and a private PostgreSQL; the dashboard in headless Chromium"
cargo test --manifest-path hub/Cargo.toml --locked

step "bytes on the wire per 1,000 points: forwarder vs form-encoded record requests"
cargo test --manifest-path hub/Cargo.toml --locked --bench wire_bytes

step "hub load smoke run: 200 gateways on SQLite and PostgreSQL (full size: cargo bench --bench load -- --gateways 50000)"
cargo test --manifest-path hub/Cargo.toml --locked --bench load -- --gateways 200 --seconds 5

step "edge benchmark smoke run (full size: cargo bench --manifest-path hub/Cargo.toml --bench edge)"
cargo test --manifest-path hub/Cargo.toml --locked --bench edge -- --points 5000 --commands 3 --poll-ms 500

step "hub CPU and p99 of a gateway's client certificate vs its token, smoke run, 200 gateways (full size: cargo bench --manifest-path hub/Cargo.toml --bench mtls)"
cargo test --manifest-path hub/Cargo.toml --locked --bench mtls -- --gateways 200

step "benchmark smoke run: queue vs SQLite, in the test profile (full size, optimized: cargo bench --bench queue_vs_sqlite)"
# The queue's smoke run builds on the test build's crates, as the hub's smoke runs above do;
# the full runs by hand use the release profile as shipped.
cargo test --locked --bench queue_vs_sqlite -- --messages 4000 --reopen-mb 64

# The agent as it ships, its default features: the release build the API abuse test made
# (tests/ingest_limits.rs), not another one (by hand, the script measures the agent without
# its edge paths, 100 KB less resident).
step "benchmark smoke run: gwe vs supervisord, 20 programs (full size: --idle-seconds 60)"
GWE_FEATURES='' scripts/bench-supervisor.sh --idle-seconds 10

step "the whole test suite on aarch64 and armv7 (32-bit) under qemu-user; its campaigns smaller than natively: 3 SIGKILL cycles, an eighth of the property cases (built in the background lane)"
joined arm-build
GWE_OTA_CRASH_CYCLES=3 GWE_CRASH_CYCLES=3 GWE_PROPTEST_DIV=8 scripts/test-arm.sh
rm -rf target/arm

step "the emulated aarch64 and armv7 boards: boot, clean reboot, power cut (their agents built in the background lane)"
joined board-agents
scripts/boot-test.sh qemu-aarch64-virt
scripts/boot-test.sh qemu-armv7-virt
step "a Debian arm64 board with U-Boot, A/B slots and RAUC: the agent under systemd (notify, watchdog, restarts, reboot); OS bundles from a hub: good, bad, kernel panic, refused (image and bundles built in the background lane)"
joined debian-board
python3 scripts/os_update_test.py --prepared
# The aarch64 board's campaigns run beside the update campaign, in a lane of their own at
# the same priority: alone, the update campaign left a tenth of the cores idle, and the
# aarch64 board's campaigns (one emulated CPU) half of them for the run's last 4 minutes.
setsid scripts/ci-background.sh --nice 0 "$bg" \
  lossy-self-test "python3 scripts/lossy_disk.py --self-test" \
  aarch64-cuts "scripts/power-cut-campaign.sh --cycles 5 --disk tear" \
  fsync-self-test "GWE_AGENT_FEATURES=test-skip-queue-fsync scripts/power-cut-campaign.sh --cycles 3 --disk drop --expect-fail" &
cuts_pid=$!
lanes="$lanes -$cuts_pid"

# Two cuts, RAUC's install and the reboot into the new slot (the U-Boot environment's write):
# with all four moments the run takes 4 minutes more than CI's 60 minutes hold.
step "power cuts during OS updates on the Debian board: 2 cycles (install, reboot) on a disk that tears unflushed writes (full size: --cycles 300, all four moments); beside it, the aarch64 board's campaigns"
scripts/power-cut-campaign.sh --os-update --prepared --cycles 2 --phases install,reboot

step "the lossy disk's self-test: what a cut leaves on the image (drop, tear) (run beside the update campaign)"
joined lossy-self-test "$cuts_pid"
step "power-cut campaign on the aarch64 board, 5 cycles, a disk that tears unflushed writes (full size: power-cut-full.sh) (run beside the update campaign)"
joined aarch64-cuts "$cuts_pid"
step "the campaign's self-test: an agent without the queue's fsync must fail it (run beside the update campaign)"
joined fsync-self-test "$cuts_pid"

step "the Yocto layer in real bitbake and OpenEmbedded-Core (and meta-rauc), scarthgap and wrynose, offline (../shared/upstream)"
joined yocto

step "the Buildroot tree in real Buildroot 2025.02.16 and 2026.02.3, offline: the pinned release tarball, check-package, four configs (one with RAUC and U-Boot)"
joined buildroot

step "fuzz every decoder of outside input, 4 s each (by hand: scripts/fuzz.sh --runs 10000000)"
joined fuzz

step "all passed"
