#!/usr/bin/env python3
"""Whole-image updates on an emulated ARM board: U-Boot, two root slots, RAUC, the agent, a hub.

Boots the qemu-aarch64-debian board, or the 32-bit qemu-armv7-debian (Debian's U-Boot picks
slot A or B and counts tries; RAUC from Debian on the board) with a real hub beside it, and
sends it operating-system bundles through the hub, as an operator would (rollouts from the
dashboard's API, and `engine_fetch` with an `os` item). On its first boot it runs the
systemd checks of systemd_board_test.py (Type=notify, an app installed, a crash and a hang
each restarted); the update's reboot is the clean reboot those checks want. (Power cuts are
scripts/os_power_cut.py's, which CI runs next.) It shows:

  1. a good bundle: downloaded from the hub, installed by RAUC into the other slot, the board
     restarts into it, the agent finds it healthy and RAUC marks it good; the hub's
     engine_report names the new slot and version, the rollout is done and the fleet page's
     OS image column shows the new version and slot;
  2. a bundle whose system is bad (an app that never reaches RUNNING): the agent's check
     fails, it marks the slot bad and restarts; the board is back in the old system and the
     hub hears of the rollback with its reason and the rollout pauses on the failure;
  3. a bundle whose kernel panics before user space: U-Boot's boot counter brings the old
     system back by itself after the tries run out; the agent reports the rollback;
  4. streamed by RAUC from the hub through the agent, adaptive: a bundle in which only the
     agent changed, then the same bundle into the other slot (one slot already holds it): each
     fetches at most 10 % of the bundle;
  5. bad bundles are refused with the reason in fetch_status and the running system is
     untouched: one whose release metadata is for another board (by gwe, before its
     download), one for another compatible string (by RAUC), one signed by a key the board
     does not trust, a truncated one.
Throughout, the data partition (/data: the agent's queue, state and identity) survives.

It reports the install time, the bytes the board downloaded, and the agent's memory with
the update path idle. The emulator and the hub run in a network namespace the test makes
and deletes; the board reaches only the hub (QEMU's restricted user network, one forward).
  scripts/os_update_test.py [--board qemu-aarch64-debian|qemu-armv7-debian] [--prepare | --prepared]
--prepare builds the board's image and the bundles, then stops; --prepared then uses them
(CI prepares them in its background lane while other steps run).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import systemd_board_test as sbt  # noqa: E402  (the board and its console)

ROOT = sbt.ROOT
PORT = 18080


class Hub:
    """The hub in the namespace, driven through its operator API with curl."""

    def __init__(self, ns, out):
        self.ns, self.out = ns, out
        for f in ("hub.db", "hub.db-wal", "hub.db-shm", "operator.token"):
            if os.path.exists(f"{out}/{f}"):
                os.remove(f"{out}/{f}")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "hub/target/debug/gwe-hub", "serve", "--listen", f"127.0.0.1:{PORT}",
             "--db", f"sqlite:{out}/hub.db", "--operator-token-file", f"{out}/operator.token",
             "--advertise", f"10.0.2.2:{PORT}"],
            stdout=open(f"{out}/hub.log", "wb"), stderr=subprocess.STDOUT)
        for _ in range(100):
            if self.curl("GET", "/timestamp", check=False) is not None:
                break
            time.sleep(0.1)

    def curl(self, method, path, *args, check=True):
        token = []
        if os.path.exists(f"{self.out}/operator.token"):
            with open(f"{self.out}/operator.token") as f:
                token = ["-H", f"Authorization: Bearer {f.read().strip()}"]
        r = subprocess.run(["ip", "netns", "exec", self.ns, "curl", "-sf", "-X", method, *token, *args,
                            f"http://127.0.0.1:{PORT}{path}"], capture_output=True)
        if r.returncode != 0:
            if check:
                raise SystemExit(f"os-update: hub {method} {path} failed ({r.returncode}): {r.stderr.decode()}")
            return None
        return r.stdout

    def sign_in(self):
        """An operator `ops` signed in to the dashboard, as a browser is: its session cookie
        and CSRF token, for the dashboard's API (rollouts, the fleet)."""
        password = "a board test password"
        subprocess.run(["hub/target/debug/gwe-hub", "operator", "add", "ops", "--db", f"sqlite:{self.out}/hub.db"],
                       input=password.encode(), check=True, capture_output=True)
        self.jar = f"{self.out}/cookies"
        self.curl("POST", "/ui/login", "-c", self.jar, "--data-urlencode", "name=ops",
                  "--data-urlencode", f"password={password}")
        page = self.curl("GET", "/ui/fleet", "-b", self.jar).decode()
        self.csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)

    def ui(self, method, path, body=None):
        args = ["-b", self.jar]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "-H", f"X-CSRF-Token: {self.csrf}",
                     "-H", f"Origin: http://127.0.0.1:{PORT}", "-d", json.dumps(body)]
        return json.loads(self.curl(method, path, *args))

    def rollout(self, model, bundle, reboot="now"):
        """A rollout of an OS bundle to the model's gateways (one stage, no failure allowed)."""
        r = self.ui("POST", "/ui/api/rollouts", {"name": f"os {bundle}", "package": bundle, "vendor": "gwe",
                                                 "model": model, "stages": [100], "max_failure_pct": 0,
                                                 "reboot": reboot})
        return r["id"]

    def wait_rollout(self, rid, pred, secs):
        until = time.monotonic() + secs
        while True:
            r = self.ui("GET", f"/ui/api/rollouts/{rid}")
            if pred(r):
                return r
            if time.monotonic() > until:
                raise SystemExit(f"os-update: rollout {rid} never got there in {secs} s: {r}")
            time.sleep(2)

    def fleet_row(self, serial):
        f = self.ui("GET", "/ui/api/fleet")
        return next(dict(zip(f["columns"], r)) for r in f["rows"] if r[f["columns"].index("sn")] == serial)

    def whitelist(self, model, serial):
        body = json.dumps({"vendor": "gwe", "model": model, "sn": serial})
        self.dev = json.loads(self.curl("POST", "/api/v1/devices", "-H", "Content-Type: application/json",
                                        "-d", body))["id"]

    def upload(self, model, path):
        self.curl("PUT", f"/api/v1/content/gwe/{model}/{os.path.basename(path)}",
                  "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{path}")

    def dataport(self, alias):
        r = self.curl("GET", f"/api/v1/devices/{self.dev}/dataports/{alias}", check=False)
        return json.loads(r).get("value") if r else None

    def command(self, cmd):
        body = json.dumps({"value": json.dumps(cmd)})
        self.curl("PUT", f"/api/v1/devices/{self.dev}/dataports/engine_fetch",
                  "-H", "Content-Type: application/json", "-d", body)

    def wait_status(self, pattern, secs, seen):
        """Waits until fetch_status matches `pattern`; every value seen is added to `seen`."""
        until = time.monotonic() + secs
        while True:
            v = self.dataport("fetch_status") or ""
            if not seen or seen[-1] != v:
                seen.append(v)
                print(f"    fetch_status: {v.splitlines()[0] if v else ''}")
            if re.search(pattern, v):
                return v
            if time.monotonic() > until:
                raise SystemExit(f"os-update: fetch_status never matched {pattern!r} in {secs} s; seen: {seen}")
            time.sleep(1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def boot_until_login(env, out, ns, log, secs=600):
    """Starts the board again and again (a reset ends QEMU under -no-reboot, as the board's
    power cycling would) until a boot reaches the login shell; returns it and the count of
    boots that ended before."""
    failed = 0
    until = time.monotonic() + secs
    while True:
        b = sbt.Board(env, out, ns, f"{log}-{failed}.log", hub_port=PORT)
        try:
            b.expect(r"root@[\w-]+:~# ", max(1, until - time.monotonic()))
        except SystemExit:
            if b.qemu.poll() is None or b"U-Boot" not in b.buf:
                b.power_cut()
                raise
            failed += 1
            continue
        b.sh("stty -echo cols 500; dmesg -n 1; export PS1='# ' SYSTEMD_PAGER= SYSTEMD_COLORS=0")
        return b, failed


def number(b, command):
    """The number a command on the board prints last."""
    return int(b.ok(command).split()[-1])


def slot_state(b):
    text = b.ok("rauc status --output-format=json")
    # The JSON object, and nothing the console printed after it.
    st = json.JSONDecoder().raw_decode(text[text.index("{"):])[0]
    env = dict(line.split("=", 1) for line in b.ok("fw_printenv").split("\n") if "=" in line)
    return st["booted"], env


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--board", default="qemu-aarch64-debian")
    ap.add_argument("--prepare", action="store_true", help="build the image and the bundles, then stop")
    ap.add_argument("--prepared", action="store_true", help="use the image and bundles --prepare built")
    args = ap.parse_args()
    os.chdir(ROOT)
    env = sbt.board_env(args.board)
    out = f"target/boards/{args.board}"
    os.makedirs(out, exist_ok=True)
    model = args.board
    serial = env["NET_MAC"].upper()
    build = not args.prepared

    pkg, image_env = sbt.signed_sample_app(args.board, out)
    apps = ["logger", "idler"]
    t = time.monotonic()
    if build:
        subprocess.run(["scripts/build-debian-image.sh", args.board], check=True,
                       env={**os.environ, **image_env})
        print(f"image built in {time.monotonic() - t:.0f} s")

    # The bundles: a good one, a bad system, a kernel that panics, and three a board must refuse.
    bdir = f"{out}/bundles"
    os.makedirs(bdir, exist_ok=True)
    bad_app = ("printf '[program:broken]\\ncommand=/bin/false\\nstartretries=1\\n' "
               "> $ROOT/etc/gwe/programs.d/broken.conf; "
               "sed -i 's/^os_check_secs = .*/os_check_secs = 20/' $ROOT/etc/gwe/gwe.toml")
    panic = "echo 'not an initramfs' > $ROOT/boot/initrd.gz"
    t = time.monotonic()
    # The variants a board refuses or that never reach user space need no whole system: their
    # images hold only what they are about (RAUC refuses them before it reads the image).
    only_boot = "find $ROOT -mindepth 1 -maxdepth 1 ! -name boot -exec rm -rf {} +; "
    empty = "find $ROOT -mindepth 1 -maxdepth 1 -exec rm -rf {} +; head -c 65536 /dev/urandom > $ROOT/filler"
    # Streamed, adaptive installs: only where the board's RAUC can stream (Debian 13:
    # DEBIAN_SUITE=trixie).
    streaming = env.get("RAUC_STREAMING") == "1"
    # The bad system's bundle is not adaptive: what it tests is the rollback, and RAUC copies
    # it whole in 40 % of the time it takes to first read and hash both slots (the factory's
    # slot has no block-hash-index yet: 36 s against 89 s on an idle machine, 258 s in a
    # loaded CI run). The good one neither, unless the streamed installs follow it (they
    # measure what its index saves them); the update power-cut campaign installs adaptive
    # bundles on this board in CI.
    bundles = {
        "good": (f"{bdir}/gw-os.v2.raucb", "2", "", {} if streaming else {"BUNDLE_ADAPTIVE": "0"}),
        "bad": (f"{bdir}/gw-os.v3-bad.raucb", "3-bad", bad_app, {"BUNDLE_ADAPTIVE": "0"}),
        "panic": (f"{bdir}/gw-os.v4-panic.raucb", "4-panic", only_boot + panic, {"BUNDLE_IMAGE_SIZE": "48M"}),
        "other": (f"{bdir}/gw-os.v5-other.raucb", "5-other", empty,
                  {"BUNDLE_COMPATIBLE": "another-board", "BUNDLE_IMAGE_SIZE": "4M"}),
    }
    # Each is named NAME.vVERSION.raucb with the version of its signed manifest (the agent
    # refuses a name that says another); the truncated one cannot be read at all.
    stranger = f"{bdir}/gw-os.v6-stranger.raucb"
    truncated = f"{bdir}/gw-os.v7-truncated.raucb"
    # Streamed, adaptive: the same system with another build of the agent (the power-cut
    # campaign's, with a feature of its own; built once for both), and nothing else changed.
    variant = f"target/variant-test-skip-queue-fsync/{env['RUST_TARGET']}/release/gwe"
    agent_only = f"{bdir}/gw-os.v2.1.raucb"
    # For another board, but its release metadata (wrongly) signed for this one: gwe's check
    # passes, RAUC's compatible check refuses it.
    missigned = f"{bdir}/gw-os.v8-other.raucb"
    extra = [agent_only] if streaming else []
    if build:
        for path, version, tweak, benv in bundles.values():
            subprocess.run(["scripts/build-os-bundle.sh", args.board, version, path, tweak], check=True,
                           env={**os.environ, **benv}, stdout=subprocess.DEVNULL)
        # Signed by a CA the board does not trust.
        pki = f"{bdir}/stranger"
        if not os.path.exists(f"{pki}/signing.pem"):
            os.makedirs(pki, exist_ok=True)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-days", "3650", "-subj", "/CN=stranger", "-keyout", f"{pki}/signing.key",
                            "-out", f"{pki}/signing.pem"], check=True, capture_output=True)
        subprocess.run(["scripts/build-os-bundle.sh", args.board, "6-stranger", stranger, empty], check=True,
                       stdout=subprocess.DEVNULL,
                       env={**os.environ, "RAUC_CERT": f"{pki}/signing.pem", "RAUC_KEY": f"{pki}/signing.key",
                            "RAUC_KEYRING": f"{pki}/signing.pem", "BUNDLE_IMAGE_SIZE": "4M"})
        with open(bundles["panic"][0], "rb") as f, open(truncated, "wb") as g:
            g.write(f.read(os.path.getsize(bundles["panic"][0]) // 2))
        if streaming:
            subprocess.run(["scripts/cross-build.sh", env["RUST_TARGET"],
                            "--variant", "test-skip-queue-fsync"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["scripts/build-os-bundle.sh", args.board, "2.1", agent_only,
                            f"install -m 0755 {os.path.abspath(variant)} $ROOT/usr/bin/gwe"], check=True,
                           stdout=subprocess.DEVNULL)
        subprocess.run(["scripts/build-os-bundle.sh", args.board, "8-other", missigned, empty], check=True,
                       env={**os.environ, "BUNDLE_COMPATIBLE": "another-board", "BUNDLE_IMAGE_SIZE": "4M"},
                       stdout=subprocess.DEVNULL)
        # Release metadata (docs/ota-format.md), as a release signer writes it: the board has
        # root keys, so it takes no bundle without. Each is signed for the compatible string its
        # image says, but for the one above.
        for path in [b[0] for b in bundles.values()] + [stranger, truncated, missigned] + extra:
            compatible = "another-board" if path == bundles["other"][0] else env["RAUC_COMPATIBLE"]
            subprocess.run(["target/debug/gwe", "pkg", "sign", path, "--key", f"{out}/release.key", "--vendor", "gwe",
                            "--model", model, "--compatible", compatible], check=True, capture_output=True)
        print(f"bundles built in {time.monotonic() - t:.0f} s")
    if args.prepare:
        return
    size = os.path.getsize(bundles["good"][0])
    print(f"a full bundle is {size:,} bytes")
    subprocess.run(["cargo", "build", "-q", "--manifest-path", "hub/Cargo.toml"], check=True)

    ns = f"gwe-os-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    board = hub = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        hub = Hub(ns, out)
        hub.whitelist(model, serial)
        hub.sign_in()
        for path in [b[0] for b in bundles.values()] + [stranger, truncated, missigned] + extra:
            hub.upload(model, path)
            hub.upload(model, f"{path}.meta")
        seen = []

        print("--- boot: slot A, the agent reaches the hub")
        t = time.monotonic()
        board, _ = boot_until_login(env, out, ns, f"{out}/os-boot1")
        print(f"booted to a shell in {time.monotonic() - t:.0f} s")
        booted, uenv = slot_state(board)
        assert booted == "A", booted
        sbt.first_boot_checks(board, pkg, apps)
        for _ in range(90):
            if hub.dataport("engine_report"):
                break
            time.sleep(1)
        seq_before = board.ok("gwe queue stats --json")
        seq_before = seq_before[seq_before.index("{"):]

        print("--- bad bundles are refused; the running system is untouched")
        # The first by gwe from its release metadata, before the download; the others by RAUC.
        for path, want in [(bundles["other"][0], r'signed for images compatible with "another-board"'),
                           (missigned, r"Compatible mismatch|[Cc]ompatible"),
                           (stranger, r"[Ss]ignature|[Vv]erif|certificate"),
                           (truncated, r"[Ii]nvalid|[Ff]ailed|size|squashfs|[Ss]ignature|bundle")]:
            name = os.path.basename(path)
            rx0 = number(board, "cat /sys/class/net/eth0/statistics/rx_bytes")
            hub.command({"os": {"name": name}})
            v = hub.wait_status(rf"^{re.escape(name)}: ", 300, seen)
            assert re.search(want, v), f"{name}: {v}"
            rx = number(board, "cat /sys/class/net/eth0/statistics/rx_bytes") - rx0
            if path == bundles["other"][0]:
                assert rx < os.path.getsize(path) // 4, f"{rx:,} bytes received for a bundle refused by its metadata"
            print(f"refused {name} ({rx:,} bytes received): {v.split(': ', 1)[1][:160]}")
        assert board.qemu.poll() is None, "the board restarted"
        assert slot_state(board) == (booted, uenv), "a refused bundle changed the boot selection"

        print("--- a good bundle through a rollout: installed into slot B, booted, checked, marked good")
        # The agent reboots as soon as it says "installed", before a command typed after that
        # could run: a sampler on the board keeps the received-byte count on /data, once a
        # second, and the count the reboot leaves there is read in the new system.
        rx_before = number(board, "cat /sys/class/net/eth0/statistics/rx_bytes")
        board.ok("(while :; do cat /sys/class/net/eth0/statistics/rx_bytes > /data/rx.tmp && "
                 "mv /data/rx.tmp /data/rx; sleep 1; done) >/dev/null 2>&1 & true")
        good_rollout = hub.rollout(model, os.path.basename(bundles["good"][0]))
        hub.wait_status(r"^installing gw-os\.v2", 300, seen)
        t = time.monotonic()
        hub.wait_status(r"^installed .* 2 into slot B", 900, seen)
        install_secs = time.monotonic() - t
        print(f"installed in {install_secs:.0f} s")
        board.stopped(180)
        board, failed = boot_until_login(env, out, ns, f"{out}/os-boot2")
        assert failed == 0, f"{failed} boots of the new system failed"
        rx = number(board, "cat /data/rx") - rx_before
        assert size <= rx < size * 1.1, f"the board received {rx:,} bytes for a {size:,}-byte bundle"
        print(f"the board received {rx:,} bytes for a {size:,}-byte bundle")
        # The agent's reboot was a clean one; the app installed in slot A runs in slot B.
        sbt.after_clean_reboot_checks(board, apps)
        v = hub.wait_status(r"marked good|failed its check", 300, seen)
        assert "marked good" in v, v
        booted, uenv = slot_state(board)
        assert booted == "B" and uenv["BOOT_ORDER"].startswith("B") and uenv["BOOT_B_LEFT"] == "3", (booted, uenv)
        assert "IMAGE_VERSION=2" in board.ok("cat /etc/os-release")
        report = None
        for _ in range(60):
            r = hub.dataport("engine_report")
            report = json.loads(r) if r else {}
            if report.get("os", {}).get("slot") == "B":
                break
            time.sleep(1)
        assert report["os"]["slot"] == "B" and report["os"]["version"] == "2", report.get("os")
        # The slot to fall back to, as RAUC says after mark-good: A, the factory image, good.
        other = report["os"].get("other") or {}
        assert report["os"].get("compatible") == env["RAUC_COMPATIBLE"], report["os"]
        assert (other.get("slot"), other.get("boot_status")) == ("A", "good"), report["os"]
        seq_after = board.ok("gwe queue stats --json")
        seq_after = seq_after[seq_after.index("{"):]
        assert (json.loads(seq_after)["last_seq"] or 0) >= (json.loads(seq_before)["last_seq"] or 0), (seq_before, seq_after)
        r = hub.wait_rollout(good_rollout, lambda r: r["state"] == "done", 60)
        assert r["counts"] == {"installed": 1}, r["counts"]
        # The agent queues a fresh engine_report with its verdict; it reaches the hub at the
        # forwarder's next batch.
        for _ in range(30):
            image = hub.fleet_row(serial)["os_image"]
            if image == "2 (slot B)":
                break
            time.sleep(1)
        assert image == "2 (slot B)", image
        print(f"slot B marked good (BOOT_ORDER {uenv['BOOT_ORDER']!r}); engine_report os {report['os']['version']} "
              f"in slot {report['os']['slot']}; the queue kept its records across the update; the rollout is "
              f"done (1 installed) and the fleet page's OS image says {image!r}")

        print("--- a bad system through a rollout: its check fails, marked bad, back to slot B; the rollout pauses")
        bad_rollout = hub.rollout(model, os.path.basename(bundles["bad"][0]))
        hub.wait_status(r"^installed .* 3-bad into slot A", 900, seen)
        board.stopped(180)
        board, failed = boot_until_login(env, out, ns, f"{out}/os-boot3")
        booted, _ = slot_state(board)
        assert booted == "A", f"the new system did not boot: {booted}"
        v = hub.wait_status(r"failed its check", 300, seen)
        assert "broken" in v, v
        board.stopped(180)
        board, failed = boot_until_login(env, out, ns, f"{out}/os-boot4")
        v = hub.wait_status(r"rolled back", 300, seen)
        booted, uenv = slot_state(board)
        assert booted == "B" and "IMAGE_VERSION=2" in board.ok("cat /etc/os-release"), booted
        r = hub.wait_rollout(bad_rollout, lambda r: r["state"] == "paused", 60)
        assert "1 of 1 gateways failed" in r["reason"], r["reason"]
        # Back in B, the report says the slot it fell back from holds 3-bad, and is bad.
        other = {}
        for _ in range(30):
            report = json.loads(hub.dataport("engine_report") or "{}").get("os") or {}
            other = report.get("other") or {}
            if (report.get("update") or {}).get("phase") == "rolled-back":
                break
            time.sleep(1)
        assert (other.get("slot"), other.get("version"), other.get("boot_status")) == ("A", "3-bad", "bad"), report
        print(f"rolled back to slot B: {v}; the rollout paused: {r['reason']}")

        print("--- a kernel that panics: U-Boot's counter falls back with no help from the agent")
        hub.command({"os": {"name": os.path.basename(bundles["panic"][0])}})
        hub.wait_status(r"^installed .* 4-panic into slot A", 900, seen)
        board.stopped(180)
        board, failed = boot_until_login(env, out, ns, f"{out}/os-boot5")
        assert failed == 3, f"{failed} boots of the panicking system before the fallback (3 tries)"
        booted, uenv = slot_state(board)
        assert booted == "B", booted
        v = hub.wait_status(r"rolled back", 300, seen)
        assert "did not come up" in v, v
        print(f"{failed} boots of slot A panicked; U-Boot went back to slot B: {v}")

        def power_cut(slot):
            """Kill the emulator, boot again: back in `slot`, agent and apps as before. Returns Pss."""
            nonlocal board
            time.sleep(5)
            board.power_cut()
            board, failed = boot_until_login(env, out, ns, f"{out}/os-boot6")
            assert failed == 0 and slot_state(board)[0] == slot, f"the board did not come back in slot {slot}"
            return sbt.after_power_cut_checks(board, apps)

        if not streaming:
            # Power cuts, during updates and between them, are scripts/os_power_cut.py's, which
            # CI runs next on this board (its checks include these).
            print("--- the agent with the update path idle")
            pss = sbt.after_power_cut_checks(board, apps)
            print(f"OS update test passed: install {install_secs:.0f} s, {rx:,} bytes received for a "
                  f"{size:,}-byte bundle, agent Pss {pss} kB with the update path idle ({len(apps)} apps); "
                  f"streaming not tried: Debian {env['DEBIAN_SUITE']}'s RAUC cannot stream (DEBIAN_SUITE=trixie)")
            board.power_cut()
            board = None
            return
        # RAUC streams the bundle from the hub through the agent, and with its block-hash-index
        # fetches only the blocks neither slot holds.
        def streamed(name, slot):
            rx0 = number(board, "cat /sys/class/net/eth0/statistics/rx_bytes")
            t = time.monotonic()
            hub.command({"os": {"name": name, "stream": True, "reboot": "manual"}})
            hub.wait_status(rf"^installed .* into slot {slot}", 900, seen)
            got = number(board, "cat /sys/class/net/eth0/statistics/rx_bytes") - rx0
            return got, time.monotonic() - t

        agent_size = os.path.getsize(variant)
        full = os.path.getsize(agent_only)
        print(f"--- streamed, adaptive: only the agent changed ({agent_size:,} bytes of {full:,})")
        rx_agent, secs = streamed(os.path.basename(agent_only), "A")
        print(f"installed 2.1 into slot A in {secs:.0f} s: the board received {rx_agent:,} bytes "
              f"({100 * rx_agent / full:.1f} % of the {full:,}-byte bundle)")
        assert rx_agent <= full // 10, f"{rx_agent:,} bytes received: over 10 % of the bundle"

        print("--- power cut (the emulator killed) with 2.1 installed, its reboot not yet done")
        pss = power_cut("A")
        v = hub.wait_status(r"marked good|failed its check", 300, seen)
        assert "2.1 running in slot A and marked good" in v, v

        print("--- streamed, adaptive: the same bundle again, into slot B (a slot already holds it)")
        rx_same, secs = streamed(os.path.basename(agent_only), "B")
        print(f"installed 2.1 into slot B in {secs:.0f} s: the board received {rx_same:,} bytes "
              f"({100 * rx_same / full:.1f} % of the bundle)")
        assert rx_same <= full // 10, f"{rx_same:,} bytes received: over 10 % of the bundle"
        print(f"OS update test passed: install {install_secs:.0f} s; bytes received for a bundle of "
              f"{size:,}: {rx:,} downloaded, {rx_agent:,} streamed with only the agent changed, "
              f"{rx_same:,} streamed with a slot unchanged; agent Pss {pss} kB with the update path idle "
              f"({len(apps)} apps)")
        board.power_cut()
        board = None
    finally:
        if board is not None:
            board.power_cut()
        if hub is not None:
            hub.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
