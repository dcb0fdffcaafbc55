#!/usr/bin/env python3
"""Writes the licences of the agent and of every crate linked into it into the firmware
recipes, from the bill of materials (sbom.cdx.json) of the release they build (the commit
Buildroot's GWE_VERSION and the Yocto recipe's SRCREV pin, which must be the same):
  - Buildroot's gwe.mk, GWE_LICENSE: each licence expression once, in Buildroot's spelling
    ("MIT or Apache-2.0"), shown by `make legal-info` and `make gwe-show-info`;
  - the Yocto recipe, LICENSE: the expressions joined with "&", in bitbake's spelling
    ("MIT | Apache-2.0"), which the build's SPDX documents and license manifest take.
   scripts/gen-licenses.py          rewrite both lines
   scripts/gen-licenses.py --check  fail if either is out of date (CI)"""
import json
import pathlib
import re
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parent.parent
mk = root / "buildroot/package/gwe/gwe.mk"
bb = root / "yocto-layer/meta-gwe/recipes-gwe/gwe/gwe_0.1.0.bb"


def pinned():
    version = re.search(r"^GWE_VERSION = ([0-9a-f]{40})$", mk.read_text(), re.M).group(1)
    srcrev = re.search(r'^SRCREV = "([0-9a-f]{40})"', bb.read_text(), re.M).group(1)
    if version != srcrev:
        sys.exit(f"gwe.mk's GWE_VERSION {version[:12]} and the recipe's SRCREV {srcrev[:12]} differ: "
                 "pin both to the same release")
    return version


def sorted_or(expr):
    """A flat OR list with its operands sorted; anything else as it is."""
    if "(" not in expr and " AND " not in expr and " OR " in expr:
        return " OR ".join(sorted(x.strip() for x in expr.split(" OR ")))
    return expr


def buildroot(expr):
    return re.sub(r"\b(AND|OR|WITH)\b", lambda m: m.group(1).lower(), expr)


def bitbake(expr):
    expr = expr.replace(" AND ", " & ").replace(" OR ", " | ")
    if "WITH" in expr:
        sys.exit(f"gen-licenses: no bitbake spelling for {expr!r}")
    return f"({expr})" if ("&" in expr or "|" in expr) else expr


def main():
    commit = pinned()
    bom = json.loads(subprocess.run(["git", "-C", str(root), "show", f"{commit}:sbom.cdx.json"], check=True,
                                    capture_output=True, text=True).stdout)
    own = bom["metadata"]["component"]["licenses"][0]["expression"]
    crates = {sorted_or(lic["expression"]) for c in bom["components"]
              if not any(p["name"] == "gwe:source" for p in c.get("properties", []))
              for lic in c["licenses"]}
    exprs = sorted(crates)
    br_line = f"GWE_LICENSE = {own}, " + ", ".join(f"{buildroot(e)} (crates)" for e in exprs)
    bb_line = 'LICENSE = "' + " & ".join([own] + [bitbake(e) for e in exprs if e != own]) + '"'
    changed = []
    for path, pattern, line in [(mk, r"^GWE_LICENSE = .*$", br_line), (bb, r"^LICENSE = .*$", bb_line)]:
        text = path.read_text()
        new = re.sub(pattern, lambda _: line, text, count=1, flags=re.M)
        if new != text:
            changed.append(path.relative_to(root))
            if "--check" not in sys.argv:
                path.write_text(new)
    if "--check" in sys.argv:
        if changed:
            sys.exit(f"{', '.join(map(str, changed))}: the licence line is out of date: run scripts/gen-licenses.py")
        print(f"gwe.mk GWE_LICENSE and the recipe's LICENSE: the {len(exprs)} licence expressions of the "
              f"{len(bom['components'])} crates of release {commit[:12]}")
    else:
        print(br_line)
        print(bb_line)


if __name__ == "__main__":
    main()
