################################################################################
#
# localproxy
#
################################################################################

# Where the sources come from. Defaults to the checkout this BR2_EXTERNAL tree
# lives in (cross/buildroot/../..); set LOCALPROXY_OVERRIDE_SRCDIR in local.mk,
# or replace SITE/SITE_METHOD with a git URL and a commit for release builds.
LOCALPROXY_VERSION = 0.1.0
LOCALPROXY_SITE = $(realpath $(BR2_EXTERNAL_LOCALPROXY_PATH)/../..)
LOCALPROXY_SITE_METHOD = local
LOCALPROXY_LICENSE = Apache-2.0
LOCALPROXY_DEPENDENCIES = host-pkgconf openssl

# The cargo infrastructure vendors Cargo.lock's crates at download time and
# builds with --offline --locked (what `make vendor-check` proves). Link the
# staging OpenSSL dynamically; never build a vendored copy.
LOCALPROXY_CARGO_ENV = \
	OPENSSL_NO_VENDOR=1 \
	OPENSSL_LIB_DIR=$(STAGING_DIR)/usr/lib \
	OPENSSL_INCLUDE_DIR=$(STAGING_DIR)/usr/include

# A local or overridden source has no download step, so the cargo download
# post-process never vendors the crates: do it before the build, the way it
# would (cargo vendor, then point crates.io at the vendored copy).
LOCALPROXY_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude=target --exclude=build
ifneq ($(LOCALPROXY_OVERRIDE_SRCDIR)$(filter local,$(LOCALPROXY_SITE_METHOD)),)
define LOCALPROXY_CARGO_VENDOR_LOCAL
	cd $(@D) && $(PKG_COMMON_CARGO_ENV) cargo vendor --locked --versioned-dirs VENDOR \
		> $(@D)/vendor-config.toml
	mkdir -p $(@D)/.cargo
	cat $(@D)/vendor-config.toml >> $(@D)/.cargo/config.toml
endef
LOCALPROXY_PRE_BUILD_HOOKS += LOCALPROXY_CARGO_VENDOR_LOCAL
endif

LOCALPROXY_BIN_DIR = $(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)
LOCALPROXY_BINARIES = localproxy $(if $(BR2_PACKAGE_LOCALPROXY_TUNNEL_SERVICE),tunnel-service)

define LOCALPROXY_INSTALL_TARGET_CMDS
	$(foreach bin,$(LOCALPROXY_BINARIES),
		$(INSTALL) -D -m 0755 $(LOCALPROXY_BIN_DIR)/$(bin) $(TARGET_DIR)/usr/bin/$(bin)
	)
	$(INSTALL) -D -m 0644 $(@D)/cross/systemd/destination.conf \
		$(TARGET_DIR)/etc/localproxy/destination.conf
	$(INSTALL) -D -m 0644 $(@D)/cross/systemd/token.env.example \
		$(TARGET_DIR)/usr/share/doc/localproxy/token.env.example
endef

define LOCALPROXY_INSTALL_INIT_SYSTEMD
	mkdir -p $(TARGET_DIR)/usr/lib/systemd/system
	sed -e 's|@BINDIR@|/usr/bin|g' -e 's|@SYSCONFDIR@|/etc|g' \
		$(@D)/cross/systemd/localproxy-destination.service.in \
		> $(TARGET_DIR)/usr/lib/systemd/system/localproxy-destination.service
	chmod 0644 $(TARGET_DIR)/usr/lib/systemd/system/localproxy-destination.service
endef

$(eval $(cargo-package))
