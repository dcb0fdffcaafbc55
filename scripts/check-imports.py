#!/usr/bin/env python3
"""Fails when a file's imports are not grouped std / external crates / this crate.

STYLE.md's order, which rustfmt can only keep on nightly (`group_imports` is unstable): in
each run of top-level `use` lines, first `std`, `core` and `alloc`, then other crates, then
`crate`, `super` and `self`, each group apart from the next by a blank line. Prints every
file and line that breaks it.

Usage: check-imports.py [DIR ...]   (default: src wire/src hub/src tests hub/tests benches hub/benches)
"""

import os
import re
import sys

USE = re.compile(r"^use ([A-Za-z_][A-Za-z0-9_]*)")


def group(root, local):
    if root in ("std", "core", "alloc"):
        return 0
    if root in ("crate", "super", "self") or root in local:
        return 2
    return 1


NAMES = ("std", "external crates", "this crate")


def check(path):
    problems = []
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    # `use fleet::x` names a child module declared here (`mod fleet;`): this crate.
    local = set(re.findall(r"^\s*(?:pub(?:\([a-z]+\))? )?mod ([a-z_][a-z0-9_]*)", text, re.M))
    prev = None  # (group, line number) of the last use in this run
    blank_since = False
    depth = 0  # inside a multi-line `use ... {` list
    for n, line in enumerate(lines, 1):
        if depth:
            depth += line.count("{") - line.count("}")
            continue
        if re.match(r"^pub(?:\([a-z]+\))? use ", line):
            # A re-export is part of the module's interface, not an import: not ordered.
            depth = line.count("{") - line.count("}")
            continue
        m = USE.match(line)
        if m:
            g = group(m.group(1), local)
            if prev is not None:
                if g < prev[0]:
                    problems.append(f"{path}:{n}: `{line.strip()}` ({NAMES[g]}) after {NAMES[prev[0]]} (line {prev[1]})")
                elif g > prev[0] and not blank_since:
                    problems.append(f"{path}:{n}: {NAMES[g]} starts without a blank line after {NAMES[prev[0]]}")
                elif g == prev[0] and blank_since:
                    problems.append(f"{path}:{n}: {NAMES[g]} split by a blank line")
            prev = (g, n)
            blank_since = False
            depth = line.count("{") - line.count("}")
        elif line.strip() == "":
            blank_since = True
        elif line.startswith(("//", "#[", "#![")):
            # Comments and attributes belong to the next item; a run of uses continues.
            if not line.startswith(("#[cfg", "#[allow")):
                continue
            continue
        else:
            prev = None  # any other item ends the run
            blank_since = False
    return problems


def main():
    dirs = sys.argv[1:] or ["src", "wire/src", "hub/src", "tests", "hub/tests", "benches", "hub/benches"]
    problems, files = [], 0
    for d in dirs:
        for root, subdirs, names in os.walk(d):
            subdirs[:] = [s for s in subdirs if s not in ("node_modules", "venv", "target")]
            for f in sorted(names):
                if f.endswith(".rs"):
                    files += 1
                    problems += check(os.path.join(root, f))
    for p in problems:
        print(p)
    print(f"{files} files: {'imports grouped std / external / crate' if not problems else f'{len(problems)} problems'}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
