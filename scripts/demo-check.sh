#!/usr/bin/env bash
# `make demo-check` (run by .ci/run after `make test`): proves that `make demo`
# needs only the build dependencies of scripts/setup.sh (issue 16), by running
# it as a new user would:
#   - in a copy of the tree (the files git tracks or would add, so no target/)
#     with an empty CARGO_HOME: nothing is reused from earlier builds and the
#     crates are fetched afresh;
#   - with a PATH of symlinks to the system's commands less rustup, pb-rs,
#     OpenSSH (ssh, sshd, ...) and cargo's extras (cargo-fmt, cargo-clippy),
#     plus cargo and rustc of the current toolchain linked directly, not
#     through rustup's proxies;
#   - as nobody when run as root (CI): in a private mount namespace, where the
#     toolchain is bind-mounted read-only into the temporary directory since
#     nobody cannot enter /root, where rustup keeps it; as the calling user
#     otherwise.
# It costs a full debug build from scratch; it prints how long `make demo` took.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

sysroot=$(rustc --print sysroot)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/demo-check.XXXXXX")
cleanup() {
    # The bind mount lives only in the child's namespace; never delete
    # through a mounted toolchain all the same.
    if mountpoint -q "$tmp/toolchain"; then
        echo "demo-check: $tmp/toolchain is still mounted, leaving $tmp" >&2
        return
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
chmod 755 "$tmp"
mkdir "$tmp/src" "$tmp/bin" "$tmp/cargo-home" "$tmp/home" "$tmp/tmp" "$tmp/toolchain"

# The tree as a fresh clone would have it, plus uncommitted changes.
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$tmp/src"

# A PATH of the system's commands without the tools the demo must not need.
hidden='^(rustup|pb-rs|ssh|sshd|scp|sftp|slogin|ssh-.*|cargo|cargo-.*|rustc|rustdoc|rustfmt|clippy-driver|rust-.*|rls)$'
for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    for exe in "$dir"/*; do
        name=${exe##*/}
        [[ -f $exe && -x $exe && ! $name =~ $hidden ]] || continue
        [ -e "$tmp/bin/$name" ] || ln -s "$exe" "$tmp/bin/$name"
    done
done
if [ "$(id -u)" -eq 0 ]; then
    toolchain=$tmp/toolchain
else
    toolchain=$sysroot
fi
ln -s "$toolchain/bin/cargo" "$tmp/bin/cargo"
ln -s "$toolchain/bin/rustc" "$tmp/bin/rustc"

# What runs as the new user.
# shellcheck disable=SC2016
inner='set -euo pipefail
for tool in rustup pb-rs ssh sshd cargo-fmt cargo-clippy; do
    if where=$(command -v "$tool"); then
        echo "demo-check: $tool is on PATH ($where): this check would prove nothing" >&2
        exit 1
    fi
done
echo "demo-check: make demo as $(id -un) (uid $(id -u)) in $PWD, fresh CARGO_HOME and target/," \
    "no rustup, pb-rs, ssh or sshd on PATH; $(rustc --version)"
start=$(date +%s)
make --no-print-directory demo
echo "demo-check: passed; make demo took $(($(date +%s) - start)) s (crate downloads, full debug build, demo)"
'
env=(env -i PATH="$tmp/bin" HOME="$tmp/home" CARGO_HOME="$tmp/cargo-home" TMPDIR="$tmp/tmp"
    LANG=C.UTF-8 CARGO_TERM_COLOR=never CI="${CI:-}")
# What a user's environment may need to reach the crate registry.
for var in SSL_CERT_FILE SSL_CERT_DIR http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -z "${!var:-}" ] || env+=("$var=${!var}")
done

cd "$tmp/src"
if [ "$(id -u)" -eq 0 ]; then
    nobody_uid=$(id -u nobody)
    nobody_gid=$(id -g nobody)
    chown -R "$nobody_uid:$nobody_gid" "$tmp/src" "$tmp/cargo-home" "$tmp/home" "$tmp/tmp"
    unshare --mount --propagation private bash -c '
        set -euo pipefail
        mount --bind "$1" "$2"
        mount -o remount,bind,ro "$2"
        shift 2
        exec "$@"' _ "$sysroot" "$toolchain" \
        setpriv --reuid="$nobody_uid" --regid="$nobody_gid" --clear-groups --no-new-privs \
        "${env[@]}" bash -c "$inner"
else
    "${env[@]}" bash -c "$inner"
fi
