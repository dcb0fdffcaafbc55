#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle.

Each source file is a module (`src/ota/fetch.rs` is `ota::fetch`, `src/ota/mod.rs` is
`ota`). A module depends on another when its code names it: `crate::a::b`, `super::x`,
`self::x` or a `use` of them, outside `#[cfg(test)]` blocks (tests may reach anywhere). A
parent declaring its children (`mod fetch;`, `pub use`) is not a dependency of its own:
the children are its parts. The cycles are the strongly connected components of more than
one module; each is printed with one import on each edge, so it can be cut.

For the hub it also checks its layers: `store` imports neither `service` nor `http`, and
`service` does not import `http` (handlers call services and the store, never the reverse).

Usage: check-module-cycles.py [SRC_DIR ...]   (default: src wire/src hub/src)
"""

import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def modules(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            if f == "main.rs" and os.path.exists(os.path.join(root, "lib.rs")):
                continue  # the binary is a crate of its own, using the library by name
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            if rel and rel[0] == "bin":
                continue  # binaries of their own: their `crate` is another crate
            out[tuple(rel)] = os.path.join(root, f)
    return out


def strip_tests(text):
    """The text without comments, strings and `#[cfg(test)]` items."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        j = text.find("{", m.end())
        semi = text.find(";", m.end())
        if j < 0 or (0 <= semi < j):
            i = semi + 1
            continue
        depth = 0
        for k in range(j, len(text)):
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                i = k + 1
                break
        else:
            i = len(text)
    out.append(text[i:])
    return "".join(out)


def resolve(mods, here, kind, rest):
    """The longest module that `kind::rest` names from module `here`."""
    if kind == "crate":
        base = ()
    elif kind == "self":
        base = here
    else:
        base = here[:-1]
    parts = base + tuple(p for p in rest.split("::") if p)
    for n in range(len(parts), -1, -1):
        if parts[:n] in mods:
            return parts[:n]
    return ()


def expand_groups(text):
    """`use crate::a::{b, c::d}` as `crate::a::b crate::a::c::d` (one level of braces)."""
    def one(m):
        head, body = m.group(1), m.group(2)
        return " ".join(f"{head}::{p.strip()}" for p in body.split(",") if p.strip())
    return re.sub(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^{}]*)\}", one, text)


def graph(src):
    mods = modules(src)
    edges = {}
    for here, path in mods.items():
        text = expand_groups(strip_tests(open(path, encoding="utf-8").read()))
        for m in PATH.finditer(text):
            to = resolve(mods, here, m.group(1), m.group(2))
            # Only the code of a module is its dependency, not its own parts or parents.
            if to == here or to[: len(here)] == here or here[: len(to)] == to:
                continue
            edges.setdefault(here, {}).setdefault(to, m.group(0))
    return mods, edges


def cycles(mods, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in mods:
        if v not in index:
            visit(v)
    return out


# Layers, top first: a module of a lower layer may not import a higher one.
LAYERS = {"hub/src": ["http", "service", "store"]}


def layer_breaks(src, edges):
    order = LAYERS.get(os.path.normpath(src))
    if not order:
        return []
    rank = lambda m: order.index(m[0]) if m and m[0] in order else None  # noqa: E731
    out = []
    for a, tos in edges.items():
        for b, via in tos.items():
            ra, rb = rank(a), rank(b)
            if ra is not None and rb is not None and rb < ra:
                out.append(f"{src}: {name(a)} ({order[ra]}) imports {name(b)} ({order[rb]}): {via}")
    return out


def name(m):
    return "::".join(m) or "crate"


def main():
    srcs = sys.argv[1:] or ["src", "wire/src", "hub/src"]
    bad = 0
    for src in srcs:
        mods, edges = graph(src)
        found = cycles(mods, edges)
        count = sum(len(v) for v in edges.values())
        if not found:
            print(f"{src}: {len(mods)} modules, {count} module-to-module imports, no cycle")
        for line in layer_breaks(src, edges):
            bad += 1
            print(line)
        for comp in found:
            bad += 1
            members = set(comp)
            print(f"{src}: import cycle among {', '.join(sorted(name(c) for c in comp))}:")
            for a in sorted(comp):
                for b, via in sorted(edges.get(a, {}).items()):
                    if b in members:
                        print(f"  {name(a)} -> {name(b)}  ({via})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
