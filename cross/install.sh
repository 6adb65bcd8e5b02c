#!/usr/bin/env bash
# cross/install.sh: install localproxy with its docs, man page, systemd unit and
# example configuration, for `make install PREFIX=/usr DESTDIR=...`.
#
# Environment (all optional):
#   PREFIX      /usr/local      binaries in $PREFIX/bin, unit in $PREFIX/lib/systemd/system
#   DESTDIR     (empty)         staging root for packages
#   SYSCONFDIR  /etc            where localproxy/destination.conf goes
#   TARGET      (host)          install the cross build for TARGET instead (built if missing)
#   BINARIES    "localproxy tunnel-service"
#   UNITDIR     $PREFIX/lib/systemd/system
set -euo pipefail
. "$(dirname "$0")/common.sh"

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
BINARIES=${BINARIES:-localproxy tunnel-service}
BINDIR=$PREFIX/bin
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
DOCDIR=$PREFIX/share/doc/localproxy
MANDIR=$PREFIX/share/man/man1
TARGET=${TARGET:-}

cd "$ROOT_DIR"
if [ -n "$TARGET" ]; then
    out="target/$TARGET/release"
    [ -x "$out/localproxy" ] || "$CROSS_DIR/build.sh" "$TARGET"
    run() { run_target "$TARGET" "$@"; }
else
    out="target/release"
    "$CARGO" build --release --locked --bins
    run() { "$@"; }
fi

d() { echo "$DESTDIR$1"; }
install -d "$(d "$BINDIR")" "$(d "$UNITDIR")" "$(d "$DOCDIR")" "$(d "$MANDIR")" "$(d "$SYSCONFDIR/localproxy")"

for bin in $BINARIES; do
    install -m 0755 "$out/$bin" "$(d "$BINDIR")/$bin"
done

# The full --help text, as a text file and as a man page (the help text is the
# reference; the man page wraps it verbatim so the two never disagree).
help=$(run "$out/localproxy" --help)
version=$(run "$out/localproxy" --version | sed -n 1p)
printf '%s\n' "$help" > "$(d "$DOCDIR")/localproxy-help.txt"
{
    echo ".TH LOCALPROXY 1 \"\" \"$version\" \"User Commands\""
    echo ".SH NAME"
    echo "localproxy \\- AWS IoT Secure Tunneling local proxy"
    echo ".SH DESCRIPTION"
    echo ".nf"
    # Escape backslashes and leading dots/quotes so roff prints the text as is.
    printf '%s\n' "$help" | sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
    echo ".fi"
    echo ".SH FILES"
    echo ".TP"
    echo "$SYSCONFDIR/localproxy/destination.conf"
    echo "options of localproxy-destination.service"
    echo ".TP"
    echo "$SYSCONFDIR/localproxy/token.env"
    echo "AWSIOT_TUNNEL_ACCESS_TOKEN for the service (mode 0600)"
    echo ".SH SEE ALSO"
    echo "systemd.service(5), $DOCDIR/README.md"
} > "$(d "$MANDIR")/localproxy.1"
gzip -9nf "$(d "$MANDIR")/localproxy.1"

sed -e "s|@BINDIR@|$BINDIR|g" -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" \
    cross/systemd/localproxy-destination.service.in > "$(d "$UNITDIR")/localproxy-destination.service"
chmod 0644 "$(d "$UNITDIR")/localproxy-destination.service"
sed -e "s|/usr/bin/|$BINDIR/|g" -e "s|/etc/|$SYSCONFDIR/|g" \
    cross/systemd/localproxy-destination-credential.conf > "$(d "$DOCDIR")/localproxy-destination-credential.conf"

# Example configuration: never overwrite one an administrator edited.
conf="$(d "$SYSCONFDIR/localproxy")/destination.conf"
if [ -e "$conf" ]; then
    install -m 0644 cross/systemd/destination.conf "$conf.example"
else
    install -m 0644 cross/systemd/destination.conf "$conf"
fi
install -m 0644 cross/systemd/token.env.example "$(d "$DOCDIR")/token.env.example"
for doc in README.md cross/README.md; do
    [ -e "$doc" ] || continue
    name=$(basename "$doc")
    [ "$doc" = cross/README.md ] && name=README.cross.md
    install -m 0644 "$doc" "$(d "$DOCDIR")/$name"
done

echo "install.sh: installed into ${DESTDIR:-/} (PREFIX=$PREFIX, SYSCONFDIR=$SYSCONFDIR${TARGET:+, TARGET=$TARGET}):"
root=${DESTDIR:-/}
for bin in $BINARIES; do echo "  $BINDIR/$bin"; done
for f in "$UNITDIR/localproxy-destination.service" "$MANDIR/localproxy.1.gz" \
    "$root$DOCDIR"/* "$root$SYSCONFDIR/localproxy"/*; do
    echo "  ${f#"$DESTDIR"}"
done
