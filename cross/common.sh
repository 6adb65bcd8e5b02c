# cross/common.sh: sourced by the cross scripts. Target tables and paths.
# shellcheck shell=bash

CROSS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$CROSS_DIR/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT_DIR/build}
CARGO=${CARGO:-cargo}

# Rust target -> Debian architecture.
deb_arch() {
    case "$1" in
        armv7-unknown-linux-gnueabihf) echo armhf ;;
        aarch64-unknown-linux-gnu) echo arm64 ;;
        *) echo "unsupported target '$1' (armv7-unknown-linux-gnueabihf or aarch64-unknown-linux-gnu)" >&2; return 1 ;;
    esac
}

# Rust target -> GNU triple (cross gcc prefix and multiarch directory).
gnu_triple() {
    case "$1" in
        armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
        aarch64-unknown-linux-gnu) echo aarch64-linux-gnu ;;
        *) echo "unsupported target '$1'" >&2; return 1 ;;
    esac
}

# Rust target -> qemu-user binary.
qemu_bin() {
    case "$1" in
        armv7-unknown-linux-gnueabihf) echo qemu-arm ;;
        aarch64-unknown-linux-gnu) echo qemu-aarch64 ;;
        *) echo "unsupported target '$1'" >&2; return 1 ;;
    esac
}

# Rust target -> the prefix of Cargo/openssl-sys environment variables.
env_prefix() {
    echo "$1" | tr 'a-z-' 'A-Z_'
}

sysroot_dir() {
    echo "$BUILD_DIR/sysroot/$1"
}

# Directory holding the target's libssl.so.3 / libcrypto.so.3 in the sysroot.
sysroot_libdir() {
    echo "$(sysroot_dir "$1")/usr/lib/$(gnu_triple "$1")"
}

# Run a target binary under qemu-user. No -L: the multiarch libc (libc6:<arch>,
# installed by setup.sh) puts the loader where the binary expects it, and
# qemu-aarch64 with -L on Debian's cross libc hangs on thread creation. The
# target's OpenSSL comes from the sysroot through the guest's LD_LIBRARY_PATH
# (qemu -E sets it for the guest only; host processes are unaffected).
run_target() {
    local target=$1
    shift
    "$(qemu_bin "$target")" -E "LD_LIBRARY_PATH=$(sysroot_libdir "$target")" "$@"
}
