#!/usr/bin/env bash
# cross/vendor-check.sh: prove the crate builds from vendored sources alone, as
# Yocto (crate:// fetches) and Buildroot (cargo vendor tarball) build it.
#
# `cargo vendor` into a temporary directory, then an offline, --locked build
# with an empty CARGO_HOME whose only configuration points crates.io at the
# vendored copy. RUSTUP_HOME stays pinned so the toolchain is still found.
set -euo pipefail
. "$(dirname "$0")/common.sh"

cd "$ROOT_DIR"
# The Yocto recipe's crate list must be Cargo.lock's.
python3 "$CROSS_DIR/yocto/update-crates.py" --check
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/cargo-home"
rustup_home=${RUSTUP_HOME:-$(rustup show home 2>/dev/null || echo "$HOME/.rustup")}

"$CARGO" vendor --locked --versioned-dirs "$tmp/vendor" > "$tmp/cargo-home/config.toml"
echo "vendor-check.sh: vendored $(ls "$tmp/vendor" | wc -l) crates into $tmp/vendor"
# The recipe and the package build exactly this: the binaries, locked, offline.
env CARGO_HOME="$tmp/cargo-home" RUSTUP_HOME="$rustup_home" CARGO_TARGET_DIR="$tmp/target" \
    "$CARGO" build --offline --locked --bins
# And the lock file is whole: it resolves offline for every target and feature.
env CARGO_HOME="$tmp/cargo-home" RUSTUP_HOME="$rustup_home" \
    "$CARGO" metadata --offline --locked --all-features --format-version 1 > /dev/null
echo "vendor-check.sh: offline --locked build from vendored sources passed"
