#!/usr/bin/env bash
# Installs what `make test` needs on a Debian machine, each only when missing:
# the OpenSSL headers and pkg-config (openssl crate), make, the OpenSSH client
# and server (the SSH acceptance test), the rustfmt and clippy components and
# pb-rs (proto-check). Safe to run again; installs nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

missing=()
for pkg in make pkg-config libssl-dev openssh-client openssh-server; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    # An index of another architecture may fail to download while the
    # host's is fine: go on and let the install say what is really missing.
    apt-get update -qq || echo "setup: apt-get update reported errors; trying the install anyway" >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# (A list in a variable: `cmd | grep -q` can kill cmd with SIGPIPE, which
# pipefail turns into a failure.)
components=$(rustup component list --installed 2>/dev/null || true)
for component in rustfmt clippy; do
    grep -q "^$component" <<<"$components" || rustup component add "$component"
done

make --no-print-directory pb-rs

bash scripts/setup-python.sh
