#!/usr/bin/env python3
"""gwe vs supervisord with the same 20 programs; see bench-supervisor.sh."""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PROGRAMS = 20
TICK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def program_conf(section, i, work):
    # Each app records when it started, then idles like a quiet gateway app.
    return (
        f"[{section}]\n"
        f"command=sh -c 'date +%%s%%N >> {work}/starts-{i}; exec sleep 100000'\n"
        "autostart=true\nautorestart=true\nstartsecs=1\nstartretries=3\n"
        f"stdout_logfile={work}/log/app{i}.log\nredirect_stderr=true\n"
        "stdout_logfile_maxbytes=200KB\nstdout_logfile_backups=1\n"
    )


def setup_gwe(binary, work):
    os.makedirs(f"{work}/programs.d")
    os.makedirs(f"{work}/log")
    for i in range(PROGRAMS):
        # gwe reads supervisord's syntax; '%%' is supervisord's escape for '%'.
        with open(f"{work}/programs.d/app{i}.conf", "w") as f:
            f.write(program_conf(f"program:app{i}", i, work).replace("%%", "%"))
    with open(f"{work}/gwe.toml", "w") as f:
        f.write(
            f'[device]\nserial = "BENCH"\n[paths]\nstate_dir = "{work}/state"\nlog_dir = "{work}/log"\n'
            f'run_dir = "{work}/run"\n[ingest]\nlisten = "127.0.0.1:0"\n'
            f'[supervisor]\nprograms_dir = "{work}/programs.d"\n[log]\nlevel = "warn"\n'
        )
    return subprocess.Popen([binary, "--config", f"{work}/gwe.toml", "run"], stderr=subprocess.DEVNULL)


def setup_supervisord(binary, work):
    os.makedirs(f"{work}/log")
    with open(f"{work}/supervisord.conf", "w") as f:
        f.write(
            f"[supervisord]\nnodaemon=true\nlogfile={work}/supervisord.log\npidfile={work}/supervisord.pid\n"
            "loglevel=warn\n\n"
        )
        for i in range(PROGRAMS):
            f.write(program_conf(f"program:app{i}", i, work) + "\n")
    return subprocess.Popen([binary, "-c", f"{work}/supervisord.conf"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def children_started(work):
    return all(os.path.exists(f"{work}/starts-{i}") for i in range(PROGRAMS))


def app_pid(work, i):
    """The sleep that app i exec'd into: found by its start file's directory in /proc."""
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{p}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if cmd.startswith(b"sleep\x00100000") and f"SUPERVISOR_PROCESS_NAME=app{i}".encode() in env.split(b"\x00"):
            # Belongs to this work dir's supervisor if its parent is ours.
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == WORK_OWNER[work]:
                return int(p)
    return None


WORK_OWNER = {}


def restart_ms(work, i):
    before = open(f"{work}/starts-{i}").read().split()
    pid = app_pid(work, i)
    if pid is None:
        raise RuntimeError(f"app{i} not found")
    t0 = time.time_ns()
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        now = open(f"{work}/starts-{i}").read().split()
        if len(now) > len(before):
            return (int(now[-1]) - t0) / 1e6
        time.sleep(0.001)
    raise RuntimeError(f"app{i} was not restarted")


def measure(name, proc, work, idle):
    WORK_OWNER[work] = proc.pid
    deadline = time.time() + 30
    while not children_started(work):
        if time.time() > deadline:
            raise RuntimeError(f"{name}: apps did not start")
        time.sleep(0.05)
    time.sleep(3)  # let start-up settle (startsecs)
    # Restart time: kill 5 different apps, one at a time; wait past startsecs between.
    restarts = []
    for i in range(5):
        restarts.append(restart_ms(work, i))
        time.sleep(1.5)
    time.sleep(1)
    rss = rss_kib(proc.pid)
    c0 = cpu_ticks(proc.pid)
    time.sleep(idle)
    idle_ms = (cpu_ticks(proc.pid) - c0) * 1000 / TICK
    return {"rss_kib": rss, "idle_cpu_ms": idle_ms, "restart_ms": sorted(restarts)[len(restarts) // 2]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gwe", required=True)
    ap.add_argument("--supervisord", required=True)
    ap.add_argument("--idle-seconds", type=int, default=60)
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="gwe-bench-sup-")
    procs = []
    try:
        g = setup_gwe(a.gwe, f"{base}/gwe")
        procs.append(g)
        s = setup_supervisord(a.supervisord, f"{base}/sv")
        procs.append(s)
        # Both run at once; each is measured on its own process.
        rg = measure("gwe", g, f"{base}/gwe", a.idle_seconds)
        rs = measure("supervisord", s, f"{base}/sv", 0)
        # supervisord's idle CPU over the same period, measured after gwe's.
        c0 = cpu_ticks(s.pid)
        time.sleep(a.idle_seconds)
        rs["idle_cpu_ms"] = (cpu_ticks(s.pid) - c0) * 1000 / TICK
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(base, ignore_errors=True)
    per_min = 60 / a.idle_seconds
    print(f"\n{PROGRAMS} programs, idle period {a.idle_seconds} s\n")
    print(f"{'supervisor':<14}{'RSS KiB':>10}{'idle CPU ms/min':>18}{'crash->restart ms':>20}")
    for name, r in (("gwe", rg), ("supervisord", rs)):
        print(f"{name:<14}{r['rss_kib']:>10}{r['idle_cpu_ms'] * per_min:>18.1f}{r['restart_ms']:>20.1f}")
    ratio = rg["rss_kib"] / rs["rss_kib"]
    print(f"\nmemory: gwe uses {ratio:.2f} of supervisord's (target <= 0.20)")
    print(f"idle CPU: gwe {rg['idle_cpu_ms'] * per_min:.1f} ms/min (target < 50), supervisord {rs['idle_cpu_ms'] * per_min:.1f}")
    print(f"crash to restart (median of 5): gwe {rg['restart_ms']:.1f} ms, supervisord {rs['restart_ms']:.1f} ms "
          f"({rs['restart_ms'] / max(rg['restart_ms'], 0.001):.0f}x faster)")
    ok = ratio <= 0.20 and rg["idle_cpu_ms"] * per_min < 50
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
