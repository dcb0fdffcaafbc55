SUMMARY = "Gateway Engine agent: app hosting, OTA, store-and-forward queue"
DESCRIPTION = "The agent of Gateway Engine hosts gateway apps written in any language \
               (supervisord's configuration language), updates them over the air, and \
               keeps their data in a power-safe write-ahead queue on flash until the \
               cloud has it."
HOMEPAGE = "https://gwe.example.org"
SECTION = "console/network"
# gwe itself, then the licences of the crates linked into the agent
# (scripts/gen-licenses.py, from the release's sbom.cdx.json).
LICENSE = "Apache-2.0 & ((MIT | Apache-2.0) & Unicode-3.0) & (0BSD | Apache-2.0 | MIT) & (Apache-2.0 & ISC) & (Apache-2.0 | ISC | MIT) & (Apache-2.0 | MIT) & (Apache-2.0 | MIT | Zlib) & BSD-3-Clause & ISC & MIT & (MIT | Unlicense)"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

PV = "0.1.0+git"

# A released commit of the gwe repository, pinned (never a branch head: an image must
# build the same sources every time, and a pinned commit parses offline). Point SRC_URI at
# your own mirror or fork in a bbappend or with PREMIRRORS; pin SRCREV to the commit you
# release. The layer ships inside the repository it builds, so the commit it names is an
# earlier one: gwe-crates.inc and LIC_FILES_CHKSUM follow that commit
# (scripts/gen-yocto-crates.py).
SRC_URI = "git://git.example.org/gwe.git;protocol=https;nobranch=1;destsuffix=${BP} \
           file://gwe.toml \
           "
SRCREV = "a8e5c8f2b459e768cec06c4576d47d44a7d931e3"

inherit cargo cargo-update-recipe-crates deploy systemd update-rc.d

require ${BPN}-crates.inc

# Only the agent binary. PACKAGECONFIG "edge": the edge data and control paths (no
# library needed; about 100 KB of binary).
PACKAGECONFIG ??= "edge"
PACKAGECONFIG[edge] = ""
# PACKAGECONFIG "os-updates": the agent takes OS bundles ([ota] os_updates in gwe.toml) and
# needs RAUC on the image (meta-rauc; docs/os-updates.md).
PACKAGECONFIG[os-updates] = ",,,rauc"
CARGO_BUILD_FLAGS += "--bin gwe --no-default-features ${@bb.utils.contains('PACKAGECONFIG', 'edge', '--features edge', '', d)}"

# Where file:// sources are unpacked: UNPACKDIR from styhead (5.1) on, WORKDIR before.
GWE_FILESDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"

# The agent needs Rust 1.82 or newer. Scarthgap (5.0) ships 1.75: say so before anything
# long is built, rather than fail deep in cargo.
GWE_MIN_RUST = "1.82"
python do_gwe_check_rust() {
    from bb.utils import vercmp_string
    have = (d.getVar('RUSTVERSION') or '').rstrip('%')
    need = d.getVar('GWE_MIN_RUST')
    if have and vercmp_string(have, need) < 0:
        bb.fatal("gwe needs Rust %s or newer; this build's Rust is %s (RUSTVERSION). On scarthgap, "
                 "add the scarthgap/rust branch of meta-lts-mixins "
                 "(https://git.yoctoproject.org/meta-lts-mixins) to BBLAYERS, which sets a newer "
                 "RUSTVERSION." % (need, have))
}
addtask gwe_check_rust after do_unpack before do_configure

SYSTEMD_SERVICE:${PN} = "gwe.service"
INITSCRIPT_NAME = "gwe"
INITSCRIPT_PARAMS = "defaults 90 10"

do_install:append() {
    install -d ${D}${sysconfdir}/gwe/programs.d
    install -m 0644 ${GWE_FILESDIR}/gwe.toml ${D}${sysconfdir}/gwe/gwe.toml
    if ${@bb.utils.contains('PACKAGECONFIG', 'os-updates', 'true', 'false', d)}; then
        printf '\n[ota]\nos_updates = true\n' >>${D}${sysconfdir}/gwe/gwe.toml
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}
        install -m 0644 ${S}/init/systemd/gwe.service ${D}${systemd_system_unitdir}/gwe.service
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -d ${D}${sysconfdir}/init.d
        install -m 0755 ${S}/init/sysv/gwe ${D}${sysconfdir}/init.d/gwe
    fi
}

# The agent's software bill of materials (CycloneDX: every crate linked in, with version,
# licence and checksum), from the release, beside the image in DEPLOY_DIR_IMAGE. It needs
# only the sources, so it does not wait for the build.
do_deploy() {
    install -m 0644 ${S}/sbom.cdx.json ${DEPLOYDIR}/gwe-${PV}.cdx.json
}
addtask deploy after do_patch before do_build

CONFFILES:${PN} = "${sysconfdir}/gwe/gwe.toml"
FILES:${PN} += "${systemd_system_unitdir}/gwe.service"
