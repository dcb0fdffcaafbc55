################################################################################
#
# gwe
#
################################################################################

GWE_VERSION = $(call qstrip,$(BR2_PACKAGE_GWE_GIT_VERSION))
GWE_SITE = $(call qstrip,$(BR2_PACKAGE_GWE_GIT_URL))
GWE_SITE_METHOD = git
GWE_LICENSE = Apache-2.0
GWE_LICENSE_FILES = LICENSE
# The revision is the user's choice, so there is no fixed tarball hash to check;
# gwe.hash still checks the license file.
BR_NO_CHECK_HASH_FOR += $(GWE_SOURCE)

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

$(eval $(cargo-package))
