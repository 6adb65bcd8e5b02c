#!/usr/bin/env bash
# cross/unit-check.sh: check the systemd unit with systemd-analyze, when present.
#
# `systemd-analyze verify` resolves ExecStart= on the running system, so the
# unit is instantiated with the host build's bin directory. `systemd-analyze
# security --offline` scores the hardening; the check fails above MAX_EXPOSURE.
set -euo pipefail
. "$(dirname "$0")/common.sh"

MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
if ! command -v systemd-analyze >/dev/null; then
    echo "unit-check.sh: systemd-analyze not installed; skipped"
    exit 0
fi
bindir="$ROOT_DIR/target/release"
[ -x "$bindir/localproxy" ] || (cd "$ROOT_DIR" && "$CARGO" build --release --locked --bins)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unit="$tmp/localproxy-destination.service"
sed -e "s|@BINDIR@|$bindir|g" -e "s|@SYSCONFDIR@|/etc|g" \
    "$CROSS_DIR/systemd/localproxy-destination.service.in" > "$unit"

timeout 60 systemd-analyze verify --man=no "$unit"
echo "unit-check.sh: systemd-analyze verify passed"
report=$(timeout 60 systemd-analyze security --offline=true --threshold=100 "$unit" 2>&1 | tail -n1)
echo "unit-check.sh: $report"
score=$(sed -n 's/.*exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$report")
[ -n "$score" ] || { echo "unit-check.sh: could not read the exposure score" >&2; exit 1; }
if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
    echo "unit-check.sh: exposure $score is above $MAX_EXPOSURE" >&2
    exit 1
fi
