#!/usr/bin/env python3
"""Power cuts during whole-image updates, on the emulated Debian board (docs/power-cut-campaign.md).

The board boots through Debian's U-Boot from two root slots (scripts/os_update_test.py) on a
disk served by scripts/lossy_disk.py: at every cut, the writes the board did not flush are
torn in at random or dropped. A hub beside it sends the agent OS bundles, one after the
other (two good versions, in turn into the other slot); an app on the board writes to the
agent's queue all the time. Each cycle cuts the power at a random instant of one moment of
an update, in turn:

  download   the agent fetches the bundle from the hub
  install    RAUC writes the other slot
  reboot     the system goes down for the new slot, or U-Boot and the kernel come up in it
  first boot the new system runs, before the agent marked it good

and the boot after the cut checks (the same checks before the first cut):

  boots      every boot reached user space (a login shell), none needed the boot counter
  system     the system booted is the old or the new version, whole: os-release names one of
             them, and the digest of /boot, /usr/bin, /usr/sbin and /etc/os-release is that
             version's, byte for byte (never a mixed system)
  good       every slot RAUC calls good (U-Boot falls back to it if the other fails) holds a
             whole known version: the same digest, of the slot mounted read-only
  acked      every value the agent acknowledged (204) is still queued or already at the hub
  apps       the agent (systemd starts it) runs, and every app is RUNNING
  files      `gwe check`: no queue record, state file or database damaged
  update     every update ends: after power returns, the agent finishes it (installs again,
             checks and marks good) or reports it failed, in fetch_status

  scripts/os_power_cut.py [--cycles N] [--seed S] [--disk plain|drop|tear] [--phases LIST]
                          [--prepare | --prepared]
--phases takes the moments in turn from LIST (comma-separated; all four by default).
--prepare builds the image and the bundles (scripts/os_update_test.py --prepare, and the
campaign's two versions) and a copy of the factory disk, then stops; --prepared uses them.
scripts/power-cut-campaign.sh --os-update [ARGS] runs this.
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import os_update_test as out  # noqa: E402  (the hub and the board's console)
import systemd_board_test as sbt  # noqa: E402

PHASES = ["download", "install", "reboot", "first boot"]
VERSIONS = ["5.1", "5.2"]
DIGEST_PATHS = ["boot", "usr/bin", "usr/sbin"]
DIGEST_CMD = (f"(cd {{root}} && {{{{ find {' '.join(DIGEST_PATHS)} -type f; echo etc/os-release; }}}} | LC_ALL=C sort | "
              "xargs sha256sum | sha256sum)")


def tree_digest(rootfs, version):
    """What DIGEST_CMD prints on a board running `version` of this rootfs (a bundle's copy
    differs from the rootfs only by os-release's IMAGE_VERSION)."""
    files = []
    for top in DIGEST_PATHS:
        for d, _, names in os.walk(os.path.join(rootfs, top)):
            for n in names:
                p = os.path.join(d, n)
                if os.path.isfile(p) and not os.path.islink(p):
                    files.append(os.path.relpath(p, rootfs))
    files.append("etc/os-release")
    lines = []
    for rel in sorted(files, key=os.fsencode):
        p = os.path.join(rootfs, rel)
        if rel == "etc/os-release":
            link = os.readlink(p) if os.path.islink(p) else None
            with open(os.path.join(os.path.dirname(p), link) if link else p) as f:
                text = f.read()
            if version is not None:
                text = re.sub(r"(?m)^IMAGE_VERSION=.*$", f"IMAGE_VERSION={version}", text)
            data = text.encode()
        else:
            with open(p, "rb") as f:
                data = f.read()
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {rel}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


class Campaign:
    def __init__(self, args, env, cdir):
        self.args, self.env, self.cdir = args, env, cdir
        self.model = args.board
        self.serial = env["NET_MAC"].upper()
        self.ns = f"gwe-oscut-{os.getpid()}"
        self.board = None
        self.boots = 0
        self.acked = []          # every value acknowledged so far
        self.acked_set = set()
        self.update = None       # the update under way: {"name", "version", "installed"}
        self.stale = None        # the status when it was sent
        self.outcomes = []       # (version, outcome) of every update that ended
        self.last_cut = 0.0      # host time of the last cut: fetch_status older than it is stale
        self.est = {"download": 15.0, "install": 120.0, "reboot": 25.0, "first boot": 80.0}
        self.record = {}         # the agent's os-update.json, as the last check read it
        self.pss = "?"           # the agent's Pss (kB), as the last check read it
        self.first_boot_cut_at = 0.0
        self.problems = []

    # --- the board
    def start(self, log):
        if self.board is not None:
            self.harvest()
        self.boots += 1
        drive = f"file={self.cdir}/disk.img,format=raw,if=virtio"
        if self.args.disk != "plain":
            drive = f"file=nbd+unix:///?socket={self.cdir}/disk.sock,format=raw,if=virtio"
        self.board = sbt.Board(self.env, self.cdir, self.ns, f"{self.cdir}/{log}.log", hub_port=out.PORT,
                               drive=drive)
        self.boot_started = time.monotonic()
        return self.board

    def cut(self):
        self.board.power_cut()
        self.last_cut = time.time()
        self.harvest()

    def harvest(self):
        """The values this boot's console says were acknowledged (once per boot: a board that
        went down by itself is harvested when the next one starts)."""
        # Whole lines only: a line the cut broke off may end in a shorter number.
        for m in re.findall(rb"GWE-ACKED w1 (\d+\.\d+)\r?\n", self.board.buf):
            if m.decode() not in self.acked_set:
                self.acked_set.add(m.decode())
                self.acked.append(m.decode())

    def status(self, fresh=True):
        """fetch_status as the hub has it; `fresh`: only when the board wrote it after the last
        cut (where an update stands now; an end said before the cut is still its end)."""
        r = self.hub.curl("GET", f"/api/v1/devices/{self.hub.dev}/dataports/fetch_status", check=False)
        if not r:
            return ""
        v = json.loads(r)
        return v["value"] if not fresh or v["ts"] > self.last_cut + 1 else ""

    # --- the checks after a boot
    def check(self, cycle, running=False):
        """The checks of a boot (`running`: of the board as it runs, its shell set up already)."""
        b = self.board
        self.version, self.slot, self.good_state = "?", "?", []
        if not running:
            try:
                b.expect(r"root@[\w-]+:~# ", 300)
            except SystemExit as e:
                self.good_state = [f"boots: this boot did not reach user space: {str(e)[-300:]}"]
                return False
            b.sh("stty -echo cols 500; dmesg -n 1; export PS1='# ' SYSTEMD_PAGER= SYSTEMD_COLORS=0")
        found = []
        booted, _ = out.slot_state(b)
        version = re.search(r"(?m)^IMAGE_VERSION=(\S+)", b.ok("cat /etc/os-release")).group(1)
        allowed = {self.running}
        if self.update:
            allowed.add(self.update["version"])
        if version not in allowed:
            found.append(f"system: slot {booted} runs {version}, neither the old ({self.running}) nor the new")
        # The system booted, and every slot RAUC would have U-Boot fall back to (good), is a
        # whole known version: the digest of its files is that version's.
        text = b.ok("rauc status --detailed --output-format=json")
        st = json.JSONDecoder().raw_decode(text[text.index("{"):])[0]
        for slot in st["slots"]:
            for s in slot.values():
                name = s.get("bootname")
                if name == booted:
                    root, ver = "/", version
                elif s.get("boot_status") == "good" and (self.update is None or version == self.update["version"]):
                    # Not while an update may be writing it: the agent carries out a command a
                    # cut interrupted at once, and RAUC refuses a slot that is mounted. A slot
                    # not booted is the one an update writes, until the update has booted.
                    b.ok(f"mkdir -p /mnt/slot && mount -o ro,noload {s['device']} /mnt/slot")
                    root = "/mnt/slot"
                    m = re.search(r"(?m)^IMAGE_VERSION=(\S+)", b.ok("cat /mnt/slot/etc/os-release"))
                    ver = m.group(1) if m else "?"
                else:
                    continue
                digest = b.ok(DIGEST_CMD.format(root=root), 300).split()[-2]
                if root != "/":
                    b.ok("umount /mnt/slot")
                if self.digests.get(ver) != digest:
                    what = "booted" if root == "/" else "good, the one to fall back to"
                    found.append(f"system: slot {name} ({what}) says {ver} but its files' digest is {digest[:16]}, "
                                 f"not {(self.digests.get(ver) or 'a known one')[:16]}: a mixed system")
        # The agent (systemd starts it) and the data.
        for _ in range(60):
            if b.sh("systemctl is-active gwe")[0] == 0:
                break
            time.sleep(1)
        else:
            found.append("agent: gwe.service not active a minute after the login")
        rc, text = b.sh("cat /data/gwe/state/os-update.json")
        self.record = json.loads(text[text.index("{"):]) if rc == 0 and "{" in text else {}
        for _ in range(90):
            rc, text = b.sh("gwe ctl status")
            lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
            if rc == 0 and lines and all(" RUNNING " in f"{line} " for line in lines):
                break
            time.sleep(1)
        else:
            found.append(f"apps: not every app RUNNING 90 s after the login: {' | '.join(lines)[:300]}")
        pid = b.ok("systemctl show gwe -p MainPID --value").split()[-1]
        m = re.search(r"Pss:\s+(\d+) kB", b.sh(f"grep ^Pss: /proc/{pid}/smaps_rollup")[1])
        self.pss = m.group(1) if m else "?"
        rc, text = b.sh("gwe check", 180)
        if rc != 0:
            found.append(f"files: gwe check: {text.strip()[-300:]}")
        stats = b.ok("gwe queue stats --json")
        fwd = json.loads(stats[stats.index("{"):]).get("forwarder") or 0
        queued = set(re.findall(r"(?m)^Q (\S+)", b.ok(
            f"gwe queue dump | awk -v fwd={fwd} '$1 > fwd && $3 == \"w1\" {{ print \"Q \" $4 }}'", 300)))
        hub = self.hub.curl("GET", f"/api/v1/devices/{self.hub.dev}/dataports/w1/history?limit=100000", check=False)
        at_hub = {p["value"] for p in json.loads(hub or b"[]")}
        lost = [v for v in self.acked if v not in queued and v not in at_hub]
        if lost:
            found.append(f"acked: {len(lost)} acknowledged values lost: {' '.join(lost[:8])}")
        self.version, self.slot, self.good_state = version, booted, found
        return not found

    def writer(self, cycle):
        """An app's writes to the agent's local API, each value it acknowledged (204) on the
        console, two a second at most. In bash alone, over one keep-alive connection
        (/dev/tcp): an emulated CPU spends a third of a second forking wget and a tenth forking
        sleep, and a writer that forks took a whole core of the host away from the update."""
        # post PATH BODY [HEADER]: one request on fd 3; its status in $code, its body in $body.
        # `read -t` on a FIFO nobody writes (fd 4) is a sleep without a fork.
        self.board.send(
            f"(c={cycle}; n=0; tok=; p=/run/gwe-writer.$BASHPID; mkfifo $p; exec 4<>$p; rm -f $p; "
            "con() { exec 3>&-; exec 3<>/dev/tcp/127.0.0.1/8090; }; "
            "post() { printf 'POST %s HTTP/1.1\\r\\nHost: gwe\\r\\n%sContent-Type: application/x-www-form-urlencoded"
            "\\r\\nContent-Length: %d\\r\\n\\r\\n%s' \"$1\" \"$3\" ${#2} \"$2\" >&3 || return 1; "
            "code=; body=; len=0; read -r -t 10 -u 3 _ code _ || return 1; "
            "while read -r -t 10 -u 3 h; do h=${h%$'\\r'}; [ -z \"$h\" ] && break; "
            "case ${h,,} in content-length:*) len=${h//[^0-9]/};; esac; done; "
            "[ \"$len\" = 0 ] || read -r -t 10 -u 3 -N \"$len\" body; }; "
            f"con; while [ -z \"$tok\" ]; do if post /provision/activate sn={self.serial} && [ \"$code\" = 200 ]; "
            "then tok=$body; else con; read -t 1 -u 4; fi; done; "
            "while :; do n=$((n + 1)); "
            "if post /onep:v1/stack/alias \"w1=$c.$n\" \"X-Exosite-CIK: $tok\"$'\\r\\n' && [ \"$code\" = 204 ]; "
            "then echo \"GWE-ACKED w1 $c.$n\" > /dev/console; else con; fi; read -t 0.5 -u 4; done) >/dev/null 2>&1 &")

    # --- the updates
    def next_update(self, s):
        # `s`, the status now, says nothing of the new update (it may name the same version).
        self.stale = s
        v = VERSIONS[0] if self.running != VERSIONS[0] else VERSIONS[1]
        name = f"gw-os.v{v}.raucb"
        self.update = {"name": name, "version": v}
        self.hub.command({"os": {"name": name}})

    def ended(self, s):
        """The update's end, if fetch_status says it ended."""
        if not self.update or not s or s == self.stale:
            return None
        v = re.escape(self.update["version"])
        if re.search(rf"^OS \S+ {v} running in slot \S+ and marked good", s):
            return "good"
        # An install a cut interrupted is said as such ("interrupted"), then carried out again
        # (the command is kept on the data partition until it is done): not an end.
        if re.search(rf"^OS update to {v} (rolled back|failed)", s) or s.startswith(self.update["name"] + ": "):
            return "failed: " + s
        return None

    def settle_outcome(self, s):
        e = self.ended(s)
        if e:
            self.outcomes.append((self.update["version"], e))
            if e == "good":
                self.running = self.update["version"]
            self.update = None
        return e

    def drive(self, phase, cycle):
        """Runs the update under way (or the next) to a random instant of `phase`, and cuts.
        Returns what was going on at the cut."""
        deadline = time.monotonic() + 1200
        seen = {}
        while time.monotonic() < deadline:
            whole = self.status(fresh=False)
            if self.settle_outcome(whole) or self.update is None:
                self.next_update(whole)
                seen = {}
                continue
            s = self.status()
            name = re.escape(self.update["name"])
            now = time.monotonic()
            if re.match(rf"^downloading {name}", s):
                seen.setdefault("download", now)
            if re.match(rf"^installing {name}", s):
                seen.setdefault("install", now)
                if "download" in seen and "dl_done" not in seen:
                    seen["dl_done"] = now
                    self.est["download"] = now - seen["download"]
            rebooting = re.match(r"^installed .* rebooting", s) or self.board.qemu.poll() is not None
            if rebooting:
                self.update["installed"] = True
            if phase in ("download", "install") and (phase in seen or (phase == "download" and "install" in seen)):
                at = phase if phase in seen else "install"
                self.wait_random(self.est[at])
                return self.moment(s)
            if rebooting and phase in ("reboot", "first boot"):
                if "install" in seen:
                    self.est["install"] = now - seen["install"]
                return self.through_reboot(phase, cycle)
            if rebooting:
                # The cut meant for the download or the install came too late for it: this
                # update reboots now; cut during its reboot instead.
                return self.through_reboot("reboot", cycle)
            time.sleep(0.5)
        raise SystemExit(f"os-power-cut: cycle {cycle}: the update never got to its {phase}: {self.status()!r}")

    def wait_random(self, span):
        time.sleep(random.uniform(0, max(1.0, span)))

    def moment(self, s):
        alive = self.board.qemu.poll() is None
        self.cut()
        first = s.splitlines()[0][:60] if s else "(no status yet)"
        return first if alive else "after the board went down: " + first

    def through_reboot(self, phase, cycle):
        """The reboot into the new slot: cut while the system goes down or U-Boot and the
        kernel come up (reboot), or in the new system before it is marked good (first boot)."""
        t0 = time.monotonic()
        r = random.uniform(0, self.est["reboot"])
        b = self.board
        if phase == "reboot":
            try:
                b.qemu.wait(r)
                down = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                self.cut()
                return f"reboot: going down, {r:.1f} s after it began"
            self.start(f"cycle{cycle}-reboot")
            time.sleep(max(0.0, r - down))
            self.cut()
            return f"reboot: {r - down:.1f} s into the new slot's boot (U-Boot, kernel)"
        b.stopped(300)
        return self.first_boot_cut(cycle)

    def first_boot_cut(self, cycle):
        """Powers the board on into the new slot and cuts before the agent marks it good."""
        self.start(f"cycle{cycle}-firstboot")
        f = random.uniform(0, self.est["first boot"])
        until = time.monotonic() + f
        while time.monotonic() < until:
            if "marked good" in self.status():
                break
            time.sleep(0.5)
        self.cut()
        self.first_boot_cut_at = self.last_cut
        took = time.monotonic() - self.boot_started
        return f"first boot: {took:.1f} s after power-on, {{mark}}"

    def mark_at_cut(self):
        """Whether the last first-boot cut came before mark-good, by the agent's record as the
        next boot finds it (its time is the board's, the host's within a second)."""
        r = self.record
        if r.get("phase") == "good" and r.get("since", 0) <= self.first_boot_cut_at - 1:
            # Marked good sooner than the window thought: the next windows are shorter.
            self.est["first boot"] *= 0.8
            return "after mark-good"
        if r.get("phase") == "good" and r.get("since", 0) <= self.first_boot_cut_at + 1:
            return "at mark-good (within a second)"
        return "before mark-good"

    # --- the campaign
    def run(self):
        args = self.args
        bdir = f"target/boards/{self.model}"
        rootfs = f"{bdir}/rootfs"
        self.digests = {v: tree_digest(rootfs, v) for v in ["1", "2"] + VERSIONS}
        self.running = "1"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        disk = None
        try:
            subprocess.run(["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"], check=True)
            if args.disk != "plain":
                sock = f"{self.cdir}/disk.sock"
                if os.path.exists(sock):
                    os.remove(sock)
                disk = subprocess.Popen(["python3", "scripts/lossy_disk.py", f"{self.cdir}/disk.img", sock,
                                         "--mode", args.disk, "--seed", str(args.seed), "--log",
                                         f"{self.cdir}/disk.log"])
                for _ in range(50):
                    if os.path.exists(sock):
                        break
                    time.sleep(0.1)
            self.hub = out.Hub(self.ns, self.cdir)
            self.hub.whitelist(self.model, self.serial)
            for v in VERSIONS:
                path = f"{self.cdir}/gw-os.v{v}.raucb"
                self.hub.upload(self.model, path)
                self.hub.upload(self.model, f"{path}.meta")
            print(f"{'cycle':<6}{'moment of the cut':<58}{'acked':>7}  {'booted':<10}checks")
            self.start("cycle0")
            ok = self.check(0)
            self.report(0, "(first boot)", ok)
            k = 1
            while k <= args.cycles:
                if self.version == "?":
                    raise SystemExit("os-power-cut: the board did not come up; the campaign stops")
                self.writer(k)
                phases = args.phases
                cuts = [(k, self.drive(phases[(k - 1) % len(phases)], k))]
                if k < args.cycles and phases[k % len(phases)] == "first boot" and (self.update or {}).get("installed"):
                    # The next boot is the new system's first: the next cycle's cut comes in it,
                    # before its check, and the boot after checks both.
                    k += 1
                    cuts.append((k, self.first_boot_cut(k)))
                self.start(f"cycle{k}")
                ok = self.check(k)
                for c, moment in cuts:
                    self.report(c, moment.replace("{mark}", self.mark_at_cut()), ok)
                k += 1
            # Power stays on: the update under way ends, good or reported failed.
            self.writer(args.cycles + 1)
            until = time.monotonic() + 1200
            rebooted = False
            while self.update and time.monotonic() < until:
                if self.board.qemu.poll() is not None:
                    self.start("final")
                    rebooted = True
                self.settle_outcome(self.status(fresh=False))
                time.sleep(1)
            if self.update:
                self.problems.append(f"update: the update to {self.update['version']} never ended")
            if not rebooted:
                # The same boot: the writer stops, and the checks run on the board as it is.
                self.board.sh("kill %1; wait")
                # The shell's note of the job's end comes before its next prompt: into a
                # command whose output nobody reads.
                time.sleep(2)
                self.board.sh("true")
                self.harvest()
            ok = self.check(args.cycles + 1, running=not rebooted)
            self.report(args.cycles + 1, "(final check, no cut)", ok)
            self.board.power_cut()
            self.board = None
        finally:
            if self.board is not None:
                self.board.power_cut()
            if getattr(self, "hub", None):
                self.hub.stop()
            if disk is not None:
                disk.terminate()
                disk.wait()
            subprocess.run(["ip", "netns", "del", self.ns], check=False)
        good = sum(1 for _, o in self.outcomes if o == "good")
        print(f"summary: {args.cycles} power cuts during OS updates on {self.model} (disk: {args.disk}, seed "
              f"{args.seed}): {self.boots} boots, {len(self.acked)} values acknowledged, {len(self.outcomes)} "
              f"updates ended ({good} marked good, {len(self.outcomes) - good} reported failed); the agent's Pss "
              f"at the end, the update path idle: {self.pss} kB")
        for v, o in self.outcomes:
            if o != "good":
                print(f"  {v}: {o[:200]}")
        if self.problems:
            print("FAILED:\n  " + "\n  ".join(self.problems))
            sys.exit(1)

    def report(self, k, moment, ok):
        checks = "ok" if ok else "FAIL: " + "; ".join(self.good_state)
        if not ok:
            self.problems += [f"cycle {k}: {p}" for p in self.good_state]
        print(f"{k:<6}{moment[:56]:<58}{len(self.acked):>7}  {self.version + ' ' + self.slot:<10}{checks}",
              flush=True)


def prepare(board, cdir):
    """The board's image and bundles (os_update_test.py --prepare), the campaign's two
    versions (signed to go back and forth), and a copy of the factory disk."""
    subprocess.run([sys.executable, "scripts/os_update_test.py", "--board", board, "--prepare"], check=True)
    bdir = f"target/boards/{board}"
    for v in VERSIONS:
        path = f"{cdir}/gw-os.v{v}.raucb"
        subprocess.run(["scripts/build-os-bundle.sh", board, v, path], check=True, stdout=subprocess.DEVNULL)
        env = sbt.board_env(board)
        subprocess.run(["target/debug/gwe", "pkg", "sign", path, "--key", f"{bdir}/release.key", "--vendor", "gwe",
                        "--model", board, "--compatible", env["RAUC_COMPATIBLE"], "--allow-downgrade"],
                       check=True, capture_output=True)
    shutil.copyfile(f"{bdir}/u-boot.bin", f"{cdir}/u-boot.bin")
    subprocess.run(["cp", "--sparse=always", f"{bdir}/disk.img", f"{cdir}/factory.img"], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--board", default="qemu-aarch64-debian")
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 16))
    ap.add_argument("--disk", choices=["plain", "drop", "tear"], default="tear")
    ap.add_argument("--phases", default=",".join(PHASES), help="the moments to cut at, in turn (comma-separated)")
    ap.add_argument("--prepare", action="store_true", help="build the image and bundles, then stop")
    ap.add_argument("--prepared", action="store_true", help="use what --prepare built")
    args = ap.parse_args()
    args.phases = args.phases.split(",")
    if not args.phases or any(p not in PHASES for p in args.phases):
        ap.error(f"--phases: a comma-separated list of {', '.join(PHASES)}")
    os.chdir(sbt.ROOT)
    env = sbt.board_env(args.board)
    cdir = os.path.abspath(f"target/campaign/os-{args.board}")
    os.makedirs(cdir, exist_ok=True)
    if not args.prepared:
        prepare(args.board, cdir)
    if args.prepare:
        return
    random.seed(args.seed)
    subprocess.run(["cargo", "build", "-q", "--manifest-path", "hub/Cargo.toml"], check=True)
    for f in os.listdir(cdir):
        if f.startswith("cycle") or f.startswith("final") or f == "disk.log":
            os.remove(f"{cdir}/{f}")
    subprocess.run(["cp", "--sparse=always", f"{cdir}/factory.img", f"{cdir}/disk.img"], check=True)
    os.chdir(sbt.ROOT)
    Campaign(args, env, cdir).run()


if __name__ == "__main__":
    main()
