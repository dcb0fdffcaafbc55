# Bakes Gateway Engine app packages (NAME.vVERSION.tar.gz) into an image at build time.
#
# In a recipe of your own:
#     SRC_URI = "file://sensor.v1.4.2.tar.gz"
#     GWE_APP_PACKAGES = "sensor.v1.4.2.tar.gz"
#     inherit gwe_app
# The packages land in ${datadir}/gwe/preinstall; the agent installs each one on first
# boot through its normal (verified, atomic) install path, so a baked-in app is updated
# and rolled back over the air like any other. The packages are installed as they are,
# their release metadata beside them (NAME.vVERSION.tar.gz.meta, or an old-style .sig,
# when listed in SRC_URI too): the class keeps bitbake from unpacking them (it adds
# unpack=0 to their SRC_URI entries).

GWE_APP_PACKAGES ?= ""
GWE_PREINSTALL_DIR = "${datadir}/gwe/preinstall"

# file:// sources are unpacked into UNPACKDIR from styhead (5.1) on, WORKDIR before.
GWE_APP_SRCDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
S = "${GWE_APP_SRCDIR}"

FILES:${PN} += "${GWE_PREINSTALL_DIR}"
RDEPENDS:${PN} += "gwe"
INHIBIT_DEFAULT_DEPS = "1"

# Changing SRC_URI as the recipe's author wrote it takes Python after parsing.
# nooelint: oelint.task.noanonpython
python __anonymous() {
    # bitbake would unpack NAME.vVERSION.tar.gz: keep the packages whole.
    pkgs = set((d.getVar('GWE_APP_PACKAGES') or '').split())
    out = []
    for u in (d.getVar('SRC_URI') or '').split():
        base = u.split(';')[0].rsplit('/', 1)[-1]
        if base in pkgs and ';unpack=' not in u:
            u += ';unpack=0'
        out.append(u)
    d.setVar('SRC_URI', ' '.join(out))
}

# Nothing to patch, configure or compile: no patch tool either (a native build of its own).
do_patch[noexec] = "1"
do_patch[depends] = ""
do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${GWE_PREINSTALL_DIR}
    for pkg in ${GWE_APP_PACKAGES}; do
        case "$pkg" in
            *.v*.tar.gz) ;;
            *) bbfatal "GWE_APP_PACKAGES: $pkg is not named NAME.vVERSION.tar.gz" ;;
        esac
        [ -f ${GWE_APP_SRCDIR}/$pkg ] || bbfatal "GWE_APP_PACKAGES: $pkg is not among the recipe's SRC_URI files"
        install -m 0644 ${GWE_APP_SRCDIR}/$pkg ${D}${GWE_PREINSTALL_DIR}/$pkg
        for sig in meta sig; do
            if [ -f ${GWE_APP_SRCDIR}/$pkg.$sig ]; then
                install -m 0644 ${GWE_APP_SRCDIR}/$pkg.$sig ${D}${GWE_PREINSTALL_DIR}/$pkg.$sig
            fi
        done
    done
}
