# Bakes Gateway Engine app packages (NAME.vVERSION.tar.gz) into an image at build time.
#
# In a recipe of your own:
#     SRC_URI = "file://sensor.v1.4.2.tar.gz"
#     GWE_APP_PACKAGES = "sensor.v1.4.2.tar.gz"
#     inherit gwe_app
# The packages land in ${datadir}/gwe/preinstall; the agent installs each one on first
# boot through its normal (verified, atomic) install path, so a baked-in app is updated
# and rolled back over the air like any other.

GWE_APP_PACKAGES ?= ""
GWE_PREINSTALL_DIR = "${datadir}/gwe/preinstall"

FILES:${PN} += "${GWE_PREINSTALL_DIR}"
RDEPENDS:${PN} += "gwe"
INHIBIT_DEFAULT_DEPS = "1"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${GWE_PREINSTALL_DIR}
    for pkg in ${GWE_APP_PACKAGES}; do
        case "$pkg" in
            *.v*.tar.gz) ;;
            *) bbfatal "GWE_APP_PACKAGES: $pkg is not named NAME.vVERSION.tar.gz" ;;
        esac
        install -m 0644 ${UNPACKDIR}/$pkg ${D}${GWE_PREINSTALL_DIR}/$pkg
    done
}
