#!/usr/bin/env python3
"""Writes the licences of the crates linked into the agent (normal dependencies, Linux, the
features the firmware builds use) into Buildroot's gwe.mk (GWE_LICENSE), each licence
expression once, in Buildroot's spelling ("MIT or Apache-2.0").
   scripts/gen-licenses.py          rewrite the line
   scripts/gen-licenses.py --check  fail if it is out of date (CI)"""
import pathlib
import re
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parent.parent
mk = root / "buildroot/package/gwe/gwe.mk"
out = subprocess.run(
    ["cargo", "tree", "--locked", "--offline", "-e", "normal", "--target", "aarch64-unknown-linux-gnu", "-p", "gwe",
     "--no-default-features", "--features", "edge", "--prefix", "none", "-f", "{p}|{l}"],
    cwd=root, check=True, capture_output=True, text=True).stdout


def spelled(expr):
    """SPDX expression in Buildroot's spelling, operands of a flat OR list sorted."""
    expr = expr.replace("/", " OR ")
    if "(" not in expr and " AND " not in expr and " OR " in expr:
        expr = " OR ".join(sorted(x.strip() for x in expr.split(" OR ")))
    return re.sub(r"\b(AND|OR|WITH)\b", lambda m: m.group(1).lower(), expr)


licences = set()
for line in out.splitlines():
    pkg, _, lic = line.removesuffix(" (*)").partition("|")
    if pkg.startswith("gwe ") or pkg.startswith("gwe-wire "):
        continue
    if lic.strip():
        licences.add(spelled(lic.strip()))
line = "GWE_LICENSE = Apache-2.0, " + ", ".join(f"{l} (crates)" for l in sorted(licences))
text = mk.read_text()
new = re.sub(r"^GWE_LICENSE = .*$", line, text, count=1, flags=re.M)
if "--check" in sys.argv:
    if new != text:
        print("buildroot/package/gwe/gwe.mk: GWE_LICENSE is out of date: run scripts/gen-licenses.py")
        sys.exit(1)
    print(f"gwe.mk: GWE_LICENSE names the {len(licences)} licence expressions of the agent's crates")
else:
    mk.write_text(new)
    print(line)
