#!/usr/bin/env bash
# cross/setup.sh: install what cross builds and emulated tests need (idempotent).
#
# Debian cross gcc + cross libc for armhf and arm64, qemu-user, the matching
# multiarch libc6 (so qemu runs the binaries WITHOUT -L: qemu-aarch64 with -L
# on Debian's cross libc hangs on thread creation), and the rustup targets.
# The target's OpenSSL is not installed here: cross/sysroot.sh unpacks it into
# build/sysroot/<target>, the same model Yocto and Buildroot use.
#
# Usage: cross/setup.sh [TARGET...]   (default: both ARM targets)
set -euo pipefail

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu)

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# deb_arch, gnu_triple, qemu_bin: the target tables shared by the cross scripts.
. "$(dirname "$0")/common.sh"

pkgs=()
need_update=0
for t in "${targets[@]}"; do
    arch=$(deb_arch "$t")
    triple=$(gnu_triple "$t")
    command -v "$triple-gcc" >/dev/null || pkgs+=("gcc-$triple")
    dpkg -s "libc6-dev-$arch-cross" >/dev/null 2>&1 || pkgs+=("libc6-dev-$arch-cross")
    command -v "$(qemu_bin "$t")" >/dev/null || pkgs+=(qemu-user)
    # Multiarch runtime libc: the loader /lib/ld-linux-*.so.* in its standard place,
    # which is what lets qemu-user run the binaries without -L.
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        $SUDO dpkg --add-architecture "$arch"
        need_update=1
    fi
    dpkg -s "libc6:$arch" >/dev/null 2>&1 || pkgs+=("libc6:$arch")
done
command -v pkg-config >/dev/null || pkgs+=(pkg-config)
command -v python3 >/dev/null || pkgs+=(python3)

if [ ${#pkgs[@]} -gt 0 ]; then
    # Deduplicate (qemu-user may be listed twice).
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
    need_update=1
fi
stamp=/var/lib/apt/lists/.localproxy-cross-updated
if [ "$need_update" = 1 ] || [ ! -e "$stamp" ]; then
    # A lagging mirror makes apt-get update exit 100 for one index ("Mirror sync
    # in progress?") while the others are fine: go on and let the install decide.
    $SUDO apt-get update -qq || echo "setup.sh: apt-get update reported errors (mirror lag?); continuing" >&2
    $SUDO touch "$stamp" 2>/dev/null || true
fi
if [ ${#pkgs[@]} -gt 0 ]; then
    echo "setup.sh: installing ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

if command -v rustup >/dev/null; then
    installed=$(rustup target list --installed)
    for t in "${targets[@]}"; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t"
    done
else
    echo "setup.sh: rustup not found; make sure the Rust std for ${targets[*]} is installed" >&2
fi
echo "setup.sh: ready for ${targets[*]}"
