SUMMARY = "Gateway Engine agent: app hosting, OTA, store-and-forward queue"
DESCRIPTION = "The agent of Gateway Engine hosts gateway apps written in any language \
               (supervisord's configuration language), updates them over the air, and \
               keeps their data in a power-safe write-ahead queue on flash until the \
               cloud has it."
HOMEPAGE = "https://gwe.example.org"
SECTION = "console/network"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# Point SRC_URI at your gwe repository (a bbappend) and pin SRCREV for reproducible images.
SRC_URI = "git://git.example.org/gwe.git;protocol=https;branch=main \
           file://gwe.toml \
           "
# The layer ships inside the repository it builds, so it cannot name its own commit: pin
# SRCREV to a released commit in your bbappend.
# nooelint: oelint.vars.autorev
SRCREV = "${AUTOREV}"

S = "${UNPACKDIR}/git"

inherit cargo cargo-update-recipe-crates systemd update-rc.d

require ${BPN}-crates.inc

# Only the agent binary. PACKAGECONFIG "edge": the edge data and control paths (no
# library needed; about 100 KB of binary).
PACKAGECONFIG ??= "edge"
PACKAGECONFIG[edge] = ""
CARGO_BUILD_FLAGS += "--bin gwe --no-default-features ${@bb.utils.contains('PACKAGECONFIG', 'edge', '--features edge', '', d)}"

SYSTEMD_SERVICE:${PN} = "gwe.service"
INITSCRIPT_NAME = "gwe"
INITSCRIPT_PARAMS = "defaults 90 10"

do_install:append() {
    install -d ${D}${sysconfdir}/gwe/programs.d
    install -m 0644 ${UNPACKDIR}/gwe.toml ${D}${sysconfdir}/gwe/gwe.toml
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}
        install -m 0644 ${S}/init/systemd/gwe.service ${D}${systemd_system_unitdir}/gwe.service
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -d ${D}${sysconfdir}/init.d
        install -m 0755 ${S}/init/sysv/gwe ${D}${sysconfdir}/init.d/gwe
    fi
}

CONFFILES:${PN} = "${sysconfdir}/gwe/gwe.toml"
FILES:${PN} += "${systemd_system_unitdir}/gwe.service"
