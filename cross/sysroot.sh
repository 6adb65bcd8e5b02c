#!/usr/bin/env bash
# cross/sysroot.sh: unpack the target's OpenSSL into build/sysroot/<target>.
#
# `apt-get download` + `dpkg-deb -x` of libssl3 and libssl-dev for the target
# architecture, rather than installing libssl-dev:<arch> through multiarch:
# multiarch requires the same version on every architecture, and the install
# fails whenever the target's mirror is ahead of or behind the host's OpenSSL.
# An unpacked sysroot is also the model Yocto and Buildroot use.
#
# The C library is not unpacked here: Debian's cross toolchain brings its own
# (libc6-dev-<arch>-cross under /usr/<triple>), installed by setup.sh.
#
# Usage: cross/sysroot.sh TARGET
set -euo pipefail
. "$(dirname "$0")/common.sh"

target=${1:?usage: sysroot.sh TARGET}
arch=$(deb_arch "$target")
triple=$(gnu_triple "$target")
sysroot=$(sysroot_dir "$target")
libdir=$(sysroot_libdir "$target")
stamp="$sysroot/.complete"

if [ -e "$stamp" ] && [ -e "$libdir/libssl.so" ] && [ -e "$sysroot/usr/include/openssl/ssl.h" ]; then
    echo "sysroot.sh: $sysroot is ready ($(cat "$stamp"))"
    exit 0
fi

debs="$BUILD_DIR/debs/$arch"
rm -rf "$sysroot" "$debs"
mkdir -p "$sysroot" "$debs"
(
    cd "$debs"
    # apt-get download needs the foreign architecture's package index (setup.sh
    # adds the architecture and runs apt-get update).
    # As root, apt downloads as _apt unless told otherwise; _apt cannot write here.
    sandbox=()
    [ "$(id -u)" != 0 ] || sandbox=(-o APT::Sandbox::User=root)
    apt-get download -q "${sandbox[@]}" "libssl3:$arch" "libssl-dev:$arch"
)
for deb in "$debs"/*.deb; do
    echo "sysroot.sh: unpacking $(basename "$deb")"
    dpkg-deb -x "$deb" "$sysroot"
done

# libssl-dev puts opensslconf.h / configuration.h under the multiarch include
# directory; openssl-sys takes one include dir, so give it a merged view.
if [ -d "$sysroot/usr/include/$triple/openssl" ]; then
    cp -n "$sysroot/usr/include/$triple/openssl/"* "$sysroot/usr/include/openssl/"
fi

for f in "$libdir/libssl.so" "$libdir/libcrypto.so" "$libdir/libssl.so.3" "$libdir/libcrypto.so.3" \
    "$sysroot/usr/include/openssl/ssl.h" "$sysroot/usr/include/openssl/opensslconf.h"; do
    [ -e "$f" ] || { echo "sysroot.sh: missing $f after unpacking" >&2; exit 1; }
done
version=$(dpkg-deb -f "$(ls "$debs"/libssl3_*.deb)" Version)
echo "libssl3 $version ($arch)" > "$stamp"
echo "sysroot.sh: $sysroot ready with OpenSSL $version for $arch"
