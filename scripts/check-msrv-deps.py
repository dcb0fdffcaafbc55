#!/usr/bin/env python3
"""Fails if any locked dependency declares a rust-version above the workspace's.

clippy's incompatible_msrv lint checks our own code; this checks what we depend on, so the
lock file keeps building with Buildroot's Rust (1.82)."""
import json
import subprocess
import sys

# Optional argument: another workspace's directory (the hub has its own lock file).
where = sys.argv[1] if len(sys.argv) > 1 else "."
meta = json.loads(
    subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--locked"], cwd=where)
)
ours = [p for p in meta["packages"] if p["source"] is None]
limit = min(tuple(int(x) for x in p["rust_version"].split(".")[:2]) for p in ours if p.get("rust_version"))
bad = [
    f'{p["name"]} {p["version"]} needs Rust {p["rust_version"]}'
    for p in meta["packages"]
    if p.get("rust_version") and tuple(int(x) for x in p["rust_version"].split(".")[:2]) > limit
]
if bad:
    print(f"dependencies above rust-version {limit[0]}.{limit[1]}:", *bad, sep="\n  ")
    sys.exit(1)
print(f"{where}: all {len(meta['packages'])} packages build with Rust {limit[0]}.{limit[1]}")
