#!/usr/bin/env bash
# What `make build`, `make demo`, `make release` and `make install` need, and
# nothing more:
#   - a Rust toolchain: cargo and rustc at the crate's rust-version (1.75) or
#     newer, from rustup or from Debian's packages;
#   - a C compiler with the libc headers (cc): rustc links with it and the
#     openssl crate's build script compiles a probe with it;
#   - pkg-config and the OpenSSL headers: the openssl crate finds the system
#     OpenSSL with them.
# Each is checked by what the build runs, not by package name. When one is
# missing this names the Debian package and, run as root, installs it; a user
# who is not root is told what to install and nothing is installed.
# The tools that only the tests use are in scripts/setup-test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-lib.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
want=$(msrv)

problems=() # what is missing, for the message
pkgs=()     # the Debian packages that bring it
fatal=()    # what no package of ours can fix
need() {
    problems+=("$1 (Debian: ${*:2})")
    pkgs+=("${@:2}")
}

# The Rust toolchain.
rust=""
if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
    rust="no Rust toolchain (cargo and rustc) on PATH"
elif ! have=$(rustc --version 2>/dev/null); then
    rust="'rustc --version' fails"
else
    have=${have#rustc }
    have=${have%% *}
    version_at_least "$have" "$want" || rust="rustc $have is older than $want"
fi
if [ -n "$rust" ]; then
    if command -v rustup >/dev/null 2>&1; then
        fatal+=("$rust: run 'rustup default stable' (or 'rustup update stable')")
    elif [ "$rust" = "no Rust toolchain (cargo and rustc) on PATH" ]; then
        # Debian 13's cargo is recent enough; Debian 12's is 1.63, but its
        # cargo-web/rustc-web packages follow Firefox's needs (1.85 or newer).
        deb=""
        for pair in cargo:rustc cargo-web:rustc-web; do
            candidate=$(deb_candidate "${pair#*:}")
            if [ -n "$candidate" ] && version_at_least "$candidate" "$want"; then
                deb=${pair%%:*}
                break
            fi
        done
        if [ -n "$deb" ]; then
            need "Rust $want or newer (or rustup, https://rustup.rs)" "$deb"
        else
            fatal+=("$rust: install Rust $want or newer with rustup (https://rustup.rs)")
        fi
    else
        # A Debian toolchain that is too old. Replacing it is the owner's
        # choice: on Debian 12, cargo-web and rustc-web replace cargo and rustc.
        fatal+=("$rust: install Rust $want or newer: rustup (https://rustup.rs), or on Debian 12 'apt-get install cargo-web' (replaces Debian's cargo and rustc 1.63)")
    fi
fi

# The linker and the C compiler of build scripts.
command -v cc >/dev/null 2>&1 || need "a C compiler (cc)" gcc libc6-dev

# pkg-config and the OpenSSL headers it finds.
if ! command -v pkg-config >/dev/null 2>&1; then
    need "pkg-config" pkg-config
    [ -f /usr/include/openssl/ssl.h ] || need "the OpenSSL headers" libssl-dev
elif ! pkg-config --exists openssl; then
    need "the OpenSSL headers (pkg-config finds no 'openssl')" libssl-dev
fi

if ((${#fatal[@]})); then
    printf 'setup: %s\n' "${fatal[@]}" >&2
    ((${#problems[@]} == 0)) || printf 'setup: missing: %s\n' "${problems[@]}" >&2
    exit 1
fi
if ((${#pkgs[@]})); then
    [ "$(id -u)" -eq 0 ] || printf 'setup: missing: %s\n' "${problems[@]}" >&2
    deb_install "building localproxy" "${pkgs[@]}"
fi

echo "setup: build dependencies present: $(rustc --version), $(cargo --version)," \
    "cc, pkg-config, OpenSSL $(pkg-config --modversion openssl)"
