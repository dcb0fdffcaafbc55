# nooelint: oelint.var.mandatoryvar.SRC_URI,oelint.file.underscores
# A bundle is made from another recipe's image: no sources of its own, no version in its name.
SUMMARY = "Example RAUC bundle of gwe-image-rauc, for gwe to install over the air"
DESCRIPTION = "A signed bundle in RAUC's verity format, its image with a block-hash-index \
(adaptive updates). Put it in the hub's content as NAME.vVERSION.raucb, VERSION being \
RAUC_BUNDLE_VERSION (gwe refuses a name that says another version than the signed one), and \
send it with a rollout or engine_fetch's os item (docs/os-updates.md)."
HOMEPAGE = "https://gwe.example.org"
LICENSE = "MIT"

inherit bundle

# The compatible string must be the one in the machine's RAUC system.conf.
RAUC_BUNDLE_COMPATIBLE ?= "${MACHINE}-gwe"
RAUC_BUNDLE_VERSION ?= "${DISTRO_VERSION}"
RAUC_BUNDLE_DESCRIPTION ?= "gwe-image-rauc for ${MACHINE}"
RAUC_BUNDLE_FORMAT ?= "verity"
RAUC_BUNDLE_SLOTS ?= "rootfs"
RAUC_SLOT_rootfs ?= "gwe-image-rauc"
RAUC_SLOT_rootfs[fstype] ?= "ext4"
RAUC_SLOT_rootfs[adaptive] ?= "block-hash-index"
# Set RAUC_KEY_FILE and RAUC_CERT_FILE (a signing key and certificate your boards' keyring
# trusts) in local.conf or a bbappend; keep the key out of the layer.
