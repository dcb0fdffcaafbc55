#!/usr/bin/env python3
"""Checks the Buildroot external tree without a Buildroot checkout: parses the Kconfig
files with kconfiglib (with the few Buildroot symbols they use declared), loads every
defconfig against them, and checks the package's .mk variables."""
import os
import pathlib
import re
import sys
import tempfile

import kconfiglib

root = pathlib.Path(__file__).resolve().parent.parent / "buildroot"
problems = []

# The Buildroot symbols our Config.in depends on, and those our defconfigs set.
stub = """
config BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS
\tdef_bool y
config BR2_USE_MMU
\tdef_bool y
config BR2_PACKAGE_HOST_RUSTC
\tbool
config BR2_USE_WCHAR
\tdef_bool y
config BR2_TOOLCHAIN_HAS_THREADS
\tdef_bool y
config BR2_PACKAGE_RAUC
\tbool
config BR2_PACKAGE_RAUC_JSON
\tbool
source "$(BR2_EXTERNAL_GWE_PATH)/Config.in"
"""
os.environ["BR2_EXTERNAL_GWE_PATH"] = str(root)
# Buildroot's symbols carry no CONFIG_ prefix in .config files.
os.environ["CONFIG_"] = ""
with tempfile.NamedTemporaryFile("w", suffix=".in", delete=False) as f:
    f.write(stub)
    top = f.name
kconf = kconfiglib.Kconfig(top, warn_to_stderr=False)
for w in kconf.warnings:
    problems.append(f"Kconfig: {w}")
syms = [s for s in kconf.unique_defined_syms if s.name.startswith("BR2_PACKAGE_GWE")]
if not any(s.name == "BR2_PACKAGE_GWE" for s in syms):
    problems.append("Config.in does not define BR2_PACKAGE_GWE")

# Every BR2_PACKAGE_GWE_* the defconfigs and fragments set must exist.
for cfg in sorted((root / "configs").iterdir()):
    for line in cfg.read_text().splitlines():
        m = re.match(r"(BR2_PACKAGE_GWE\w*)=", line)
        if m and (m.group(1) not in kconf.syms or not kconf.syms[m.group(1)].nodes):
            problems.append(f"{cfg.name}: {m.group(1)} is not a gwe Kconfig option")
    kconf.load_config(str(cfg))
    if kconf.syms["BR2_PACKAGE_GWE"].str_value != "y":
        problems.append(f"{cfg.name}: does not enable BR2_PACKAGE_GWE")

# The .mk: the variables Buildroot needs, the cargo-package infrastructure, and every
# BR2_PACKAGE_GWE_* it reads being a real option.
mk = (root / "package/gwe/gwe.mk").read_text()
for var in ("GWE_VERSION", "GWE_SITE", "GWE_LICENSE", "GWE_LICENSE_FILES"):
    if not re.search(rf"^{var}\s*[+:?]?=", mk, re.M):
        problems.append(f"gwe.mk: {var} is not set")
if "$(eval $(cargo-package))" not in mk.splitlines()[-1]:
    problems.append("gwe.mk: does not end with $(eval $(cargo-package))")
for name in set(re.findall(r"BR2_PACKAGE_GWE\w*", mk)):
    if name not in kconf.syms or not kconf.syms[name].nodes:
        problems.append(f"gwe.mk: reads {name}, which Config.in does not define")
for var in re.findall(r"^(GWE_\w+)\s*[+:?]?=", mk, re.M):
    known = {"VERSION", "SOURCE", "SITE", "LICENSE", "LICENSE_FILES", "CARGO_BUILD_OPTS",
             "CARGO_INSTALL_OPTS", "CARGO_ENV", "DEPENDENCIES", "FULL_POLICY", "POST_INSTALL_TARGET_HOOKS",
             "INSTALL_IMAGES"}
    if var[4:] not in known:
        problems.append(f"gwe.mk: unexpected variable {var}")
license_files = re.search(r"^GWE_LICENSE_FILES\s*=\s*(.*)$", mk, re.M).group(1).split()
hashes = (root / "package/gwe/gwe.hash").read_text()
for lf in license_files:
    if not re.search(rf"^sha256\s+[0-9a-f]{{64}}\s+{re.escape(lf)}$", hashes, re.M):
        problems.append(f"gwe.hash: no sha256 for license file {lf}")
desc = (root / "external.desc").read_text()
if not re.search(r"^name: GWE$", desc, re.M):
    problems.append("external.desc: name must be GWE (BR2_EXTERNAL_GWE_PATH)")

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"buildroot/: Kconfig parses ({len(syms)} gwe options), "
      f"{len(list((root / 'configs').iterdir()))} configs load, gwe.mk and gwe.hash check out")
