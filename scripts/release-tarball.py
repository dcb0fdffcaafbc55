#!/usr/bin/env python3
"""Makes the release tarball of a commit, with its crates vendored, byte for byte the same
on every machine (so firmware build systems can pin its sha256):

    scripts/release-tarball.py [--commit C] [--out DIR]   -> DIR/gwe-C-vendored.tar.gz

The commit defaults to the one the firmware recipes pin (the Yocto recipe's SRCREV, which
Buildroot's gwe.mk names too). The tarball holds `gwe-C/` (git archive of C) with
`gwe-C/VENDOR/NAME-VERSION/` (every crate of C's Cargo.lock, unpacked from the .crate
crates.io serves, with the .cargo-checksum.json cargo checks) and `gwe-C/.cargo/config.toml`
pointing cargo at them: `cargo build --offline --locked` builds it, and Buildroot's cargo
download step sees `VENDOR/` and does not vendor again (which would need its host cargo).
Entries are sorted, owned by 0:0, dated at the commit; gzip carries no name or time.
Prints the path and its sha256."""
import argparse
import gzip
import hashlib
import io
import json
import pathlib
import re
import subprocess
import tarfile
import tomllib

root = pathlib.Path(__file__).resolve().parent.parent


def git(*args):
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True).stdout


def pinned_commit():
    recipe = next((root / "yocto-layer/meta-gwe/recipes-gwe/gwe").glob("gwe_*.bb")).read_text()
    return re.search(r'^SRCREV = "([0-9a-f]{40})"', recipe, re.M).group(1)


def crate_cache():
    home = pathlib.Path(subprocess.run(["sh", "-c", 'echo "${CARGO_HOME:-$HOME/.cargo}"'], check=True,
                                       capture_output=True, text=True).stdout.strip())
    dirs = sorted((home / "registry/cache").glob("index.crates.io-*"))
    if not dirs:
        raise SystemExit("no crates.io cache: run cargo fetch --locked first")
    return dirs[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out", default=str(root / "target/release"))
    a = ap.parse_args()
    commit = a.commit or pinned_commit()
    commit = git("rev-parse", f"{commit}^{{commit}}").decode().strip()
    when = int(git("show", "-s", "--format=%ct", commit))
    top = f"gwe-{commit}"
    files = {}  # path -> (mode, bytes or None for a directory, linkname)

    with tarfile.open(fileobj=io.BytesIO(git("archive", "--format=tar", f"--prefix={top}/", commit))) as t:
        for m in t.getmembers():
            if m.isdir():
                files[m.name.rstrip("/")] = (0o755, None, None)
            elif m.issym():
                files[m.name] = (0o777, b"", m.linkname)
            elif m.isfile():
                files[m.name] = (m.mode & 0o777, t.extractfile(m).read(), None)

    lock = tomllib.loads(git("show", f"{commit}:Cargo.lock").decode())
    cache = crate_cache()
    for p in lock["package"]:
        if not p.get("source", "").startswith("registry+"):
            continue
        name, version, want = p["name"], p["version"], p["checksum"]
        crate = (cache / f"{name}-{version}.crate").read_bytes()
        if hashlib.sha256(crate).hexdigest() != want:
            raise SystemExit(f"{name}-{version}.crate does not match Cargo.lock's checksum")
        base = f"{top}/VENDOR/{name}-{version}"
        sums = {}
        with tarfile.open(fileobj=io.BytesIO(crate), mode="r:gz") as t:
            for m in t.getmembers():
                rel = m.name.split("/", 1)[1] if "/" in m.name else ""
                if not m.isfile() or not rel:
                    continue
                data = t.extractfile(m).read()
                files[f"{base}/{rel}"] = (0o755 if m.mode & 0o111 else 0o644, data, None)
                sums[rel] = hashlib.sha256(data).hexdigest()
        files[f"{base}/.cargo-checksum.json"] = (
            0o644, json.dumps({"files": dict(sorted(sums.items())), "package": want}, sort_keys=True).encode(), None)
    files[f"{top}/.cargo/config.toml"] = (0o644, (
        '[source.crates-io]\nreplace-with = "vendored-sources"\n\n'
        '[source.vendored-sources]\ndirectory = "VENDOR"\n').encode(), None)

    # Every parent directory, as an entry of its own.
    for path in list(files):
        parent = path.rsplit("/", 1)[0]
        while "/" in parent or parent == top:
            files.setdefault(parent, (0o755, None, None))
            if parent == top:
                break
            parent = parent.rsplit("/", 1)[0]

    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{top}-vendored.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as t:
        for path in sorted(files):
            mode, data, link = files[path]
            info = tarfile.TarInfo(path)
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = mode, when, 0, 0, "", ""
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                t.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as z:
        z.write(raw.getvalue())
    tmp.replace(dest)
    print(dest, hashlib.sha256(dest.read_bytes()).hexdigest())


if __name__ == "__main__":
    main()
