#!/usr/bin/env bash
# cross/static.sh: the exception, a fully static localproxy (musl libc, OpenSSL
# built from source by openssl-src through the `static` feature), for devices
# that cannot rely on a system OpenSSL. Prefer the dynamic build: with a static
# OpenSSL, every OpenSSL security fix needs a rebuild and a new release.
#
#   cross/static.sh [MUSL_TARGET]   default x86_64-unknown-linux-musl
#
# STATIC_PIE=no links a position-dependent executable instead of a static PIE:
# nothing is relocated at start, so OpenSSL's tables stay clean file pages and
# a connected proxy's private memory (RssAnon) drops from about 1.36 to
# 0.85 MiB (x86_64, measured 2026-12-05). The price: the executable's code and
# data sit at fixed addresses (no ASLR for them; stacks, heap and mappings
# stay randomised). Only for devices that cannot spare the memory.
#
# x86_64 uses Debian's musl-tools (musl-gcc). For armv7-unknown-linux-musleabihf
# or aarch64-unknown-linux-musl, Debian has no musl cross compiler: point
# CC_<target> (e.g. CC_aarch64_unknown_linux_musl) and
# CARGO_TARGET_<TARGET>_LINKER at one (a Yocto/Buildroot musl SDK, musl-cross-make).
set -euo pipefail
. "$(dirname "$0")/common.sh"

target=${1:-x86_64-unknown-linux-musl}
under=${target//-/_}
prefix=$(env_prefix "$target")

if [ "$target" = x86_64-unknown-linux-musl ]; then
    if ! command -v musl-gcc >/dev/null; then
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends musl-tools
    fi
    export "CC_${under}=${CC_x86_64_unknown_linux_musl:-musl-gcc}"
    # OpenSSL's build includes <linux/...> headers, which musl-gcc's include
    # path lacks; let it fall back to the host's kernel headers.
    export "CFLAGS_${under}=-idirafter /usr/include -idirafter /usr/include/x86_64-linux-gnu"
else
    cc_var="CC_${under}"
    [ -n "${!cc_var:-}" ] || {
        echo "static.sh: set $cc_var (and CARGO_TARGET_${prefix}_LINKER) to a musl cross compiler for $target" >&2
        exit 1
    }
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

cd "$ROOT_DIR"
case "${STATIC_PIE:-yes}" in
    yes) ;;
    no) export RUSTFLAGS="${RUSTFLAGS:-} -C relocation-model=static" ;;
    *) echo "static.sh: STATIC_PIE must be yes or no, not '${STATIC_PIE}'" >&2; exit 1 ;;
esac
"$CARGO" build --release --locked --target "$target" --features static --bin localproxy
bin="target/$target/release/localproxy"
if readelf -d "$bin" 2>/dev/null | grep NEEDED >/dev/null; then
    echo "static.sh: $bin still has dynamic dependencies:" >&2
    readelf -d "$bin" | grep NEEDED >&2
    exit 1
fi
want=DYN
[ "${STATIC_PIE:-yes}" = no ] && want=EXEC
kind=$(readelf -h "$bin" | awk '/Type:/ {print $2}')
if [ "$kind" != "$want" ]; then
    echo "static.sh: $bin is of ELF type $kind, expected $want (STATIC_PIE=${STATIC_PIE:-yes})" >&2
    exit 1
fi
echo "static.sh: $bin ($(stat -c %s "$bin") bytes), static: $(file -b "$bin" | cut -d, -f1-5)"
