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

# Export what cargo, the cc crate and openssl-sys need to build for TARGET
# against the sysroot's OpenSSL with Debian's cross gcc. Per-target variables
# only, so host builds (build scripts, a host build in the same shell) keep
# the host's compiler and OpenSSL.
cross_env() {
    local target=$1 triple prefix sysroot libdir under
    triple=$(gnu_triple "$target")
    prefix=$(env_prefix "$target")
    sysroot=$(sysroot_dir "$target")
    libdir=$(sysroot_libdir "$target")
    under=${target//-/_}
    # Linker, and the C compiler the cc crate uses for openssl-sys's probe.
    export "CARGO_TARGET_${prefix}_LINKER=$triple-gcc"
    export "CC_${under}=$triple-gcc"
    export "AR_${under}=$triple-ar"
    # openssl-sys: the target's OpenSSL, linked dynamically, never vendored.
    export "${prefix}_OPENSSL_LIB_DIR=$libdir"
    export "${prefix}_OPENSSL_INCLUDE_DIR=$sysroot/usr/include"
    export "${prefix}_OPENSSL_NO_VENDOR=1"
    unset "${prefix}_OPENSSL_STATIC" OPENSSL_STATIC
    # pkg-config is not consulted when the dirs above are set; should it ever
    # be, it must answer with the sysroot's paths, not the host's.
    export "PKG_CONFIG_SYSROOT_DIR_${under}=$sysroot"
    export "PKG_CONFIG_PATH_${under}=$libdir/pkgconfig"
    # libssl.so.3 needs libcrypto.so.3: tell the linker where the target's is.
    export "CARGO_TARGET_${prefix}_RUSTFLAGS=-C link-arg=-Wl,-rpath-link,$libdir"
    # `cargo test/run --target` runs the binaries under qemu-user.
    export "CARGO_TARGET_${prefix}_RUNNER=$(qemu_bin "$target") -E LD_LIBRARY_PATH=$libdir"
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
