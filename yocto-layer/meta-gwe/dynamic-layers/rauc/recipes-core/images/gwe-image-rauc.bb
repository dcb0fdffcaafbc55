SUMMARY = "Example image: the gwe agent with RAUC for A/B root filesystem updates"
DESCRIPTION = "A minimal image with gwe and RAUC. gwe downloads OS bundles from its hub and \
hands them to RAUC, which writes the inactive slot; after the reboot gwe decides whether the \
new system is good and has RAUC mark it (docs/os-updates.md). The machine's rauc-conf \
provides RAUC's system.conf (slots, bootloader, keyring), as meta-rauc's README describes."
HOMEPAGE = "https://gwe.example.org"
LICENSE = "MIT"

inherit core-image

# gwe and RAUC. gwe's OS update path is its PACKAGECONFIG "os-updates", set where the
# gwe recipe sees it (local.conf or the distro):
#   PACKAGECONFIG:append:pn-gwe = " os-updates"
IMAGE_INSTALL:append = " gwe rauc"
# gwe decides whether a new slot is good: RAUC's mark-good service must not do it at boot.
BAD_RECOMMENDATIONS += "rauc-mark-good"
IMAGE_FSTYPES:append = " ext4"
