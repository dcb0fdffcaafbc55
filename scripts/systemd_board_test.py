#!/usr/bin/env python3
"""The agent under real systemd, on an emulated ARM board.

Boots the qemu-aarch64-debian board (a Debian root made from Debian's packages, systemd as
init, the agent installed with init/systemd/gwe.service as the firmware builds install it)
and drives it through its serial console, as a person at the board would. It shows:

  1. systemd starts the agent at boot through Type=notify: the unit is active only once the
     agent said READY=1 (a Type=notify unit that never says so stays "activating");
  2. Restart=always: the agent that crashed (SIGABRT, as a panic aborts it) is started again;
  3. the watchdog: the agent stopped with SIGSTOP (hung: no more WATCHDOG=1) is killed by
     systemd after WatchdogSec and started again;
  4. its apps (two from /etc/gwe/programs.d, one installed with `gwe app install` from a
     signed package) run again after each restart, after a clean reboot and after a power
     cut (the emulator killed), and `gwe check` finds the data intact.

It reports the times it measured and the agent's memory under systemd (Pss). The emulator
runs in a network namespace the test makes and deletes, on QEMU's restricted user network:
no traffic leaves it.
  scripts/systemd_board_test.py [--board qemu-aarch64-debian]
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def board_env(board):
    """The board's board.env, as the shell scripts read it."""
    path = os.path.join(ROOT, "board-configs", board, "board.env")
    out = subprocess.run(["bash", "-c", f'set -a; . "{path}"; env -0'], check=True, capture_output=True).stdout
    return dict(kv.split("=", 1) for kv in out.decode().split("\0") if "=" in kv)


class Board:
    """One boot of the board: QEMU with its serial console on our stdin/stdout."""

    def __init__(self, env, out, ns, log, hub_port=None, drive=None):
        self.env, self.out = env, out
        self.log = open(log, "wb")
        self.buf = b""
        self.lock = threading.Condition()
        self.seq = 0
        # Debian's U-Boot as the firmware: it boots a slot of the disk (boot/boot.cmd). A reset
        # ends this QEMU (-no-reboot); the next Board is the board coming up again.
        # With a hub (hub_port), the board reaches the namespace's loopback as 10.0.2.2; the
        # namespace has no other network, so nothing leaves it either way. `drive` is QEMU's
        # -drive for the disk, when it is not OUT/disk.img (the power-cut campaign's lossy disk).
        net = "user,id=n0" + ("" if hub_port else ",restrict=on")
        cmd = ["ip", "netns", "exec", ns, env["QEMU"], *env["QEMU_ARGS"].split(),
               "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
               "-bios", f"{out}/u-boot.bin",
               "-drive", drive or f"file={out}/disk.img,format=raw,if=virtio",
               "-netdev", net,
               "-device", f"virtio-net-pci,netdev=n0,mac={env['NET_MAC']},romfile="]
        self.qemu = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            chunk = os.read(self.qemu.stdout.fileno(), 4096)
            if not chunk:
                break
            self.log.write(chunk)
            self.log.flush()
            with self.lock:
                self.buf += chunk
                self.lock.notify_all()
        with self.lock:
            self.lock.notify_all()

    def expect(self, pattern, secs, start=0):
        """Waits until the console printed `pattern` (a regex) after offset `start`."""
        until = time.monotonic() + secs
        rx = re.compile(pattern.encode())
        with self.lock:
            while True:
                m = rx.search(self.buf, start)
                if m:
                    return m
                left = until - time.monotonic()
                if left <= 0 or self.qemu.poll() is not None:
                    tail = self.buf[-1500:].decode(errors="replace")
                    raise SystemExit(f"systemd-board: no {pattern!r} on the console after {secs} s; it ends:\n{tail}")
                self.lock.wait(min(left, 1))

    def login(self):
        """Waits for the autologin shell and makes the console a quiet command line."""
        self.expect(r"root@[\w-]+:~# ", 240)
        self.sh("stty -echo cols 500; dmesg -n 1; export PS1='# ' SYSTEMD_PAGER= SYSTEMD_COLORS=0")

    def sh(self, command, secs=60):
        """Runs `command` in the console's shell; returns (exit status, output)."""
        self.seq += 1
        with self.lock:
            start = len(self.buf)
        marker = f"@@{self.seq}"
        self.qemu.stdin.write(f"{command}; echo \"{marker} $?@@\"\n".encode())
        self.qemu.stdin.flush()
        m = self.expect(re.escape(marker) + r" (\d+)@@", secs, start)
        text = self.buf[start:m.start()].decode(errors="replace").replace("\r", "")
        # Terminal control sequences (bash's bracketed-paste switches) are not output.
        return int(m.group(1)), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)

    def send(self, line):
        """Types `line` without waiting for it to finish (the board may go down)."""
        self.qemu.stdin.write(f"{line}\n".encode())
        self.qemu.stdin.flush()

    def ok(self, command, secs=60):
        rc, text = self.sh(command, secs)
        if rc != 0:
            raise SystemExit(f"systemd-board: `{command}` failed ({rc}):\n{text}")
        return text

    def unit(self):
        """The gwe unit's state, as systemctl shows it."""
        text = self.ok("systemctl show gwe -p Type -p ActiveState -p SubState -p NRestarts -p MainPID "
                       "-p WatchdogUSec -p Restart -p Result")
        return dict(line.split("=", 1) for line in text.split("\n") if "=" in line)

    def wait_unit(self, what, secs, pred):
        until = time.monotonic() + secs
        while True:
            u = self.unit()
            if pred(u):
                return u
            if time.monotonic() > until:
                raise SystemExit(f"systemd-board: {what} did not happen in {secs} s: {u}")
            time.sleep(1)

    def signal_agent(self, sig, unit, secs):
        """Sends SIG to the agent (`unit`: its state now) and waits until systemd has started
        it again; returns the new state and the seconds that took."""
        pid, restarts = unit["MainPID"], int(unit["NRestarts"])
        t = time.monotonic()
        self.ok(f"kill -{sig} {pid}")
        u = self.wait_unit(f"a restart after SIG{sig}", secs,
                           lambda u: int(u["NRestarts"]) == restarts + 1 and u["ActiveState"] == "active"
                           and u["MainPID"] != pid)
        return u, time.monotonic() - t

    def apps_running(self, names, secs=90):
        until = time.monotonic() + secs
        while True:
            _, text = self.sh("gwe ctl status")
            running = {line.split()[0] for line in text.split("\n") if "RUNNING" in line.split()[1:2]}
            if set(names) <= running:
                return running
            if time.monotonic() > until:
                raise SystemExit(f"systemd-board: apps {sorted(set(names) - running)} not RUNNING after {secs} s:\n{text}")
            time.sleep(1)

    def journal_has(self, text):
        rc, _ = self.sh(f"journalctl -b -u gwe --no-pager -o cat | grep -qF {shlex.quote(text)}")
        return rc == 0

    def stopped(self, secs):
        try:
            self.qemu.wait(secs)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"systemd-board: the board did not go down in {secs} s")

    def power_cut(self):
        self.qemu.kill()
        self.qemu.wait()


