#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine that has only the Rust
# toolchain: the real peers (mosquitto, pymodbus, socat), the ARM64 cross toolchain and qemu-user,
# and the Rust components (aarch64 target, nightly miri, cargo-fuzz), plus debootstrap and
# systemd-nspawn for systemd/boot-test.sh. Idempotent and quick when everything is present.
# Needs root for apt-get (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(mosquitto mosquitto-clients socat openssl systemd file gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
    debootstrap systemd-container)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install-peers: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts mosquitto as a service on install; the tests start their own on free ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl stop mosquitto || true
fi

bash plc-adapters/scripts/install-test-peers.sh

rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^miri'; then
    rustup component add --toolchain nightly miri rust-src
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
echo "install-peers: ok"
