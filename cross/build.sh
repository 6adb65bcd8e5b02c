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

"$CROSS_DIR/setup.sh" "$target"
"$CROSS_DIR/sysroot.sh" "$target"

cross_env "$target"

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
            if strings -a "$f" | grep '^OpenSSL [0-9]' >/dev/null; then
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
