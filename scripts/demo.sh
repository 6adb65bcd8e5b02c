#!/usr/bin/env bash
# `make demo`: builds both binaries and runs the demo driver
# (tests/support/demo.rs), which starts the local tunneling service, a
# destination and a source localproxy, drives traffic through two services
# and stops every process it started, whether it succeeds or not.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet --bins
exec cargo run --locked --quiet --example demo
