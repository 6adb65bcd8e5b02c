#!/usr/bin/env bash
# Installs the Python side of the tests: a virtual environment with boto3
# (the AWS SDK for Python, which carries botocore's iotsecuretunneling service
# model) and regex (Unicode categories in the model's patterns), used by
# tests/aws_api.rs to drive tunnel-service with a real AWS client.
#
# Where: $LOCALPROXY_PYTHON_VENV, default target/python-venv (the tests look
# in the same place). Idempotent: when the venv already has these exact
# versions it does nothing (well under a second).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LOCALPROXY_PYTHON_VENV:-target/python-venv}
# Pinned so every machine checks against the same service model.
PACKAGES=(boto3==1.44.8 botocore==1.44.8 regex==2026.11.19)

wanted_versions() {
    "$VENV/bin/python" - "${PACKAGES[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
}

if [ -x "$VENV/bin/python" ] && wanted_versions; then
    exit 0
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian splits venv support (ensurepip) into python3-venv.
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-python: need python3 with the venv module (Debian: apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    echo "setup-python: installing python3 python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || echo "setup-python: apt-get update reported errors; trying the install anyway" >&2
    apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    python=/usr/bin/python3
fi

echo "setup-python: creating $VENV with ${PACKAGES[*]}"
rm -rf "$VENV"
"$python" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${PACKAGES[@]}"
wanted_versions || { echo "setup-python: $VENV lacks ${PACKAGES[*]} after the install" >&2; exit 1; }
echo "setup-python: ready ($("$VENV/bin/python" -c 'import boto3; print("boto3", boto3.__version__)'))"
