#!/usr/bin/env python3
"""The agent's software bill of materials, CycloneDX 1.5 JSON: gwe and every crate linked
into it (normal dependencies for a Linux target), each with its version, licence
expression, package URL and SHA-256 (the crates.io checksum Cargo.lock pins), and who
depends on whom.

    scripts/sbom.py [--target TRIPLE] [--out FILE]     one target (cross-build.sh)
    scripts/sbom.py --write | --check                  sbom.cdx.json, the committed one
    scripts/sbom.py --validate FILE...                 against the CycloneDX 1.5 schema

`sbom.cdx.json` beside Cargo.lock is what the Yocto recipe and the Buildroot package install
(the release tarball carries it): it holds for every Linux target, since --write and
--check first make sure the crate set is the same for each of LINUX_TARGETS. --validate
uses the CycloneDX project's own validator (PyPI cyclonedx-python-lib[json-validation]).
Deterministic: no timestamps, no random serial numbers (the serial is derived from the
content). The edge feature adds no crate, so the features do not change the list."""
import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
import tomllib
import uuid

root = pathlib.Path(__file__).resolve().parent.parent


LINUX_TARGETS = ["aarch64-unknown-linux-gnu", "aarch64-unknown-linux-musl", "armv7-unknown-linux-gnueabihf",
                 "armv7-unknown-linux-musleabihf", "x86_64-unknown-linux-gnu", "riscv64gc-unknown-linux-gnu"]
COMMITTED = root / "sbom.cdx.json"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="aarch64-unknown-linux-gnu")
    ap.add_argument("--out", default="-")
    ap.add_argument("--write", action="store_true", help="write sbom.cdx.json (every Linux target)")
    ap.add_argument("--check", action="store_true", help="sbom.cdx.json is up to date")
    ap.add_argument("--validate", nargs="+", metavar="FILE")
    a = ap.parse_args()
    if a.validate:
        return validate(a.validate)
    if a.write or a.check:
        boms = [bom_of(t) for t in LINUX_TARGETS]
        if any(b["components"] != boms[0]["components"] for b in boms):
            sys.exit(f"sbom: the crate set differs between Linux targets ({', '.join(LINUX_TARGETS)}): "
                     "one sbom.cdx.json cannot hold for all")
        # Who depends on whom may differ (ring uses libc on ARM only): the union.
        edges = {}
        for b in boms:
            for d in b["dependencies"]:
                edges.setdefault(d["ref"], set()).update(d["dependsOn"])
        boms[0]["dependencies"] = [{"ref": r, "dependsOn": sorted(on)} for r, on in sorted(edges.items())]
        text = finish(boms[0], "linux")
        if a.check:
            if not COMMITTED.exists() or COMMITTED.read_text() != text:
                sys.exit("sbom: sbom.cdx.json is not what Cargo.lock and Cargo.toml give: run scripts/sbom.py --write")
            crates = len(json.loads(text)["components"])
            print(f"sbom.cdx.json: up to date, {crates} crates, the same for {len(boms)} Linux targets")
            return
        COMMITTED.write_text(text)
        print("sbom.cdx.json: written")
        return
    text = finish(bom_of(a.target), a.target)
    if a.out == "-":
        sys.stdout.write(text)
    else:
        pathlib.Path(a.out).write_text(text)
        print(f"{a.out}: {len(json.loads(text)['components'])} crates")


def validate(files):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    validator = JsonStrictValidator(SchemaVersion.V1_5)
    for f in files:
        text = pathlib.Path(f).read_text()
        err = validator.validate_str(text)
        if err:
            sys.exit(f"{f}: not valid CycloneDX 1.5: {err}")
        bom = json.loads(text)
        bad = [c["name"] for c in bom["components"] if not c.get("licenses") or not c.get("version")
               or not (c.get("hashes") or {"name": "gwe:source", "value": "workspace"} in c.get("properties", []))]
        if bad:
            sys.exit(f"{f}: crates without a version, licence or checksum: {bad}")
        print(f"{f}: valid CycloneDX 1.5 (strict schema), {len(bom['components'])} crates, each with version, "
              "licence and checksum (or from this workspace)")


def bom_of(target):
    """The bill of materials for one target, as a dict, without its serial number."""
    src = root
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", target],
        cwd=src, check=True, capture_output=True, text=True).stdout)
    lock = tomllib.loads((src / "Cargo.lock").read_text())
    sums = {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]}
    pkgs = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    agent = next(p for p in meta["packages"] if p["name"] == "gwe" and p["source"] is None)

    # The normal-dependency closure of the agent (build scripts and dev-dependencies do
    # not end up in the binary), with the features a build turns on: cargo tree resolves
    # them as cargo build does; metadata's graph also holds optional dependencies no
    # feature enables (flate2's zlib-rs).
    tree = subprocess.run(
        ["cargo", "tree", "--locked", "--offline", "-e", "normal", "--target", target, "-p", "gwe",
         "--prefix", "none", "-f", "{p}"], cwd=src, check=True, capture_output=True, text=True).stdout
    built = {tuple(line.split()[:2]) for line in tree.splitlines() if line.strip()}
    seen = {p["id"] for p in meta["packages"] if (p["name"], "v" + p["version"]) in built}
    if len(seen) != len(built):
        sys.exit(f"sbom: cargo tree and cargo metadata disagree for {target}")

    def ref(p):
        return f"pkg:cargo/{p['name']}@{p['version']}"

    def component(p):
        c = {"type": "application" if p["id"] == agent["id"] else "library", "bom-ref": ref(p),
             "name": p["name"], "version": p["version"], "purl": ref(p)}
        lic = p.get("license")
        if lic:
            c["licenses"] = [{"expression": lic.replace("/", " OR ")}]
        checksum = sums.get((p["name"], p["version"]))
        if checksum:
            c["hashes"] = [{"alg": "SHA-256", "content": checksum}]
        elif p["source"] is None:
            # A crate of this workspace: the release tarball's checksum covers it.
            c["properties"] = [{"name": "gwe:source", "value": "workspace"}]
        return c

    deps = []
    for pid in sorted(seen, key=lambda i: (pkgs[i]["name"], pkgs[i]["version"])):
        on = sorted({ref(pkgs[d["pkg"]]) for d in nodes[pid]["deps"]
                     if d["pkg"] in seen and any(k["kind"] is None for k in d["dep_kinds"])})
        deps.append({"ref": ref(pkgs[pid]), "dependsOn": on})
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {"component": component(agent)},
        "components": [component(pkgs[i]) for i in sorted(seen - {agent["id"]},
                                                           key=lambda i: (pkgs[i]["name"], pkgs[i]["version"]))],
        "dependencies": deps,
    }
    return bom


def finish(bom, target_label):
    """The JSON text: the target it holds for, and a serial number derived from the content."""
    bom["metadata"]["properties"] = [{"name": "gwe:target", "value": target_label}]
    digest = hashlib.sha256(json.dumps(bom, sort_keys=True).encode()).digest()
    bom["serialNumber"] = f"urn:uuid:{uuid.UUID(bytes=digest[:16], version=5)}"
    return json.dumps(bom, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    main()