def signed_sample_app(board, out):
    """A signed sample app for the board, as an operator would bring it on a USB stick, and
    the OTA trust the image bakes in: (its path, the build's environment)."""
    subprocess.run(["cargo", "build", "-q", "--bin", "gwe"], check=True)
    gwe = "target/debug/gwe"
    for k in ("root.key", "release.key"):
        if not os.path.exists(f"{out}/{k}"):
            subprocess.run([gwe, "pkg", "keygen", f"{out}/{k}"], check=True, capture_output=True)
    keys = f"{out}/keys.json"
    subprocess.run([gwe, "pkg", "keys", "--root-key", f"{out}/root.key", "--add", f"{out}/release.key.pub",
                    "--out", keys], check=True, capture_output=True)
    extra = f"{out}/extra"
    os.makedirs(extra, exist_ok=True)
    pkg = subprocess.run([gwe, "pkg", "build", "board-configs/qemu-common/ota-sample/sensor", "--out", extra,
                          "--key", f"{out}/release.key", "--vendor", "gwe", "--model", board],
                         check=True, capture_output=True, text=True).stdout.strip()
    with open(f"{out}/root.key.pub") as f:
        root_pub = f.read().strip()
    return pkg, {"GWE_ROOT_KEY": root_pub, "GWE_KEYS_FILE": keys, "GWE_EXTRA_FILES": extra}


