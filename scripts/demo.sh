#!/usr/bin/env bash
# End-to-end demo: the local tunneling service, a destination proxy and a
# source proxy on loopback. Placeholder until the tunnel is implemented.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet
echo "demo: the tunnel is not implemented yet"
