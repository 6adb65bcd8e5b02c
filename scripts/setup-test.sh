#!/usr/bin/env bash
# What `make test` and CI (.ci/run) need: the build dependencies
# (scripts/setup.sh), then the tools only the tests use, each only when
# missing:
#   - make;
#   - the OpenSSH client and server (the SSH acceptance test, tests/ssh.rs);
#   - nftables and iproute2 (network tests inside `unshare -n`);
#   - rustfmt and clippy (`make test` runs `cargo fmt --check` and clippy):
#     rustup components, or with Debian's toolchain Debian's packages;
#   - pb-rs (proto-check);
#   - the Python venv of the AWS-client tests (scripts/setup-python.sh).
# Debian packages are installed only when run as root; otherwise the missing
# ones are named and the script exits 1. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-lib.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

bash scripts/setup.sh

missing=()
for pkg in make openssh-client openssh-server nftables iproute2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
((${#missing[@]} == 0)) || deb_install "the tests" "${missing[@]}"

# rustfmt and clippy belong to the toolchain: rustup components, or the
# Debian packages that match Debian's rustc.
if command -v rustup >/dev/null 2>&1; then
    # (A list in a variable: `cmd | grep -q` can kill cmd with SIGPIPE, which
    # pipefail turns into a failure.)
    components=$(rustup component list --installed 2>/dev/null || true)
    for component in rustfmt clippy; do
        grep -q "^$component" <<<"$components" || rustup component add "$component"
    done
else
    lacking=()
    cargo fmt --version >/dev/null 2>&1 || lacking+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || lacking+=(clippy)
    if ((${#lacking[@]})); then
        echo "setup: 'make test' runs 'cargo fmt --check' and 'cargo clippy', and this toolchain (no rustup) lacks: ${lacking[*]}" >&2
        rustc_path=$(command -v rustc)
        owner=""
        for path in "$rustc_path" "$(readlink -f "$rustc_path")"; do
            [ -n "$owner" ] || owner=$(dpkg -S "$path" 2>/dev/null | sed -n '1s/:.*//p' || true)
        done
        case "$owner" in
            rustc) debs=(rustfmt rust-clippy) ;;
            rustc-web) debs=(rustfmt-web rust-web-clippy) ;;
            *)
                echo "setup: $rustc_path is ${owner:+from the Debian package $owner, }not Debian's rustc or rustc-web:" \
                    "install rustfmt and clippy for that toolchain (Debian: rustfmt and rust-clippy" \
                    "for rustc, rustfmt-web and rust-web-clippy for rustc-web)" >&2
                exit 1
                ;;
        esac
        deb_install "rustfmt and clippy for Debian's $owner" "${debs[@]}"
    fi
fi

make --no-print-directory pb-rs

# The Python venv (boto3) of the AWS-client tests, once the tree has its script.
bash scripts/setup-python.sh
