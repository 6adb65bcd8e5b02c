# --- cross-compilation and packaging ---
# The logic lives in cross/*.sh (see cross/README.md); these targets only call it.
#   make cross-setup [TARGET=...]    cross gcc, qemu-user, multiarch libc, rustup targets
#   make cross [TARGET=...]          ARM release build on the target's OpenSSL (default: both)
#   make cross-test [TARGET=...]     ARM unit tests + end-to-end transfer under qemu-user
#   make vendor-check                offline, --locked build from `cargo vendor`
#   make install [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=/etc] [TARGET=]
#   make static [STATIC_TARGET=x86_64-unknown-linux-musl]   fully static, vendored OpenSSL
CROSS_TARGETS := armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu
TARGET ?=
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
STATIC_TARGET ?= x86_64-unknown-linux-musl

.PHONY: cross cross-test cross-setup vendor-check install static

cross-setup:
	bash cross/setup.sh $(or $(TARGET),$(CROSS_TARGETS))

cross:
	@set -e; for t in $(or $(TARGET),$(CROSS_TARGETS)); do bash cross/build.sh $$t; done

cross-test:
	@set -e; for t in $(or $(TARGET),$(CROSS_TARGETS)); do bash cross/cross-test.sh $$t; done

vendor-check:
	bash cross/vendor-check.sh

install:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" SYSCONFDIR="$(SYSCONFDIR)" TARGET="$(TARGET)" \
		bash cross/install.sh

static:
	bash cross/static.sh $(STATIC_TARGET)
