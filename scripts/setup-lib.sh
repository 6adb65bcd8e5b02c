# scripts/setup-lib.sh: sourced by setup.sh and setup-test.sh.
# shellcheck shell=bash
#
# deb_install TOPIC PKG...: installs the Debian packages PKG as root (apt-get)
# and returns; otherwise prints which packages TOPIC needs and how to install
# them, and exits 1. Never installs anything for a user who is not root.

deb_install() {
    local topic=$1
    shift
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: missing Debian package(s) for $topic: $*" >&2
        echo "setup: as root, run: apt-get install $*" >&2
        exit 1
    fi
    echo "setup: installing $* ($topic)"
    # An index of another architecture may fail to download while the
    # host's is fine: go on and let the install say what is really missing.
    apt-get update -qq || echo "setup: apt-get update reported errors; trying the install anyway" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# version_at_least HAVE WANT: true when dotted version HAVE >= WANT
# (major.minor compared as numbers; anything after them ignored).
version_at_least() {
    local have_major have_minor want_major want_minor
    IFS=. read -r have_major have_minor _ <<<"$1"
    IFS=. read -r want_major want_minor _ <<<"$2"
    [[ $have_major =~ ^[0-9]+$ && $have_minor =~ ^[0-9]+$ ]] || return 1
    ((have_major > want_major || (have_major == want_major && have_minor >= want_minor)))
}

# deb_candidate PKG: the version apt would install for PKG, empty when none.
deb_candidate() {
    command -v apt-cache >/dev/null 2>&1 || return 0
    LC_ALL=C apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | sed 's/^(none)$//; s/^[0-9]*://'
}

# The oldest Rust the crate builds with: rust-version in Cargo.toml.
msrv() {
    sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml
}