def first_boot_checks(board, pkg, apps):
    """On a fresh board: systemd started the agent through Type=notify; an app installs with
    `gwe app install`; a crash (SIGABRT) and a hang (SIGSTOP: the watchdog) are each followed
    by a restart, the apps RUNNING again. Adds the installed app to `apps`."""
    u = board.wait_unit("the agent's start", 90, lambda u: u["ActiveState"] != "activating")
    assert u["Type"] == "notify" and u["ActiveState"] == "active" and u["SubState"] == "running", u
    assert u["NRestarts"] == "0" and u["Restart"] == "always" and u["WatchdogUSec"] == "30s", u
    print(f"gwe.service active (running) through Type=notify: the agent said READY=1; "
          f"watchdog {u['WatchdogUSec']}, Restart={u['Restart']}")
    board.apps_running(apps)
    name = os.path.basename(pkg)
    text = board.ok(f"gwe app install /root/{name}", 120)
    print(f"gwe app install /root/{name}: {text.strip().splitlines()[-1] if text.strip() else ''}")
    apps.append("sensor")
    board.apps_running(apps)

    # SIGABRT: what a panic does (panic = "abort"). Not SIGSEGV sent with kill: Rust's
    # stack-overflow handler takes a SIGSEGV that is not a fault and carries on.
    print("--- the agent crashes (SIGABRT, as a panic): Restart=always")
    u, took = board.signal_agent("ABRT", u, 60)
    print(f"restarted as pid {u['MainPID']} in {took:.1f} s")
    assert board.journal_has("status=6/ABRT"), "the journal does not show the crash"
    board.apps_running(apps)

    print("--- the agent hangs (SIGSTOP): the watchdog")
    u, took = board.signal_agent("STOP", u, 90)
    assert board.journal_has("Watchdog timeout"), "the journal does not name the watchdog"
    assert took >= 25, f"restarted after {took:.0f} s, before the watchdog could have fired"
    print(f"systemd: 'Watchdog timeout'; killed and restarted as pid {u['MainPID']} {took:.0f} s after the hang")
    board.apps_running(apps)
    print(f"apps {', '.join(apps)} RUNNING again after each restart")


def after_clean_reboot_checks(board, apps):
    """After a clean reboot: the agent active, the last boot's journal ends with it stopped
    cleanly, its apps RUNNING."""
    u = board.wait_unit("the agent's start", 90, lambda u: u["ActiveState"] != "activating")
    assert u["ActiveState"] == "active" and u["NRestarts"] == "0", u
    # The journal is kept on disk: the last boot's ends with the agent stopped cleanly.
    last = board.ok("journalctl -b -1 -u gwe --no-pager -o cat | tail -n 3")
    assert "Deactivated successfully" in last or "Stopped gwe.service" in last, last
    board.apps_running(apps)
    print(f"the agent was stopped cleanly at the reboot; active again; apps {', '.join(apps)} RUNNING")


def after_power_cut_checks(board, apps):
    """After a power cut: the agent active, its apps RUNNING, `gwe check` clean; the agent's
    Pss in kB."""
    u = board.wait_unit("the agent's start", 90, lambda u: u["ActiveState"] != "activating")
    assert u["ActiveState"] == "active" and u["NRestarts"] == "0", u
    board.apps_running(apps)
    # `gwe check` reads the data directory while the agent runs (read-only).
    text = board.ok("gwe check")
    smaps = board.ok(f"grep ^Pss: /proc/{u['MainPID']}/smaps_rollup")
    pss = re.search(r"Pss:\s+(\d+) kB", smaps).group(1)
    print(f"agent active; apps {', '.join(apps)} RUNNING; gwe check: {text.strip().splitlines()[-1]}")
    return pss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--board", default="qemu-aarch64-debian")
    args = ap.parse_args()
    os.chdir(ROOT)
    env = board_env(args.board)
    out = f"target/boards/{args.board}"
    os.makedirs(out, exist_ok=True)
    pkg, image_env = signed_sample_app(args.board, out)
    t = time.monotonic()
    subprocess.run(["scripts/build-debian-image.sh", args.board], check=True, env={**os.environ, **image_env})
    print(f"image built in {time.monotonic() - t:.0f} s")

    ns = f"gwe-sd-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    board = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        apps = ["logger", "idler"]

        print("--- boot 1: systemd starts the agent (Type=notify)")
        t = time.monotonic()
        board = Board(env, out, ns, f"{out}/systemd-boot1.log")
        board.login()
        print(f"booted to a shell in {time.monotonic() - t:.0f} s")
        first_boot_checks(board, pkg, apps)

        print("--- clean reboot")
        # What `systemctl reboot` does, without asking logind first.
        board.send("systemctl start reboot.target --job-mode=replace-irreversibly --no-block")
        board.stopped(120)

        print("--- boot 2: after the reboot")
        board = Board(env, out, ns, f"{out}/systemd-boot2.log")
        board.login()
        after_clean_reboot_checks(board, apps)
        time.sleep(5)

        print("--- power cut (the emulator killed)")
        board.power_cut()

        print("--- boot 3: after the power cut")
        board = Board(env, out, ns, f"{out}/systemd-boot3.log")
        board.login()
        pss = after_power_cut_checks(board, apps)
        print(f"systemd board test passed: agent Pss {pss} kB under systemd with {len(apps)} apps")
        board.power_cut()
        board = None
    finally:
        if board is not None:
            board.power_cut()
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
