#!/usr/bin/env bash
# cross/build.sh: release build of localproxy (and tunnel-service) for an ARM
# target, dynamically linked against the target's OpenSSL (libssl.so.3 /
# libcrypto.so.3) from build/sysroot/<target>, with Debian's cross gcc.
#
# Usage: cross/build.sh TARGET [extra cargo args]
# Output: target/<TARGET>/release/{localproxy,tunnel-service}
set -euo pipefail
. "$(dirname "$0")/common.sh"

target=${1:?usage: build.sh TARGET [cargo args]}
shift
triple=$(gnu_triple "$target")
prefix=$(env_prefix "$target")
sysroot=$(sysroot_dir "$target")
libdir=$(sysroot_libdir "$target")

"$CROSS_DIR/setup.sh" "$target"
"$CROSS_DIR/sysroot.sh" "$target"

# Linker and C compiler (the cc crate runs the preprocessor for openssl-sys).
export "CARGO_TARGET_${prefix}_LINKER=$triple-gcc"
export "CC_${target//-/_}=$triple-gcc"
export "AR_${target//-/_}=$triple-ar"
# openssl-sys: explicit dirs for this target only, so host build scripts and a
# host build in the same shell keep using the host's OpenSSL.
export "${prefix}_OPENSSL_LIB_DIR=$libdir"
export "${prefix}_OPENSSL_INCLUDE_DIR=$sysroot/usr/include"
export "${prefix}_OPENSSL_NO_VENDOR=1"
unset "${prefix}_OPENSSL_STATIC" OPENSSL_STATIC
# pkg-config (not used when the dirs above are set, but keep it from ever
# answering with the host's paths for the target).
export "PKG_CONFIG_SYSROOT_DIR_${target//-/_}=$sysroot"
export "PKG_CONFIG_PATH_${target//-/_}=$libdir/pkgconfig"
# libssl.so.3 needs libcrypto.so.3: tell the linker where the target's lives.
export "CARGO_TARGET_${prefix}_RUSTFLAGS=-C link-arg=-Wl,-rpath-link,$libdir"

cd "$ROOT_DIR"
"$CARGO" build --release --locked --target "$target" --bins "$@"

out="$ROOT_DIR/target/$target/release"
for bin in localproxy tunnel-service; do
    f="$out/$bin"
    [ -x "$f" ] || { echo "build.sh: $f was not produced" >&2; exit 1; }
    needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
    echo "build.sh: $f ($(stat -c %s "$f") bytes) NEEDED: $needed"
    case "$needed" in
        *libssl.so.3*libcrypto.so.3* | *libcrypto.so.3*libssl.so.3*) ;;
        *)
            # Never a vendored/static OpenSSL in this build: its version string
            # would be in the binary without the NEEDED entries.
            if strings -a "$f" | grep -q '^OpenSSL [0-9]'; then
                echo "build.sh: $bin carries OpenSSL statically; expected libssl.so.3/libcrypto.so.3" >&2
                exit 1
            fi
            # A binary that calls no OpenSSL function (a placeholder main) is
            # linked without it by --as-needed; say so rather than fail.
            echo "build.sh: note: $bin does not reference OpenSSL (no NEEDED libssl.so.3)" >&2
            ;;
    esac
done
# Smoke check under qemu-user: the binary starts on the target's libc and OpenSSL.
run_target "$target" "$out/localproxy" --version
