#!/usr/bin/env python3
"""Fails if any locked dependency declares a rust-version above the workspace's.

clippy's incompatible_msrv lint checks our own code; this checks what we depend on, so the
lock file keeps building with Buildroot's Rust (1.82)."""
import json
import subprocess
import sys

meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--locked"]))
ours = {p["name"]: p for p in meta["packages"] if p["source"] is None}
limit = tuple(int(x) for x in ours["gwe"]["rust_version"].split(".")[:2])
bad = [
    f'{p["name"]} {p["version"]} needs Rust {p["rust_version"]}'
    for p in meta["packages"]
    if p.get("rust_version") and tuple(int(x) for x in p["rust_version"].split(".")[:2]) > limit
]
if bad:
    print(f"dependencies above rust-version {limit[0]}.{limit[1]}:", *bad, sep="\n  ")
    sys.exit(1)
print(f"all {len(meta['packages'])} packages build with Rust {limit[0]}.{limit[1]}")
