# Build, test and maintenance entry points. Every target is a thin wrapper
# around cargo so that `make test` here and in CI (.ci/run) are the same thing.

CARGO ?= cargo
# Tools installed by `cargo install` land here; make sure they are found.
CARGO_BIN := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
export PATH := $(CARGO_BIN):$(PATH)

MSRV := 1.75
PB_RS_VERSION := 0.10.0
PROTO := proto/securetunneling.proto
PROTO_OUT := src/proto
# Marker every generated file must carry so rustfmt leaves it alone.
RUSTFMT_SKIP := \#![cfg_attr(rustfmt, rustfmt_skip)]

# `make fuzz SECONDS=N`
SECONDS ?= 60
FUZZ_TARGET := frame_decoder

.PHONY: all build release test demo setup setup-test demo-check proto proto-check pb-rs fuzz cargo-fuzz \
	msrv bench bench-smoke clean

all: build

build: setup
	$(CARGO) build --locked

release: setup
	$(CARGO) build --release --locked

# Formatting, lints, every unit and integration test, then the generated
# protobuf code against its schema (when pb-rs is at hand: .ci/run installs it).
test: setup-test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked
	@if command -v pb-rs >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory proto-check; \
	else \
		echo "proto-check skipped: pb-rs is not installed ('make proto-check' installs it)"; \
	fi

demo: setup
	bash scripts/demo.sh

# Proves `make demo` works for a user who has only the build dependencies:
# a fresh copy of the tree, as nobody, with no rustup, pb-rs, ssh or sshd on
# PATH (a full debug build from scratch: .ci/run runs it after `make test`).
demo-check:
	bash scripts/demo-check.sh

# What the build needs (toolchain, cc, pkg-config, OpenSSL headers), checked;
# missing Debian packages are installed when run as root, named otherwise.
setup:
	bash scripts/setup.sh

# setup, then what only the tests need (OpenSSH, nftables, iproute2, rustfmt,
# clippy, pb-rs, ...), each only when missing.
setup-test:
	bash scripts/setup-test.sh

# Install pb-rs $(PB_RS_VERSION) unless that exact version is already on PATH.
pb-rs:
	@pb-rs --version 2>/dev/null | grep -qx 'pb-rs $(PB_RS_VERSION)' || \
		$(CARGO) install pb-rs --version $(PB_RS_VERSION) --locked

# Regenerate src/proto from the schema. The output is not run through
# rustfmt: each generated file opens with $(RUSTFMT_SKIP) and src/lib.rs
# declares the module `#[rustfmt::skip]`, so `cargo fmt --check` skips it.
proto: pb-rs
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	pb-rs -d "$$tmp" $(PROTO) >/dev/null && \
	for f in $$(find "$$tmp" -name '*.rs' ! -name mod.rs); do \
		grep -qF '$(RUSTFMT_SKIP)' "$$f" || { echo "$$f lacks $(RUSTFMT_SKIP)" >&2; exit 1; }; \
	done && \
	rm -rf $(PROTO_OUT) && cp -R "$$tmp" $(PROTO_OUT) && chmod -R u+rwX,go+rX $(PROTO_OUT)
	@echo "regenerated $(PROTO_OUT) from $(PROTO)"

# Proves the checked-in generated code is exactly what the schema gives.
proto-check: pb-rs
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	pb-rs -d "$$tmp" $(PROTO) >/dev/null && \
	if diff -r "$$tmp" $(PROTO_OUT); then \
		echo "proto-check: $(PROTO_OUT) matches $(PROTO)"; \
	else \
		echo "proto-check: $(PROTO_OUT) is stale, run 'make proto' and commit" >&2; exit 1; \
	fi

cargo-fuzz:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

# Coverage-guided fuzzing of the frame decoder (needs the nightly toolchain).
# New inputs go to an ignored working corpus; the committed seeds are read only.
fuzz: cargo-fuzz
	mkdir -p fuzz/corpus/$(FUZZ_TARGET)-work
	$(CARGO) +nightly fuzz run $(FUZZ_TARGET) \
		fuzz/corpus/$(FUZZ_TARGET)-work fuzz/corpus/$(FUZZ_TARGET) \
		-- -max_total_time=$(SECONDS)

# Builds everything with the oldest supported toolchain (rust-version).
msrv:
	@rustup toolchain list | grep -q '^$(MSRV)[.-]' || \
		rustup toolchain install $(MSRV) --profile minimal
	$(CARGO) +$(MSRV) build --locked --all-targets

# Throughput, latency, memory and scale of the tunnel chain against the
# loopback TCP and TLS limits, in one run on release binaries; prints the
# table and writes target/bench/results.json. `make bench-smoke`: --quick.
bench:
	$(CARGO) build --release --locked --bins --example bench
	$(CARGO) run --release --locked --example bench

bench-smoke:
	$(CARGO) build --release --locked --bins --example bench
	$(CARGO) run --release --locked --example bench -- --quick

clean:
	$(CARGO) clean
	rm -rf fuzz/target fuzz/artifacts fuzz/corpus/$(FUZZ_TARGET)-work

# --- cross-compilation and packaging ---
# The logic lives in cross/*.sh (see cross/README.md); these targets only call it.
#   make cross-setup [TARGET=...]    cross gcc, qemu-user, multiarch libc, rustup targets
#   make cross [TARGET=...]          ARM release build on the target's OpenSSL (default: both)
#   make cross-test [TARGET=...]     ARM unit tests + end-to-end transfer under qemu-user
#   make vendor-check                offline, --locked build from `cargo vendor`
#   make install [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=/etc] [TARGET=]
#   make static [STATIC_TARGET=x86_64-unknown-linux-musl] [STATIC_PIE=no]   fully static, vendored OpenSSL
CROSS_TARGETS := armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu
TARGET ?=
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
STATIC_TARGET ?= x86_64-unknown-linux-musl
STATIC_PIE ?= yes

.PHONY: cross cross-test cross-setup vendor-check install static

cross-setup:
	bash cross/setup.sh $(or $(TARGET),$(CROSS_TARGETS))

cross:
	@set -e; for t in $(or $(TARGET),$(CROSS_TARGETS)); do bash cross/build.sh $$t; done

cross-test:
	@set -e; for t in $(or $(TARGET),$(CROSS_TARGETS)); do bash cross/cross-test.sh $$t; done

vendor-check:
	bash cross/vendor-check.sh

install: setup
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" SYSCONFDIR="$(SYSCONFDIR)" TARGET="$(TARGET)" \
		bash cross/install.sh

static:
	STATIC_PIE=$(STATIC_PIE) bash cross/static.sh $(STATIC_TARGET)
