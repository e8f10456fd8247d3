#!/usr/bin/env bash
# Installs the real peers the plc-adapters tests run against: pymodbus (the PLC, TCP and RTU)
# with pyserial, and socat (the linked serial pty pair). Idempotent; run as root (CI is).
set -euo pipefail

PYMODBUS_VERSION=3.16.1
PYSERIAL_VERSION=3.5

if ! command -v socat >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat
fi

if ! python3 -c "import pymodbus, serial, sys; sys.exit(pymodbus.__version__ != '${PYMODBUS_VERSION}')" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check \
        "pymodbus==${PYMODBUS_VERSION}" "pyserial==${PYSERIAL_VERSION}"
fi

socat -V | head -n 2 | tail -n 1
python3 -c "import pymodbus, serial; print('pymodbus', pymodbus.__version__, 'pyserial', serial.__version__)"
