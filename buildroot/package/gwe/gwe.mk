################################################################################
#
# gwe
#
################################################################################

# The release the firmware pins: the commit the Yocto recipe names too (SRCREV). Its
# tarball with the crates vendored is made by scripts/release-tarball.py, byte for byte
# the same everywhere: gwe.hash holds its sha256, and Buildroot does not vendor again
# (the tarball has VENDOR/, which Buildroot's own vendoring would need its host cargo for).
GWE_VERSION = a8e5c8f2b459e768cec06c4576d47d44a7d931e3
GWE_SOURCE = gwe-$(GWE_VERSION)-vendored.tar.gz
GWE_SITE = $(call qstrip,$(BR2_PACKAGE_GWE_SITE))
# gwe itself, then the crates linked into the agent (scripts/gen-licenses.py).
GWE_LICENSE = Apache-2.0, (MIT or Apache-2.0) and Unicode-3.0 (crates), 0BSD or Apache-2.0 or MIT (crates), Apache-2.0 and ISC (crates), Apache-2.0 or ISC or MIT (crates), Apache-2.0 or MIT (crates), Apache-2.0 or MIT or Zlib (crates), BSD-3-Clause (crates), ISC (crates), MIT (crates), MIT or Unlicense (crates)
GWE_LICENSE_FILES = LICENSE

# Only the agent binary, not the benches/examples of the workspace.
GWE_CARGO_BUILD_OPTS = --bin gwe --no-default-features
GWE_CARGO_INSTALL_OPTS = --bin gwe --no-default-features

ifeq ($(BR2_PACKAGE_GWE_EDGE),y)
GWE_CARGO_BUILD_OPTS += --features edge
GWE_CARGO_INSTALL_OPTS += --features edge
endif

ifeq ($(BR2_PACKAGE_GWE_QUEUE_FULL_DROP_OLDEST),y)
GWE_FULL_POLICY = drop_oldest
else
GWE_FULL_POLICY = reject
endif

define GWE_INSTALL_CONFIG
	$(INSTALL) -D -m 0644 $(GWE_PKGDIR)/gwe.toml.in $(TARGET_DIR)/etc/gwe/gwe.toml
	$(SED) 's,@VENDOR@,$(call qstrip,$(BR2_PACKAGE_GWE_VENDOR)),; \
		s,@MODEL@,$(call qstrip,$(BR2_PACKAGE_GWE_MODEL)),; \
		s,@IFACE@,$(call qstrip,$(BR2_PACKAGE_GWE_SERIAL_IFACE)),; \
		s,@DATA_DIR@,$(call qstrip,$(BR2_PACKAGE_GWE_DATA_DIR)),; \
		s,@QUEUE_MAX_BYTES@,$(BR2_PACKAGE_GWE_QUEUE_MAX_BYTES),; \
		s,@FULL_POLICY@,$(GWE_FULL_POLICY),; \
		s,@INGEST_LISTEN@,$(call qstrip,$(BR2_PACKAGE_GWE_INGEST_LISTEN)),' \
		$(TARGET_DIR)/etc/gwe/gwe.toml
	$(if $(BR2_PACKAGE_GWE_OS_UPDATES),printf '\n[ota]\nos_updates = true\n' >>$(TARGET_DIR)/etc/gwe/gwe.toml)
	mkdir -p $(TARGET_DIR)/etc/gwe/programs.d
endef
GWE_POST_INSTALL_TARGET_HOOKS += GWE_INSTALL_CONFIG

define GWE_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/init/sysv/gwe $(TARGET_DIR)/etc/init.d/S90gwe
endef

define GWE_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/init/systemd/gwe.service \
		$(TARGET_DIR)/usr/lib/systemd/system/gwe.service
endef

# The agent's software bill of materials (CycloneDX: every crate linked in, with version,
# licence and checksum), from the release, beside the images.
GWE_INSTALL_IMAGES = YES
define GWE_INSTALL_IMAGES_CMDS
	$(INSTALL) -D -m 0644 $(@D)/sbom.cdx.json $(BINARIES_DIR)/gwe.cdx.json
endef

$(eval $(cargo-package))
